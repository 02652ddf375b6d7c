"""Pixels that also see their decoded neighbours (PixelVAE-style), for the likelihoods of pixel values.

Independent pixels given z cannot carry what is local and random in an image: sensor noise, the
blocks of JPEG, where exactly a blurred edge or a binarized stroke falls. Here each pixel's
parameters come from the decoder (from z) *and* from a small masked-convolution network over the
pixels above it and to its left (PixelCNN's mask, van den Oord et al. 2016; Gulrajani et al.'s
PixelVAE 2017), so p(x|z) = prod_i p(x_i | x_<i, z) over pixels in raster order (the channels of
one pixel coupled by the mixture, R -> G -> B). Its receptive field is a few pixels, so the global
content (digit, colours, style) is still left to the latents.

Any per-pixel likelihood can be made so (the discretized logistic mixture, Bernoulli): its
independent head gives every pixel its parameters (``base``, from z, started at the data); two
per-pixel dense layers read them with the masked network's features and add a correction, and a
linear masked convolution of the pixels before adds a linear prediction (of a smooth background, or
of a colour's channels from its neighbours', which the narrow nonlinear path learns slowly). Both
start at zero, so training starts from the independent model. The masked networks read x only, so
in an IWAE bound they run once per image, not per sample. Scoring is one pass; ``sample`` and ``mean``
decode pixel by pixel, each step computing only the window the next pixel sees.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from svhn_vae.precision import full_precision


class MaskedConv2d(nn.Conv2d):
    """A k x k convolution that sees only the rows above the centre and the pixels left of it on its
    row (and the centre itself with ``include_centre``): PixelCNN's masks 'A' and 'B'."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, *, include_centre: bool) -> None:
        super().__init__(in_channels, out_channels, kernel, padding=kernel // 2)
        mask = torch.zeros_like(self.weight)
        c = kernel // 2
        mask[:, :, :c, :] = 1.0
        mask[:, :, c, :c + int(include_centre)] = 1.0
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor, *, valid: bool = False) -> torch.Tensor:
        """The masked convolution, zero-padded to keep the size, or with ``valid`` only where the kernel fits."""
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=0 if valid else self.padding)


