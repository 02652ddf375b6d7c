"""``svhn-vae classify``: label images with a run's classifier q(y|x) (models with a label latent, M2).

Without image files it scores a labelled split of the run's dataset (test error and confusion
matrix, as ``evaluate`` reports them); with files (.npy / .npz arrays, pictures) it prints one
line per image: its index, the most probable label and its probability.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from svhn_vae.cli_evaluate import classification_lines, load_images
from svhn_vae.errors import UserError


def _read_image_file(path: Path, channels: int) -> np.ndarray:
    """The images of one file: an .npy array, an .npz's 'images' (or its only) array, or one picture."""
    from PIL import Image

    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix == ".npz":
        with np.load(path) as found:
            return found["images" if "images" in found.files or len(found.files) != 1 else found.files[0]]
    with Image.open(path) as picture:
        return np.asarray(picture.convert("L" if channels == 1 else "RGB"))[None]


def read_images(paths: Sequence[Path], image_shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 images (N, H, W, C) of the model's shape from .npy / .npz arrays ((N, H, W, C), or
    (N, H, W) for grey) and picture files (PNG, JPEG, ...)."""
    from PIL import UnidentifiedImageError

    parts = []
    for path in paths:
        try:
            found = _read_image_file(path, image_shape[2])
        except (OSError, ValueError, KeyError, UnidentifiedImageError) as e:
            raise UserError(f"cannot read images from {path} ({e}); give .npy/.npz uint8 arrays (N, H, W, C) "
                            "or picture files") from None
        found = found[..., None] if found.ndim == 3 else found
        if found.dtype != np.uint8 or found.shape[1:] != tuple(image_shape):
            raise UserError(f"{path} holds {found.dtype} images of shape {found.shape[1:]}; the model takes uint8 "
                            f"images of shape {tuple(image_shape)}")
        parts.append(found)
    return np.concatenate(parts)


def cmd_classify(args: argparse.Namespace) -> None:
    """Label the test split (its error and confusion matrix) or the given image files (one line each)."""
    from svhn_vae.atomic import disk_errors, write_json
    from svhn_vae.checkpoint import load_trained
    from svhn_vae.classification import class_probabilities, classification_metrics
    from svhn_vae.train import resolve_device

    device = resolve_device(args.device)
    trained = load_trained(args.run, which=args.which, device=device)
    if args.images:
        probs = class_probabilities(trained, read_images(args.images, trained.representation.image_shape),
                                    device=device)
        rows = [{"index": i, "label": int(p.argmax()), "probability": float(p.max())} for i, p in enumerate(probs)]
        for row in rows:
            print(f"{row['index']}\t{row['label']}\t{row['probability']:.4f}")
        found: dict[str, Any] = {"images": [str(p) for p in args.images], "predictions": rows}
    else:
        images, labels = load_images(trained.config, args.split, args)
        found = {"split": args.split, **classification_metrics(trained, images, labels,
                                                                 dataset=trained.config.data.dataset, device=device)}
        print("\n".join(classification_lines(found)))
        print("confusion matrix (rows: true class, columns: predicted):")
        print("\n".join(" ".join(f"{v:5d}" for v in row) for row in found["confusion"]))
    if args.out is not None:
        with disk_errors(str(args.out)):
            write_json(args.out, found)
        print(f"wrote {args.out}")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``classify`` to the ``svhn-vae`` sub-commands."""
    p = subparsers.add_parser("classify", help="label images with a run's classifier q(y|x) (M2: --preset m2)")
    p.add_argument("run", type=Path, help="run folder (or checkpoint file)")
    p.add_argument("images", type=Path, nargs="*", help="image files (.npy/.npz arrays, PNG, JPEG); none: --split")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint of the run folder")
    p.add_argument("--split", default="test", help="without image files: the labelled split to score ('val': held out)")
    p.add_argument("--data-dir", type=Path, default=None, help="dataset folder; None: the run's data_dir")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=False, help="download missing files")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    p.set_defaults(func=cmd_classify)
