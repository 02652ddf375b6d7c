"""Training throughput (images/s of one epoch) of a preset on generated SVHN-like colour digits.

The images are ``synth-digits`` (32x32x3, SVHN's shape, generated on the machine), so no download
is needed; the pixel preset gets their grey 28x28 centres (MNIST's shape). PCA fitting happens before the timed epoch, as in real training. The figure is the
``images_per_s`` the training loop itself logs in ``metrics.jsonl``. Dequantized models make
their inputs afresh at every step (uniform noise on pixels, or its Gaussian in code space for a
PCA model: see svhn_vae.representation); that part is timed alone over one epoch's batches too
(``input_seconds_per_epoch``, and its share of the epoch).

Run:  .venv/bin/python bench/train_speed.py --preset fast [--n 73257] [--epochs 1] [--device auto]
Prints one JSON line at the end: preset, n, device, parameters, images_per_s, seconds_per_epoch,
input_seconds_per_epoch, input_fraction.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from svhn_vae.config import PRESETS, get_preset
from svhn_vae.data import synth_digits
from svhn_vae.representation import Representation
from svhn_vae.train import TrainData, train
from svhn_vae.models.vae import count_parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast", choices=list(PRESETS))
    parser.add_argument("--n", type=int, default=73_257, help="training images (SVHN train: 73,257)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    cfg = get_preset(args.preset)
    cfg = cfg.replace("train", epochs=args.epochs, device=args.device, early_stopping="none", sample_every=0)
    images = synth_digits.generate(args.n, seed=0, split="train")[0]
    if cfg.model.input == "pixels":  # the MNIST preset: same 28x28x1 shape as MNIST
        images = images[:, 2:30, 2:30].mean(axis=3, keepdims=True).round().astype(np.uint8)
    result = train(cfg, data=TrainData(images))
    last = result.history[-1]
    device = next(result.model.parameters()).device
    input_seconds = time_inputs(result.representation, images, batch_size=cfg.train.batch_size, device=device)
    print(json.dumps({"preset": args.preset, "n": args.n, "device": str(device),
                      "threads": torch.get_num_threads(), "parameters": count_parameters(result.model),
                      "images_per_s": round(last["images_per_s"], 1), "seconds_per_epoch": round(last["seconds"], 1),
                      "input_seconds_per_epoch": round(input_seconds, 2),
                      "input_fraction": round(input_seconds / last["seconds"], 3)}))


def time_inputs(rep: Representation, images: np.ndarray, *, batch_size: int, device: torch.device) -> float:
    """Seconds to make one epoch of model inputs from the stored rows, as the training loop does."""
    stored = rep.prepare(images, device=device)
    order = torch.randperm(len(stored), device=device)
    t0 = time.perf_counter()
    for start in range(0, len(stored), batch_size):
        rep.to_input(stored[order[start:start + batch_size]], noise=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
