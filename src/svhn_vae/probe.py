"""Latent probe: how well a few labels classify the VAE's latents (Kingma et al. 2014, "M1").

The protocol: encode the training and test images to their posterior means mu(x) (B, L); for
n labelled training examples (n = 100, 1000 and all), balanced across classes (n / n_classes per
class, drawn without replacement) and repeated over ``draws`` seeded random draws, fit a
classifier on the latents and report its test error. Errors are *fractions* of the test set
misclassified (0.1182 means 11.82 %); "mean" and "std" are over the draws (sample std, ddof=1).

Two classifiers, both from scikit-learn:

* k-NN with Euclidean distance on the raw posterior means (the prior is isotropic, so latent
  distances are meaningful; standardising would blow up collapsed, pure-noise dimensions) and
  ``k = min(5, n per class)``: 5 neighbours, but never more than one class has labels.
* multinomial logistic regression (L2, C = 1) on standardised latents, lbfgs with a bounded
  number of iterations so that 60,000 examples fit in seconds on 2 CPU cores.

Kingma et al. used a transductive SVM on M1's latents; their figures are reported next to ours
as ``reference`` (the protocol matches, the classifier does not).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from svhn_vae.checkpoint import TrainedModel
from svhn_vae.errors import UserError

__all__ = ["ONE_CLASS", "REFERENCE", "balanced_indices", "encode_means", "knn_k", "latent_probe", "probe_features"]

log = logging.getLogger(__name__)

ONE_CLASS = "the training labels hold one class only"
"""Why the probe (and anything else that learns from labels) is skipped on a one-class training split."""

DEFAULT_LABEL_COUNTS: tuple[int | None, ...] = (100, 1000, None)
KNN_MAX_K = 5
LOGREG_MAX_ITER = 200

REFERENCE: dict[str, Any] = {
    "source": "Kingma, Rezende, Mohamed, Welling 2014, Semi-supervised learning with deep generative models, "
              "tables 1 and 2 (test error as a fraction)",
    "mnist": {"M1+TSVM_100": 0.1182, "M1+M2_100": 0.0333, "M1+TSVM_1000": 0.0424, "M1+M2_1000": 0.0240},
    "svhn": {"M1+TSVM_1000": 0.5533, "M1+M2_1000": 0.3602},
}
"""Published semi-supervised test errors (fractions) to compare the probe with."""


# --- encoding ------------------------------------------------------------------------------------

@torch.no_grad()
def encode_means(trained: TrainedModel, images: np.ndarray, *, batch_size: int = 1024,
                 device: str | torch.device = "cpu") -> np.ndarray:
    """Posterior means mu(x), float32 (N, L), of uint8 images (N, H, W, C), encoded in eval mode.

    Bernoulli models see grey-level pixels here (no binarization), as is usual for evaluation.
    """
    model = trained.model.to(device).eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        x = trained.representation.encode(images[start:start + batch_size], device=device)
        chunks.append(model.encode(x)[0].float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, model.latent_dim), np.float32)


# --- the protocol on arrays ----------------------------------------------------------------------

def balanced_indices(labels: np.ndarray, n: int, *, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``n`` examples, ``n / n_classes`` of each class, drawn without replacement.

    Raises ``UserError`` if ``n`` is not a multiple of the number of classes or a class is too small.
    """
    classes = np.unique(labels)
    per_class, rest = divmod(n, len(classes))
    if rest or per_class == 0:
        raise UserError(f"probe: {n} labels cannot be balanced over {len(classes)} classes")
    picks = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise UserError(f"probe: class {c} has {len(members)} training examples, {per_class} are needed")
        picks.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(picks))


def knn_k(per_class: int) -> int:
    """Neighbours of the k-NN probe: 5, but at most the number of labels per class."""
    return max(1, min(KNN_MAX_K, per_class))


def _classifiers(per_class: int, *, seed: int) -> dict[str, Any]:
    """The two probes, fresh and unfitted (see the module docstring for the choices)."""
    return {
        "knn": KNeighborsClassifier(n_neighbors=knn_k(per_class)),
        "logreg": make_pipeline(StandardScaler(), LogisticRegression(max_iter=LOGREG_MAX_ITER, random_state=seed)),
    }


def _test_errors(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 *, per_class: int, seed: int) -> dict[str, float]:
    """Test error (fraction) of each classifier fitted on one labelled set."""
    errors = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is bounded on purpose
        for name, clf in _classifiers(per_class, seed=seed).items():
            clf.fit(x_train, y_train)
            errors[name] = float(np.mean(clf.predict(x_test) != y_test))
    return errors


