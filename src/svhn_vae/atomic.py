"""Atomic file writing: a file is either its old self or completely new, never half written.

Everything that must survive a crash (checkpoints, config, metrics rewrites, PCA files, dataset
caches, figures, reports) is written to a temporary file beside its final name and renamed over
it in one step (``os.replace`` is atomic on POSIX and Windows within one file system). A write
that fails, for lack of space or permission, leaves the previous file intact; :func:`disk_errors`
turns such a failure into a one-line :class:`DiskWriteError` that says what to free or fix.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from svhn_vae.errors import UserError

DISK_ERRORS = {
    errno.ENOSPC: "the disk is full: free some space",
    errno.EDQUOT: "the disk quota is used up: free some space",
    errno.EROFS: "the file system is read-only: use a writable folder",
    errno.EACCES: "permission denied: make the folder writable or use another one",
    errno.EPERM: "permission denied: make the folder writable or use another one",
}
"""errno -> what the user should do about it."""


class DiskWriteError(UserError):
    """A file could not be written (disk full, read-only, no permission); the previous one is intact."""


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    The file gets ordinary permissions (0666 less the umask), not ``mkstemp``'s 0600, so shared
    caches stay readable by others. On any error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_file(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write`` on a temporary path beside ``path``, then move the result into place."""
    with atomic_write(path) as tmp:
        write(tmp)


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as a ``.npy`` file (C order), atomically."""
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:  # a handle: np.save would append ".npy"
        np.save(handle, np.ascontiguousarray(array))


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


@contextlib.contextmanager
def disk_errors(what: str) -> Iterator[None]:
    """Turn a failed write of ``what`` (disk full, read-only, no permission) into a one-line
    :class:`DiskWriteError`; other errors pass through unchanged."""
    try:
        yield
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        where = f" ({e.filename})" if e.filename else ""
        raise DiskWriteError(f"could not write {what}{where}: {DISK_ERRORS[e.errno]}; "
                             "the previous file is intact") from None
