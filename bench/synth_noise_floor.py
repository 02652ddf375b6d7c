"""The noise floor of ``synth-digits``: the bits/dim its own sensor noise and JPEG step leave.

Each generated image is a clean image (digit, colours, texture, blur) plus uniform sensor noise of
a random strength, then JPEG at a random quality, then rounding to 8 bits
(:class:`svhn_vae.data.synth_digits.ChunkDraws`). Here the clean images, noise strengths and JPEG
qualities of ``--chunks`` chunks of the test split are kept and only the sensor noise is drawn
again, ``--redraws`` times. For every subpixel the entropy of its 8-bit value over the redraws
(plug-in, with the Miller-Madow correction for the unseen values) is what the noise leaves given
everything else about the image; its mean over subpixels, in bits, is printed:

* ``noise_floor_bpd``: after JPEG, as the dataset has it. Summing subpixels' own entropies counts
  noise that JPEG spreads over an 8x8 block more than once, so this is an estimate from above of the
  conditional entropy H(image | clean image, strength, quality) / D, itself a lower bound on the
  bits/dim of any model (which does not know the clean image exactly either);
* ``before_jpeg_bpd``: the same for the rounded noisy image before JPEG (independent subpixels, so
  there the sum is exact up to the estimator's bias).

Run:  .venv/bin/python bench/synth_noise_floor.py [--chunks 2] [--redraws 200]
Prints one JSON line at the end: {noise_floor_bpd, before_jpeg_bpd, images, redraws, seconds}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import numpy as np
import torch

from svhn_vae.data.synth_digits import CHUNK, DEFAULT_SEED, ChunkDraws, chunk_draws


def subpixel_entropy_bits(values: np.ndarray) -> np.ndarray:
    """Per-subpixel entropy in bits of uint8 ``values`` (R, ...) over their first axis: plug-in plus
    Miller-Madow's (m - 1) / (2 R ln 2), m the number of distinct values seen."""
    r = len(values)
    flat = values.reshape(r, -1).astype(np.int64)
    counts = np.zeros((flat.shape[1], 256), dtype=np.int64)
    np.add.at(counts, (np.broadcast_to(np.arange(flat.shape[1]), flat.shape), flat), 1)
    p = counts / r
    with np.errstate(divide="ignore", invalid="ignore"):
        plug_in = -np.where(p > 0, p * np.log2(p), 0.0).sum(1)
    return plug_in + ((counts > 0).sum(1) - 1) / (2 * r * math.log(2))


def redraw(draws: ChunkDraws, generator: torch.Generator, *, jpeg: bool) -> np.ndarray:
    """The chunk again with fresh sensor noise: uint8 (n, 32, 32, 3), with or without the JPEG step."""
    fresh = torch.rand(draws.noise.shape, generator=generator)
    return dataclasses.replace(draws, noise=fresh).render(compress=jpeg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2, help=f"chunks of {CHUNK} test images")
    parser.add_argument("--redraws", type=int, default=200, help="fresh noise draws per image")
    args = parser.parse_args()
    t0 = time.perf_counter()
    floors = {True: [], False: []}
    for index in range(args.chunks):
        draws = chunk_draws(CHUNK, seed=DEFAULT_SEED, split="test", index=index)
        for jpeg in (True, False):
            gen = torch.Generator().manual_seed(index)
            stack = np.stack([redraw(draws, gen, jpeg=jpeg) for _ in range(args.redraws)])
            floors[jpeg].append(subpixel_entropy_bits(stack).mean())
    result = {"noise_floor_bpd": float(np.mean(floors[True])), "before_jpeg_bpd": float(np.mean(floors[False])),
              "images": args.chunks * CHUNK, "redraws": args.redraws, "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
