"""Sample quality: a domain-specific FID and the label diversity of generated images.

No pretrained network can be downloaded here, so svhn-vae trains its own small CNN classifier on
the dataset's training split (a few CPU minutes, cached per user) and measures the Fréchet
distance between Gaussians fitted to its 128-d penultimate features of generated and test images.
This is *not* the Inception FID of the literature: the numbers are comparable only within this
tool (same dataset, same classifier settings). The same distance between training and test
images is reported as the floor that real data reaches.

Diversity: the classifier's predicted labels of the samples give a histogram over the C classes,
the number of classes holding at least 1 % of the samples, the histogram's entropy in bits (at
most log2(C), 3.32 bits for 10 classes) and the mean confidence (mean max softmax probability).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
from torch import nn
from tqdm.auto import tqdm

from svhn_vae.atomic import atomic_write
from svhn_vae.checkpoint import TrainedModel
from svhn_vae.config import AUTO_DECODE
from svhn_vae.data.paths import safe_file_name, user_cache_dir
from svhn_vae.errors import UserError
from svhn_vae.figures import decode_images, point_decode
from svhn_vae.models.m2 import has_label_latent

__all__ = [
    "ClassifierSettings", "FeatureClassifier", "classifier_features", "default_classifier_path",
    "feature_stats", "frechet_distance", "generate_images", "label_diversity", "load_or_train_classifier",
    "sample_quality", "train_classifier",
]

log = logging.getLogger(__name__)

NUM_CLASSES = 10
"""Classes of a cached classifier that does not record them (all built-in datasets have 10)."""
COVERED_FRACTION = 0.01
CLASSIFIER_FORMAT = 1
NOTE = ("domain-specific FID in the feature space of svhn-vae's own classifier (not Inception); "
        "comparable only within this tool, for the same dataset and classifier")


@dataclass(frozen=True)
class ClassifierSettings:
    """How the feature classifier is built and trained (part of its cache key)."""

    channels: tuple[int, ...] = (16, 32, 64)
    """Channels of the 3x3 stride-2 conv blocks (each halves H and W; BatchNorm, ReLU)."""
    feature_dim: int = 128
    """Width of the penultimate layer whose activations are the FID features."""
    epochs: int = 2
    """Passes over the training split."""
    batch_size: int = 256
    lr: float = 3e-3
    """Adam's initial learning rate, decayed linearly to zero."""
    seed: int = 0
    """Seed of the initialisation and of the batch order."""


