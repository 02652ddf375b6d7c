"""Own images as a dataset: ``folder:PATH`` (torchvision's ImageFolder layout) or ``npz:PATH`` arrays.

A dataset name ``folder:PATH`` or ``npz:PATH`` works wherever a built-in one does. The source is
converted once into the data root's cache (``<root>/custom/<kind>-<name>-<key>/``, the same
memory-mappable ``.npy`` files the built-in datasets use), with a record of every source file's
size, mtime and md5, written last; a later load lists the source again, re-hashes the files whose
size or mtime moved, and converts again when any content, file list or option changed.

- ``folder:PATH``: ``PATH/train/<class>/*.png`` and ``PATH/test/<class>/*.png``, or one folder of
  class folders. Class folder names, sorted, are the labels 0..C-1 (as torchvision does); a folder
  of images without class folders is unlabelled. Class folders are searched recursively; hidden
  files are skipped; what :mod:`svhn_vae.data.images` cannot read is a one-line error naming the file.
- ``npz:PATH``: a ``.npz`` with ``images`` uint8 (N, H, W) or (N, H, W, C), optional ``labels``
  (N,) integers and ``class_names``; ``test_images`` (and ``test_labels``) beside them give the
  test split (``train_images``/``train_labels`` may name the training part); or a ``.npy`` of
  images alone.
- Each part is stored in a canonical order, sorted by the md5 of each image's pixels (then its
  label): the same images give the same arrays however the source stored or ordered them, and the
  first N of a split (``--limit``, ``--max-examples``) mix the classes as the built-in datasets do.
- Without a test split of its own, a seeded ``test_fraction`` (default 0.1) of the images becomes
  the test split, the same one for a folder and for the ``.npz`` of the same images.
- All images of a dataset have one size and 1 or 3 channels, or ``resize`` = "HxW" makes them so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from svhn_vae.atomic import write_json, write_npy
from svhn_vae.data.checksums import md5sum
from svhn_vae.data.images import IMAGE_EXTENSIONS, RESIZE_FILTER, decode_image, is_image_file
from svhn_vae.data.npz import Arrays, read_arrays
from svhn_vae.data.paths import data_root, safe_file_name
from svhn_vae.errors import UserError

logger = logging.getLogger(__name__)

KINDS = ("folder", "npz")
SPLITS = ("train", "test")
DEFAULT_TEST_FRACTION = 0.1
"""Share of a source without a test split that is held out as its test split."""
SPLIT_SEED = 0
"""Seed of the permutation that picks that test split."""
CACHE_FORMAT = 2
RECORD_FILE = "record.json"


def is_own(dataset: str) -> bool:
    """Whether ``dataset`` names own images (``folder:PATH`` or ``npz:PATH``)."""
    return dataset.partition(":")[0] in KINDS and ":" in dataset


def canonical_name(dataset: str) -> str:
    """``kind:PATH`` with PATH made absolute (so a run evaluates from any working folder)."""
    kind, _, path = dataset.partition(":")
    if not path:
        raise UserError(f"dataset {dataset!r}: give the path after '{kind}:', e.g. {kind}:my-digits")
    return f"{kind}:{Path(path).expanduser().resolve()}"


def parse_resize(text: str) -> tuple[int, int] | None:
    """(H, W) of "HxW" (None for ""); UserError for anything else."""
    if not text:
        return None
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if match is None or min(int(match[1]), int(match[2])) < 1:
        raise UserError(f"--resize {text!r}: give the size as HxW, e.g. 32x32")
    return int(match[1]), int(match[2])


@dataclass(frozen=True)
class OwnSource:
    """Own images and how they become a dataset: where, which kind, the resize and test split."""

    kind: str
    path: Path
    resize: tuple[int, int] | None = None
    test_fraction: float = 0.0
    """Share of the images held out as the test split; 0: the source's own test split, else
    :data:`DEFAULT_TEST_FRACTION`."""

    @classmethod
    def from_name(cls, dataset: str, *, resize: str = "", test_fraction: float = 0.0) -> OwnSource:
        """The source named ``dataset`` (``folder:PATH`` or ``npz:PATH``) with these options."""
        kind, _, path = canonical_name(dataset).partition(":")
        return cls(kind, Path(path), parse_resize(resize), test_fraction)

    @property
    def root(self) -> Path:
        """The folder the source's files are named relative to: the folder itself, or the file's."""
        return self.path if self.kind == "folder" else self.path.parent

    @property
    def name(self) -> str:
        """The dataset's name, ``kind:PATH``."""
        return f"{self.kind}:{self.path}"

    def options(self) -> dict[str, Any]:
        """What a cache must have been made with (besides the source's content)."""
        return {"format": CACHE_FORMAT, "source": self.name, "test_fraction": self.test_fraction,
                "resize": None if self.resize is None else list(self.resize),
                "resize_filter": None if self.resize is None else RESIZE_FILTER.name.lower()}

    def cache_dir(self, data_dir: str | Path | None) -> Path:
        """``<data root>/custom/<kind>-<folder or file name>-<hash of the options>``."""
        key = hashlib.md5(json.dumps(self.options(), sort_keys=True).encode()).hexdigest()[:12]
        return data_root(data_dir) / "custom" / f"{self.kind}-{safe_file_name(self.path.name)}-{key}"


