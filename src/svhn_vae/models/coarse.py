"""A coarse view of each image that the latents must explain too: a training term, outside the bound.

With a pixel context (:mod:`svhn_vae.likelihoods.autoregressive`) a colour digit's pixels are
predicted so well from their neighbours that the latents are left to code colour, background and
noise, not the digit, and what is decoded from the prior is a coloured blob. Here the latents the
decoder reads also predict the image average-pooled to S x S (per channel), through a Gaussian with
a fixed variance per pooled value (``variance`` times that value's variance over the training data,
at least :data:`VARIANCE_FLOOR`), and its log-density is added to what training maximises. It is
the `fast` preset's pinned principal components carried over to pixel models: no decoder can wave
the coarse image off as noise, so the latents must carry it (on synth-digits their KL rose from 53
to 170 nats, and the samples became digits; docs/results.md).

The term is no part of the model's likelihood: the ELBO and the IWAE bound that ``evaluate`` scores
are of p(x) alone, and this head is not used for them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svhn_vae.likelihoods import Gaussian
from svhn_vae.networks import ToNCHW

VARIANCE_FLOOR = 1.0 / (12 * 255**2)
"""The smallest fixed variance, that of rounding to 8 bits: a pooled value constant over the data (as
MNIST's corners are) would otherwise make any error cost without bound."""


class CoarseView(nn.Module):
    """log N(pool(x); head(z), fixed variances) for images of ``image_shape`` (H, W, C) pooled to
    ``size`` x ``size``, from latents of ``latent_dim`` through a ``width``-wide hidden layer."""

    def __init__(self, *, latent_dim: int, image_shape: tuple[int, int, int], size: int, variance: float,
                 width: int = 512) -> None:
        super().__init__()
        self.size, self.variance = size, variance
        self.to_images = ToNCHW(image_shape)
        outputs = size * size * image_shape[2]
        self.head = nn.Sequential(nn.Linear(latent_dim, width), nn.ReLU(), nn.Linear(width, outputs))
        self.register_buffer("log_var", torch.zeros(outputs))

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S S C) the images x (B, H W C) in [0, 1] average-pooled (uneven bins where S does not divide H, W)."""
        return F.adaptive_avg_pool2d(self.to_images(x.float()), self.size).flatten(1)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Fix the variances at ``variance`` times each pooled value's variance over images x (N, H W C),
        and start the head's output at their mean."""
        pooled = self.target(x).double()
        self.log_var.copy_(torch.log((self.variance * pooled.var(0)).clamp_min(VARIANCE_FLOOR)).float())
        last = self.head[-1]
        last.bias.copy_(pooled.mean(0).float())
        last.weight.mul_(0.1)

    def log_prob(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B,) log-density in nats of x's (B, H W C) coarse view given latents z (B, L)."""
        return Gaussian(self.head(z), log_var=self.log_var).log_prob(self.target(x))