class Autoregressive:
    """p(x | z) = prod over pixels i in raster order of p(x_i | x_<i, z), each of the kind ``template`` is.

    ``template``: the independent distribution of the pixels given z (its per-pixel parameters are
    the ``base`` (..., P, K) that the masked network's correction is added to); ``head``: the networks.
    """

    def __init__(self, head: AutoregressiveHead, template: Any) -> None:
        self.head, self.template = head, template
        self.base = template.pixel_params(head.pixels).float()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(...) log-probability in nats of x (..., P C), broadcast against the parameters."""
        with full_precision(self.base.device):
            context = self.head.context_of(x)  # (..., P, W): once per image, whatever the samples of z
            return self.template.with_pixel_params(self.head.params(self.base, context)).log_prob(x)

    @torch.no_grad()
    def _decode(self, pick: str, generator: torch.Generator | None) -> torch.Tensor:
        """(..., P C) pixels decoded in raster order, each its conditional's draw ('sample'), mean ('mean')
        or most probable value ('mode')."""
        h, w, c = self.head.image_shape
        image = torch.zeros(*self.base.shape[:-2], h * w * c, device=self.base.device)
        with full_precision(self.base.device):
            for i in range(h * w):
                self._decode_pixel(image, i, pick, generator)
        return image

    def _decode_pixel(self, image: torch.Tensor, i: int, pick: str, generator: torch.Generator | None) -> None:
        """Set pixel ``i`` of ``image`` (..., P C), those before it decoded already."""
        head, (_, w, c) = self.head, self.head.image_shape
        params = head.params(self.base[..., i, :], head.context_at(image, i // w, i % w))  # (..., K)
        pixel = self.template.with_pixel_params(params.unsqueeze(-2))
        decoded = pixel.sample(generator=generator) if pick == "sample" else getattr(pixel, pick)()
        image[..., i * c:(i + 1) * c] = decoded

    def mean(self) -> torch.Tensor:
        """(..., P C) pixels in [0, 1], each the mean of its conditional given the means decoded before
        it (a deterministic decode; not the mean of p(x|z), which has no closed form)."""
        return self._decode("mean", None)

    def mode(self) -> torch.Tensor:
        """(..., P C) pixels, each the most probable value of its conditional given the values decoded
        before it (a greedy decode; not the most probable image, which no one can find)."""
        return self._decode("mode", None)

    def sample(self, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """(..., P C) a draw of 8-bit values as k / 255, pixel by pixel."""
        return self._decode("sample", generator)

    def unflatten(self, shape: torch.Size) -> Autoregressive:
        return Autoregressive(self.head, self.template.unflatten(shape))


class AutoregressiveHead(nn.Module):
    """Decoder features -> :class:`Autoregressive` over images of ``image_shape`` (H, W, C), around the
    ``independent`` head (its distribution has ``pixel_params``/``with_pixel_params``) with ``per_pixel``
    parameters a pixel.

    The masked network is a ``kernel`` x ``kernel`` mask-'A' convolution and a 3 x 3 mask-'B' one of
    ``width`` channels; two per-pixel dense layers map its features and the decoder's parameters of
    the pixel to a correction of those parameters, and a ``kernel`` x ``kernel`` mask-'A' convolution
    adds a linear one. A pixel's context is its W features and its K linear terms.
    """

    def __init__(self, independent: nn.Module, *, image_shape: tuple[int, int, int], per_pixel: int,
                 width: int, kernel: int) -> None:
        super().__init__()
        self.image_shape, self.width = tuple(image_shape), width
        h, w, c = image_shape
        self.pixels, self.independent = h * w, independent
        self.first = MaskedConv2d(c, width, kernel, include_centre=False)
        self.second = MaskedConv2d(width, width, 3, include_centre=True)
        self.reach = kernel // 2 + 1  # how far (rows up, columns either way) a pixel's context reaches
        self.linear = MaskedConv2d(c, per_pixel, kernel, include_centre=False)
        self.correction = nn.Sequential(nn.Linear(width + per_pixel, width), nn.ReLU(), nn.Linear(width, per_pixel))
        for layer in (self.linear, self.correction[-1]):  # start as the independent model
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.register_load_state_dict_pre_hook(_without_linear_term)

    def params(self, base: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """(..., K) mixture parameters of pixels from their independent ones ``base`` (..., K) and their
        context (..., W + K) (broadcast against each other)."""
        lead = torch.broadcast_shapes(base.shape[:-1], context.shape[:-1])
        base, context = base.expand(*lead, -1), context.expand(*lead, -1)
        features, linear = context[..., :self.width], context[..., self.width:]
        return base + linear + self.correction(torch.cat([F.relu(features), base], dim=-1))

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        """Rows x = k / 255 (N, H W C) -> images on [-1, 1] (N, C, H, W)."""
        h, w, c = self.image_shape
        return (x.reshape(-1, h, w, c) * 2 - 1).permute(0, 3, 1, 2)

    def context_of(self, x: torch.Tensor) -> torch.Tensor:
        """(..., P, W + K) each pixel's features and linear terms of the pixels before it, for x (..., P C)."""
        images = self._images(x)
        context = torch.cat([self.second(F.relu(self.first(images))), self.linear(images)], dim=1)  # (N, W + K, H, W)
        return context.permute(0, 2, 3, 1).reshape(*x.shape[:-1], self.pixels, -1)

    def context_at(self, x: torch.Tensor, row: int, col: int) -> torch.Tensor:
        """(..., W + K) pixel (row, col)'s context, from the window it sees of x (..., P C) alone: the
        same numbers as :meth:`context_of` (outside the image, inputs and first-layer features are
        zero, as the convolutions' zero padding makes them there)."""
        r, (h, w, _) = self.reach, self.image_shape
        window = F.pad(self._images(x), (r, r, r, r))[:, :, row:row + 2 * r + 1, col:col + 2 * r + 1]
        first = F.relu(self.first(window, valid=True))  # (N, W, 3, 3): the features the second layer reads
        inside = F.pad(torch.ones(1, 1, h, w, device=x.device), (1, 1, 1, 1))[:, :, row:row + 3, col:col + 3]
        features = self.second(first * inside, valid=True)  # (N, W, 1, 1)
        linear = self.linear(window[:, :, 1:-1, 1:-1], valid=True)  # (N, K, 1, 1): the kernel-sized middle
        return torch.cat([features, linear], dim=1).reshape(*x.shape[:-1], -1)

    def init_from_data(self, mean: torch.Tensor, var: torch.Tensor, unit_variance: torch.Tensor | None = None) -> None:
        """Start the independent head at the data (its own ``init_from_data``)."""
        self.independent.init_from_data(mean, var, unit_variance)

    def forward(self, h: torch.Tensor) -> Autoregressive:
        return Autoregressive(self, self.independent(h))


def _without_linear_term(module: AutoregressiveHead, state_dict: dict[str, torch.Tensor], prefix: str,
                         *args: Any) -> None:
    """Checkpoints written before the linear term existed (the first ``discrete`` and ``hierarchical``
    runs) lack it: a zero one makes them the same model, so they load and score as they did."""
    for name, value in module.linear.state_dict().items():
        state_dict.setdefault(f"{prefix}linear.{name}", torch.zeros_like(value))
