"""Stopping a training run without losing work: signals, and when to checkpoint inside an epoch.

:class:`StopRequest` turns the first SIGINT (Ctrl-C) or SIGTERM into a request that the training
loop honours after the step it is in: it writes a checkpoint of that exact position and exits
with a one-line message; ``--resume`` continues from there as if nothing had happened. A second
Ctrl-C raises ``KeyboardInterrupt`` at once (the last checkpoint is then the previous one).

:class:`CheckpointClock` says when a checkpoint is due inside an epoch: every N optimizer steps,
and every T minutes of training (an epoch of SVHN train+extra on a CPU takes far longer than is
safe to lose), so a crash costs at most that much work.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

from svhn_vae.errors import UserError

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(UserError):
    """Training stopped on a signal after writing a checkpoint; ``--resume`` continues it."""

    exit_code = 130


class StopRequest:
    """SIGINT/SIGTERM handlers for the duration of a ``with`` block (main thread only; elsewhere,
    e.g. in a notebook's worker thread, the default behaviour is kept)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        log.warning("%s: finishing this step, then writing a checkpoint (Ctrl-C again quits at once)",
                    self.signal_name)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


class CheckpointClock:
    """Whether a mid-epoch checkpoint is due after a step: every ``every_steps`` steps (0: never),
    or when ``every_minutes`` have passed since the last checkpoint (0: never)."""

    def __init__(self, *, every_steps: int, every_minutes: float) -> None:
        self.every_steps = every_steps
        self.every_seconds = every_minutes * 60
        self.reset()

    def reset(self) -> None:
        """A checkpoint was just written."""
        self._steps = 0
        self._since = time.monotonic()

    def due(self) -> bool:
        """Count one step; True when a checkpoint should be written now."""
        self._steps += 1
        by_steps = self.every_steps > 0 and self._steps >= self.every_steps
        by_time = self.every_seconds > 0 and time.monotonic() - self._since >= self.every_seconds
        return by_steps or by_time
