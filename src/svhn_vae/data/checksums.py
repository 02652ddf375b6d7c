"""md5 checks of dataset files against the registry.

A file is checked on its decompressed content against ``FileInfo.md5`` when that is known, so any
gzip encoding of the right bytes passes. Otherwise a gzipped file is checked on its bytes against
``FileInfo.gz_md5``; with neither, the file is reported "unverified".
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from svhn_vae.data.readers import is_gzip, open_content
from svhn_vae.data.registry import FileInfo

Status = Literal["ok", "mismatch", "corrupt", "missing", "unverified"]

_CHUNK = 1 << 20  # bytes hashed at a time


@dataclass(frozen=True)
class FileCheck:
    """Result of checking one file of a split."""

    name: str
    """Registry name of the file (e.g. ``train-images-idx3-ubyte``)."""
    path: Path | None
    """Where it was found, or None if it is missing."""
    status: Status
    expected_md5: str | None = None
    actual_md5: str | None = None
    detail: str = ""
    """Why a ``corrupt`` file could not be read."""

    @property
    def ok(self) -> bool:
        """True only for a file whose md5 matched the official one."""
        return self.status == "ok"

    @property
    def usable(self) -> bool:
        """True for a file that is present and not known to be wrong."""
        return self.status in ("ok", "unverified")

    def describe(self) -> str:
        """One line saying what was found, e.g. for ``svhn-vae data info``."""
        where = self.path if self.path is not None else self.name
        if self.status == "mismatch":
            return f"{where}: md5 {self.actual_md5}, expected {self.expected_md5}"
        if self.status == "corrupt":
            return f"{where}: unreadable ({self.detail})"
        return f"{where}: {self.status}"


def md5sum(path: Path, *, decompress: bool) -> str:
    """Hex md5 of ``path``'s bytes, or of its decompressed content if ``decompress`` and gzipped."""
    digest = hashlib.md5()
    with open_content(path) if decompress else open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(file: FileInfo, path: Path | None) -> FileCheck:
    """Check the file found at ``path`` (None: missing) against ``file``'s official md5."""
    if path is None:
        return FileCheck(file.name, None, "missing", file.md5 or file.gz_md5)
    if file.md5 is not None:
        expected, decompress = file.md5, True
    elif file.gz_md5 is not None and is_gzip(path):
        expected, decompress = file.gz_md5, False
    else:
        return FileCheck(file.name, path, "unverified")
    try:
        actual = md5sum(path, decompress=decompress)
    except (OSError, EOFError, zlib.error) as err:
        return FileCheck(file.name, path, "corrupt", expected, detail=str(err))
    status: Status = "ok" if actual == expected else "mismatch"
    return FileCheck(file.name, path, status, expected, actual)
