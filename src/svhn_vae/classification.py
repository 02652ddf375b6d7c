"""Classifying images with a model that has a label latent (M2): q(y|x), its test error and confusion matrix.

Errors are fractions of the images misclassified (0.0333 means 3.33 %), as in :mod:`svhn_vae.probe`,
whose published semi-supervised figures (Kingma et al. 2014, Maaløe et al. 2016) the evaluation
shows beside them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from svhn_vae.checkpoint import TrainedModel
from svhn_vae.errors import UserError
from svhn_vae.models.m2 import has_label_latent

PUBLISHED: dict[str, Any] = {
    "source": "test error (fraction) of semi-supervised models, same protocol: Kingma et al. 2014 (M1+TSVM, M2, "
              "M1+M2), Maaløe et al. 2016 (ADGM, SDGM)",
    "mnist": {"100": {"M1+TSVM": 0.1182, "M2": 0.1197, "M1+M2": 0.0333, "ADGM": 0.0096, "SDGM": 0.0132},
              "1000": {"M1+TSVM": 0.0424, "M2": 0.0360, "M1+M2": 0.0240}},
    "svhn": {"1000": {"M1+TSVM": 0.5533, "M1+M2": 0.3602, "SDGM": 0.1661}},
}


def can_classify(trained: TrainedModel) -> bool:
    """Whether the trained model has a classifier q(y|x) (a label latent, as M2 and M1+M2 have)."""
    return has_label_latent(trained.model)


@torch.inference_mode()
def class_probabilities(trained: TrainedModel, images: np.ndarray, *, batch_size: int = 1000,
                        device: str | torch.device = "cpu") -> np.ndarray:
    """q(y|x), float32 (N, C), of uint8 images (N, H, W, C), in eval mode (the bin centres of dequantized pixels)."""
    if not can_classify(trained):
        raise UserError("this run has no label latent to classify with; train one with --preset m2 --labels N")
    model, rep = trained.model.to(device).eval(), trained.representation
    out = [model.classify(rep.encode(images[i:i + batch_size], device=device)).exp().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """(C, C) counts: row the true class, column the predicted one."""
    return np.bincount(np.asarray(labels) * classes + np.asarray(predicted), minlength=classes * classes
                       ).reshape(classes, classes)


def classification_metrics(trained: TrainedModel, images: np.ndarray, labels: np.ndarray, *,
                           dataset: str | None = None, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Test error and confusion matrix of q(y|x)'s most probable class on images (N, H, W, C), labels (N,)."""
    predicted = class_probabilities(trained, images, device=device).argmax(1)
    classes = trained.model.classes
    matrix = confusion_matrix(labels, predicted, classes)
    return {"n": len(labels), "error": float(np.mean(predicted != np.asarray(labels))),
            "labels_used": trained.config.train.labels, "confusion": matrix.tolist(),
            "per_class_error": (1 - np.diag(matrix) / np.maximum(matrix.sum(1), 1)).tolist(),
            "published": {"source": PUBLISHED["source"], **PUBLISHED.get(dataset, {})}}
