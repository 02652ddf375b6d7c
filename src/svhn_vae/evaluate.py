"""Held-out evaluation of a trained VAE: likelihood bounds, bits per dimension, reconstructions.

Likelihoods (see docs/evaluation.md, "Likelihood: ELBO, IWAE and bits per dimension"):

* Gaussian models are scored on uniformly dequantized pixels u = (x + U[0, 1)) / 256 in [0, 1]^D
  (a seeded noise draw). A pixel model's density is on u directly. A PCA model's density is the
  VAE's on the K kept coordinates c = (u - mean) @ V^T (divided by sqrt(eigenvalue) when whitened,
  which adds the log-Jacobian -0.5 sum(log eigenvalue)) times a Gaussian on the D - K discarded
  directions: each with its own eigenvalue (``--complement diagonal``, the default), or one
  variance ``pca.noise_variance_`` (``isotropic``, probabilistic PCA's). By default the VAE was
  trained on exactly such dequantized pixels; a write-up model (``--no-dequantize``) was trained
  on pixels/255, which changes nothing about the maths (a density on [0, 1]^D either way), it
  scores the slightly shifted points as it finds them.
* Bernoulli models are scored on pixels binarized once, x_b ~ Bernoulli(pixel / 255), with a fixed
  seed: the standard "dynamically binarized MNIST" test NLL in nats that papers report.

For every example two lower bounds on log p, in nats: the ELBO (the mean of the K importance
log-weights, a K-sample Monte Carlo ELBO) and the IWAE bound (their log-mean-exp, Burda et al.
2016), computed from the same draws, so IWAE >= ELBO holds per example. Bits per dimension are
(-bound + D ln 256) / (D ln 2) for densities on [0, 1]^D and -bound / (D ln 2) for binary pixels.

No metric is ever reported non-finite: :func:`check_finite` turns a NaN or infinity anywhere in a
result into a :class:`MetricNotFinite` error naming the metric, before anything is written.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from svhn_vae.baselines import (
    baseline_metrics, bernoulli_baseline_metrics, binarized_rows, bits_per_dim, dequantized_rows, split_pca,
    value_rows,
)
from svhn_vae.checkpoint import TrainedModel
from svhn_vae.compilation import AUTO_MIN_WEIGHT_CALLS, Compiled, wanted
from svhn_vae.config import COMPILE_MODES, check, scored_data
from svhn_vae.finite import MetricNotFinite, check_finite
from svhn_vae.models.vae import VAE
from svhn_vae.representation import PIXEL_MAX, Representation
from svhn_vae.train import evaluate_loss

__all__ = [
    "BLOG_2017_PCA_SPACE", "EvalOptions", "MetricNotFinite", "check_finite", "evaluate", "importance_bounds",
    "likelihood_metrics",
    "pca_space_elbo", "pixels_to_model_space", "ppca_components", "psnr", "reconstruction_metrics",
]

log = logging.getLogger(__name__)

BLOG_2017_PCA_SPACE = {
    "rec": -106.93,
    "kl": 13.58,
    "source": "the 2017 write-up's final held-out reconstruction term and KL, nats in its 500-dim PCA space "
              "of pixels/255 with eps=0.01, as published",
}


@dataclass
class EvalOptions:
    """Settings of ``svhn-vae evaluate``."""

    split: str = "test"
    """Held-out split to score."""
    importance_samples: int = 1000
    """K, the number of importance samples of the IWAE bound (1 gives the ELBO)."""
    max_examples: int = 0
    """Score only the first N images of the split (0: all)."""
    batch_size: int = 20
    """Images per chunk of the likelihood evaluation."""
    sample_chunk: int = 100
    """Importance samples per chunk: memory grows with batch_size * sample_chunk, not with K. The
    default 2,000 decoded rows per chunk keep a CPU's temporaries in its cache (1.3x faster than
    10,000 for ``fast``); on a GPU larger chunks (``--batch-size 500``) use it better."""
    seed: int = 0
    """Seed of the dequantization / binarization noise and of the posterior samples."""
    baselines: bool = True
    """Also fit and score the full-covariance Gaussian and PPCA baselines (needs the training split)."""
    ppca_components: int = 0
    """Components of the PPCA baseline (0: the run's PCA components, or its latent size for pixel models)."""
    compile: str = "auto"
    """When the importance weights go through torch.compile: 'auto' (evaluations of at least
    ``AUTO_MIN_WEIGHT_CALLS`` chunks, eagerly where the platform cannot), 'on' or 'off'
    (:mod:`svhn_vae.compilation`)."""

    def __post_init__(self) -> None:
        check(self.importance_samples > 0, "eval", "importance_samples", "must be positive")
        check(self.max_examples >= 0, "eval", "max_examples", "must be >= 0")
        check(self.batch_size > 0, "eval", "batch_size", "must be positive")
        check(self.sample_chunk > 0, "eval", "sample_chunk", "must be positive")
        check(self.compile in COMPILE_MODES, "eval", "compile", f"must be one of {COMPILE_MODES}")
        check(self.ppca_components >= 0, "eval", "ppca_components", "must be >= 0")


# --- likelihood bounds -----------------------------------------------------------------------------

@torch.inference_mode()
def importance_bounds(model: VAE, x: torch.Tensor, *, n_samples: int, generator: torch.Generator | None = None,
                      sample_chunk: int = 100, log_weights: Callable[..., torch.Tensor] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """ELBO and IWAE bound of log p(x) for model inputs x (B, D), each (B,) float64 in nats.

    The K = ``n_samples`` log-weights are drawn ``sample_chunk`` at a time; their sum and their
    log-sum-exp are accumulated in float64, so memory depends on the chunk, not on K.
    ``log_weights`` computes them instead of ``model.log_weights`` (a compiled version of it).
    """
    log_weights = model.log_weights if log_weights is None else log_weights
    lse = torch.full((len(x),), -math.inf, dtype=torch.float64, device=x.device)
    total = torch.zeros(len(x), dtype=torch.float64, device=x.device)
    for start in range(0, n_samples, sample_chunk):
        w = log_weights(x, min(sample_chunk, n_samples - start), generator=generator).double()  # (S, B)
        lse = torch.logaddexp(lse, torch.logsumexp(w, dim=0))
        total += w.sum(dim=0)
    return total / n_samples, lse - math.log(n_samples)


def pixels_to_model_space(rep: Representation, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Model input (B, K) float32 for pixel rows u (B, D) in [0, 1], and the log-density (B,) float64
    in nats to add to the model's to get a density on u: log|Jacobian| plus the Gaussian on the
    discarded PCA directions (zero for pixel models)."""
    if rep.pca is None:
        return u.float(), torch.zeros(len(u), dtype=torch.float64, device=u.device)
    pca = rep.pca
    coords, rest = split_pca(u, pca)
    if not pca.whiten:
        return coords.float(), rest
    lam = pca.explained_variance_.to(u.device)
    return (coords / lam.sqrt()).float(), rest - 0.5 * lam.log().sum()


def _scored_batches(kind: str, rep: Representation, images: np.ndarray, *, seed: int, batch_size: int,
                    device: torch.device | str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(model input (B, K), log-density correction (B,)) of the data each likelihood is scored on."""
    if kind == "dequantized":
        for u in dequantized_rows(images, seed=seed, batch_size=batch_size):
            yield pixels_to_model_space(rep, u.to(device))
        return
    rows = value_rows(images, batch_size=batch_size) if kind == "8-bit" else binarized_rows(
        images, seed=seed, batch_size=batch_size)
    for x in rows:
        yield x.to(device), torch.zeros(len(x), dtype=torch.float64, device=device)


def likelihood_metrics(trained: TrainedModel, images: np.ndarray, *, importance_samples: int, seed: int = 0,
                       batch_size: int = 20, sample_chunk: int = 100, device: torch.device | str = "cpu",
                       compile: str = "off", progress: bool = False) -> dict[str, Any]:
    """Mean ELBO and IWAE bound per image (nats) of uint8 images (N, H, W, C), and their bits per dim.

    ``nll_nats`` is -iwae_nats, the test NLL papers report. The data are those the likelihood is a
    distribution of (:func:`svhn_vae.config.scored_data`): dequantized pixels (densities; bits/dim
    add D ln 256), binarized pixels or the 8-bit values themselves (probabilities; bits/dim are
    -log2 p / D). Dequantization (or binarization) uses ``seed``, the posterior samples ``seed + 1``.
    ``compile`` ('auto', 'on' or 'off') says when the importance weights go through torch.compile.
    """
    model, rep = trained.representation.scorer(trained.model.to(device))  # M1+M2: the stacked model, M1's input
    model = model.to(device).eval()
    kind = scored_data(model.cfg.likelihood)
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    chunks = math.ceil(len(images) / batch_size) * math.ceil(importance_samples / sample_chunk)
    compiled = wanted(compile, steps=chunks, auto_from=AUTO_MIN_WEIGHT_CALLS)
    log_weights = Compiled(model.log_weights, fall_back=compile == "auto") if compiled else model.log_weights
    sums = torch.zeros(2, dtype=torch.float64)
    with tqdm(total=len(images), desc="likelihood", unit="img", disable=not progress) as bar:
        for x, correction in _scored_batches(kind, rep, images, seed=seed, batch_size=batch_size, device=device):
            elbo, iwae = importance_bounds(model, x, n_samples=importance_samples, generator=gen,
                                           sample_chunk=sample_chunk, log_weights=log_weights)
            sums += torch.stack([(elbo + correction).sum(), (iwae + correction).sum()]).cpu()
            bar.update(len(x))
    elbo, iwae = (sums / len(images)).tolist()
    dims, scale = trained.representation.pixel_dim, 256.0 if kind == "dequantized" else 1.0
    return {"likelihood": model.cfg.likelihood, "data": kind, "dims": dims, "elbo_nats": elbo, "iwae_nats": iwae,
            "nll_nats": -iwae, "bpd_elbo": bits_per_dim(-elbo, dims=dims, scale=scale),
            "bpd_iwae": bits_per_dim(-iwae, dims=dims, scale=scale)}


# --- PCA-space ELBO and reconstructions ------------------------------------------------------------

def pca_space_elbo(trained: TrainedModel, images: np.ndarray, *, seed: int = 0, batch_size: int = 1000,
                   device: torch.device | str = "cpu") -> dict[str, Any] | None:
    """The write-up's figure: one-sample reconstruction term log p(c|z), analytic KL and their
    difference, mean nats per image in the K-dim PCA space the model was trained in (of pixels/255
    as in the write-up, or of seeded dequantized pixels); None for pixel models."""
    rep = trained.representation
    if rep.pca is None:
        return None
    model = trained.model.to(device)
    terms = evaluate_loss(model, rep, rep.prepare(images, device=device), batch_size=batch_size, seed=seed)
    eps = trained.config.model.eps if trained.config.model.likelihood == "gaussian-relu-eps" else None
    return {"rec": terms["rec"], "kl": terms["kl"], "elbo": terms["rec"] - terms["kl"],
            "components": rep.pca.n_components_, "eps": eps, "reference_blog_2017": BLOG_2017_PCA_SPACE}


def psnr(mse: float) -> float | None:
    """Peak signal-to-noise ratio in dB of a mean squared error of pixels in [0, 1]: 10 log10(1 / mse);
    None (undefined) for a perfect reconstruction."""
    return 10 * math.log10(1.0 / mse) if mse > 0 else None


@torch.inference_mode()
def reconstruction_metrics(trained: TrainedModel, images: np.ndarray, *, batch_size: int = 1000,
                           device: torch.device | str = "cpu") -> dict[str, Any]:
    """Per-pixel MSE (pixels in [0, 1]) and PSNR (dB, of the mean MSE) of the posterior-mean
    reconstruction decode(mu(x)).mean(), and of the PCA projection alone (None for pixel models)."""
    model, rep = trained.model.to(device).eval(), trained.representation
    sq = torch.zeros(2, dtype=torch.float64)
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        target = torch.tensor(np.asarray(batch), dtype=torch.float32, device=device) / PIXEL_MAX
        x = rep.encode(batch, device=device)  # PCA codes once, for the VAE and the PCA-only projection
        recon = rep.decode(model.decode(model.encode(x)[0]).mean())
        projected = rep.decode(x) if rep.pca is not None else target
        sq += torch.stack([(recon - target).pow(2).sum(), (projected - target).pow(2).sum()]).double().cpu()
    mse, pca_mse = (sq / (len(images) * rep.pixel_dim)).tolist()
    pca_only = rep.pca is not None
    return {"mse": mse, "psnr": psnr(mse), "pca_only_mse": pca_mse if pca_only else None,
            "pca_only_psnr": psnr(pca_mse) if pca_only else None}


# --- everything -------------------------------------------------------------------------------------

def _timed(timings: dict[str, float], name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    timings[name] = time.perf_counter() - t0
    log.info("%s: %.1f s", name, timings[name])
    return result


def ppca_components(trained: TrainedModel, options: EvalOptions, train_n: int) -> int:
    """K of the PPCA baseline: the flag, else the run's PCA components, else its latent size, at most
    the ``train_n`` - 1 directions that ``train_n`` training images give a variance."""
    if options.ppca_components:
        return options.ppca_components
    pca = trained.representation.pca
    return min(pca.n_components_ if pca is not None else trained.model.latent_dim, train_n - 1)


def evaluate(trained: TrainedModel, *, images: np.ndarray, train_images: np.ndarray | None = None,
             options: EvalOptions | None = None, device: torch.device | str = "cpu",
             progress: bool = False) -> dict[str, Any]:
    """Every metric of a trained VAE on uint8 test ``images`` (N, H, W, C); the dict of ``eval.json``.

    ``train_images`` are needed for the baselines (skipped when None or ``options.baselines`` is
    off). Models of 8-bit images (Gaussian or discrete) get the full-covariance Gaussian, PPCA and
    the independent per-pixel histogram in bits/dim, and their gain over the best of them;
    Bernoulli models the independent-Bernoulli baseline in nats on the same binary pixels.
    """
    options = options if options is not None else EvalOptions()
    images = images[:options.max_examples] if options.max_examples else images
    timings: dict[str, float] = {}
    out: dict[str, Any] = {"split": options.split, "n": len(images), "importance_samples": options.importance_samples,
                           "seed": options.seed, "epoch": trained.epoch}
    out.update(_timed(timings, "likelihood", likelihood_metrics, trained, images,
                      importance_samples=options.importance_samples, seed=options.seed,
                      batch_size=options.batch_size, sample_chunk=options.sample_chunk, device=device,
                      compile=options.compile,
                      progress=progress))
    out["pca_space"] = _timed(timings, "pca_space", pca_space_elbo, trained, images, seed=options.seed, device=device)
    out["reconstruction"] = _timed(timings, "reconstruction", reconstruction_metrics, trained, images, device=device)
    out["baselines"] = None
    if options.baselines and train_images is not None and out["data"] != "binarized":
        components = ppca_components(trained, options, len(train_images))
        out["baselines"] = _timed(timings, "baselines", baseline_metrics, train_images=train_images,
                                  test_images=images, components=components,
                                  seed=options.seed, progress=progress)
        out["bpd_gain_over_ppca"] = out["baselines"]["ppca_bpd"] - out["bpd_iwae"]
        out["bpd_gain_over_best_baseline"] = out["baselines"]["best_bpd"] - out["bpd_iwae"]
    elif options.baselines and train_images is not None:
        out["baselines"] = _timed(timings, "baselines", bernoulli_baseline_metrics, train_images=train_images,
                                  test_images=images, seed=options.seed, batch_size=options.batch_size)
        out["nats_gain_over_independent"] = out["baselines"]["independent_bernoulli_nats"] - out["nll_nats"]
    out["timings"], out["seconds"] = timings, sum(timings.values())
    check_finite(out)
    return out