class FeatureClassifier(nn.Module):
    """A small CNN on pixels/255 (B, C, H, W): stride-2 conv blocks -> 128-d features -> one logit per class."""

    def __init__(self, image_shape: tuple[int, int, int], settings: ClassifierSettings, *,
                 classes: int = NUM_CLASSES) -> None:
        super().__init__()
        h, w, c = image_shape
        blocks: list[nn.Module] = []
        for out in settings.channels:
            # stride 2 rather than max-pooling: 5x cheaper on a CPU, as accurate on these datasets
            blocks += [nn.Conv2d(c, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            c, h, w = out, (h + 1) // 2, (w + 1) // 2
        self.trunk = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(c * h * w, settings.feature_dim), nn.ReLU())
        self.head = nn.Linear(settings.feature_dim, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, feature_dim) and logits (B, classes)."""
        features = self.trunk(x)
        return features, self.head(features)


def _to_input(images: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """uint8 (B, H, W, C) -> float (B, C, H, W) in [0, 1] on ``device``."""
    batch = torch.from_numpy(np.array(images, dtype=np.uint8))  # a copy: memmaps are read-only
    return batch.to(device).permute(0, 3, 1, 2).float() / 255.0


# --- training and caching ------------------------------------------------------------------------

def train_classifier(images: np.ndarray, labels: np.ndarray, *, settings: ClassifierSettings = ClassifierSettings(),
                     device: str | torch.device = "cpu", progress: bool = False) -> FeatureClassifier:
    """Train the classifier on uint8 images (N, H, W, C) with labels 0..C-1 (N,), C = the largest
    label + 1; returned in eval mode."""
    gen = torch.Generator().manual_seed(settings.seed)
    with torch.random.fork_rng(devices=[]):  # a seeded initialisation that leaves the global RNG alone
        torch.manual_seed(settings.seed)
        model = FeatureClassifier(images.shape[1:], settings, classes=int(np.max(labels)) + 1).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    total_steps = settings.epochs * -(-len(images) // settings.batch_size)
    # a linear decay to zero: a few epochs reach the accuracy that a constant rate needs many for
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / total_steps)
    targets = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    model.train()
    for epoch in tqdm(range(settings.epochs), desc="feature classifier", unit="epoch", disable=not progress):
        order = torch.randperm(len(images), generator=gen).numpy()
        for start in range(0, len(images), settings.batch_size):
            idx = np.sort(order[start:start + settings.batch_size])  # sorted: fast reads from memmaps
            loss = nn.functional.cross_entropy(model(_to_input(images[idx], device))[1], targets[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
        log.info("classifier epoch %d/%d: last batch loss %.3f", epoch + 1, settings.epochs, loss.item())
    return model.eval()


def default_classifier_path(dataset: str, images: np.ndarray, labels: np.ndarray,
                            settings: ClassifierSettings) -> Path:
    """``$XDG_CACHE_HOME/svhn-vae/classifiers/<dataset>-<key>.pt``; the key hashes the training
    labels, the image shape, a strided sample of the pixels and the settings."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    digest.update(repr((images.shape, dataclasses.astuple(settings), CLASSIFIER_FORMAT)).encode())
    digest.update(np.ascontiguousarray(images[:: max(1, len(images) // 100)]).tobytes())
    return user_cache_dir() / "classifiers" / f"{safe_file_name(dataset)}-{digest.hexdigest()[:16]}.pt"


def _save_classifier(path: Path, model: FeatureClassifier, *, settings: ClassifierSettings,
                     image_shape: tuple[int, ...], seconds: float) -> None:
    state = {"format_version": CLASSIFIER_FORMAT, "settings": dataclasses.asdict(settings),
             "image_shape": list(image_shape), "classes": model.head.out_features, "model": model.state_dict(),
             "train_seconds": seconds}
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def _load_classifier(path: Path, device: str | torch.device) -> tuple[FeatureClassifier, dict[str, Any]]:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        settings = ClassifierSettings(**{**state["settings"], "channels": tuple(state["settings"]["channels"])})
        model = FeatureClassifier(tuple(state["image_shape"]), settings,
                                  classes=int(state.get("classes", NUM_CLASSES))).to(device)
        model.load_state_dict(state["model"])
    except Exception as e:  # torch raises many types for corrupt or foreign files
        raise UserError(f"cannot read classifier {path} ({type(e).__name__}); delete it to retrain") from None
    return model.eval(), state


def load_or_train_classifier(*, dataset: str, train_images: np.ndarray, train_labels: np.ndarray,
                             path: str | Path | None = None, settings: ClassifierSettings = ClassifierSettings(),
                             device: str | torch.device = "cpu",
                             progress: bool = False) -> tuple[FeatureClassifier, dict[str, Any]]:
    """The cached classifier at ``path`` (default: :func:`default_classifier_path`), trained first if missing.

    Returns the model in eval mode and ``{"path", "cached", "train_seconds", "settings"}``.
    """
    path = Path(path) if path is not None else default_classifier_path(dataset, train_images, train_labels, settings)
    if path.exists():
        model, state = _load_classifier(path, device)
        if tuple(state["image_shape"]) != tuple(train_images.shape[1:]):
            raise UserError(f"classifier {path} was trained on {tuple(state['image_shape'])} images, "
                            f"not {tuple(train_images.shape[1:])}; pass the right --classifier file or none")
        return model, {"path": str(path), "cached": True, "train_seconds": float(state["train_seconds"]),
                       "settings": state["settings"]}
    log.info("training the %s feature classifier (cached at %s)", dataset, path)
    t0 = time.perf_counter()
    model = train_classifier(train_images, train_labels, settings=settings, device=device, progress=progress)
    seconds = time.perf_counter() - t0
    _save_classifier(path, model, settings=settings, image_shape=train_images.shape[1:], seconds=seconds)
    return model, {"path": str(path), "cached": False, "train_seconds": seconds,
                   "settings": dataclasses.asdict(settings)}


# --- features, statistics and the distance -------------------------------------------------------

@torch.no_grad()
def classifier_features(model: FeatureClassifier, images: np.ndarray, *, batch_size: int = 1000,
                        device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Features (N, feature_dim) float64 and softmax probabilities (N, C) of uint8 images (N, H, W, C)."""
    feats, probs = [], []
    for start in range(0, len(images), batch_size):
        f, logits = model(_to_input(images[start:start + batch_size], device))
        feats.append(f.double().cpu().numpy())
        probs.append(logits.softmax(-1).double().cpu().numpy())
    return np.concatenate(feats), np.concatenate(probs)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and covariance (F, F) of features (N, F), in float64."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrt_of_product(sigma1: np.ndarray, sigma2: np.ndarray, *, eps: float) -> np.ndarray:
    """(sigma1 sigma2)^(1/2); if the product is singular (scipy warns, or the root is not finite),
    that of (sigma1 + eps I)(sigma2 + eps I) instead. Dead ReLU features make this common."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
        try:
            root = scipy.linalg.sqrtm(sigma1 @ sigma2)
            if np.isfinite(root).all():
                return root
        except scipy.linalg.LinAlgWarning:
            pass
    log.info("frechet_distance: singular product of covariances; adding %g to the diagonals", eps)
    offset = eps * np.eye(len(sigma1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (squared feature units):

    ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    As in the usual FID code, ``eps`` is added to the diagonals when the product is singular, and a
    numerically tiny imaginary part of the matrix square root is dropped.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"frechet_distance: shapes differ: {mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
    covmean = _sqrt_of_product(sigma1, sigma2, eps=eps)
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: imaginary component {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    return frechet_distance(*feature_stats(features_a), *feature_stats(features_b))


def label_diversity(probs: np.ndarray) -> dict[str, Any]:
    """Diversity of softmax outputs (N, C): predicted-label histogram (fractions), classes holding
    at least ``COVERED_FRACTION`` of the predictions, the histogram's entropy in bits and the mean
    max-probability."""
    hist = np.bincount(probs.argmax(axis=1), minlength=probs.shape[1]) / len(probs)
    nonzero = hist[hist > 0]
    return {
        "label_histogram": [float(h) for h in hist],
        "classes_covered": int((hist >= COVERED_FRACTION).sum()),
        "label_entropy_bits": float(-(nonzero * np.log2(nonzero)).sum() + 0.0),
        "mean_confidence": float(probs.max(axis=1).mean()),
    }


# --- sample quality of a trained VAE -------------------------------------------------------------

@torch.no_grad()
def generate_images(trained: TrainedModel, n: int, *, seed: int = 0, batch_size: int = 1000,
                    device: str | torch.device = "cpu", decode: str = "mean") -> np.ndarray:
    """n samples, uint8 (n, H, W, C): z from the prior, decoded to p(x|z)'s ``decode`` ('mean' or
    'mode', see :func:`svhn_vae.figures.decode_images`), quantised like real images."""
    model = trained.model.to(device).eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    latents = model.sample_latents(n, generator=gen)  # (n, L) at once: the same samples for any batch size
    chunks = []
    for z in latents.split(batch_size):
        pixels = decode_images(model, trained.representation, z, mode=decode)  # (B, H, W, C) in [0, 1]
        chunks.append((pixels * 255.0).round().to(torch.uint8).cpu().numpy())
    return np.concatenate(chunks)


@torch.no_grad()
def label_control(trained: TrainedModel, classifier: FeatureClassifier, *, n: int, seed: int = 0,
                  images: np.ndarray | None = None, device: str | torch.device = "cpu") -> dict[str, Any]:
    """For a model with a label latent (M2): how often the feature classifier reads an image decoded
    from a style z and label y as the digit y; n // C prior styles, each with every label (the
    style/content grid's images), quantised like real images. With uint8 ``images`` (N, H, W, C),
    also under ``test_styles`` for the posterior styles of as many of them (the grid's lower rows)."""
    from svhn_vae.figures import label_styles

    model = trained.model.to(device).eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    rows = max(1, n // model.classes)
    found = _read_as_label(trained, classifier, label_styles(model, trained.representation, prior_rows=rows,
                                                             generator=gen), device=device)
    if images is not None and len(images):
        styles = label_styles(model, trained.representation, images[:rows], prior_rows=0)
        found["test_styles"] = _read_as_label(trained, classifier, styles, device=device)
    return found


def _read_as_label(trained: TrainedModel, classifier: FeatureClassifier, styles: torch.Tensor, *,
                   device: str | torch.device) -> dict[str, Any]:
    """How the feature classifier reads every style (R, latent_dim) decoded with each label."""
    from svhn_vae.figures import style_content_images

    model = trained.model
    images = (style_content_images(model, trained.representation, styles) * 255).round().to(torch.uint8)
    _, probs = classifier_features(classifier, images.cpu().numpy(), device=device)
    asked = np.tile(np.arange(model.classes), len(styles))
    read = probs.argmax(1) == asked
    return {"n_images": len(images), "styles": len(styles), "read_as_label": float(read.mean()),
            "per_label": [float(read[asked == c].mean()) for c in range(model.classes)]}


def _subset(n_total: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a seeded random subset of min(n, n_total) of n_total items."""
    return np.sort(rng.choice(n_total, size=min(n, n_total), replace=False))


def sample_quality(trained: TrainedModel, *, dataset: str, train_images: np.ndarray, train_labels: np.ndarray,
                   test_images: np.ndarray, test_labels: np.ndarray, n_samples: int = 10000, seed: int = 0,
                   device: str | torch.device = "cpu", classifier_path: str | Path | None = None,
                   classifier: ClassifierSettings = ClassifierSettings(), decode: str = AUTO_DECODE,
                   progress: bool = False) -> dict[str, Any]:
    """Domain-specific FID of ``n_samples`` generated images against (up to n_samples) test images,
    each decoded to p(x|z)'s mean or mode (``decode``; 'auto': :func:`svhn_vae.figures.point_decode`).

    Images are uint8 (N, H, W, C), labels 0..C-1. Returns a JSON-serialisable dict: ``fid_classifier``
    (squared feature units), ``fid_floor_train_vs_test`` (the same distance for as many training
    images: what real data reaches), the classifier's test accuracy (fraction) and cache facts, and
    the samples' label diversity (see :func:`label_diversity`), with ``test_set`` giving the test
    images' diversity for comparison.
    """
    t0 = time.perf_counter()
    model, info = load_or_train_classifier(dataset=dataset, train_images=train_images, train_labels=train_labels,
                                           path=classifier_path, settings=classifier, device=device, progress=progress)
    with tqdm(total=4, desc="sample quality", unit="step", disable=not progress) as bar:
        test_feats, test_probs = classifier_features(model, test_images, device=device)
        accuracy = float(np.mean(test_probs.argmax(axis=1) == np.asarray(test_labels)))
        rng = np.random.default_rng(seed)
        ref_idx = _subset(len(test_images), n_samples, rng)
        bar.update(1)
        train_feats, _ = classifier_features(model, train_images[_subset(len(train_images), len(ref_idx), rng)],
                                             device=device)
        bar.update(1)
        decode = point_decode(trained.config.model.likelihood, decode)
        samples = generate_images(trained, n_samples, seed=seed, device=device, decode=decode)
        bar.update(1)
        sample_feats, sample_probs = classifier_features(model, samples, device=device)
        bar.update(1)
    control = (label_control(trained, model, n=n_samples, seed=seed, device=device,
                             images=test_images[ref_idx])
               if has_label_latent(trained.model) else None)
    return {
        "label_control": control,
        "fid_classifier": _fid(sample_feats, test_feats[ref_idx]),
        "fid_floor_train_vs_test": _fid(train_feats, test_feats[ref_idx]),
        "n_samples": n_samples,
        "decode": decode,
        "n_reference": len(ref_idx),
        "feature_dim": int(test_feats.shape[1]),
        "classifier_test_accuracy": accuracy,
        "classifier": info,
        **label_diversity(sample_probs),
        "classes_covered_threshold": COVERED_FRACTION,
        "label_entropy_max_bits": float(np.log2(test_probs.shape[1])),
        "test_set": label_diversity(test_probs[ref_idx]),
        "seed": seed,
        "note": NOTE,
        "seconds": time.perf_counter() - t0,
    }
