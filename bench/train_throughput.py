"""Training throughput against the hardware: images/s of the real training loop, fp32 and bf16.

For each preset (``fast``, ``blog-2017``; the pixel presets ``discrete`` and ``hierarchical`` too)
and precision (``fp32``, ``bf16``) a run of the project's own ``train()`` on generated
``synth-digits`` images (SVHN's shape), compiled or not as the preset trains a full run (``fast``'s
``compile = "auto"`` compiles runs of 10,000 steps and more; the bench's are shorter, so it asks for
what a full run gets); the figure is the last epoch's ``images_per_s`` from the loop's own record
(the first epoch compiles and warms caches up). Timed in the same process, for the same preset and
batch size:

* ``gflop_per_image``: the training FLOPs of one image counted from the model's Linear layers
  (forward 2 * in * out per layer, backward twice that);
* the **ceiling**: the same Linear layers alone (for ``hierarchical`` its ladder's too), chained
  without BatchNorm, ReLU, Dropout, loss or optimizer, forward and backward, images/s (in fp32 and
  under bf16 autocast);
* the matrix-product rate of the machine (a 2048 x 2048 by batch x 2048 product, GFLOP/s);
* the fp32 loop the other way (eager where the preset compiles, compiled where it does not).

and the ratios that matter: fp32 loop / fp32 ceiling (``fp32_of_ceiling``, and the eager loop's,
``eager_of_ceiling``), bf16 loop / fp32 loop, the compiled fp32 loop / the eager one; and how far
the bf16 and the compiled runs' losses after the same steps (same seed, same data) are from the
fp32 and the eager one's. The CPU's model name and the instruction sets that matter here (AVX2,
AVX-512, its BF16 and VNNI parts, AMX) head the result, so figures of different machines (AMD
EPYC, Intel Xeon with AMX) are never mixed up.

Run:  .venv/bin/python bench/train_throughput.py [--presets fast blog-2017] [--n 12000] [--epochs 2] [--no-compile]
(``--no-compile``: every run eager, no compiled one.) Prints one JSON line at the end: {cpu: {model,
isa, torch_capability}, threads, n, matmul_gflops: {fp32, bf16}, preset: {batch_size, gflop_per_image,
compiled_by_default, fp32_images_per_s, fp32_loss, bf16_images_per_s, bf16_loss, ceiling_fp32_images_per_s,
ceiling_bf16_images_per_s, eager_images_per_s, eager_loss, compiled_images_per_s, compiled_loss,
fp32_of_ceiling, eager_of_ceiling, bf16_speedup, bf16_loss_rel_diff, compile_speedup,
compiled_loss_rel_diff}}.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

from svhn_vae.allocator import keep_freed_memory
from svhn_vae.config import get_preset
from svhn_vae.data import synth_digits
from svhn_vae.precision import autocast
from svhn_vae.train import TrainData, train
from svhn_vae.models import VAE, build_vae


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
"""/proc/cpuinfo flags that decide how fast the fp32 and bf16 products can be."""


def cpu_info() -> dict:
    """The CPU's model name, which of :data:`ISA_FLAGS` it has, and the kernels PyTorch picked."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    model = " ".join(fields.get("model name\t", fields.get("model name", platform.processor())).split())
    flags = set(" ".join(v for k, v in fields.items() if k.strip() == "flags").split())
    return {"model": model or platform.machine(), "isa": [f for f in ISA_FLAGS if f in flags],
            "torch_capability": torch.backends.cpu.get_cpu_capability()}


def linear_shapes(model: VAE) -> list[tuple[int, int]]:
    """(in, out) of every Linear layer of the model, in registration order."""
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def training_gflop_per_image(shapes: list[tuple[int, int]]) -> float:
    """Forward 2 * in * out FLOPs per layer and image; backward (input and weight gradients) twice that."""
    return 3 * sum(2 * i * o for i, o in shapes) / 1e9


def _timed(step, *, seconds: float = 3.0) -> float:
    """Calls of ``step`` per second after two warm-up calls, over at least ``seconds``."""
    step(), step()
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        calls += 1
    return calls / (time.perf_counter() - t0)


