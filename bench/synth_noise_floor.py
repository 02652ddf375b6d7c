"""The noise floor of ``synth-digits``: the bits/dim its own sensor noise and JPEG step leave.

Each generated image is a clean image (digit, colours, texture, blur) plus uniform sensor noise of
a random strength, then JPEG at a random quality, then rounding to 8 bits
(:class:`svhn_vae.data.synth_digits.ChunkDraws`). No model knows the clean image, so none can score
below H(image | clean image, strength, quality) / D, the entropy the noise leaves; this script
brackets that floor for the images of ``--chunks`` chunks of the test split.

The image is a function of the integers JPEG stores, the quantised DCT coefficients q (1,536 of
them: 16 luma blocks and 4 blocks of each chroma plane), and the coefficients are a function of the
image (re-encoding it at the same quality gives them back: ``recovered``), so H(image | clean) =
H(q | clean). Each coefficient is its clean value plus a weighted sum of 192 (luma) or 768 (chroma)
uniform noise draws, rounded after the division by its quantisation step: with that sum taken as Gaussian (its
covariance is exact), each coefficient's entropy H(q_k) has a closed form. Then

* ``floor_upper_bpd`` = sum_k H(q_k) / D: the joint entropy is at most the sum;
* ``floor_lower_bpd`` = (sum_k H(q_k) - TC) / D, where TC is the total correlation of the
  coefficients' Gaussian noise, -0.5 log2 det of its correlation matrix (luma and chroma share the
  noise of the same pixels): quantising each coefficient on its own cannot raise the total
  correlation, so the joint entropy is at least this.

Checks of the closed form, from ``--redraws`` fresh sensor noises of each clean image (plug-in
entropies with the Miller-Madow correction):

* ``coefficient_sum_redrawn_bpd``: the sum of the coefficients' entropies over the redraws (with the
  noise's real uniform shape and the clipping to [0, 1] before JPEG) against ``floor_upper_bpd``;
* ``subpixel_sum_bpd``: the same over the 8-bit subpixels after JPEG, which counts noise that JPEG
  spreads over a block many times over (a far looser upper estimate), and ``before_jpeg_bpd``:
  over the rounded noisy subpixels before JPEG (independent, so there the sum is exact).

Run:  .venv/bin/python bench/synth_noise_floor.py [--chunks 2] [--redraws 200]
Prints one JSON line at the end: {floor_lower_bpd, floor_upper_bpd, coefficient_sum_redrawn_bpd,
subpixel_sum_bpd, before_jpeg_bpd, total_correlation_bits, recovered, images, redraws, seconds}.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import time

import numpy as np
import torch

from svhn_vae.data.jpeg import jpeg_coefficients, quantisation_tables
from svhn_vae.data.synth_digits import CHUNK, DEFAULT_SEED, ChunkDraws, chunk_draws

DIMS = 32 * 32 * 3


def entropy_bits(values: np.ndarray) -> np.ndarray:
    """Entropy in bits of each column of integer ``values`` (R, ...) over its first axis: plug-in plus
    Miller-Madow's (m - 1) / (2 R ln 2), m the number of distinct values seen."""
    r = len(values)
    ordered = np.sort(values.reshape(r, -1), axis=0)
    starts = np.vstack([np.ones((1, ordered.shape[1]), bool), np.diff(ordered, axis=0) != 0])
    run = np.cumsum(starts, axis=0) - 1  # which distinct value each row is, per column
    columns = np.broadcast_to(np.arange(ordered.shape[1]), ordered.shape)
    counts = np.zeros((ordered.shape[1], r), dtype=np.int64)
    np.add.at(counts, (columns, run), 1)
    p = counts / r
    with np.errstate(divide="ignore", invalid="ignore"):
        plug_in = -np.where(p > 0, p * np.log2(p), 0.0).sum(1)
    return plug_in + ((counts > 0).sum(1) - 1) / (2 * r * math.log(2))


def coefficients(images: torch.Tensor, quality: torch.Tensor, *, rounded: bool = True) -> torch.Tensor:
    """(n, 1536) the quantised DCT coefficients of float images (n, 3, 32, 32), luma then chroma."""
    luma, chroma = jpeg_coefficients(images, quality, rounded=rounded)
    return torch.cat([luma.flatten(1), chroma.flatten(1)], 1)


def steps(quality: torch.Tensor) -> torch.Tensor:
    """(n, 1536) the quantisation step of each coefficient, in the order of :func:`coefficients`."""
    luma_q, chroma_q = quantisation_tables(quality)
    return torch.cat([luma_q.flatten(1).repeat(1, 16), chroma_q.flatten(1).repeat(1, 8)], 1)


