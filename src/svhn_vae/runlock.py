"""One writer per run folder: a lock that the operating system releases when its holder dies.

``train``, ``evaluate`` and ``report`` write into a run folder, so each holds :func:`run_lock` on it
while it works: an exclusive ``fcntl.flock`` on ``RUN/.lock``. A second writer is refused at once
with a one-line :class:`RunFolderBusy` naming the holder (PID, host, command, start time, which the
holder writes into the lock file). The lock belongs to the open file, so a holder that crashes or
is killed with ``kill -9`` releases it with its process: a crashed run never needs cleaning up,
and the stale lock file left behind is simply locked again by the next writer. Readers (``sample``,
``compare``, ``export``) take no lock.

``flock`` locks are advisory and local to one machine's kernel; on network file systems without
lock support the second-writer check may not hold.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from svhn_vae.distributed import launched_rank
from svhn_vae.errors import UserError

LOCK_FILE = ".lock"


F = TypeVar("F", bound=Callable[..., Any])


class RunFolderBusy(UserError):
    """Another process is writing into the run folder."""


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote into the lock file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return f"PID {info.get('pid')} on {info.get('host')} ('{info.get('command')}', since {since})"


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the run folder's lock for the duration of the block; creates the folder if needed.

    Raises :class:`RunFolderBusy` at once when another process holds it. A folder this call
    created is removed again when the block leaves nothing in it but the lock file (a run that
    failed before writing anything leaves no empty run folder behind).
    """
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderBusy(f"run folder {run_dir} is in use by {_holder(fd)}; wait for it to finish, "
                                "or stop it (Ctrl-C) and then --resume") from None
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:200],
                "since": time.time()}
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        if created and [p.name for p in run_dir.iterdir()] == [LOCK_FILE]:
            (run_dir / LOCK_FILE).unlink()
            run_dir.rmdir()
        os.close(fd)  # releases the lock


def lock_if_run_folder(path: str | Path) -> contextlib.AbstractContextManager:
    """:func:`run_lock` on ``path`` when it is a run folder, nothing for a checkpoint file."""
    return run_lock(path) if Path(path).is_dir() else contextlib.nullcontext()


def holding_run_lock(fn: F) -> F:
    """Decorate a function with a ``run_dir`` keyword so that it runs holding that folder's lock
    (rank 0 alone under torchrun: the other ranks never write into the folder)."""
    @functools.wraps(fn)
    def locked(*args: Any, run_dir: str | Path | None = None, **kwargs: Any) -> Any:
        holds = run_dir is not None and launched_rank() == 0
        with run_lock(run_dir) if holds else contextlib.nullcontext():
            return fn(*args, run_dir=run_dir, **kwargs)
    return locked  # type: ignore[return-value]
