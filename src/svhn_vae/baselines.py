"""Linear-Gaussian baselines in pixel space, and the maths of densities split along a PCA basis.

Every density here is a :class:`SubspaceGaussian`: a Gaussian whose covariance has eigenvectors
``components`` (k, D) with variances ``variances`` (k,), and one isotropic variance on the D - k
orthogonal directions. Two baselines are such Gaussians:

* the full-covariance Gaussian: every eigenpair of the sample covariance (ddof=1), with a ridge of
  ``RIDGE`` added to every variance so that it stays positive definite;
* probabilistic PCA (Tipping & Bishop 1999) with k components: its maximum-likelihood covariance
  W W^T + sigma2 I has the top k eigenvalues on the kept directions and sigma2 = the mean of the
  D - k discarded eigenvalues on the rest.

A PCA+VAE model replaces the Gaussian on the kept coordinates with the VAE and keeps a Gaussian
on the rest (:func:`split_pca`), so it is a density on all D pixels: by default each discarded
direction with its own eigenvalue plus the ridge (the full-covariance Gaussian's density there),
or PPCA's isotropic term (:func:`complement_log_prob`).

A third baseline ignores every correlation and is discrete: each subpixel's own 256-way histogram
of the training values (add-1/2 smoothed), scored on the 8-bit test values
(:func:`histogram_metrics`). Every model is compared with the best of the three (``best_bpd``).

The Gaussian baselines are fitted on uniformly dequantized training pixels u = (x + U[0, 1)) / 256 and
evaluated on dequantized test pixels, so they are in the units of the VAE's pixel-space figures:
log-densities in nats on [0, 1]^D, turned into bits per dimension by :func:`bits_per_dim`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from svhn_vae.errors import UserError
from svhn_vae.likelihoods.discrete import LEVELS, Categorical
from svhn_vae.pca import PCA
from svhn_vae.representation import dequantize, dequantized_rows, iter_rows

__all__ = [
    "RIDGE", "SubspaceGaussian", "baseline_metrics", "bernoulli_baseline_metrics", "binarized_rows", "bits_per_dim",
    "complement_log_prob", "dequantize", "dequantized_rows", "fit_full_pca", "full_gaussian", "histogram_metrics",
    "pixel_histogram", "ppca", "split_pca", "split_subspace", "value_rows",
]

LOG_2PI = math.log(2 * math.pi)
RIDGE = 1e-6
"""Added to every variance of the full-covariance Gaussian (in [0, 1]^2 pixel units) to keep it PD."""


def bits_per_dim(nll_nats: float | torch.Tensor, *, dims: int, scale: float = 256.0) -> float | torch.Tensor:
    """Bits per dimension of a negative log-likelihood in nats: (NLL + D ln scale) / (D ln 2).

    ``scale``: the data were divided by it to land in [0, 1] (256 for dequantized 8-bit pixels, so
    a density on [0, 1]^D becomes a probability of the 256^D pixel bins); 1 for a probability mass
    function such as the Bernoulli likelihood of binarized pixels.
    """
    return (nll_nats + dims * math.log(scale)) / (dims * math.log(2))


def binarized_rows(images: np.ndarray, *, seed: int, batch_size: int = 4096) -> Iterator[torch.Tensor]:
    """Binarized (n, D) float32 batches x_b ~ Bernoulli(pixel / 255) of uint8 images, one seeded stream."""
    generator = torch.Generator().manual_seed(seed)
    for rows in iter_rows(images, batch_size):
        yield torch.bernoulli(torch.tensor(np.asarray(rows), dtype=torch.float32) / 255.0, generator=generator)


def value_rows(images: np.ndarray, *, batch_size: int = 4096) -> Iterator[torch.Tensor]:
    """(n, D) float32 batches x = k / 255 of the 8-bit values k of uint8 images: what discrete likelihoods score."""
    for rows in iter_rows(images, batch_size):
        yield torch.tensor(np.asarray(rows), dtype=torch.float32) / (LEVELS - 1)


def pixel_histogram(images: np.ndarray, *, smoothing: float = 0.5, batch_size: int = 4096) -> Categorical:
    """Each subpixel's own distribution over the 256 values: training counts plus ``smoothing``
    (add-1/2: the Krichevsky-Trofimov estimator), normalized; (D, 256) log-probabilities."""
    d = int(np.prod(images.shape[1:]))
    offsets = np.arange(d, dtype=np.int64) * LEVELS
    counts = np.zeros(d * LEVELS, dtype=np.int64)
    for rows in iter_rows(images, batch_size):
        counts += np.bincount((np.asarray(rows, dtype=np.int64) + offsets).ravel(), minlength=d * LEVELS)
    probs = (counts.reshape(d, LEVELS) + smoothing) / (len(images) + smoothing * LEVELS)
    return Categorical(torch.from_numpy(np.log(probs)))


def histogram_metrics(*, train_images: np.ndarray, test_images: np.ndarray, batch_size: int = 4096) -> dict[str, Any]:
    """The independent per-pixel histogram (:func:`pixel_histogram` of ``train_images``) scored on the
    8-bit values of ``test_images``: mean NLL in nats and bits per dimension (no dequantization term)."""
    histogram = pixel_histogram(train_images, batch_size=batch_size)
    total = sum(float(histogram.log_prob(x).sum()) for x in value_rows(test_images, batch_size=batch_size))
    nll, dims = -total / len(test_images), histogram.logits.shape[0]
    return {"histogram_nats": nll, "histogram_bpd": bits_per_dim(nll, dims=dims, scale=1.0)}


def bernoulli_baseline_metrics(*, train_images: np.ndarray, test_images: np.ndarray, seed: int = 0,
                               batch_size: int = 100) -> dict[str, Any]:
    """Independent Bernoulli pixels with the training split's marginals, scored in nats on the test
    images binarized with ``seed`` (the same draws the VAE is scored on with the same batch size).

    The linear baseline of binary data: what a model knows without any pixel correlation. The
    marginals are clamped to [1e-3, 1 - 1e-3] so that never-lit pixels cost a finite amount.
    """
    p = torch.from_numpy(np.asarray(train_images).reshape(len(train_images), -1).mean(0, dtype=np.float64) / 255.0)
    logits = torch.logit(p.clamp(1e-3, 1 - 1e-3)).float()
    total = 0.0
    for x in binarized_rows(test_images, seed=seed, batch_size=batch_size):
        total += float(-torch.nn.functional.binary_cross_entropy_with_logits(
            logits.expand_as(x), x, reduction="sum"))
    nll = -total / len(test_images)
    return {"independent_bernoulli_nats": nll, "independent_bernoulli_bpd": nll / (x.shape[1] * math.log(2)),
            "train_n": len(train_images)}


def split_subspace(u: torch.Tensor, *, mean: torch.Tensor, components: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates (B, k) of rows u (B, D) along orthonormal ``components`` (k, D), and the squared
    norm (B,) of what is left in the orthogonal complement, both float64."""
    centred = u.to(torch.float64) - mean.to(u.device, torch.float64)
    comps = components.to(u.device, torch.float64)
    coords = centred @ comps.T
    residual = centred - coords @ comps
    return coords, residual.pow(2).sum(dim=-1)