def _summary(runs: list[dict[str, float]]) -> dict[str, float]:
    """Mean and sample std (0 for one draw) of each classifier's error over the draws."""
    out = {}
    for name in runs[0]:
        values = np.array([r[name] for r in runs])
        out[f"{name}_error"] = float(values.mean())
        out[f"{name}_error_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out


def _labelled_sets(labels: np.ndarray, n: int | None, *, draws: int, max_train: int | None,
                   rng: np.random.Generator) -> tuple[list[np.ndarray], str | None]:
    """Index sets of the draws for one label count, and a note for the output (or None)."""
    if n is not None:
        return [balanced_indices(labels, n, rng=rng) for _ in range(draws)], None
    if max_train is not None and max_train < len(labels):
        idx = np.sort(rng.choice(len(labels), size=max_train, replace=False))
        return [idx], f"one draw: a random {max_train} of the {len(labels)} training examples (max_train)"
    return [np.arange(len(labels))], "one draw: the whole training set"


def _probe_one(features_train: np.ndarray, labels_train: np.ndarray, features_test: np.ndarray,
               labels_test: np.ndarray, n: int | None, *, draws: int, max_train: int | None,
               seed: int, bar: tqdm) -> dict[str, Any]:
    """The protocol's result for one label count n (None: all); ``bar`` advances once per draw."""
    rng = np.random.default_rng([seed, 0 if n is None else n])  # each count has its own stream
    sets, note = _labelled_sets(labels_train, n, draws=draws, max_train=max_train, rng=rng)
    n_classes = len(np.unique(labels_train))
    per_class = len(sets[0]) // n_classes
    runs = []
    for i in sets:
        runs.append(_test_errors(features_train[i], labels_train[i], features_test, labels_test,
                                 per_class=per_class, seed=seed))
        bar.update(1)
    result = {"labels": len(sets[0]), "draws": len(sets), "knn_k": knn_k(per_class),
              **_summary(runs)}
    return {**result, "note": note} if note else result


def probe_features(features_train: np.ndarray, labels_train: np.ndarray, features_test: np.ndarray,
                   labels_test: np.ndarray, *, label_counts: Sequence[int | None] = DEFAULT_LABEL_COUNTS,
                   draws: int = 10, seed: int = 0, max_train: int | None = None,
                   progress: bool = False) -> dict[str, dict[str, Any]]:
    """Run the probe protocol on feature arrays (N, L) and integer labels (N,).

    Returns ``{"100": {...}, "1000": {...}, "all": {...}}`` keyed by label count, each with
    ``knn_error``, ``knn_error_std``, ``logreg_error``, ``logreg_error_std`` (fractions of the test
    set), ``labels``, ``draws`` and ``knn_k``; a count larger than the training set, or training
    labels of one class only, gives ``{"skipped": reason}``. A count that is not a multiple of the
    number of classes C uses the largest multiple below it (``labels`` says how many, ``note``
    why). ``max_train`` subsamples the "all" case (seeded).
    """
    if draws < 1:
        raise UserError("probe: draws must be >= 1")
    n_classes = len(np.unique(labels_train))
    if n_classes < 2:
        log.warning("probe skipped: %s", ONE_CLASS)
        return {"all" if n is None else str(n): {"skipped": ONE_CLASS} for n in label_counts}
    results: dict[str, dict[str, Any]] = {}
    with tqdm(total=sum(draws if n is not None else 1 for n in label_counts), desc="probe", unit="fit",
              disable=not progress) as bar:
        for n in label_counts:
            key = "all" if n is None else str(n)
            if n is not None and n > len(labels_train):
                results[key] = {"skipped": f"needs {n} labelled examples, the training set has {len(labels_train)}"}
                continue
            balanced = n if n is None else n - n % n_classes  # e.g. 99 labels over 3 classes for "100"
            results[key] = _probe_one(features_train, labels_train, features_test, labels_test, balanced,
                                      draws=draws, max_train=max_train, seed=seed, bar=bar)
            if balanced != n:
                results[key]["note"] = f"{balanced} labels: the largest multiple of the {n_classes} classes up to {n}"
    return results


# --- the probe of a trained VAE ------------------------------------------------------------------

def latent_probe(trained: TrainedModel, *, train_images: np.ndarray, train_labels: np.ndarray,
                 test_images: np.ndarray, test_labels: np.ndarray,
                 label_counts: Sequence[int | None] = DEFAULT_LABEL_COUNTS, draws: int = 10, seed: int = 0,
                 device: str | torch.device = "cpu", max_train: int | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Kingma et al.'s M1 protocol on a trained VAE: classify posterior means with few labels.

    Images are uint8 (N, H, W, C), labels int (N,). Returns a JSON-serialisable dict with
    ``results`` (see :func:`probe_features`; errors are fractions), the settings, the published
    ``reference`` errors and the wall time in seconds.
    """
    t0 = time.perf_counter()
    z_train = encode_means(trained, train_images, device=device)
    z_test = encode_means(trained, test_images, device=device)
    results = probe_features(z_train, np.asarray(train_labels), z_test, np.asarray(test_labels),
                             label_counts=label_counts, draws=draws, seed=seed, max_train=max_train,
                             progress=progress)
    return {
        "encoder": "posterior mean",
        "latent_dim": int(z_train.shape[1]),
        "n_train": len(z_train),
        "n_test": len(z_test),
        "classifiers": {
            "knn": f"k-NN, Euclidean on raw posterior means, k = min({KNN_MAX_K}, labels per class)",
            "logreg": f"multinomial logistic regression on standardised means, lbfgs, max_iter={LOGREG_MAX_ITER}",
        },
        "errors": "fractions of the test set misclassified; mean and sample std over the draws",
        "seed": seed,
        "results": results,
        "reference": REFERENCE,
        "seconds": time.perf_counter() - t0,
    }
