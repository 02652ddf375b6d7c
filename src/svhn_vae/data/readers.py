"""Readers for the two on-disk formats: IDX (MNIST, Fashion-MNIST) and SVHN's MATLAB files.

Every reader returns ``images`` as uint8 NHWC, shape (N, H, W, C), and ``labels`` as int64 in
0..9, and raises UserError naming the file when it is not what it claims to be.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from svhn_vae.errors import UserError

GZIP_MAGIC = b"\x1f\x8b"
_IDX_UINT8 = 0x08  # IDX type code for unsigned bytes, the only one MNIST-style files use


def corrupt_file_error(path: Path, reason: str) -> UserError:
    """UserError for a file that cannot be read as what it should be."""
    return UserError(
        f"{path} is corrupt or not the expected file ({reason}); delete it and download it again"
    )


def is_gzip(path: Path) -> bool:
    """Whether ``path`` starts with the gzip magic bytes (whatever its name ends with)."""
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def open_content(path: Path) -> BinaryIO:
    """Open ``path`` for reading its content, decompressing on the fly if it is gzipped."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")  # type: ignore[return-value]


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (raw or gzipped) of unsigned bytes; returns an array of its dims."""
    try:
        with open_content(path) as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as err:
        raise corrupt_file_error(path, f"cannot decompress: {err}") from err
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != _IDX_UINT8:
        raise corrupt_file_error(path, "bad IDX magic number")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4)) if ndim else ()
    if len(data) != header + int(np.prod(dims)):
        raise corrupt_file_error(path, f"IDX header says {dims} but holds {len(data) - header} bytes")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def read_idx_split(
    images_path: Path, labels_path: Path, image_shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Read an IDX images/labels pair; returns (uint8 (N, H, W, C), int64 (N,))."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != image_shape[:2]:
        raise corrupt_file_error(images_path, f"images of shape {images.shape[1:]}, expected {image_shape[:2]}")
    if labels.shape != images.shape[:1]:
        raise corrupt_file_error(labels_path, f"{labels.shape} labels for {len(images)} images")
    # IDX images are (N, H, W); add the channel axis so every dataset is NHWC.
    return images.reshape(-1, *image_shape), _checked_labels(labels.astype(np.int64), labels_path)


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN ``*_32x32.mat``; returns (uint8 (N, 32, 32, 3), int64 (N,)) with 10 -> 0.

    The file holds ``X`` uint8 (32, 32, 3, N) and ``y`` (N, 1) with labels 1..10, 10 meaning 0.
    The images come back as a transposed *view* of ``X`` (not C-contiguous), so a caller that
    writes them somewhere (the .npy cache) makes the only copy.
    """
    x, y = _load_mat_arrays(path)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise corrupt_file_error(path, f"X is {x.dtype} {x.shape}, expected uint8 (32, 32, 3, N)")
    labels = y.reshape(-1).astype(np.int64)
    if labels.shape != (x.shape[3],):
        raise corrupt_file_error(path, f"y has {y.size} labels for {x.shape[3]} images")
    labels[labels == 10] = 0
    return x.transpose(3, 0, 1, 2), _checked_labels(labels, path)  # (32,32,3,N) -> (N,32,32,3)


def _load_mat_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``X`` and ``y`` of a MATLAB file, UserError if it cannot be read or lacks them."""
    from scipy.io import loadmat  # scipy is slow to import; only SVHN needs it

    try:
        contents = loadmat(path, variable_names=["X", "y"])
        return contents["X"], contents["y"]
    except KeyError as err:
        raise corrupt_file_error(path, f"variable {err} missing") from err
    except MemoryError:
        raise
    except Exception as err:  # scipy raises many types (ValueError, IndexError, ...) on bad files
        raise corrupt_file_error(path, f"not a readable MATLAB file: {err!r}") from err


def _checked_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    """``labels`` unchanged if all are digits 0..9; else UserError naming ``path``."""
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise corrupt_file_error(path, f"labels outside 0..9 ({labels.min()}..{labels.max()})")
    return labels
