"""Discrete likelihoods of 8-bit pixels: probabilities of the 256 values themselves.

Their log-likelihoods are log-probabilities (never positive), so bits per dimension are
-log2 p(x) / D with no dequantization term. Both take pixels as model inputs do, x = k / 255 for
the 8-bit value k, flattened in (H, W, C) order, and recover k exactly.

- :class:`DiscretizedLogisticMixture`: PixelCNN++'s (Salimans et al. 2017) per-pixel mixture of
  logistics discretized to 256 bins on [-1, 1], the edge bins taking the tails; for several
  channels the means are coupled linearly in channel order (G's mean moves with R's value, B's
  with R's and G's), so one mixture component models a colour, not three independent subpixels.
- :class:`Categorical`: a free 256-way distribution per subpixel (the independent histogram
  baseline is one, with fixed logits).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from svhn_vae.likelihoods.base import OutputLayer, init_output
from svhn_vae.precision import full_precision

LEVELS = 256
HALF_BIN = 1.0 / (LEVELS - 1)  # half a bin's width on [-1, 1], where the 256 values sit 2 / 255 apart
LOG_SCALE_MIN = -7.0  # PixelCNN++'s floor of a logistic's log-scale


def pixel_values(x: torch.Tensor) -> torch.Tensor:
    """The 8-bit values k (long) of inputs x = k / 255."""
    return torch.round(x * (LEVELS - 1)).long()


def log_bin_mass(k: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(value k) in nats of a logistic(loc, exp(log_scale)) on [-1, 1] discretized to 256 bins.

    Bin k covers v_k +- 1/255 with v_k = 2k/255 - 1; bin 0 takes everything below, bin 255 everything
    above, so the 256 probabilities sum to 1 exactly. The mass of an inner bin,
    sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a)), is taken in logs, which stays
    exact for narrow logistics far from the bin (no cancellation, no pdf approximation).
    """
    centred = 2.0 * k.to(loc.dtype) / (LEVELS - 1) - 1.0 - loc
    inv_scale = torch.exp(-log_scale)
    upper, lower = inv_scale * (centred + HALF_BIN), inv_scale * (centred - HALF_BIN)
    below_upper, above_lower = F.logsigmoid(upper), F.logsigmoid(-lower)
    inner = below_upper + above_lower + torch.log(-torch.expm1(-2.0 * HALF_BIN * inv_scale))
    return torch.where(k == 0, below_upper, torch.where(k == LEVELS - 1, above_lower, inner))