# --- the public functions ------------------------------------------------------------------------


def load_split_arrays(source: OwnSource, split: str, *, data_dir: str | Path | None = None) -> Arrays:
    """Images (a read-only memmap) and labels (None: unlabelled) of ``split``, converted first
    when the cache is missing or the source changed."""
    if split not in SPLITS:
        raise UserError(f"{source.name} has the splits {', '.join(SPLITS)}, not {split!r}")
    folder = source.cache_dir(data_dir)
    record = ensure_converted(source, folder)
    images_path, labels_path = _cache_paths(folder, split)
    labels = np.load(labels_path) if record["classes"] is not None else None
    return np.load(images_path, mmap_mode="r"), labels


def ensure_converted(source: OwnSource, folder: Path) -> dict[str, Any]:
    """The cache record of ``source`` in ``folder``, converting the source first if it is stale."""
    stamps = _stat_files(source)
    record = _read_record(folder)
    if record is not None and record["options"] == source.options() and _still_fresh(source, record, stamps, folder):
        return record
    logger.info("converting %s into %s (done once, again when the source changes)", source.name, folder)
    return _convert(source, folder)


def describe(source: OwnSource, *, data_dir: str | Path | None = None, verify: bool = False) -> dict[str, Any]:
    """What :func:`svhn_vae.data.info` says of a built-in dataset, for own images (converted first),
    plus ``source`` and ``classes``. With ``verify``, every source file is hashed again and the
    cached arrays are checked against the record: UserError naming the first that differs."""
    folder = source.cache_dir(data_dir)
    record = ensure_converted(source, folder)
    if verify:
        _verify(source, folder, record)
    splits = {name: {"num_examples": part["num_examples"], "present": True, "verified": verify,
                     "files": [{"name": path.name, "path": str(path), "status": "ok" if verify else "present"}
                               for path in _cache_paths(folder, name)[:1 if record["classes"] is None else 2]]}
              for name, part in record["splits"].items()}
    return {"dataset": source.name, "data_dir": str(folder), "image_shape": tuple(record["image_shape"]),
            "source": str(source.path), "source_files": len(record["files"]), "classes": record["classes"],
            "splits": splits}


def source_digest(source: OwnSource, *, data_dir: str | Path | None = None) -> str:
    """One md5 over the recorded md5s of the source's files: it changes when any content does."""
    record = ensure_converted(source, source.cache_dir(data_dir))
    digest = hashlib.md5()
    for rel, (_, _, md5) in sorted(record["files"].items()):
        digest.update(f"{rel}\0{md5}\n".encode())
    return digest.hexdigest()


# --- the source: which files, and their stamps -----------------------------------------------------


def _stat_files(source: OwnSource) -> dict[str, tuple[int, int]]:
    """{path relative to the source: (size, mtime_ns)} of every file the conversion reads."""
    if not source.path.exists():
        raise UserError(f"{source.name}: {source.path} does not exist; check the path after '{source.kind}:'")
    if source.kind == "npz":
        stat = source.path.stat()
        return {source.path.name: (stat.st_size, stat.st_mtime_ns)}
    files = [path for part in _folder_layout(source.path)[0].values() for path, _ in part]
    return {_rel(source, path): (stat.st_size, stat.st_mtime_ns) for path in files for stat in [path.stat()]}


def _rel(source: OwnSource, path: Path) -> str:
    return path.relative_to(source.root).as_posix()


Layout = tuple[dict[str, list[tuple[Path, int]]], "list[str] | None"]
"""({part: [(file, label index or -1)]}, class names or None); parts 'train' and 'test', or 'all'."""


def _folder_layout(root: Path) -> Layout:
    """Which image files make up each part of the folder ``root``, and their classes."""
    if not root.is_dir():
        raise UserError(f"folder:{root} is not a folder; use npz:{root} for arrays")
    if (root / "train").is_dir():
        train, classes = _part_files(root / "train", None)
        parts = {"train": train}
        if (root / "test").is_dir():
            parts["test"] = _part_files(root / "test", classes)[0]
        return parts, classes
    files, classes = _part_files(root, None)
    return {"all": files}, classes