def complement_log_prob(residual_sq: torch.Tensor, *, dims: int, variance: float) -> torch.Tensor:
    """(B,) log-density in nats of an isotropic N(0, variance I) on ``dims`` orthogonal directions,
    given the squared norm (B,) of each point there (0 when ``dims`` is 0)."""
    if dims == 0:
        return torch.zeros_like(residual_sq)
    if variance <= 0:
        raise UserError("the discarded PCA directions have zero variance, so there is no pixel-space density; "
                        "keep fewer components")
    return -0.5 * (dims * (LOG_2PI + math.log(variance)) + residual_sq / variance)


def diagonal_log_prob(coords: torch.Tensor, variances: torch.Tensor) -> torch.Tensor:
    """(B,) log-density in nats of independent N(0, variances) (n,) at coordinates (B, n)."""
    var = variances.to(coords.device, coords.dtype)
    return -0.5 * (len(var) * LOG_2PI + var.log().sum() + (coords.pow(2) / var).sum(dim=-1))


def split_pca(u: torch.Tensor, pca: PCA) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates (B, K) of pixel rows u (B, D) along the kept components (unwhitened), and the
    log-density (B,) in nats of their discarded part, both float64: per direction with its
    eigenvalue plus ``RIDGE`` (the full-covariance Gaussian baseline's density on those directions)
    when the PCA kept the discarded eigenvectors, else isotropic with ``noise_variance_``."""
    if not getattr(pca, "keep_discarded", False):
        coords, residual_sq = split_subspace(u, mean=pca.mean_, components=pca.components_)
        dims = pca.n_features_in_ - pca.n_components_
        return coords, complement_log_prob(residual_sq, dims=dims, variance=pca.noise_variance_)
    centred = u.to(torch.float64) - pca.mean_.to(u.device, torch.float64)
    coords = centred @ pca.components_.to(u.device, torch.float64).T
    rest = centred @ pca.discarded_basis(u.device).T
    return coords, diagonal_log_prob(rest, pca.discarded_variance_ + RIDGE)


@dataclass
class SubspaceGaussian:
    """N(mean, V^T diag(variances) V + noise_variance (I - V^T V)) on R^D; all tensors float64."""

    mean: torch.Tensor
    """(D,) mean."""
    components: torch.Tensor
    """(k, D) orthonormal eigenvectors V."""
    variances: torch.Tensor
    """(k,) variances along them."""
    noise_variance: float
    """Variance on each of the D - k orthogonal directions."""

    def log_prob(self, u: torch.Tensor) -> torch.Tensor:
        """(B,) log-density in nats of rows u (B, D)."""
        coords, residual_sq = split_subspace(u, mean=self.mean, components=self.components)
        rest = len(self.mean) - len(self.variances)
        return (diagonal_log_prob(coords, self.variances)
                + complement_log_prob(residual_sq, dims=rest, variance=self.noise_variance))


def fit_full_pca(images: np.ndarray, *, seed: int, batch_size: int = 4096, progress: bool = False) -> PCA:
    """Every eigenpair of the covariance of the dequantized rows of uint8 images (N, H, W, C), streamed."""
    batches = tqdm(dequantized_rows(images, seed=seed, batch_size=batch_size), desc="baselines: covariance",
                   total=-(-len(images) // batch_size), unit="batch", disable=not progress)
    return PCA(None).fit_batches(batches)


def _eigenvalues(pca: PCA) -> torch.Tensor:
    """All D eigenvalues (D,): the fitted ones, then zeros when there were fewer samples than pixels."""
    lam = pca.explained_variance_
    return torch.cat([lam, lam.new_zeros(pca.n_features_in_ - len(lam))])


def full_gaussian(pca: PCA, *, ridge: float = RIDGE) -> SubspaceGaussian:
    """N(mean, sample covariance + ridge I) from a PCA fitted with every component (``fit_full_pca``).

    When there were fewer samples than pixels, the directions with no fitted eigenpair get the ridge alone.
    """
    return SubspaceGaussian(pca.mean_, pca.components_, pca.explained_variance_ + ridge, ridge)


def ppca(pca: PCA, components: int) -> SubspaceGaussian:
    """Maximum-likelihood probabilistic PCA with ``components`` kept, from a full PCA (``fit_full_pca``).

    sigma2 is the mean of the D - k discarded eigenvalues (zeros included when N < D).
    """
    lam = _eigenvalues(pca)
    if not 0 < components < len(lam):
        raise UserError(f"probabilistic PCA needs 0 < components < {len(lam)}, got {components}")
    if components > len(pca.components_):
        raise UserError(f"probabilistic PCA keeps at most the {len(pca.components_)} fitted components here (there "
                        f"are no more training images); got {components}: lower --ppca-components")
    return SubspaceGaussian(pca.mean_, pca.components_[:components], lam[:components],
                            float(lam[components:].mean()))


def _mean_log_prob(model: SubspaceGaussian, images: np.ndarray, *, seed: int, batch_size: int) -> float:
    """Mean log-density in nats of the dequantized rows of ``images``."""
    total = sum(float(model.log_prob(u).sum()) for u in dequantized_rows(images, seed=seed, batch_size=batch_size))
    return total / len(images)


def baseline_metrics(*, train_images: np.ndarray, test_images: np.ndarray, components: int, seed: int = 0,
                     batch_size: int = 4096, progress: bool = False) -> dict[str, Any]:
    """Full-covariance Gaussian, PPCA(``components``) and the per-pixel histogram fitted on
    ``train_images``, evaluated on ``test_images`` (uint8, N, H, W, C); returns mean NLLs in nats and
    bits per dimension, and which is ``best`` with its ``best_bpd``.

    The test pixels are dequantized with ``seed`` (the noise stream does not depend on the batch
    size, so it is the noise the VAE's evaluation with the same seed sees), the training pixels
    with ``seed + 1``.
    """
    pca = fit_full_pca(train_images, seed=seed + 1, batch_size=batch_size, progress=progress)
    dims = pca.n_features_in_
    out: dict[str, Any] = {"ppca_components": components, "ridge": RIDGE, "train_n": len(train_images)}
    for name, model in (("gaussian", full_gaussian(pca)), ("ppca", ppca(pca, components))):
        nll = -_mean_log_prob(model, test_images, seed=seed, batch_size=batch_size)
        out.update({f"{name}_nats": nll, f"{name}_bpd": bits_per_dim(nll, dims=dims)})
    out.update(histogram_metrics(train_images=train_images, test_images=test_images, batch_size=batch_size))
    out["best"] = min(BASELINES, key=lambda name: out[f"{name}_bpd"])
    out["best_bpd"] = out[f"{out['best']}_bpd"]
    return out


BASELINES = ("gaussian", "ppca", "histogram")
"""The baselines of 8-bit images, by their key in ``baseline_metrics``' result."""
