"""Reduced-precision training: ``--precision bf16`` runs the hidden layers under bfloat16 autocast.

bfloat16 keeps float32's exponent range, so no loss scaling is needed (unlike float16). What
stays in float32: the output heads (their inputs are cast up, so the decoded mean and variance are
exact to float32: a whitened code's mean rounded to bf16's 8 bits would be off by more than its
residual standard deviation), the encoder's mean and log-variance, and with them the KL, the
log-likelihood sums and the loss; BatchNorm keeps its statistics in float32 (autocast's own rule);
the weights and Adam's state are float32 throughout (autocast casts copies). Evaluation is float32.
"""

from __future__ import annotations

import contextlib

import torch


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of a training forward pass: bf16 on CPU or CUDA, nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off: what runs inside computes in the dtype of its inputs (float32 here)."""
    return torch.autocast(device_type=device.type, enabled=False)
