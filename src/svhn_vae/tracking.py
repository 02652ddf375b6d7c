"""TensorBoard logging of a run (``--tensorboard``): loss terms, learning rate, speed, sample grids
and evaluation metrics, as event files under ``RUN/tensorboard/``.

Uses ``torch.utils.tensorboard``, which needs the optional ``tensorboard`` package
(``pip install 'svhn-vae[tensorboard]'``). Nothing else in svhn-vae depends on it: without the
flag no event file is written and the package is never imported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from svhn_vae.errors import UserError

TENSORBOARD_DIR = "tensorboard"
# metrics.jsonl keys logged each epoch, under "train/" (val_* under "val/").
EPOCH_SCALARS = ("loss", "rec", "kl", "beta", "lr", "images_per_s", "seconds")


class TensorBoardLog:
    """Writes a run's scalars and images to ``run_dir/tensorboard``; steps are epochs."""

    def __init__(self, run_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard package: pip install 'tensorboard>=2.14,<3'") from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR))

    def epoch(self, record: Mapping[str, Any]) -> None:
        """The training terms of one ``metrics.jsonl`` record."""
        step = int(record["epoch"])
        for key in EPOCH_SCALARS:
            if key in record:
                self.writer.add_scalar(f"train/{key}", record[key], step)
        for key, value in record.items():
            if key.startswith("val_"):
                self.writer.add_scalar(f"val/{key[4:]}", value, step)
        self.writer.flush()

    def image(self, tag: str, image: np.ndarray, *, step: int) -> None:
        """A uint8 image (H, W, C)."""
        self.writer.add_image(tag, image, step, dataformats="HWC")
        self.writer.flush()

    def metrics(self, result: Mapping[str, Any], *, step: int, prefix: str = "eval") -> None:
        """Every finite number of a nested result (``eval.json``), tagged by its dotted path."""
        for name, value in _numbers(result):
            self.writer.add_scalar(f"{prefix}/{name}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _numbers(result: Mapping[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    """(dotted path, value) of the finite ints and floats of a nested dict (booleans left out)."""
    found: list[tuple[str, float]] = []
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found.extend(_numbers(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found.append((name, float(value)))
    return found
