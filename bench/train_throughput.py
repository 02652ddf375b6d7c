"""Training throughput against the hardware: images/s of the real training loop, fp32 and bf16.

For each preset (``fast``, ``blog-2017``; the pixel presets ``discrete`` and ``hierarchical`` too)
and precision (``fp32``, ``bf16``) a run of the project's own ``train()`` on generated
``synth-digits`` images (SVHN's shape), compiled or not as the preset trains a full run (``fast``'s
``compile = "auto"`` compiles runs of 10,000 steps and more; the bench's are shorter, so it asks for
what a full run gets); the figure is the last epoch's ``images_per_s`` from the loop's own record
(the first epoch compiles and warms caches up). Timed in the same process, for the same preset and
batch size:

* ``gflop_per_image``: the training FLOPs of one image, counted from the Linear and Conv2d layers
  that a training forward pass runs, on the inputs they are given (forward hooks: the per-pixel
  layers of the pixels' context count once per pixel, the masked convolutions once per image;
  forward 2 FLOPs per multiply-add, backward twice the forward);
* the **ceiling**: those layers alone, each on a random input of the shape it was given, forward
  and backward, without BatchNorm, ReLU, Dropout, loss or optimizer, images/s (in fp32 and under
  bf16 autocast);
* for a model with convolutions, their ceiling alone and how much faster it is with weights and
  inputs in ``channels_last`` memory format (``conv_channels_last_speedup``: above 1 it would pay);
* the matrix-product rate of the machine (a 2048 x 2048 by batch x 2048 product, GFLOP/s);
* the fp32 loop the other way (eager where the preset compiles, compiled where it does not).

and the ratios that matter: fp32 loop / fp32 ceiling (``fp32_of_ceiling``, and the eager loop's,
``eager_of_ceiling``), bf16 loop / fp32 loop, the compiled fp32 loop / the eager one; and how far
the bf16 and the compiled runs' losses after the same steps (same seed, same data) are from the
fp32 and the eager one's. The CPU's model name and the instruction sets that matter here (AVX2,
AVX-512, its BF16 and VNNI parts, AMX) head the result, so figures of different machines (AMD
EPYC, Intel Xeon with AMX) are never mixed up.

Run:  .venv/bin/python bench/train_throughput.py [--presets fast blog-2017] [--n 12000] [--epochs 2] [--no-compile]
      [--model FIELD=VALUE ...]
(``--no-compile``: every run eager, no compiled one; ``--model architecture=conv residual_blocks=1``:
the presets with that change to their model, here `discrete`'s convolutional form.) Prints one JSON line at the end: {cpu: {model,
isa, torch_capability}, threads, n, matmul_gflops: {fp32, bf16}, preset: {batch_size, gflop_per_image,
compiled_by_default, fp32_images_per_s, fp32_loss, bf16_images_per_s, bf16_loss, ceiling_fp32_images_per_s,
ceiling_bf16_images_per_s, [conv_ceiling_images_per_s, conv_channels_last_speedup,]
eager_images_per_s, eager_loss, compiled_images_per_s, compiled_loss,
fp32_of_ceiling, eager_of_ceiling, bf16_speedup, bf16_loss_rel_diff, compile_speedup,
compiled_loss_rel_diff}}.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from torch import nn

from layer_ceiling import ceiling_seconds, forward_flops, layer_runs, timed
from svhn_vae.allocator import keep_freed_memory
from svhn_vae.config import Config, get_preset
from svhn_vae.data import synth_digits
from svhn_vae.representation import Representation
from svhn_vae.train import TrainData, build_model, train


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


def matmul_gflops(dtype: torch.dtype, size: int = 2048, batch: int = 1000) -> float:
    a, b = torch.randn(batch, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return 2 * batch * size * size * timed(lambda: a @ b, seconds=2.0) / 1e9


def preset_config(preset: str, model_changes: list[str]) -> Config:
    """The preset with ``model_changes`` (``field=value`` of its model section) applied."""
    changes = {k: json.loads(v) if v[:1] in "0123456789-[" else v for k, v in (c.split("=", 1) for c in model_changes)}
    return get_preset(preset).replace("model", **changes)


def loop_run(cfg: Config, precision: str, images, epochs: int, *, compile: bool) -> tuple[float, float]:
    """The last epoch's images/s and training loss (nats per example) of the real training loop,
    through torch.compile or eager."""
    cfg = cfg.replace("train", epochs=epochs, precision=precision, device="cpu", sample_every=0,
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
    parser.add_argument("--model", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="changes to every preset's model section, e.g. architecture=conv residual_blocks=1")
    args = parser.parse_args()
    keep_freed_memory()  # as the command line does

    print(cpu_info(), flush=True)
    images = synth_digits.generate(args.n, seed=0, split="train")[0]
    result: dict = {"cpu": cpu_info(), "threads": torch.get_num_threads(), "n": args.n,
                    "matmul_gflops": {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}}
    for preset in args.presets:
        cfg = preset_config(preset, args.model)
        batch = cfg.train.batch_size
        rep = Representation.fit(cfg, [images])
        model = build_model(cfg, rep).train()
        with layer_runs(model) as runs:
            model(rep.encode(images[:batch]))
        by_default = cfg.train.compile != "off" and not args.no_compile  # what a full run of the preset does
        row = {"batch_size": batch, "gflop_per_image": 3 * forward_flops(runs) / batch / 1e9,
               "compiled_by_default": by_default}
        convs = [(layer, shape) for layer, shape in runs if isinstance(layer, nn.Conv2d)]
        if convs:  # does channels_last pay for its convolutions? (their ceiling, both memory formats)
            row["conv_ceiling_images_per_s"] = batch / ceiling_seconds(convs)
            row["conv_channels_last_speedup"] = ceiling_seconds(convs) / ceiling_seconds(convs, channels_last=True)
        for precision in ("fp32", "bf16"):
            speed_loss = loop_run(cfg, precision, images, args.epochs, compile=by_default)
            row[f"{precision}_images_per_s"], row[f"{precision}_loss"] = speed_loss
            row[f"ceiling_{precision}_images_per_s"] = batch / ceiling_seconds(runs, precision=precision)
        ways = {by_default: (row["fp32_images_per_s"], row["fp32_loss"])}
        if not args.no_compile:
            ways[not by_default] = loop_run(cfg, "fp32", images, args.epochs, compile=not by_default)
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
