"""Keep freed memory in the process, so that large temporaries do not pay page faults each time.

PyTorch's CPU tensors come from ``malloc``. glibc serves blocks above its mmap threshold (128 KiB
at first) with fresh pages from the kernel and returns them on ``free``, and trims the top of its
heap beyond a similar threshold; every new large temporary (a chunk of importance samples, a batch
of activations) then costs a page fault per 4 KiB and zeroed pages. :func:`keep_freed_memory`
raises the mmap threshold to its maximum (32 MiB) and the trim threshold to 256 MiB through
``mallopt``, so freed blocks are reused. Measured on the 2-core AMD machine: the ``fast`` IWAE
evaluation (K = 1000, chunks of 20 x 100 samples) went from 155 s to 112 s per 10,000 images.

The command line calls it once at start; library users may call it too. It is a no-op (returning
False) where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD_BYTES = 256 << 20


def keep_freed_memory() -> bool:
    """Set glibc's malloc thresholds (see the module docstring); True if they were set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    gnu_get_libc_version = getattr(libc, "gnu_get_libc_version", None)
    mallopt = getattr(libc, "mallopt", None)
    if gnu_get_libc_version is None or mallopt is None:  # not glibc (musl, ...)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
