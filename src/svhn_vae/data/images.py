"""One image file -> uint8 (H, W, C) pixels with Pillow, or a one-line error that names the file.

What is accepted, and how it becomes 8-bit grey (C = 1) or RGB (C = 3):

- PNG, JPEG, BMP and WebP files (by extension, case-insensitive); other files are refused.
- 8-bit grey (``L``, ``1``) and colour (``RGB``, JPEG's ``CMYK``/``YCbCr``) as they are.
- 16-bit grey PNGs (``I;16``, ``I``): scaled to 8 bits, v -> round(v / 257), so 65535 -> 255.
- Palette PNGs (``P``): expanded through the palette to RGB.
- An alpha channel (``LA``, ``RGBA``, a palette's transparency) only when every pixel is opaque:
  what a transparent pixel should look like is not ours to guess.
- ``--resize HxW`` uses Pillow's Lanczos filter (:data:`RESIZE_FILTER`), after the conversion.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from svhn_vae.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
"""File name endings read as images (lower case)."""
RESIZE_FILTER = Image.Resampling.LANCZOS
"""The filter ``--resize`` uses (Pillow's Lanczos: sharp and without aliasing when shrinking)."""
_GREY_MODES = ("1", "L")
_COLOUR_MODES = ("RGB", "CMYK", "YCbCr")


def is_image_file(path: Path) -> bool:
    """Whether ``path``'s name ends in one of :data:`IMAGE_EXTENSIONS`."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def decode_image(data: bytes, path: Path, *, resize: tuple[int, int] | None = None) -> np.ndarray:
    """The pixels of the image file ``path`` whose bytes are ``data``: uint8 (H, W, 1) or (H, W, 3),
    resized to ``resize`` = (H, W) if given. UserError naming ``path`` when it cannot be read."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode now: a truncated file fails here, not later
            pixels = _as_8bit(image, path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserError(f"{path}: not a readable image ({err}); replace or remove the file") from None
    return pixels if resize is None else resize_pixels(pixels, resize)


def resize_pixels(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, C) resized to ``size`` = (H', W') with :data:`RESIZE_FILTER`: (H', W', C)."""
    if pixels.shape[:2] == size:
        return pixels
    channels = pixels.shape[2]
    resized = Image.fromarray(pixels[..., 0] if channels == 1 else pixels).resize(size[::-1], RESIZE_FILTER)
    return np.asarray(resized, dtype=np.uint8).reshape(*size, channels)


def _as_8bit(image: Image.Image, path: Path) -> np.ndarray:
    """uint8 (H, W, C) of a decoded Pillow image, by the rules of the module doc."""
    mode = image.mode
    if mode in _GREY_MODES:
        return np.asarray(image.convert("L"), dtype=np.uint8)[..., None]
    if mode in _COLOUR_MODES:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise UserError(f"{path}: {mode} pixels outside 0..65535; save it as an 8-bit PNG")
        return ((values + 128) // 257).astype(np.uint8)[..., None]
    if mode == "P":
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("LA", "RGBA", "PA"):
        return _opaque(np.asarray(image.convert("LA" if mode == "LA" else "RGBA"), dtype=np.uint8), path)
    raise UserError(f"{path}: pixel mode {mode} is not supported; save it as 8-bit grey or RGB")


def _opaque(pixels: np.ndarray, path: Path) -> np.ndarray:
    """Drop the alpha channel of (H, W, C + 1) pixels, refusing any transparent pixel."""
    if (pixels[..., -1] != 255).any():
        raise UserError(f"{path}: has transparent pixels; flatten it onto a background first")
    return np.ascontiguousarray(pixels[..., :-1])


def read_image(path: Path, *, resize: tuple[int, int] | None = None) -> np.ndarray:
    """:func:`decode_image` of the file at ``path``."""
    return decode_image(path.read_bytes(), path, resize=resize)
