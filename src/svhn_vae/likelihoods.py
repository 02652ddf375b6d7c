"""Output distributions p(x|z) and the decoder heads that produce them.

Each distribution is a small object with ``log_prob(x)`` (per example, in nats, summed over
dimensions), ``mean()`` and ``sample(generator=...)``. Each head is an ``nn.Module`` mapping the
decoder's last hidden features to one distribution. The model picks a head by config name
(:func:`make_head`), never by dataset.

Gaussians are diagonal and work the same on PCA codes or on pixels. Their variance is:
- ``gaussian-fixed``: one constant (Doersch's tutorial);
- ``gaussian-relu-eps``: ReLU(v) + eps, the write-up's fix for the unstable log-variance head;
- ``gaussian-logvar``: exp of a log-variance head (Kingma & Welling) with a soft floor;
- ``gaussian-shared``: one learned variance per dimension, independent of z (a calibrated decoder).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from svhn_vae.config import ModelConfig

LOG_2PI = math.log(2 * math.pi)

# Builds a fresh layer mapping the decoder's hidden features to (B, D) outputs.
OutputLayer = Callable[[], nn.Module]


class Bernoulli:
    """Independent Bernoulli pixels given by logits (B, D); data in [0, 1] (binary or not)."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) log-likelihood in nats: sum_d x log p + (1 - x) log(1 - p)."""
        return -F.binary_cross_entropy_with_logits(self.logits, x, reduction="none").sum(dim=-1)

    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def sample(self, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.bernoulli(self.mean(), generator=generator)


class Gaussian:
    """Diagonal Gaussian with mean ``loc`` (B, D) and variance ``var`` (B, D) or (D,)."""

    def __init__(self, loc: torch.Tensor, var: torch.Tensor) -> None:
        self.loc = loc
        self.var = var

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) log-density in nats: -0.5 * sum_d [log(2 pi var) + (x - loc)^2 / var]."""
        var = self.var.expand_as(self.loc)
        return -0.5 * (LOG_2PI + torch.log(var) + (x - self.loc) ** 2 / var).sum(dim=-1)

    def mean(self) -> torch.Tensor:
        return self.loc

    def sample(self, *, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.loc.shape, generator=generator, device=self.loc.device, dtype=self.loc.dtype)
        return self.loc + noise * self.var.sqrt()


class BernoulliHead(nn.Module):
    def __init__(self, output_layer: OutputLayer) -> None:
        super().__init__()
        self.logits = output_layer()

    def forward(self, h: torch.Tensor) -> Bernoulli:
        return Bernoulli(self.logits(h))


class GaussianHead(nn.Module):
    """A linear mean; subclasses define :meth:`variance` (the one hook that varies)."""

    def __init__(self, output_layer: OutputLayer) -> None:
        super().__init__()
        self.loc = output_layer()

    def variance(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, h: torch.Tensor) -> Gaussian:
        return Gaussian(self.loc(h), self.variance(h))


class FixedVarianceHead(GaussianHead):
    def __init__(self, output_layer: OutputLayer, *, variance: float) -> None:
        super().__init__(output_layer)
        self.register_buffer("var", torch.tensor(float(variance)))

    def variance(self, h: torch.Tensor) -> torch.Tensor:
        return self.var.expand(1)


class ReluEpsHead(GaussianHead):
    """variance = ReLU(v(h)) + eps; ``v`` may start with dense blocks (the write-up used one of 500)."""

    def __init__(self, output_layer: OutputLayer, *, var_net: nn.Module, eps: float, frozen: bool) -> None:
        super().__init__(output_layer)
        self.var_net = var_net
        self.eps = eps
        # The write-up's Keras model left this head out of the trained graph: it kept its random init.
        self.var_net.requires_grad_(not frozen)

    def variance(self, h: torch.Tensor) -> torch.Tensor:
        return F.relu(self.var_net(h)) + self.eps


class LogVarHead(GaussianHead):
    """variance = exp(logvar); a soft floor ``min + softplus(raw - min)`` keeps it from collapsing."""

    def __init__(self, output_layer: OutputLayer, *, logvar_min: float) -> None:
        super().__init__(output_layer)
        self.logvar = output_layer()
        self.logvar_min = logvar_min

    def variance(self, h: torch.Tensor) -> torch.Tensor:
        raw = self.logvar(h)
        if math.isfinite(self.logvar_min):
            raw = self.logvar_min + F.softplus(raw - self.logvar_min)
        return torch.exp(raw)


class SharedVarianceHead(GaussianHead):
    """One learned log-variance per output dimension, shared by all z."""

    def __init__(self, output_layer: OutputLayer, *, data_dim: int) -> None:
        super().__init__(output_layer)
        self.log_var = nn.Parameter(torch.zeros(data_dim))

    def variance(self, h: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_var)


def make_head(cfg: ModelConfig, *, data_dim: int, output_layer: OutputLayer,
              var_net: Callable[[], nn.Module]) -> nn.Module:
    """The decoder head named by ``cfg.likelihood``.

    ``var_net`` builds the ReLU+eps variance network (dense blocks of ``cfg.variance_head`` then an
    output layer); the decoder supplies it because only it knows its hidden shape.
    """
    name = cfg.likelihood
    if name == "bernoulli":
        return BernoulliHead(output_layer)
    if name == "gaussian-fixed":
        return FixedVarianceHead(output_layer, variance=cfg.fixed_variance)
    if name == "gaussian-relu-eps":
        return ReluEpsHead(output_layer, var_net=var_net(), eps=cfg.eps, frozen=cfg.frozen_variance_head)
    if name == "gaussian-logvar":
        return LogVarHead(output_layer, logvar_min=cfg.logvar_min)
    if name == "gaussian-shared":
        return SharedVarianceHead(output_layer, data_dim=data_dim)
    raise ValueError(f"unknown likelihood {name!r}")  # unreachable: ModelConfig validates it
