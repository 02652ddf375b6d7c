"""What every decoder head shares: the factory of its output layer and its start at the data."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# Builds a fresh layer mapping the decoder's hidden features to (B, n) outputs, n its argument:
# a Linear layer for dense decoders; for convolutional ones a convolution with n / (H W) channels
# whose (B, H, W, n / (H W)) output is flattened in that order (the datasets' NHWC order).
OutputLayer = Callable[[int], nn.Module]


def _last_layer(layer: nn.Module) -> nn.Linear | nn.Conv2d:
    """The Linear or Conv2d that produces an output layer's values."""
    found = [m for m in layer.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return found[-1]


@torch.no_grad()
def init_output(layer: nn.Module, bias: torch.Tensor, *, weight_scale: torch.Tensor | None = None) -> None:
    """Start an output layer at ``bias`` (D,): per dimension for a Linear layer, the per-channel mean
    for a convolution (outputs flattened in (H, W, C) order). The weights are zeroed, or, with
    ``weight_scale`` (D,), each output row of a Linear layer keeps its random init times that scale."""
    last = _last_layer(layer)
    if isinstance(last, nn.Conv2d):
        last.weight.zero_()
        last.bias.copy_(bias.view(-1, last.out_channels).mean(0))
        return
    if weight_scale is None:
        last.weight.zero_()
    else:
        last.weight.mul_(weight_scale[:, None])
    last.bias.copy_(bias)
