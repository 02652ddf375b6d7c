"""The public way in: load a split as arrays, and describe what is on disk.

Loading does not check md5s (the SVHN extra split is 1.3 GB); verification is explicit, with
``verify_split`` or ``info``. Every dataset comes back the same way: uint8 NHWC images and int64
labels in 0..C-1 (0..9 for the built-in ones), or no labels for own images without classes.
Own images (``folder:PATH``, ``npz:PATH``) are loaded through :mod:`svhn_vae.data.custom`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from svhn_vae.data import custom, synth_digits
from svhn_vae.data.download import NetworkUnavailable, check_split, download_split
from svhn_vae.data.mat_cache import load_mat_cached
from svhn_vae.data.paths import locate_split, resolve_data_dir
from svhn_vae.data.readers import read_idx_split
from svhn_vae.data.registry import DatasetInfo, SplitInfo, get_dataset
from svhn_vae.errors import UserError

if TYPE_CHECKING:
    from svhn_vae.config import DataConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """One split of a dataset, as arrays."""

    images: np.ndarray
    """uint8 (N, H, W, C); a read-only memmap for SVHN."""
    labels: np.ndarray | None
    """int64 (N,), classes 0..C-1 (SVHN's label 10 is already mapped to 0); None: unlabelled
    (own images without class folders or labels)."""
    dataset: str
    split: str

    def __len__(self) -> int:
        """Number of examples N."""
        return len(self.images)


def load_split(
    dataset: str, split: str, *, data_dir: str | Path | None = None, download: bool = False, resize: str = "",
    test_fraction: float = 0.0,
) -> Split:
    """Load ``dataset``/``split`` from ``data_dir`` (see ``resolve_data_dir``).

    Missing files are downloaded if ``download``, else a UserError says which file is missing
    where and how to get it. md5s are not checked here (use ``verify_split``). ``resize`` ("HxW")
    and ``test_fraction`` apply to own images only (:mod:`svhn_vae.data.custom`).
    """
    if custom.is_own(dataset):
        source = custom.OwnSource.from_name(dataset, resize=resize, test_fraction=test_fraction)
        return Split(*custom.load_split_arrays(source, split, data_dir=data_dir), source.name, split)
    refuse_own_options(dataset, resize, test_fraction)
    info = get_dataset(dataset)
    split_info = info.split(split)
    if info.file_format == "generated":  # made here, whatever ``download`` says: nothing is fetched
        images, labels = synth_digits.load_split_arrays(resolve_data_dir(dataset, data_dir), split)
        return Split(images, labels, dataset, split)
    paths = _split_paths(info, split_info, data_dir, download=download)
    if info.file_format == "mat":
        images, labels = load_mat_cached(paths[0])
    else:
        images, labels = read_idx_split(paths[0], paths[1], info.image_shape)
    if len(labels) != split_info.num_examples:
        logger.warning(
            "%s/%s has %d examples, the official files have %d",
            dataset, split, len(labels), split_info.num_examples,
        )
    return Split(images, labels, dataset, split)


def load_configured(data: DataConfig, split: str, *, data_dir: str | Path | None = None,
                    download: bool | None = None) -> Split:
    """:func:`load_split` of a run's data settings; ``data_dir`` and ``download`` override the run's."""
    return load_split(data.dataset, split, data_dir=data.data_dir if data_dir is None else data_dir,
                      download=data.download if download is None else download, resize=data.resize,
                      test_fraction=data.test_fraction)


def image_shape(data: DataConfig) -> tuple[int, int, int]:
    """(height, width, channels) of a run's images, without loading them (own images are converted
    first, as loading them would)."""
    if custom.is_own(data.dataset):
        source = custom.OwnSource.from_name(data.dataset, resize=data.resize, test_fraction=data.test_fraction)
        return custom.describe(source, data_dir=data.data_dir)["image_shape"]
    return get_dataset(data.dataset).image_shape


def joined_split(data: DataConfig, splits: str, *, data_dir: str | Path | None = None,
                 download: bool | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Images and labels (None: unlabelled) of one or several '+'-joined splits, e.g. 'train+extra',
    as :func:`load_configured` gives them."""
    parts = [load_configured(data, name, data_dir=data_dir, download=download) for name in splits.split("+")]
    if len(parts) == 1:
        return parts[0].images, parts[0].labels
    labels = None if parts[0].labels is None else np.concatenate([p.labels for p in parts])
    return np.concatenate([p.images for p in parts]), labels


