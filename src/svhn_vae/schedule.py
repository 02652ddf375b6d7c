"""Learning-rate schedules: linear warm-up, then constant or cosine decay, stepped once per batch.

The schedule is a ``torch.optim.lr_scheduler.LambdaLR`` over the optimizer, so its state (the
step count and the base learning rates) goes into the checkpoint with ``state_dict()`` and a
resumed run continues on exactly the same curve. The NaN guard lowers the base rates
(:func:`scale_base_lrs`), so the lowered rate survives every later step and a resume.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from svhn_vae.config import TrainConfig


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """The multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Warm-up: (step + 1) / warmup_steps for the first ``warmup_steps`` steps. Then 1 ('constant'),
    or 0.5 * (1 + cos(pi * t)) with t going from 0 to 1 over the remaining steps ('cosine').
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * t))


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, *, steps_per_epoch: int) -> LambdaLR:
    """The configured schedule over ``cfg.epochs * steps_per_epoch`` optimizer steps."""
    total = cfg.epochs * steps_per_epoch
    return LambdaLR(optimizer, lambda step: lr_factor(step, total_steps=total, warmup_steps=cfg.warmup_steps,
                                                      schedule=cfg.lr_schedule))


def scale_base_lrs(scheduler: LambdaLR, factor: float) -> None:
    """Multiply the peak learning rates (and the current ones) by ``factor``."""
    scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
    for group in scheduler.optimizer.param_groups:
        group["lr"] *= factor
