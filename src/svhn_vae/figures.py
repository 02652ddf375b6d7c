"""Figures as arrays: sample grids, posterior "analogies", reconstructions, interpolations, loss curves.

Every function returns a uint8 image (H, W, C), C = 3 for RGB data and C = 1 for grayscale, and
leaves saving to :func:`save_png`, which writes byte-identical files for identical arrays. All
randomness comes from the ``generator`` argument, so a seed gives the same figure every time.

Grid size: a grid of r rows and c columns of h x w tiles, upscaled s times (nearest neighbour)
and separated by lines of p pixels (also around the border), is::

    height = r * h * s + (r + 1) * p        width = c * w * s + (c + 1) * p

e.g. 10 x 10 MNIST samples (28 x 28) at s = 2, p = 2: 582 x 582 pixels.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from svhn_vae.atomic import atomic_write
from svhn_vae.config import AUTO_DECODE, DISCRETE_LIKELIHOODS
from svhn_vae.errors import UserError
from svhn_vae.models.m2 import has_label_latent
from svhn_vae.models.vae import VAE, reparameterize
from svhn_vae.representation import Representation

MODES = (AUTO_DECODE, "mean", "mode", "sample")
METHODS = ("slerp", "linear")
SEPARATOR = 255  # white lines between tiles: visible on MNIST's black and on most SVHN colours
N_DIGITS = 10


# --- arrays and files ----------------------------------------------------------------------------


def to_uint8(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 copy of float images in [0, 1] (any shape); uint8 input is returned unchanged."""
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.dtype == np.uint8:
        return array
    return np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def tile(images: np.ndarray | torch.Tensor, *, cols: int, scale: int = 2, pad: int = 2) -> np.ndarray:
    """Lay out images (N, H, W, C) row by row in a grid of ``cols`` columns; returns uint8 (H', W', C).

    Rows r = ceil(N / cols); empty cells and the p = ``pad`` pixel lines between tiles and around
    the border are white. Each tile is upscaled ``scale`` = s times by pixel repetition, so
    H' = r * H * s + (r + 1) * p and W' = cols * W * s + (cols + 1) * p.
    """
    pixels = to_uint8(images)
    n, h, w, c = pixels.shape
    rows, hs, ws = math.ceil(n / cols), h * scale, w * scale
    big = pixels.repeat(scale, axis=1).repeat(scale, axis=2)  # (N, hs, ws, C)
    grid = np.full((rows * hs + (rows + 1) * pad, cols * ws + (cols + 1) * pad, c), SEPARATOR, np.uint8)
    for i in range(n):
        top, left = pad + (i // cols) * (hs + pad), pad + (i % cols) * (ws + pad)
        grid[top:top + hs, left:left + ws] = big[i]
    return grid


def png_bytes(image: np.ndarray) -> bytes:
    """PNG of a uint8 image (H, W, 3) or (H, W, 1)/(H, W) (grayscale), without metadata or timestamps."""
    array = np.ascontiguousarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write ``image`` (see :func:`png_bytes`) atomically to ``path``, creating its folder; returns the path."""
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_bytes(png_bytes(image))
    return path


# --- decoding ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _evaluating(model: VAE) -> Iterator[None]:
    """Eval mode and no gradients, restoring the previous mode (training calls us between epochs)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _device(model: VAE) -> torch.device:
    return next(model.parameters()).device


def point_decode(likelihood: str, decode: str = AUTO_DECODE) -> str:
    """The decode of ``decode`` for a model of ``likelihood``: 'auto' is the mode for the discrete
    likelihoods (an 8-bit image the model gives its highest probability; their mean is a blend of
    mixture components no image has) and the mean for the others."""
    if decode != AUTO_DECODE:
        return decode
    return "mode" if likelihood in DISCRETE_LIKELIHOODS else "mean"


def decode_images(model: VAE, representation: Representation, z: torch.Tensor, *, mode: str = AUTO_DECODE,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Float images (B, H, W, C) in [0, 1] for latents z (B, L).

    ``mode`` 'mean' shows the mean of p(x|z), 'mode' its most probable value (greedy for pixels that
    depend on each other), 'sample' a draw from it, 'auto' the one of :func:`point_decode`; each is
    mapped back to pixels through the inverse PCA (for PCA models) and clipped to [0, 1].
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    mode = point_decode(model.cfg.likelihood, mode)
    with _evaluating(model):
        dist = model.decode(z)
        x = dist.sample(generator=generator) if mode == "sample" else getattr(dist, mode)()
        return representation.decode(x)


def _posterior(model: VAE, representation: Representation, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and log-variance (B, L) of q(z|x) for uint8 images (B, H, W, C)."""
    with _evaluating(model):
        return model.encode(representation.encode(images, device=_device(model)))


def _as_float(images: np.ndarray) -> torch.Tensor:
    """uint8 images (B, H, W, C) as floats in [0, 1]."""
    return torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0)


# --- choosing test images -----------------------------------------------------------------------


def choose(n: int, total: int, *, generator: torch.Generator | None = None) -> np.ndarray:
    """``min(n, total)`` distinct indices into ``total`` items, in a seeded random order."""
    device = generator.device if generator is not None else "cpu"
    return torch.randperm(total, generator=generator, device=device)[:n].cpu().numpy()


def pick_per_digit(labels: np.ndarray | None, *, n: int | None = None,
                   generator: torch.Generator | None = None) -> dict[int, int]:
    """{digit: index} of one randomly chosen example of each digit 0..9 present in ``labels`` (N,);
    without labels (unlabelled own images), {row: index} of 10 random ones of ``n`` examples."""
    if labels is None:
        return dict(enumerate(int(i) for i in choose(N_DIGITS, n, generator=generator)))
    order = choose(len(labels), len(labels), generator=generator)
    shuffled = np.asarray(labels)[order]
    return {d: int(order[np.argmax(shuffled == d)]) for d in range(N_DIGITS) if (shuffled == d).any()}


def most_diverse(images: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (k,) of ``k`` of the images (P, ...) that are far apart (greedy farthest-point selection).

    Starts from the image farthest from the pool's mean, then repeatedly adds the image whose
    Euclidean distance to the nearest one already chosen is largest. Deterministic.
    """
    flat = images.flatten(1).double()
    dist = torch.cdist(flat, flat)  # (P, P)
    chosen = [int((flat - flat.mean(0)).norm(dim=1).argmax())]
    nearest = dist[chosen[0]].clone()
    while len(chosen) < min(k, len(flat)):
        chosen.append(int(nearest.argmax()))
        nearest = torch.minimum(nearest, dist[chosen[-1]])
    return torch.tensor(chosen)


# --- figures -------------------------------------------------------------------------------------


def sample_grid(model: VAE, representation: Representation, *, n: int = 100, temperature: float = 1.0,
                mode: str = AUTO_DECODE, generator: torch.Generator | None = None, scale: int = 2,
                pad: int = 2) -> np.ndarray:
    """Grid of ``n`` images decoded (:func:`decode_images`) from prior draws of z, ceil(sqrt(n)) per row.

    Returns uint8 (H', W', C) with the size given by :func:`tile` (n = 100: a 10 x 10 grid).
    """
    z = model.sample_latents(n, temperature=temperature, generator=generator)
    images = decode_images(model, representation, z, mode=mode, generator=generator)
    return tile(images, cols=math.ceil(math.sqrt(n)), scale=scale, pad=pad)


def label_styles(model: VAE, representation: Representation, images: np.ndarray | None = None, *,
                 prior_rows: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Styles z (prior_rows + N, latent_dim) of a model with a label latent (M2): ``prior_rows``
    draws from N(0, I), then the posterior means of q(z | x, y_hat) of uint8 ``images`` (N, H, W, C)."""
    prior = model.sample_latents(prior_rows, generator=generator)[:, :model.cfg.latent_dim]
    if images is None or not len(images):
        return prior
    return torch.cat([prior, _posterior(model, representation, images)[0][:, :model.cfg.latent_dim]])


def style_content_images(model: VAE, representation: Representation, styles: torch.Tensor) -> torch.Tensor:
    """Float images (R * C, H, W, C') in [0, 1], row-major: every style z (R, latent_dim) decoded with
    each label y = 0..C-1 (the decoder's mean)."""
    z = styles.repeat_interleave(model.classes, dim=0)
    y = torch.arange(model.classes, device=styles.device).repeat(len(styles))
    return decode_images(model, representation, model.with_labels(z, y))


def style_content_grid(model: VAE, representation: Representation, images: np.ndarray, *, prior_rows: int = 5,
                       generator: torch.Generator | None = None, scale: int = 2, pad: int = 2) -> np.ndarray:
    """Kingma et al. 2014's figure 1 for a model with a label latent: each row one style z (the first
    ``prior_rows`` from the prior, then one per test image in ``images``, its posterior mean),
    columns the labels 0..C-1. Returns uint8 with the size given by :func:`tile`."""
    if not has_label_latent(model):
        raise UserError("this model has no label latent; the style/content grid needs an M2 run (--preset m2)")
    styles = label_styles(model, representation, images, prior_rows=prior_rows, generator=generator)
    return tile(style_content_images(model, representation, styles), cols=model.classes, scale=scale, pad=pad)


def analogy_grid(model: VAE, representation: Representation, images: np.ndarray, labels: np.ndarray, *,
                 n_samples: int = 9, pool: int = 0, reconstruction: bool = False,
                 generator: torch.Generator | None = None, scale: int = 2, pad: int = 2) -> np.ndarray:
    """The write-up's figure: per digit one test image, then decodes of z ~ q(z|x) in its row.

    Rows are the digits 0..9 present in ``labels`` (N,), in order (None: 10 random images); the example is picked from
    ``images`` (N, H, W, C) uint8 with ``generator``. Each row holds the original, optionally the
    plain reconstruction (decoded posterior mean), then ``n_samples`` decodes (means of p(x|z)).
    With ``pool`` > n_samples, that many posterior draws are made and the most diverse
    ``n_samples`` kept (:func:`most_diverse`). Returns uint8 with the size given by :func:`tile`.
    """
    picked = pick_per_digit(labels, n=len(images), generator=generator)
    rows = [_analogy_row(model, representation, images[i:i + 1], n_samples=n_samples, pool=pool,
                         reconstruction=reconstruction, generator=generator) for i in picked.values()]
    return tile(torch.cat(rows), cols=len(rows[0]), scale=scale, pad=pad)


def _analogy_row(model: VAE, representation: Representation, image: np.ndarray, *, n_samples: int, pool: int,
                 reconstruction: bool, generator: torch.Generator | None) -> torch.Tensor:
    """One row (1 + reconstruction + n_samples, H, W, C) of :func:`analogy_grid` for one image (1, H, W, C)."""
    mu, logvar = _posterior(model, representation, image)
    z = reparameterize(mu[0], logvar[0], generator=generator, n=max(pool, n_samples))  # (P, L)
    draws = decode_images(model, representation, z).cpu()
    draws = draws[most_diverse(draws, n_samples)] if pool > n_samples else draws
    parts = [_as_float(image)]
    if reconstruction:
        parts.append(decode_images(model, representation, mu).cpu())
    return torch.cat([*parts, draws])


@dataclass
class Reconstructions:
    """A reconstruction figure and the per-image errors it shows."""

    image: np.ndarray
    """uint8 (H', W', C) grid: one column per test image; rows original, [PCA only,] VAE."""
    indices: np.ndarray
    """(n,) indices of the test images shown, left to right."""
    errors: dict[str, np.ndarray]
    """Mean squared error per image (n,) against the original, pixels in [0, 1]: 'vae', and 'pca' for PCA models."""


def reconstruction_grid(model: VAE, representation: Representation, images: np.ndarray, *, n: int = 10,
                        generator: torch.Generator | None = None, scale: int = 2, pad: int = 2) -> Reconstructions:
    """Originals above their reconstructions (decoded posterior mean) for ``n`` seeded test images.

    For PCA models a middle row shows the PCA-only reconstruction, so the loss due to PCA and
    the loss due to the VAE can be seen apart.
    """
    idx = np.sort(choose(n, len(images), generator=generator))
    originals = np.asarray(images[idx])
    mu, _ = _posterior(model, representation, originals)
    rows = {"original": _as_float(originals)}
    if representation.pca is not None:
        rows["pca"] = representation.project(originals).cpu()
    rows["vae"] = decode_images(model, representation, mu).cpu()
    errors = {k: (v - rows["original"]).pow(2).flatten(1).mean(1).numpy() for k, v in rows.items() if k != "original"}
    return Reconstructions(tile(torch.cat(list(rows.values())), cols=len(idx), scale=scale, pad=pad), idx, errors)


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (B, T, L) between z0 and z1 (B, L) at fractions t (T,) in [0, 1].

    Angles are measured between the vectors as they are (not normalised); nearly parallel pairs
    fall back to linear interpolation.
    """
    cos = torch.nn.functional.cosine_similarity(z0, z1, dim=-1).clamp(-1.0, 1.0)[:, None, None]  # (B, 1, 1)
    omega, t = torch.acos(cos), t[None, :, None]
    sin = torch.sin(omega)
    safe = sin.abs() > 1e-6
    w0 = torch.where(safe, torch.sin((1 - t) * omega) / torch.where(safe, sin, 1.0), 1 - t)
    w1 = torch.where(safe, torch.sin(t * omega) / torch.where(safe, sin, 1.0), t)
    return w0 * z0[:, None] + w1 * z1[:, None]


def lerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation (B, T, L) between z0 and z1 (B, L) at fractions t (T,)."""
    t = t[None, :, None]
    return (1 - t) * z0[:, None] + t * z1[:, None]


def interpolation_grid(model: VAE, representation: Representation, images: np.ndarray, *, pairs: int = 5,
                       steps: int = 8, method: str = "slerp", generator: torch.Generator | None = None,
                       scale: int = 2, pad: int = 2) -> np.ndarray:
    """Rows of latent interpolations between pairs of seeded test images (N, H, W, C) uint8.

    Each row: image A, ``steps`` decodes of z(t) for t = 0..1 between the posterior means of A
    and B (spherical or linear), image B. Returns uint8 with the size given by :func:`tile`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    pairs = min(pairs, len(images) // 2)
    idx = choose(2 * pairs, len(images), generator=generator)
    a, b = np.asarray(images[idx[:pairs]]), np.asarray(images[idx[pairs:]])
    (mu_a, _), (mu_b, _) = _posterior(model, representation, a), _posterior(model, representation, b)
    t = torch.linspace(0.0, 1.0, steps, device=mu_a.device)
    z = (slerp if method == "slerp" else lerp)(mu_a, mu_b, t)  # (pairs, steps, L)
    between = decode_images(model, representation, z.flatten(0, 1)).cpu().unflatten(0, (len(a), steps))
    rows = torch.cat([_as_float(a)[:, None], between, _as_float(b)[:, None]], dim=1)  # (pairs, steps + 2, ...)
    return tile(rows.flatten(0, 1), cols=steps + 2, scale=scale, pad=pad)


# --- loss curves ---------------------------------------------------------------------------------

CURVE_PANELS = (("loss", "negative ELBO"), ("rec", "reconstruction log p(x|z)"), ("kl", "KL(q(z|x) || p(z))"))


def _render(fig: Any) -> np.ndarray:
    """A matplotlib Figure drawn on the Agg canvas (no pyplot, no display), uint8 (H, W, 3)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def confusion_figure(matrix: Sequence[Sequence[int]], *, title: str = "", size: float = 5.0,
                     dpi: int = 100) -> np.ndarray:
    """The confusion matrix (rows: true class, columns: predicted) as a heat map with the counts
    written in; returns uint8 (dpi * size, dpi * size, 3)."""
    from matplotlib.figure import Figure

    counts = np.asarray(matrix)
    fig = Figure(figsize=(size, size), dpi=dpi, layout="constrained")
    ax = fig.subplots()
    ax.imshow(counts / np.maximum(counts.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(counts):
        if n:
            ax.text(j, i, str(n), ha="center", va="center", fontsize=7,
                    color="white" if n > 0.5 * counts[i].sum() else "black")
    ticks = range(len(counts))
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title=title)
    return _render(fig)


def loss_curves(records: Sequence[dict[str, Any]], *, width: float = 12.0, height: float = 3.6,
                dpi: int = 100) -> np.ndarray:
    """Training (solid) and validation (dashed) loss, reconstruction and KL per epoch, in nats per example.

    ``records`` are ``metrics.jsonl`` rows (keys epoch, loss, rec, kl, optionally val_*).
    Drawn with matplotlib's Agg canvas (no pyplot, no display); returns uint8 (dpi * height,
    dpi * width, 3).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    epochs = [r["epoch"] for r in records]
    for ax, (key, title) in zip(fig.subplots(1, len(CURVE_PANELS)), CURVE_PANELS, strict=True):
        _plot_series(ax, epochs, records, key, "train", "-")
        _plot_series(ax, epochs, records, f"val_{key}", "validation", "--")
        ax.set(title=title, xlabel="epoch", ylabel="nats per example")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    return _render(fig)


def _plot_series(ax: Any, epochs: list[int], records: Sequence[dict[str, Any]], key: str, label: str,
                 style: str) -> None:
    """Plot ``key`` against epoch where records have it (validation may be missing)."""
    points = [(e, r[key]) for e, r in zip(epochs, records, strict=True) if r.get(key) is not None]
    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, style, marker="o" if len(points) < 20 else None, markersize=3, label=label)
