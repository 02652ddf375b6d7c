"""A memory-mappable cache of SVHN's MATLAB files, converted once.

Reading ``extra_32x32.mat`` (531,131 images, 1.6 GB) with scipy takes long and holds the whole
array in memory, so the first load writes, next to the source file,

    <stem>.images.npy   uint8 (N, 32, 32, 3)
    <stem>.labels.npy   int64 (N,)
    <stem>.cache.json   size and mtime of the source, to notice when it changes

each written to a temporary file and moved into place with ``os.replace`` (the json last, so a
cache is only ever used once complete). Later loads memory-map the images (read-only). When the
source's folder is not writable the cache goes to ``<user cache>/converted/<hash of source path>``;
when nothing is writable the arrays are returned in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from svhn_vae.atomic import write_file, write_npy
from svhn_vae.data.paths import user_cache_dir
from svhn_vae.data.readers import read_svhn_mat

logger = logging.getLogger(__name__)

_CACHE_VERSION = 1

Arrays = tuple[np.ndarray, np.ndarray]


def load_mat_cached(path: Path) -> Arrays:
    """(images, labels) of an SVHN .mat file: uint8 NHWC (a read-only memmap when cached), int64."""
    stamp = _source_stamp(path)
    for folder in _cache_dirs(path):
        cached = _read_cache(folder, path.stem, stamp)
        if cached is not None:
            return cached
    logger.info("converting %s to a memory-mappable .npy cache (done once)", path)
    images, labels = read_svhn_mat(path)
    for folder in _cache_dirs(path):
        try:
            _write_cache(folder, path.stem, stamp, images, labels)
        except OSError as err:
            logger.info("cannot write the cache in %s (%s)", folder, err)
            continue
        cached = _read_cache(folder, path.stem, stamp)
        if cached is not None:
            return cached
    logger.warning("no writable cache folder for %s; keeping the arrays in memory", path)
    return np.ascontiguousarray(images), labels


def cache_paths(folder: Path, stem: str) -> tuple[Path, Path, Path]:
    """(images .npy, labels .npy, json sidecar) of the cache for ``stem`` in ``folder``."""
    return folder / f"{stem}.images.npy", folder / f"{stem}.labels.npy", folder / f"{stem}.cache.json"


def _cache_dirs(path: Path) -> list[Path]:
    """Folders a cache of ``path`` may live in, preferred first."""
    key = hashlib.md5(str(path.resolve()).encode()).hexdigest()[:16]
    return [path.parent, user_cache_dir() / "converted" / key]


def _source_stamp(path: Path) -> dict[str, int]:
    """What the cache must match to be fresh: format version, source size and mtime."""
    stat = path.stat()
    return {"version": _CACHE_VERSION, "source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}


def _read_cache(folder: Path, stem: str, stamp: dict[str, int]) -> Arrays | None:
    """The cached arrays if a complete cache matching ``stamp`` is there, else None."""
    images_path, labels_path, meta_path = cache_paths(folder, stem)
    try:
        meta = json.loads(meta_path.read_text())
        if {key: meta.get(key) for key in stamp} != stamp:
            return None
        images = np.load(images_path, mmap_mode="r")
        labels = np.load(labels_path)
    except (OSError, ValueError):
        return None  # missing, half-written by an older version, or unreadable: rebuild it
    count = meta.get("num_examples")
    if images.dtype != np.uint8 or len(images) != count or labels.shape != (count,):
        return None
    return images, labels


def _write_cache(folder: Path, stem: str, stamp: dict[str, int], images: np.ndarray, labels: np.ndarray) -> None:
    """Write the three cache files atomically, the json sidecar last."""
    images_path, labels_path, meta_path = cache_paths(folder, stem)
    folder.mkdir(parents=True, exist_ok=True)

    def write_images(tmp: Path) -> None:
        # Copy straight into the memmap: the only full copy of the (possibly 1.6 GB) images.
        out = open_memmap(tmp, mode="w+", dtype=np.uint8, shape=images.shape)
        out[...] = images
        out.flush()
        del out

    meta = {**stamp, "num_examples": len(labels)}
    write_file(images_path, write_images)
    write_npy(labels_path, labels)
    write_file(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))
