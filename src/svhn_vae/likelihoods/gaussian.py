"""Diagonal Gaussian output distributions and the decoder heads that produce them.

Gaussians are diagonal and work the same on PCA codes or on pixels; they are densities, scored on
dequantized pixels (the +D ln 256 term of bits/dim). Every head can start from the training data
(``init_from_data``): the mean at the data mean and the variance at each dimension's data variance,
so no dimension begins with a variance orders of magnitude off. Their variance is:
- ``gaussian-fixed``: one constant (Doersch's tutorial);
- ``gaussian-relu-eps``: ReLU(v) + eps, the write-up's fix for the unstable log-variance head;
- ``gaussian-logvar``: exp of a log-variance head (Kingma & Welling) with a soft floor;
- ``gaussian-shared``: one learned variance per dimension, independent of z (a calibrated decoder).
Any of them may pin its first outputs (the top principal components) at one constant variance in
pixel space, so that the latents must carry them (``ModelConfig.fixed_variance_dims``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from svhn_vae.likelihoods.base import OutputLayer, init_output
from svhn_vae.precision import full_precision

LOG_2PI = math.log(2 * math.pi)


class Gaussian:
    """Diagonal Gaussian with mean ``loc`` (..., D) and variance ``var`` (..., D) or (D,), kept in float32.

    A head that computes the log-variance passes ``log_var`` instead of ``var``: the density then
    needs no log of an exp (it is the inner loop of the IWAE evaluation).
    """

    def __init__(self, loc: torch.Tensor, var: torch.Tensor | None = None, *,
                 log_var: torch.Tensor | None = None) -> None:
        if (var is None) == (log_var is None):
            raise ValueError("Gaussian needs exactly one of var and log_var")
        self.loc = loc.float()
        self._var = None if var is None else var.float()
        self._log_var = None if log_var is None else log_var.float()

    @property
    def var(self) -> torch.Tensor:
        return torch.exp(self._log_var) if self._var is None else self._var

    @property
    def log_var(self) -> torch.Tensor:
        return torch.log(self._var) if self._log_var is None else self._log_var

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(...) log-density in nats of x (broadcast against ``loc``): -0.5 * sum_d [log(2 pi var) + (x - loc)^2 / var].

        The IWAE evaluation's inner loop: its temporaries are updated in place, not reallocated."""
        sq = (x - self.loc).square_()
        precision = self._var.reciprocal() if self._log_var is None else self._log_var.neg().exp_()
        quadratic = torch.linalg.vecdot(sq, precision.expand_as(sq))
        return -0.5 * (self.loc.shape[-1] * LOG_2PI + self.log_var.sum(-1) + quadratic)

    def mean(self) -> torch.Tensor:
        return self.loc

    def mode(self) -> torch.Tensor:
        """The most probable value: the mean."""
        return self.loc

    def sample(self, *, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.loc.shape, generator=generator, device=self.loc.device, dtype=self.loc.dtype)
        return self.loc + noise * self.var.sqrt()

    def unflatten(self, shape: torch.Size) -> Gaussian:
        """The same Gaussians with the batch dimension split into ``shape``."""
        def split(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(0, shape) if t.dim() == self.loc.dim() else t  # a (D,) variance is shared
        if self._log_var is None:
            return Gaussian(split(self.loc), split(self._var))
        return Gaussian(split(self.loc), log_var=split(self._log_var))


class GaussianHead(nn.Module):
    """A linear mean; subclasses define :meth:`variance` and :meth:`init_variance` (the hooks that vary).

    ``data_var`` (D,) is each output dimension's variance in the training data, set by
    :meth:`init_from_data` and kept in the state dict: with ``relative`` the variance settings
    (eps, fixed variance, log-variance floor) are in its units. ``fixed_variance`` is the variance
    of ``gaussian-fixed``; the first P = ``pinned`` outputs share one variance in pixel space
    (``pinned_var`` (P,) in output units, see :meth:`init_from_data`).
    """

    def __init__(self, output_layer: OutputLayer, *, data_dim: int, relative: bool, pinned: int,
                 fixed_variance: float, fixed_variance_floor: float) -> None:
        super().__init__()
        self.loc = output_layer(data_dim)
        self.relative = relative
        self.register_buffer("data_var", torch.ones(data_dim))
        self.pinned, self.fixed_variance = pinned, float(fixed_variance)
        self.fixed_variance_floor = float(fixed_variance_floor)
        self.register_buffer("pinned_var", torch.full((pinned,), self.fixed_variance))

    def unit(self) -> torch.Tensor:
        """(D,) the unit of the variance settings: the data variance, or 1."""
        return self.data_var if self.relative else torch.ones_like(self.data_var)

    @torch.no_grad()
    def init_from_data(self, mean: torch.Tensor, var: torch.Tensor, unit_variance: torch.Tensor | None = None) -> None:
        """Start at the data: mean output ``mean`` (D,) with each weight row scaled by the dimension's
        standard deviation, and output variance ``var`` (D,) (a constant in z).

        ``unit_variance`` (D,) is the pixel-space variance of one unit of each output (a whitened
        PCA code: its eigenvalue; default 1). The pinned outputs all get the pixel-space variance
        ``fixed_variance`` times that of the last pinned one (relative) or ``fixed_variance``
        (absolute): the larger a component, the more precisely the latent must carry it (reverse
        water-filling, as for isotropic pixel noise restricted to the top components); but none
        less than ``fixed_variance_floor`` of its own variance, so that a dominant component (the
        brightness of colour images) does not take most of the latent's nats.
        """
        self.data_var.copy_(var)
        init_output(self.loc, mean, weight_scale=var.sqrt())
        self.init_variance(var)
        if self.pinned:
            unit = torch.ones_like(var) if unit_variance is None else unit_variance.to(var)
            level = self.fixed_variance * (var * unit)[self.pinned - 1] if self.relative else self.fixed_variance
            floor = self.fixed_variance_floor * (var * unit)[:self.pinned]
            self.pinned_var.copy_(floor.clamp_min(level) / unit[:self.pinned])

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        key = prefix + "pinned_var"
        if key not in state_dict:  # saved before pinned_var: each pinned output at fixed_variance of its own
            data_var = state_dict.get(prefix + "data_var", self.data_var)[:self.pinned]
            state_dict[key] = self.fixed_variance * (data_var if self.relative else torch.ones_like(data_var))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def init_variance(self, var: torch.Tensor) -> None:
        raise NotImplementedError

    def variance(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pin(self, values: torch.Tensor, pinned: torch.Tensor) -> torch.Tensor:
        """(..., D) variances (or log-variances) ``values`` with the first P replaced by ``pinned`` (P,)."""
        if not self.pinned:
            return values
        return torch.cat([pinned.expand(*values.shape[:-1], self.pinned), values[..., self.pinned:]], dim=-1)

    def distribution(self, loc: torch.Tensor, h: torch.Tensor) -> Gaussian:
        """The output Gaussian with mean ``loc``; a head that computes a log-variance overrides this."""
        return Gaussian(loc, self.pin(self.variance(h), self.pinned_var))

    def forward(self, h: torch.Tensor) -> Gaussian:
        with full_precision(h.device):  # the output layers in float32 even under bf16 autocast
            h = h.float()
            return self.distribution(self.loc(h), h)


class FixedVarianceHead(GaussianHead):
    """``gaussian-fixed``: a constant variance, ``fixed_variance`` (times each dimension's data variance when
    relative); only the mean is learned (Doersch's tutorial VAE)."""

    def init_variance(self, var: torch.Tensor) -> None:
        pass  # nothing to learn: fixed_variance (times data_var when relative) is the variance

    def variance(self, h: torch.Tensor) -> torch.Tensor:
        return self.fixed_variance * self.unit()


class ReluEpsHead(GaussianHead):
    """variance = ReLU(v(h)) + eps; ``v`` may start with dense blocks (the write-up used one of 500)."""

    def __init__(self, output_layer: OutputLayer, *, var_net: nn.Module, eps: float, frozen: bool,
                 **common: Any) -> None:
        super().__init__(output_layer, **common)
        self.var_net = var_net
        self.eps = eps
        # The write-up's Keras model left this head out of the trained graph: it kept its random init.
        self.frozen = frozen
        self.var_net.requires_grad_(not frozen)

    def init_variance(self, var: torch.Tensor) -> None:
        if self.frozen:
            return
        # ReLU(v) + eps = var where var > eps (always with a relative eps < 1); eps, the smallest it can be, elsewhere.
        init_output(self.var_net, (var - self.eps * self.unit()).clamp_min(0.0))

    def variance(self, h: torch.Tensor) -> torch.Tensor:
        return F.relu(self.var_net(h)) + self.eps * self.unit()


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = y > 0."""
    return y + torch.log(-torch.expm1(-y))


class LogVarHead(GaussianHead):
    """variance = exp(logvar); a soft floor ``log(exp(raw) + exp(min)) = min + softplus(raw - min)``
    keeps it from collapsing."""

    def __init__(self, output_layer: OutputLayer, *, logvar_min: float, **common: Any) -> None:
        super().__init__(output_layer, **common)
        self.logvar = output_layer(self.data_var.numel())
        self.logvar_min = logvar_min

    def floor(self) -> torch.Tensor | None:
        """(D,) the log-variance floor, or None without one."""
        return self.logvar_min + self.unit().log() if math.isfinite(self.logvar_min) else None

    def init_variance(self, var: torch.Tensor) -> None:
        floor, target = self.floor(), var.log()
        if floor is not None:  # raw such that floor + softplus(raw - floor) = log var
            target = floor + _inverse_softplus((target - floor).clamp_min(1e-6))
        init_output(self.logvar, target)

    def log_variance(self, h: torch.Tensor) -> torch.Tensor:
        raw, floor = self.logvar(h), self.floor()
        return raw if floor is None else torch.logaddexp(raw, floor)

    def variance(self, h: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_variance(h))

    def distribution(self, loc: torch.Tensor, h: torch.Tensor) -> Gaussian:
        return Gaussian(loc, log_var=self.pin(self.log_variance(h), self.pinned_var.log()))


class SharedVarianceHead(GaussianHead):
    """One learned log-variance per output dimension, shared by all z."""

    def __init__(self, output_layer: OutputLayer, **common: Any) -> None:
        super().__init__(output_layer, **common)
        self.log_var = nn.Parameter(torch.zeros_like(self.data_var))

    def init_variance(self, var: torch.Tensor) -> None:
        self.log_var.copy_(var.log())

    def variance(self, h: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_var)