def _part_files(folder: Path, classes: list[str] | None) -> tuple[list[tuple[Path, int]], list[str] | None]:
    """The images of one part: in class folders (labelled; ``classes`` given: the training part's
    names, which this part's must be among) or directly in ``folder`` (unlabelled)."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    found = [p.name for p in entries if p.is_dir()]
    if not found:
        files = [(path, -1) for path in _images_in(folder, entries)]
        if classes is not None and files:
            raise UserError(f"{folder}: holds images without class folders, but the training part has classes")
        return files, None
    if stray := next((p for p in entries if p.is_file()), None):
        raise UserError(f"{stray}: a file beside the class folders of {folder}; move it into a class folder or out")
    names = found if classes is None else classes
    if unknown := sorted(set(found) - set(names)):
        raise UserError(f"{folder / unknown[0]}: a class folder that the training part does not have")
    files = [(path, names.index(name)) for name in found
             for path in _images_in(folder / name, sorted((folder / name).rglob("*")))]
    return files, names


def _images_in(folder: Path, entries: list[Path]) -> list[Path]:
    """The image files among ``entries`` (sorted); UserError for any other visible file."""
    files = [p for p in entries if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    for path in files:
        if not is_image_file(path):
            raise UserError(f"{path}: not an image file ({', '.join(IMAGE_EXTENSIONS)}); move it out of the folder")
    if not files:
        raise UserError(f"{folder}: no images found ({', '.join(IMAGE_EXTENSIONS)}, in class folders or directly)")
    return files


# --- conversion --------------------------------------------------------------------------------------


def _convert(source: OwnSource, folder: Path) -> dict[str, Any]:
    """Read the whole source, split it, write the cache (the record last) and return the record."""
    if source.kind == "folder":
        parts, classes, hashes = _read_folder(source)
    else:
        parts, classes = read_arrays(source.path, source.resize)
        stat = source.path.stat()
        hashes = {source.path.name: [stat.st_size, stat.st_mtime_ns, md5sum(source.path, decompress=False)]}
    splits = _train_test(source, {name: _canonical_order(*part) for name, part in parts.items()})
    _check_labels(source, splits, classes)
    record = {"options": source.options(), "classes": classes, "image_shape": list(splits["train"][0].shape[1:]),
              "files": hashes, "splits": {}}
    (folder / RECORD_FILE).unlink(missing_ok=True)  # incomplete until the record is back
    for name, (images, labels) in splits.items():
        images_path, labels_path = _cache_paths(folder, name)
        write_npy(images_path, images)
        if labels is not None:
            write_npy(labels_path, labels)
        record["splits"][name] = {"num_examples": len(images), "images_md5": _md5(images),
                                  "labels_md5": None if labels is None else _md5(labels)}
    write_json(folder / RECORD_FILE, record)
    return record


def _read_folder(source: OwnSource) -> tuple[dict[str, Arrays], list[str] | None, dict[str, list[Any]]]:
    """The folder's parts as arrays, its class names and {file: [size, mtime_ns, md5]}."""
    layout, classes = _folder_layout(source.path)
    files = [path for part in layout.values() for path, _ in part]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # Pillow decodes without the GIL
        read = list(pool.map(lambda path: _read_one(path, source.resize), files))
    _check_shapes(files, [pixels for pixels, _ in read])
    hashes = {_rel(source, path): [stat.st_size, stat.st_mtime_ns, md5]
              for path, (_, md5) in zip(files, read) for stat in [path.stat()]}
    parts, start = {}, 0
    for name, part in layout.items():
        images = np.stack([pixels for pixels, _ in read[start:start + len(part)]])
        labels = None if classes is None else np.array([label for _, label in part], dtype=np.int64)
        parts[name], start = (images, labels), start + len(part)
    return parts, classes, hashes


def _read_one(path: Path, resize: tuple[int, int] | None) -> tuple[np.ndarray, str]:
    """The pixels of one file and the md5 of its bytes (read once for both)."""
    data = path.read_bytes()
    return decode_image(data, path, resize=resize), hashlib.md5(data).hexdigest()


