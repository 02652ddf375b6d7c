"""Tiny datasets in the official file formats, for tests and demos (no download needed).

``write_fake_split`` writes a few random images in exactly the layout of the real files, and
``with_md5s`` makes a registry entry whose checksums match them, so loading, verifying and
downloading can all be exercised offline::

    images, labels = write_fake_split("svhn", "train", tmp_path, num_examples=8)
    monkeypatch.setitem(DATASETS, "svhn", with_md5s("svhn", "train", tmp_path))
"""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np

from svhn_vae.data.checksums import md5sum
from svhn_vae.data.paths import find_file
from svhn_vae.data.registry import DatasetInfo, FileInfo, get_dataset


def write_svhn_mat(path: Path, images: np.ndarray, labels: np.ndarray, *, y_dtype: type = np.uint8) -> None:
    """Write uint8 (N, 32, 32, 3) images and 0..9 labels as SVHN does: X (32, 32, 3, N), y 10 for 0."""
    from scipy.io import savemat

    y = np.where(labels == 0, 10, labels).reshape(-1, 1).astype(y_dtype)
    savemat(path, {"X": np.ascontiguousarray(images.transpose(1, 2, 3, 0)), "y": y})


def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> None:
    """Write a uint8 array as an IDX file (gzipped if ``gz``)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    if gz:
        path.write_bytes(gzip.compress(data, mtime=0))
    else:
        path.write_bytes(data)


def write_fake_split(
    dataset: str, split: str, folder: Path, *, num_examples: int = 8, seed: int = 0, gz: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Write random files for ``dataset``/``split`` under their official names in ``folder``.

    IDX files get a ``.gz`` suffix if ``gz``. Returns the (uint8 NHWC images, int64 labels) written;
    every digit 0..9 appears when ``num_examples`` >= 10.
    """
    info = get_dataset(dataset)
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 256, (num_examples, *info.image_shape), dtype=np.uint8)
    labels = np.arange(num_examples, dtype=np.int64) % 10
    folder.mkdir(parents=True, exist_ok=True)
    files = info.split(split).files
    if info.file_format == "mat":
        write_svhn_mat(folder / files[0].name, images, labels)
    else:
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{files[0].name}{suffix}", images[..., 0], gz=gz)
        write_idx(folder / f"{files[1].name}{suffix}", labels.astype(np.uint8), gz=gz)
    return images, labels


def with_md5s(dataset: str, split: str, folder: Path) -> DatasetInfo:
    """A copy of ``dataset``'s registry entry whose ``split`` md5s match the files in ``folder``."""
    info = get_dataset(dataset)
    old = info.split(split)
    labels = None if old.labels is None else _matching(old.labels, folder)
    new = dataclasses.replace(old, images=_matching(old.images, folder), labels=labels)
    return dataclasses.replace(info, splits={**info.splits, split: new})


def _matching(file: FileInfo, folder: Path) -> FileInfo:
    """``file`` with its md5 set to that of the copy in ``folder``."""
    path = find_file(file, [folder])
    if path is None:
        raise FileNotFoundError(f"no {file.name} in {folder}")
    return dataclasses.replace(file, md5=md5sum(path, decompress=True))
