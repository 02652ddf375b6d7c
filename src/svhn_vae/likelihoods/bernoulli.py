"""Independent Bernoulli pixels: the likelihood of binarized images (MNIST's standard benchmark)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svhn_vae.likelihoods.base import OutputLayer, init_output
from svhn_vae.precision import full_precision


class Bernoulli:
    """Independent Bernoulli pixels given by logits (B, D); data in [0, 1] (binary or not). The
    parameters are kept in float32, so log-likelihoods sum in float32 under bf16 autocast."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits.float()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(...) log-likelihood in nats of x (broadcast against the logits): sum_d x log p + (1 - x) log(1 - p)."""
        return -F.binary_cross_entropy_with_logits(self.logits, x.expand_as(self.logits), reduction="none").sum(dim=-1)

    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def mode(self) -> torch.Tensor:
        """(..., D) each pixel's more probable value, 0 or 1 (1 on a tie)."""
        return (self.logits >= 0).float()

    def pixel_params(self, pixels: int) -> torch.Tensor:
        """(..., P, C) the logits of each of the ``pixels`` pixels."""
        return self.logits.unflatten(-1, (pixels, -1))

    def with_pixel_params(self, params: torch.Tensor) -> Bernoulli:
        """Bernoulli pixels with logits ``params`` (..., P, C)."""
        return Bernoulli(params.flatten(-2))

    def unflatten(self, shape: torch.Size) -> Bernoulli:
        """The same pixels with the batch dimension split into ``shape``."""
        return Bernoulli(self.logits.unflatten(0, shape))

    def sample(self, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.bernoulli(self.mean(), generator=generator)


class BernoulliHead(nn.Module):
    """Decoder head of independent Bernoulli pixels: one logit per dimension, started at the data's marginals."""

    def __init__(self, output_layer: OutputLayer, *, data_dim: int) -> None:
        super().__init__()
        self.logits = output_layer(data_dim)

    def init_from_data(self, mean: torch.Tensor, var: torch.Tensor, unit_variance: torch.Tensor | None = None) -> None:
        """Start the logits at the training pixels' marginals: decode(z) is their mean for every z."""
        init_output(self.logits, torch.logit(mean.clamp(1e-3, 1 - 1e-3)))

    def forward(self, h: torch.Tensor) -> Bernoulli:
        with full_precision(h.device):
            return Bernoulli(self.logits(h.float()))