def linear_ceiling(shapes: list[tuple[int, int]], batch: int, precision: str) -> float:
    """Images/s of the model's Linear layers alone, forward and backward, each fed a (batch, in) input."""
    layers = [nn.Linear(i, o) for i, o in shapes]
    inputs = [torch.randn(batch, i, requires_grad=True) for i, _ in shapes]
    device = torch.device("cpu")

    def step() -> None:
        with autocast(precision, device):
            out = sum(layer(x).float().sum() for layer, x in zip(layers, inputs))
        out.backward()

    return batch * _timed(step)


def matmul_gflops(dtype: torch.dtype, size: int = 2048, batch: int = 1000) -> float:
    a, b = torch.randn(batch, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return 2 * batch * size * size * _timed(lambda: a @ b, seconds=2.0) / 1e9


def loop_run(preset: str, precision: str, images, epochs: int, *, compile: bool) -> tuple[float, float]:
    """The last epoch's images/s and training loss (nats per example) of the real training loop,
    through torch.compile or eager."""
    cfg = get_preset(preset).replace("train", epochs=epochs, precision=precision, device="cpu", sample_every=0,
                                     early_stopping="none", kl_warmup_epochs=0, warmup_steps=0,
                                     compile="on" if compile else "off")
    last = train(cfg, data=TrainData(images)).history[-1]
    return last["images_per_s"], last["loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["fast", "blog-2017"])
    parser.add_argument("--n", type=int, default=12_000, help="training images per epoch (blog-2017: 12 steps)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="every run eager (no compilation)")
    args = parser.parse_args()
    keep_freed_memory()  # as the command line does

    print(cpu_info(), flush=True)
    images = synth_digits.generate(args.n, seed=0, split="train")[0]
    result: dict = {"cpu": cpu_info(), "threads": torch.get_num_threads(), "n": args.n,
                    "matmul_gflops": {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}}
    for preset in args.presets:
        cfg = get_preset(preset)
        data_dim = cfg.pca.components if cfg.model.input == "pca" else 32 * 32 * 3
        model = build_vae(cfg.model, data_dim=data_dim, image_shape=(32, 32, 3))
        shapes, batch = linear_shapes(model), cfg.train.batch_size
        by_default = cfg.train.compile != "off" and not args.no_compile  # what a full run of the preset does
        row = {"batch_size": batch, "gflop_per_image": training_gflop_per_image(shapes),
               "compiled_by_default": by_default}
        for precision in ("fp32", "bf16"):
            speed_loss = loop_run(preset, precision, images, args.epochs, compile=by_default)
            row[f"{precision}_images_per_s"], row[f"{precision}_loss"] = speed_loss
            row[f"ceiling_{precision}_images_per_s"] = linear_ceiling(shapes, batch, precision)
        ways = {by_default: (row["fp32_images_per_s"], row["fp32_loss"])}
        if not args.no_compile:
            ways[not by_default] = loop_run(preset, "fp32", images, args.epochs, compile=not by_default)
        row["eager_images_per_s"], row["eager_loss"] = ways[False]
        row["fp32_of_ceiling"] = row["fp32_images_per_s"] / row["ceiling_fp32_images_per_s"]
        row["eager_of_ceiling"] = row["eager_images_per_s"] / row["ceiling_fp32_images_per_s"]
        row["bf16_speedup"] = row["bf16_images_per_s"] / row["fp32_images_per_s"]
        row["bf16_loss_rel_diff"] = abs(row["bf16_loss"] - row["fp32_loss"]) / abs(row["fp32_loss"])
        if True in ways:
            row["compiled_images_per_s"], row["compiled_loss"] = ways[True]
            row["compile_speedup"] = row["compiled_images_per_s"] / row["eager_images_per_s"]
            row["compiled_loss_rel_diff"] = abs(row["compiled_loss"] - row["eager_loss"]) / abs(row["eager_loss"])
        result[preset] = {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}
        print(preset, result[preset], flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