def gumbel_argmax(logits: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """(...) a draw of the index along the last dimension with probabilities softmax(logits) (Gumbel-max)."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp(1e-6, 1 - 1e-6)
    return torch.argmax(logits - torch.log(-torch.log(u)), dim=-1)


def logistic_mixture_params(channels: int, mixtures: int) -> int:
    """Parameters per pixel: mixture logits M, means C M, log-scales C M, coupling coefficients C(C-1)/2 M."""
    return mixtures * (1 + 2 * channels + channels * (channels - 1) // 2)


class DiscretizedLogisticMixture:
    """A mixture of M discretized logistics per pixel, channels coupled within each component.

    ``params`` (..., P, K) for P pixels holds, per pixel, K = :func:`logistic_mixture_params` raw
    numbers: mixture logits (M), means on [-1, 1] (C, M), log-scales (C, M), and C(C-1)/2
    coefficients (tanh-squashed) by which the values of the earlier channels shift each later
    channel's mean (PixelCNN++'s R -> G -> B). Kept in float32.
    """

    def __init__(self, params: torch.Tensor, *, channels: int, mixtures: int) -> None:
        self.params = params.float()
        self.channels, self.mixtures = channels, mixtures
        c, m = channels, mixtures
        self.logits = self.params[..., :m]  # (..., P, M)
        self.loc = self.params[..., m:m + c * m].unflatten(-1, (c, m))  # (..., P, C, M)
        self.log_scale = self.params[..., m + c * m:m + 2 * c * m].unflatten(-1, (c, m)).clamp_min(LOG_SCALE_MIN)
        n_coupling = c * (c - 1) // 2
        self.coupling = torch.tanh(self.params[..., m + 2 * c * m:].unflatten(-1, (n_coupling, m))) if n_coupling else None

    def _shift(self, values: torch.Tensor, coupling: torch.Tensor | None = None) -> torch.Tensor:
        """(..., P, C, M) how far the earlier channels' ``values`` (..., P, C, M or 1) on [-1, 1] move each
        channel's mean: sum over j < c of coupling(c, j) * value j (0 for the first channel)."""
        coupling = self.coupling if coupling is None else coupling
        shifts, pair = [torch.zeros_like(values[..., 0, :])], 0
        for c in range(1, self.channels):
            shift = torch.zeros_like(shifts[0])
            for j in range(c):
                shift = shift + coupling[..., pair, :] * values[..., j, :]
                pair += 1
            shifts.append(shift)
        return torch.stack(torch.broadcast_tensors(*shifts), dim=-2)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(...) log-probability in nats of the 8-bit values of x = k / 255 (..., P C), broadcast against the parameters."""
        k = pixel_values(x).unflatten(-1, (-1, self.channels)).unsqueeze(-1)  # (..., P, C, 1)
        loc = self.loc
        if self.coupling is not None:
            loc = loc + self._shift(2.0 * k.float() / (LEVELS - 1) - 1.0)
        per_channel = log_bin_mass(k, loc, self.log_scale)  # (..., P, C, M)
        log_mix = torch.log_softmax(self.logits, dim=-1) + per_channel.sum(dim=-2)  # (..., P, M)
        return torch.logsumexp(log_mix, dim=-1).sum(dim=-1)

    def mean(self) -> torch.Tensor:
        """(..., P C) pixels in [0, 1]: the mixture's mean, each channel's coupling taken at the earlier
        channels' component means (the logistics' clipping at the edges ignored)."""
        loc = self.loc
        for _ in range(self.channels - 1):  # after round r the first r + 1 channels are coupled
            loc = self.loc + self._shift(loc)
        v = (loc * torch.softmax(self.logits, dim=-1).unsqueeze(-2)).sum(-1).clamp(-1.0, 1.0)  # (..., P, C)
        return ((v + 1.0) / 2.0).flatten(-2)

    def mode(self) -> torch.Tensor:
        """(..., P C) 8-bit values as k / 255: each pixel's most probable component at its peak, the
        channels' centres coupled in order (the mode of that component's logistic density).

        Not the exact mode of the 256 probabilities: a logistic wider than about 1.5 bins near 0 or
        255 gives its edge bin, which takes the whole tail, the most mass, and decoding to those
        would paint saturated blocks where the model expects a smooth ramp."""
        component = self.logits.argmax(dim=-1, keepdim=True).unsqueeze(-2)  # (..., P, 1, 1)
        loc = self.loc
        for _ in range(self.channels - 1):  # after round r the first r + 1 channels are coupled
            loc = self.loc + self._shift(loc)
        peak = loc.gather(-1, component.expand(*loc.shape[:-1], 1)).squeeze(-1).clamp(-1.0, 1.0)  # (..., P, C)
        return torch.round((peak + 1.0) / 2.0 * (LEVELS - 1)).flatten(-2) / (LEVELS - 1)

    def sample(self, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """(..., P C) a draw of 8-bit values as k / 255: a component per pixel (Gumbel-max), then the
        channels in order, each a logistic around its coupled mean, clipped and rounded to a bin."""
        component = gumbel_argmax(self.logits, generator=generator).unsqueeze(-1)  # (..., P, 1)

        def pick(t: torch.Tensor) -> torch.Tensor:  # (..., P, n, M) -> the chosen component's (..., P, n, 1)
            return t.gather(-1, component.unsqueeze(-2).expand(*t.shape[:-1], 1))

        loc, log_scale = pick(self.loc), pick(self.log_scale)
        noise = torch.rand(loc.shape, generator=generator, device=loc.device).clamp(1e-6, 1 - 1e-6)
        draws = loc + torch.exp(log_scale) * (torch.log(noise) - torch.log1p(-noise))  # (..., P, C, 1)

        def to_bin(v: torch.Tensor) -> torch.Tensor:  # clip to [-1, 1] and round to the nearest bin's centre
            return torch.round((v.clamp(-1.0, 1.0) + 1.0) / 2.0 * (LEVELS - 1)) / (LEVELS - 1) * 2.0 - 1.0

        values = to_bin(draws)
        for _ in range(self.channels - 1):
            values = to_bin(draws + self._shift(values, pick(self.coupling)))
        return ((values.squeeze(-1) + 1.0) / 2.0).flatten(-2)

    def pixel_params(self, pixels: int) -> torch.Tensor:
        """(..., P, K) the raw parameters of each of the ``pixels`` pixels."""
        return self.params

    def with_pixel_params(self, params: torch.Tensor) -> DiscretizedLogisticMixture:
        """A mixture of the same kind with raw parameters ``params`` (..., P, K)."""
        return DiscretizedLogisticMixture(params, channels=self.channels, mixtures=self.mixtures)

    def unflatten(self, shape: torch.Size) -> DiscretizedLogisticMixture:
        """The same pixels with the batch dimension split into ``shape``."""
        return self.with_pixel_params(self.params.unflatten(0, shape))


class Categorical:
    """Independent 256-way distributions, ``logits`` (..., D, 256) per subpixel, kept in float32."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits.float()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(...) log-probability in nats of the 8-bit values of x = k / 255 (..., D), broadcast against the logits."""
        log_p, k = torch.log_softmax(self.logits, dim=-1), pixel_values(x)
        shape = torch.broadcast_shapes(k.shape, log_p.shape[:-1])
        return log_p.expand(*shape, LEVELS).gather(-1, k.expand(shape).unsqueeze(-1)).squeeze(-1).sum(dim=-1)

    def mean(self) -> torch.Tensor:
        """(..., D) the expected value of each subpixel, in [0, 1]."""
        levels = torch.arange(LEVELS, device=self.logits.device, dtype=torch.float32) / (LEVELS - 1)
        return torch.softmax(self.logits, dim=-1) @ levels

    def mode(self) -> torch.Tensor:
        """(..., D) each subpixel's most probable 8-bit value as k / 255."""
        return self.logits.argmax(dim=-1).float() / (LEVELS - 1)

    def sample(self, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """(..., D) a draw of 8-bit values as k / 255 (Gumbel-max)."""
        return gumbel_argmax(self.logits, generator=generator).float() / (LEVELS - 1)

    def unflatten(self, shape: torch.Size) -> Categorical:
        return Categorical(self.logits.unflatten(0, shape))


class LogisticMixtureHead(nn.Module):
    """Decoder features -> :class:`DiscretizedLogisticMixture` over ``data_dim`` subpixels of ``channels`` each."""

    def __init__(self, output_layer: OutputLayer, *, data_dim: int, channels: int, mixtures: int) -> None:
        super().__init__()
        self.channels, self.mixtures = channels, mixtures
        self.pixels, self.per_pixel = data_dim // channels, logistic_mixture_params(channels, mixtures)
        self.params = output_layer(self.pixels * self.per_pixel)

    @torch.no_grad()
    def init_from_data(self, mean: torch.Tensor, var: torch.Tensor, unit_variance: torch.Tensor | None = None) -> None:
        """Start every pixel at its training mean and spread (``mean``, ``var`` (D,) of x in [0, 1]):
        the M components' means spaced over +-1 standard deviation, their scales a logistic's of one."""
        c, m = self.channels, self.mixtures
        loc, std = (2 * mean - 1).view(-1, c, 1), (2 * var.sqrt()).clamp_min(HALF_BIN).view(-1, c, 1)
        spread = torch.linspace(-1.0, 1.0, m, device=mean.device) if m > 1 else torch.zeros(1, device=mean.device)
        bias = torch.zeros(self.pixels, self.per_pixel, device=mean.device)
        bias[:, m:m + c * m] = (loc + std * spread).flatten(1)
        bias[:, m + c * m:m + 2 * c * m] = torch.log(std * math.sqrt(3) / math.pi).expand(-1, c, m).flatten(1)
        init_output(self.params, bias.flatten())

    def forward(self, h: torch.Tensor) -> DiscretizedLogisticMixture:
        with full_precision(h.device):
            params = self.params(h.float()).unflatten(-1, (self.pixels, self.per_pixel))
            return DiscretizedLogisticMixture(params, channels=self.channels, mixtures=self.mixtures)


class CategoricalHead(nn.Module):
    """Decoder features -> :class:`Categorical` over ``data_dim`` subpixels (256 logits each)."""

    def __init__(self, output_layer: OutputLayer, *, data_dim: int) -> None:
        super().__init__()
        self.logits = output_layer(data_dim * LEVELS)

    @torch.no_grad()
    def init_from_data(self, mean: torch.Tensor, var: torch.Tensor, unit_variance: torch.Tensor | None = None) -> None:
        """Start each subpixel at a discretized Gaussian with its training mean and variance."""
        levels = torch.arange(LEVELS, device=mean.device, dtype=torch.float32) / (LEVELS - 1)
        logits = -(levels - mean[:, None]).square() / (2 * var[:, None].clamp_min(HALF_BIN ** 2))
        init_output(self.logits, logits.flatten())

    def forward(self, h: torch.Tensor) -> Categorical:
        with full_precision(h.device):
            return Categorical(self.logits(h.float()).unflatten(-1, (-1, LEVELS)))