def _check_shapes(files: list[Path], pixels: list[np.ndarray]) -> None:
    """All images one size and one number of channels, else a UserError naming the first odd one."""
    first = pixels[0].shape
    for path, image in zip(files, pixels):
        if image.shape[2] != first[2]:
            kinds = {1: "grey", 3: "colour"}
            raise UserError(f"{path}: {kinds[image.shape[2]]}, while {files[0]} is {kinds[first[2]]}; "
                            "mixed grey and colour: convert them all to one")
        if image.shape != first:
            raise UserError(f"{path}: {image.shape[0]}x{image.shape[1]}, while {files[0]} is {first[0]}x{first[1]}; "
                            f"give --resize {first[0]}x{first[1]} (Lanczos) or resize them yourself")


def _canonical_order(images: np.ndarray, labels: np.ndarray | None) -> Arrays:
    """The images (and labels) sorted by the md5 of each image's pixels, then by label: an order that
    does not depend on how the source stored them, and that mixes the classes (a class-sorted folder's
    first N would be one class)."""
    keys = [hashlib.md5(image.tobytes()).digest() + (b"" if labels is None else int(labels[i]).to_bytes(8, "big"))
            for i, image in enumerate(images)]
    order = np.array(sorted(range(len(images)), key=keys.__getitem__), dtype=np.int64)
    return images[order], None if labels is None else labels[order]


def _train_test(source: OwnSource, parts: dict[str, Arrays]) -> dict[str, Arrays]:
    """{'train', 'test'} arrays: the source's own, or a seeded ``test_fraction`` of its one part."""
    if "all" not in parts and "test" in parts:
        if source.test_fraction:
            raise UserError(f"{source.name} has its own test split; drop --test-fraction")
        return parts
    images, labels = parts.get("all", parts.get("train"))
    fraction = source.test_fraction or DEFAULT_TEST_FRACTION
    n_test = int(round(fraction * len(images)))
    if not 1 <= n_test < len(images):
        raise UserError(f"{source.name}: {len(images)} images cannot be split into train and test with "
                        f"--test-fraction {fraction}; add images or give a test split")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    train, test = np.sort(order[n_test:]), np.sort(order[:n_test])
    return {name: (images[idx], None if labels is None else labels[idx]) for name, idx in (("train", train), ("test", test))}


def _check_labels(source: OwnSource, splits: dict[str, Arrays], classes: list[str] | None) -> None:
    """Both splits labelled or neither; every label below the number of classes."""
    labelled = [labels is not None for _, labels in splits.values()]
    if any(labelled) and not all(labelled):
        raise UserError(f"{source.name}: one split has labels and the other not; give labels to both or neither")
    for name, (_, labels) in splits.items():
        if classes is not None and labels.max() >= len(classes):
            raise UserError(f"{source.path}: {name} labels out of range: {labels.max()} with {len(classes)} "
                            f"classes (labels are 0..{len(classes) - 1})")


# --- the cache -------------------------------------------------------------------------------------


def _cache_paths(folder: Path, split: str) -> tuple[Path, Path]:
    return folder / f"{split}.images.npy", folder / f"{split}.labels.npy"


def _md5(array: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(array).data).hexdigest()


def _read_record(folder: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None  # never converted, or interrupted before the record was written
    complete = all(path.exists() for name in record.get("splits", {}) for path in _cache_paths(folder, name)[:1])
    return record if complete and set(record.get("splits", {})) == set(SPLITS) else None


def _still_fresh(source: OwnSource, record: dict[str, Any], stamps: dict[str, tuple[int, int]], folder: Path) -> bool:
    """Whether the recorded conversion still matches the source's files. Files whose size or mtime
    moved are hashed again; when their content is unchanged the record takes the new stamps."""
    files = record["files"]
    if set(files) != set(stamps):
        return False
    moved = [rel for rel, stamp in stamps.items() if tuple(files[rel][:2]) != stamp]
    if any(md5sum(source.root / rel, decompress=False) != files[rel][2] for rel in moved):
        return False
    if moved:
        for rel in moved:
            files[rel][:2] = list(stamps[rel])
        write_json(folder / RECORD_FILE, record)
    return True


def _verify(source: OwnSource, folder: Path, record: dict[str, Any]) -> None:
    """Hash every source file and cached array again; UserError naming the first that differs."""
    for rel, (_, _, md5) in sorted(record["files"].items()):
        if md5sum(source.root / rel, decompress=False) != md5:
            raise UserError(f"{source.root / rel} changed while its stamp did not; delete {folder} to convert again")
    for name, part in record["splits"].items():
        images_path, labels_path = _cache_paths(folder, name)
        for path, key in ((images_path, "images_md5"), (labels_path, "labels_md5")):
            if part[key] is not None and _md5(np.load(path, mmap_mode="r")) != part[key]:
                raise UserError(f"{path}: the cached array does not match its record; delete {folder} to convert again")