@functools.lru_cache(maxsize=1)
def noise_covariance() -> torch.Tensor:
    """(1536, 1536) float64 covariance of the coefficients before division by their steps, per unit
    variance of independent noise in each subpixel of a [0, 1] image: J J^T for the Jacobian J."""
    quality = torch.full((DIMS,), 50.0)  # the standard tables unscaled; multiplied back below
    basis = torch.eye(DIMS).view(DIMS, 3, 32, 32)
    jacobian = (coefficients(basis, quality, rounded=False) - coefficients(torch.zeros(1, 3, 32, 32), quality[:1],
                                                                           rounded=False)) * steps(quality[:1])
    return jacobian.double().T @ jacobian.double()


def total_correlation_bits(covariance: torch.Tensor) -> float:
    """-0.5 log2 det of the correlation matrix: the total correlation of a Gaussian, in bits."""
    sd = covariance.diagonal().sqrt()
    return float(-0.5 * torch.linalg.slogdet(covariance / sd[:, None] / sd[None, :]).logabsdet / math.log(2))


def quantised_gaussian_entropy_bits(mean: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of round(mean + N(0, sd^2)), elementwise (float64)."""
    width = int(math.ceil(8 * float(sd.max()))) + 2
    bins = torch.round(mean)[..., None] + torch.arange(-width, width + 1, dtype=torch.float64)
    scale = sd.clamp_min(1e-12)[..., None]
    normal = torch.distributions.Normal(0.0, 1.0)
    p = normal.cdf((bins + 0.5 - mean[..., None]) / scale) - normal.cdf((bins - 0.5 - mean[..., None]) / scale)
    return -(p * torch.log2(p.clamp_min(1e-300))).sum(-1)


def redraw(draws: ChunkDraws, generator: torch.Generator) -> ChunkDraws:
    """The chunk again with fresh sensor noise."""
    return dataclasses.replace(draws, noise=torch.rand(draws.noise.shape, generator=generator))


def noisy(draws: ChunkDraws) -> torch.Tensor:
    """(n, 3, 32, 32) the clean images plus their sensor noise, clipped, before JPEG."""
    return (draws.clean + draws.strength * (draws.noise - 0.5)).clamp(0, 1)


def chunk_figures(draws: ChunkDraws, redraws: int, generator: torch.Generator) -> dict[str, np.ndarray]:
    """Per image of one chunk: the closed-form sum of coefficient entropies, the redrawn sums (of
    coefficients, of subpixels after and before JPEG), in bits, and whether the coefficients came back."""
    q = steps(draws.quality).double()
    sd = (draws.strength.flatten() / math.sqrt(12)).double()[:, None] * noise_covariance().diagonal().sqrt() / q
    mean = coefficients(draws.clean, draws.quality, rounded=False).double()
    closed_form = quantised_gaussian_entropy_bits(mean, sd).sum(1)
    coefs, after, before, recovered = [], [], [], []
    for _ in range(redraws):
        again = redraw(draws, generator)
        before_jpeg = noisy(again)
        stored = coefficients(before_jpeg, draws.quality)
        image = again.render()
        coefs.append(stored.to(torch.int32).numpy())
        after.append(image)
        before.append((before_jpeg * 255).round().to(torch.uint8).numpy())
        decoded = torch.from_numpy(image).permute(0, 3, 1, 2).float() / 255
        recovered.append(float((coefficients(decoded, draws.quality) == stored).double().mean()))
    n = len(draws.quality)
    per_image = {name: entropy_bits(np.stack(stack)).reshape(n, -1).sum(1)
                 for name, stack in (("coefficients", coefs), ("after", after), ("before", before))}
    return {"closed_form": closed_form.numpy(), **per_image, "recovered": np.array(recovered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2, help=f"chunks of {CHUNK} test images")
    parser.add_argument("--redraws", type=int, default=200, help="fresh noise draws per image")
    args = parser.parse_args()
    t0 = time.perf_counter()
    tc = total_correlation_bits(noise_covariance())
    figures = [chunk_figures(chunk_draws(CHUNK, seed=DEFAULT_SEED, split="test", index=index), args.redraws,
                             torch.Generator().manual_seed(index)) for index in range(args.chunks)]
    joined = {key: np.concatenate([f[key] for f in figures]) for key in figures[0]}
    lower = np.maximum(joined["closed_form"] - tc, 0.0)  # an entropy is never negative
    result = {"floor_lower_bpd": float(lower.mean() / DIMS),
              "floor_upper_bpd": float(joined["closed_form"].mean() / DIMS),
              "coefficient_sum_redrawn_bpd": float(joined["coefficients"].mean() / DIMS),
              "subpixel_sum_bpd": float(joined["after"].mean() / DIMS),
              "before_jpeg_bpd": float(joined["before"].mean() / DIMS), "total_correlation_bits": round(tc, 2),
              "recovered": float(joined["recovered"].mean()), "images": args.chunks * CHUNK,
              "redraws": args.redraws, "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
