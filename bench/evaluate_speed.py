"""Speed and memory of the pixel-space IWAE evaluation of a preset (``fast``: PCA 700), on 32x32x3 images.

Trains nothing: an untrained model costs the same per importance sample as a trained one (``--preset
discrete`` or ``hierarchical`` for the models of 8-bit values).
The PCA (if any) is fitted on generated ``synth-digits`` images (SVHN-shaped colour digits); the timed part
is :func:`svhn_vae.evaluate.likelihood_metrics` on ``--n`` synth-digits test images with ``--k``
importance samples (dequantization, projection, IWAE in chunks, pixel-space correction).

Run from the repository root::

    .venv/bin/python bench/evaluate_speed.py              # 10,000 images, K = 1000
    .venv/bin/python bench/evaluate_speed.py --n 1000     # a tenth, to estimate first
    .venv/bin/python bench/evaluate_speed.py --preset discrete --n 1000
    .venv/bin/python bench/evaluate_speed.py --preset discrete --n 40 --k 100 --compile   # torch.compile'd weights

Prints the wall time, the process CPU time (on a machine shared with other jobs, cpu_seconds /
threads estimates the wall time the machine would take alone) and the peak resident memory, then
ONE JSON line at the end, with ``seconds_per_10000_images`` (this run's time scaled to 10,000
images: the work is the same for every batch, so a run on ``--n 1000`` estimates it). Timed in
the same process, before and after, is the **ceiling**: the Linear and Conv2d layers that the
evaluation of one batch runs (recorded with hooks: the encoder, the decoder on every importance
sample, the pixels' per-pixel layers and masked convolutions), alone, forward, on random inputs of
the same shapes, times the number of batches; ``share_of_ceiling`` = ceiling seconds / evaluation
seconds.
The machines this project runs on vary in speed from run to run and between kinds, so that share
is the figure to compare; ``seconds`` is this run's.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import time

import torch

from layer_ceiling import ceiling_seconds, forward_flops, layer_runs
from svhn_vae.allocator import keep_freed_memory
from svhn_vae.checkpoint import TrainedModel
from svhn_vae.data import synth_digits
from svhn_vae.config import get_preset
from svhn_vae.evaluate import EvalOptions, likelihood_metrics
from svhn_vae.representation import Representation
from svhn_vae.train import build_model, resolve_device

def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_args() -> argparse.Namespace:
    d = EvalOptions()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast", help="preset whose (untrained) model is scored")
    parser.add_argument("--n", type=int, default=10000, help="test images")
    parser.add_argument("--k", type=int, default=1000, help="importance samples")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="images per chunk")
    parser.add_argument("--sample-chunk", type=int, default=d.sample_chunk, help="importance samples per chunk")
    parser.add_argument("--train-images", type=int, default=2000, help="synth-digits images the PCA is fitted on")
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'auto'")
    parser.add_argument("--compile", action="store_true",
                        help="importance weights through torch.compile (compiled on one batch before the timing)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    keep_freed_memory()  # as the command line does

    # --- setup: the preset's PCA (if any) and an untrained model ---------------------------------------
    device = resolve_device(args.device)
    cfg = get_preset(args.preset)
    rep = Representation.fit(cfg, [synth_digits.generate(args.train_images, seed=0, split="train")[0]])
    torch.manual_seed(0)
    trained = TrainedModel(cfg, build_model(cfg, rep).to(device).eval(), rep, None, 0)
    test_images = synth_digits.generate(args.n, seed=0, split="test")[0]
    rss_before = peak_rss_mb()

    # the ceiling: the Linear and Conv2d calls of one batch's evaluation, timed alone, times the batches
    batches = -(-args.n // args.batch_size)
    with layer_runs(trained.model) as runs:
        likelihood_metrics(trained, test_images[:args.batch_size], importance_samples=args.k, seed=0,
                           batch_size=args.batch_size, sample_chunk=args.sample_chunk, device=device)
    ceiling_before = ceiling_seconds(runs, backward=False) * batches

    score = functools.partial(likelihood_metrics, trained, importance_samples=args.k, seed=0,
                              batch_size=args.batch_size, sample_chunk=args.sample_chunk, device=device,
                              compile="on" if args.compile else "off")
    compile_seconds = 0.0
    if args.compile:  # compiled once, outside the timing (an evaluation of 10,000 images pays it once)
        t0 = time.perf_counter()
        score(test_images[:args.batch_size])
        compile_seconds = time.perf_counter() - t0

    # --- timed: the pixel-space likelihood ----------------------------------------------------------
    t0, cpu0 = time.perf_counter(), time.process_time()
    out = score(test_images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    ceiling = (ceiling_before + ceiling_seconds(runs, backward=False) * batches) / 2

    result = {"bench": "evaluate_speed", "preset": args.preset, "data_dim": rep.data_dim, "n": args.n,
              "importance_samples": args.k, "batch_size": args.batch_size, "sample_chunk": args.sample_chunk,
              "device": str(device), "threads": torch.get_num_threads(), "compile": args.compile,
              "compile_seconds": round(compile_seconds, 1), "seconds": round(seconds, 2),
              "cpu_seconds": round(cpu_seconds, 2),
              "images_per_s": round(args.n / seconds, 2), "seconds_per_10000_images": round(seconds * 10000 / args.n, 1),
              "ceiling_seconds": round(ceiling, 2), "gflop_per_image": round(forward_flops(runs) / args.batch_size / 1e9, 3),
              "share_of_ceiling": round(ceiling / seconds, 3), "peak_rss_mb_before": round(rss_before, 1),
              "peak_rss_mb": round(peak_rss_mb(), 1), "bpd_iwae_untrained": round(out["bpd_iwae"], 4)}
    if device.type == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(f"{args.n} images x {args.k} importance samples in {seconds:.1f} s "
          f"({args.n / seconds:.1f} img/s; its Linear and Conv2d layers alone: {ceiling:.1f} s), "
          f"peak RSS {result['peak_rss_mb']:.0f} MiB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
