"""Own images as arrays: a ``.npz`` or ``.npy`` file read into the parts of a dataset.

- ``images`` uint8 (N, H, W) or (N, H, W, C), C 1 or 3, with optional ``labels`` (N,) integers
  0..C-1 and ``class_names``: one part, 'all', that :mod:`svhn_vae.data.custom` splits;
- ``test_images`` (and ``test_labels``) beside them, or ``train_images``/``test_images``: the parts
  'train' and 'test';
- a ``.npy`` file: images alone.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from svhn_vae.data.images import resize_pixels
from svhn_vae.errors import UserError

Arrays = tuple[np.ndarray, "np.ndarray | None"]
"""uint8 images (N, H, W, C) and int64 labels (N,) or None (unlabelled)."""


def read_arrays(path: Path, resize: tuple[int, int] | None = None) -> tuple[dict[str, Arrays], list[str] | None]:
    """The parts of a ``.npz``/``.npy`` file ({'all'} or {'train', 'test'}) and its class names
    (None: unlabelled); UserError naming the file for anything it cannot use."""
    try:
        loaded = np.load(path, allow_pickle=False)
        arrays = {"images": loaded} if isinstance(loaded, np.ndarray) else {k: loaded[k] for k in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not a readable .npz or .npy file ({err}); write it with numpy.savez") from None
    train = "train_" if "train_images" in arrays else "" if "images" in arrays else None
    if train is None:
        raise UserError(f"{path}: holds no 'images' or 'train_images' array (it has {', '.join(arrays) or 'none'})")
    named = {"train": train, "test": "test_"} if train or "test_images" in arrays else {"all": ""}
    parts = {name: (_checked_images(path, arrays[p + "images"], resize), _checked_labels(path, arrays, p))
             for name, p in named.items() if p + "images" in arrays}
    names = arrays.get("class_names")
    classes = None if parts[next(iter(parts))][1] is None else (
        [str(n) for n in names] if names is not None else [str(c) for c in range(_max_label(parts) + 1)])
    return parts, classes


def _checked_images(path: Path, images: np.ndarray, resize: tuple[int, int] | None) -> np.ndarray:
    """uint8 (N, H, W, C) with C 1 or 3, resized if asked; UserError naming the file otherwise."""
    if images.dtype != np.uint8:
        raise UserError(f"{path}: images are {images.dtype}, not uint8; scale them to 0..255 and convert")
    images = images[..., None] if images.ndim == 3 else images
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
        raise UserError(f"{path}: images have shape {images.shape}; need (N, H, W) or (N, H, W, 1 or 3), N > 0")
    if resize is None or images.shape[1:3] == resize:
        return images
    return np.stack([resize_pixels(image, resize) for image in images])


def _checked_labels(path: Path, arrays: dict[str, np.ndarray], prefix: str) -> np.ndarray | None:
    """int64 labels (N,) of ``prefix``images, or None; UserError for a wrong dtype, length or range."""
    labels = arrays.get(prefix + "labels")
    if labels is None:
        return None
    n = len(arrays[prefix + "images"])
    if labels.dtype.kind not in "iu" or labels.shape != (n,):
        raise UserError(f"{path}: {prefix}labels must be integers of shape ({n},), got {labels.dtype} {labels.shape}")
    if labels.min() < 0:
        raise UserError(f"{path}: {prefix}labels out of range: {labels.min()} (labels are 0..C-1)")
    return labels.astype(np.int64)


def _max_label(parts: dict[str, Arrays]) -> int:
    return max(int(labels.max()) for _, labels in parts.values() if labels is not None)
