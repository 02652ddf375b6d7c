"""No NaN or infinity is ever reported as a result: every metric passes :func:`check_finite` before
it is written into ``eval.json`` or ``metrics.jsonl``."""

from __future__ import annotations

import math
from typing import Any

from svhn_vae.errors import UserError


class MetricNotFinite(UserError):
    """A metric came out NaN or infinite: a result that must not be reported."""


def check_finite(result: Any, path: str = "") -> None:
    """Raise :class:`MetricNotFinite` naming the first NaN or infinite number in a nested result
    (``path``: where the result goes, e.g. ``metrics.jsonl``, to name it in the message)."""
    if isinstance(result, dict):
        for key, value in result.items():
            check_finite(value, f"{path}.{key}" if path else str(key))
    elif isinstance(result, (list, tuple)):
        for i, value in enumerate(result):
            check_finite(value, f"{path}[{i}]")
    elif isinstance(result, float) and not math.isfinite(result):
        raise MetricNotFinite(
            f"metric {path} is {result}: nothing was written. Likely causes: the model's weights or its output "
            "variance are not finite (check the run's metrics.jsonl), or a PCA direction with zero variance "
            "(retrain with --dequantize)")
