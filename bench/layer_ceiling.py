"""The ceiling of a model's own products: its Linear and Conv2d layers alone, on the inputs they get.

Shared by ``train_throughput.py`` (training: forward and backward) and ``evaluate_speed.py``
(evaluation: forward only). :func:`layer_runs` records, with forward hooks, every Linear and
Conv2d layer that a call of the model runs and the shape of its input (per-pixel layers see
batch x pixels rows, a masked convolution its images, a hierarchical model's ladder its own inputs);
:func:`ceiling_seconds` times fresh layers of the same shapes on random inputs, without
normalization, activations, loss, sampling or optimizer: what the hardware's matrix-product and
convolution kernels alone take. Not a script: the benches import it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

from svhn_vae.precision import autocast

LayerRun = tuple[nn.Module, torch.Size]
"""A Linear or Conv2d layer and the shape of an input it was given."""


@contextmanager
def layer_runs(model: nn.Module):
    """Within the block, every Linear and Conv2d call of ``model`` is appended, in order, to the
    list the block gets."""
    runs: list[LayerRun] = []
    hooks = [m.register_forward_hook(lambda m, args, _out: runs.append((m, args[0].shape)))
             for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        yield runs
    finally:
        for hook in hooks:
            hook.remove()


def forward_flops(runs: list[LayerRun]) -> float:
    """FLOPs of the runs' forward calls, 2 per multiply-add."""
    total = 0.0
    for layer, shape in runs:
        if isinstance(layer, nn.Linear):
            total += 2.0 * shape[:-1].numel() * layer.in_features * layer.out_features
        else:
            with torch.no_grad():
                outputs = layer(torch.zeros(shape, device=layer.weight.device)).numel()
            total += 2.0 * outputs * layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
    return total


def timed(step: Callable[[], object], *, seconds: float = 3.0) -> float:
    """Calls of ``step`` per second after two warm-up calls, over at least ``seconds``."""
    step(), step()
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        calls += 1
    return calls / (time.perf_counter() - t0)


def _bare(layer: nn.Module) -> nn.Module:
    """A fresh layer of the same shape (a masked convolution as a plain one: the same products)."""
    if isinstance(layer, nn.Linear):
        fresh = nn.Linear(layer.in_features, layer.out_features)
    else:
        fresh = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                          padding=layer.padding, groups=layer.groups)
    return fresh.to(layer.weight.device)


def ceiling_seconds(runs: list[LayerRun], *, precision: str = "fp32", backward: bool = True,
                    channels_last: bool = False, seconds: float = 3.0) -> float:
    """Seconds the runs' layers alone take (forward, and backward with ``backward``), each on a random
    input of its recorded shape; with ``channels_last`` the convolutions' weights and inputs in that
    memory format. A layer run several times on the same shape (the decoder on every chunk of
    importance samples) is timed once and counted as often as it ran; ``seconds`` is shared out."""
    counts: dict[tuple[int, torch.Size], int] = {}
    layers: dict[tuple[int, torch.Size], nn.Module] = {}
    for layer, shape in runs:
        key = (id(layer), shape)
        counts[key] = counts.get(key, 0) + 1
        layers[key] = layer
    total = 0.0
    for key, count in counts.items():
        layer, shape = _bare(layers[key]), key[1]
        x = torch.randn(shape, device=layer.weight.device)
        if channels_last and isinstance(layer, nn.Conv2d):
            layer, x = layer.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(backward)
        total += count / timed(lambda: _pass(layer, x, precision, backward), seconds=seconds / len(counts))
    return total


def _pass(layer: nn.Module, x: torch.Tensor, precision: str, backward: bool) -> None:
    """One forward (and backward) call of ``layer`` on ``x``, finished (synchronized on a GPU)."""
    with torch.set_grad_enabled(backward), autocast(precision, x.device):
        out = layer(x).float().sum()
    if backward:
        out.backward()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