def refuse_own_options(dataset: str, resize: str, test_fraction: float | None) -> None:
    """UserError when own-images options come with a built-in dataset."""
    if resize or test_fraction:
        raise UserError(f"--resize and --test-fraction are for own images (folder:PATH, npz:PATH), not {dataset}")


def _split_paths(
    info: DatasetInfo, split: SplitInfo, data_dir: str | Path | None, *, download: bool
) -> list[Path]:
    """Paths of the split's files, downloading the missing ones if ``download``."""
    try:
        return locate_split(info, split, data_dir)
    except UserError:
        if not download:
            raise
    return download_split(info.name, split.name, data_dir=data_dir)


def info(dataset: str, *, data_dir: str | Path | None = None, resize: str = "",
         test_fraction: float = 0.0) -> dict[str, Any]:
    """Describe ``dataset`` and what is on disk, verifying the md5 of every file found.

    Returns ``{"dataset", "data_dir", "image_shape", "splits": {split: {"num_examples",
    "present", "verified", "files": [{"name", "path", "status", "expected_md5",
    "actual_md5", "description"}]}}}``; ``num_examples`` is the official count. Own images are
    converted first and described by :func:`svhn_vae.data.custom.describe`.
    """
    if custom.is_own(dataset):
        source = custom.OwnSource.from_name(dataset, resize=resize, test_fraction=test_fraction)
        return custom.describe(source, data_dir=data_dir)
    refuse_own_options(dataset, resize, test_fraction)
    meta = get_dataset(dataset)
    return {
        "dataset": meta.name,
        "data_dir": str(resolve_data_dir(dataset, data_dir)),
        "image_shape": meta.image_shape,
        "splits": {split.name: _split_info(meta, split, data_dir) for split in meta.splits.values()},
    }


def _split_info(meta: DatasetInfo, split: SplitInfo, data_dir: str | Path | None) -> dict[str, Any]:
    """The per-split part of ``info``."""
    checks = check_split(meta.name, split.name, data_dir=data_dir)
    files = [
        {
            "name": check.name,
            "path": None if check.path is None else str(check.path),
            "status": check.status,
            "expected_md5": check.expected_md5,
            "actual_md5": check.actual_md5,
            "description": check.describe(),
        }
        for check in checks
    ]
    return {
        "num_examples": split.num_examples,
        "present": all(check.path is not None for check in checks),
        "verified": all(check.ok for check in checks),
        "files": files,
    }


def ready_dataset(dataset: str, *, splits: tuple[str, ...] = ("train", "test"), fallback: str | None = None,
                  data_dir: str | Path | None = None) -> str:
    """Make ``splits`` of ``dataset`` available (downloading what is missing) and return its name.

    When the download server cannot be reached at all and a ``fallback`` is given, say so in one
    warning and make the fallback (a generated dataset needs no network) available instead.
    Other failures (a wrong checksum, an HTTP error) are raised as they are.
    """
    if custom.is_own(dataset):  # nothing to fetch: the first load converts it
        return custom.canonical_name(dataset)
    try:
        return _make_available(dataset, splits, data_dir)
    except NetworkUnavailable as err:
        if fallback is None:
            raise
        logger.warning("%s could not be downloaded (%s); using %s instead", dataset, str(err).split(";")[0], fallback)
    return _make_available(fallback, splits, data_dir)


def _make_available(dataset: str, splits: tuple[str, ...], data_dir: str | Path | None) -> str:
    """Locate, download or generate each of ``splits``; returns ``dataset``."""
    info = get_dataset(dataset)
    for split in splits:
        _split_paths(info, info.split(split), data_dir, download=True)
    return dataset
