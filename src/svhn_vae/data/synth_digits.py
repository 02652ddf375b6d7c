"""``synth-digits``: SVHN-like colour house-number crops, generated on the machine.

The idea of Ganin & Lempitsky's SynthDigits (2015): a centred digit, the label, with parts of its
neighbours on either side as on a house-number plate, in one of the TrueType fonts matplotlib
ships (DejaVu Sans / Serif / Mono, STIX and Computer Modern; regular, bold, italic), foreground
and background colours with enough contrast, colour gradients and textures cut from the two
photographs scikit-learn ships (``sklearn.datasets.load_sample_images``), a small random
rotation, scale, shear and translation, then blur, sensor noise and JPEG compression at random
strengths. Nothing is downloaded and nothing is vendored. It is *not* SVHN: numbers measured on it
are not SVHN numbers.

Generation is vectorised over chunks of ``CHUNK`` images with torch (glyphs placed with one
``affine_grid``/``grid_sample`` per digit slot, per-image blur as a grouped convolution) and runs
in worker threads (torch releases the GIL), one torch thread each. Every chunk draws from its own
seeded generator, so a split is byte-identical for a given seed however many workers make it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.format import open_memmap

from svhn_vae.atomic import write_file, write_npy
from svhn_vae.data.checksums import FileCheck, md5sum
from svhn_vae.data.jpeg import jpeg
from svhn_vae.data.registry import get_dataset
from svhn_vae.errors import UserError

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 3
"""Bump when the generator's output changes: caches made by another version are regenerated."""
IMAGE_SHAPE = (32, 32, 3)
DEFAULT_SEED = 0
SPLIT_IDS = {"train": 0, "test": 1, "extra": 2}
"""Each split draws from its own seed stream: (seed, split id, chunk index)."""
CHUNK = 128
"""Images per seeded chunk: small enough that a chunk's tensors stay in the processor's cache."""

FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmti10.ttf",
)
CANVAS = 48
"""Side of a glyph's square canvas in the atlas, in pixels."""
GLYPH_HEIGHT = 30
"""Height of every digit in its canvas, in pixels (fonts are rescaled to it)."""
PATCHES = 1024
"""Photo texture patches cut once (seeded) from the two sample photographs."""
MIN_CONTRAST = 0.3
"""Smallest luma difference between a digit and its background (luma in [0, 1])."""


# --- what the images are made of (computed once per process) -------------------------------------

@functools.lru_cache(maxsize=1)
def glyph_atlas() -> tuple[torch.Tensor, torch.Tensor]:
    """Digit masks (fonts, 10, 48, 48) in [0, 1], centred in their canvas, and each font's mean
    digit width (fonts,) as a fraction of the canvas side."""
    from matplotlib import get_data_path
    from PIL import Image, ImageDraw, ImageFont

    folder = Path(get_data_path()) / "fonts" / "ttf"
    masks, widths = [], []
    for name in FONT_FILES:
        glyphs, font_widths = [], []
        for digit in "0123456789":
            probe = ImageFont.truetype(str(folder / name), size=48)
            top, bottom = probe.getbbox(digit)[1], probe.getbbox(digit)[3]
            font = ImageFont.truetype(str(folder / name), size=round(48 * GLYPH_HEIGHT / (bottom - top)))
            left, top, right, bottom = font.getbbox(digit)
            canvas = Image.new("L", (CANVAS, CANVAS))
            ImageDraw.Draw(canvas).text(((CANVAS - (right - left)) / 2 - left, (CANVAS - (bottom - top)) / 2 - top),
                                        digit, fill=255, font=font)
            glyphs.append(np.asarray(canvas, np.float32) / 255.0)
            font_widths.append((right - left) / CANVAS)
        masks.append(np.stack(glyphs))
        widths.append(np.mean(font_widths))
    return torch.from_numpy(np.stack(masks)), torch.tensor(widths, dtype=torch.float32)


def sample_photo_paths() -> list[Path]:
    """The two photographs scikit-learn ships (what ``sklearn.datasets.load_sample_images`` reads),
    found without importing scikit-learn, which takes longer than generating 10,000 images."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("synth-digits needs scikit-learn's sample photographs: pip install scikit-learn")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "images"
    return [folder / "china.jpg", folder / "flower.jpg"]


@functools.lru_cache(maxsize=1)
def photo_patches() -> torch.Tensor:
    """(PATCHES, 3, 32, 32) texture crops in [0, 1] of the sample photographs, at random scales."""
    from PIL import Image

    photos = [torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)
              for path in sample_photo_paths()]
    gen = torch.Generator().manual_seed(12345)
    crops = []
    for i in range(PATCHES):
        photo = photos[i % len(photos)]
        side = int(torch.randint(24, 160, (1,), generator=gen))
        y = int(torch.randint(0, photo.shape[1] - side, (1,), generator=gen))
        x = int(torch.randint(0, photo.shape[2] - side, (1,), generator=gen))
        crops.append(F.interpolate(photo[None, :, y:y + side, x:x + side], size=(32, 32), mode="area")[0])
    return torch.stack(crops)


@functools.lru_cache(maxsize=1)
def photo_textures() -> torch.Tensor:
    """(2 * PATCHES, 3, 32, 32): each photo patch's variations around its mean (so a digit drawn
    over it keeps its contrast), then the same mirrored left to right."""
    patches = photo_patches()
    texture = patches - patches.mean(dim=(1, 2, 3), keepdim=True)
    return torch.cat([texture, texture.flip(3)])


# --- one chunk of images -------------------------------------------------------------------------

def _uniform(gen: torch.Generator, n: int, low: float, high: float, *shape: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, *shape, generator=gen)


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    """(n,) luma of colours (n, 3) in [0, 1] (ITU-R BT.601 weights)."""
    return rgb @ torch.tensor([0.299, 0.587, 0.114])


def _colours(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Background and foreground colours (n, 3) whose lumas differ by at least MIN_CONTRAST."""
    bg, fg = torch.rand(n, 3, generator=gen), torch.rand(n, 3, generator=gen)
    for _ in range(8):  # redraw the foregrounds that are too close to their background
        weak = (_luma(fg) - _luma(bg)).abs() < MIN_CONTRAST
        fg = torch.where(weak[:, None], torch.rand(n, 3, generator=gen), fg)
    weak = ((_luma(fg) - _luma(bg)).abs() < MIN_CONTRAST)[:, None]
    dark_bg = (_luma(bg) < 0.5)[:, None]
    return bg, torch.where(weak, torch.where(dark_bg, 0.7 + 0.3 * fg, 0.3 * fg), fg)


def _ramp(gen: torch.Generator, n: int, size: int) -> torch.Tensor:
    """(n, 1, size, size) linear ramps from 0 to 1 in a random direction."""
    angle = _uniform(gen, n, 0, 2 * math.pi)
    coords = torch.linspace(-1, 1, size)
    ramp = torch.cos(angle)[:, None, None] * coords[None, None, :] + torch.sin(angle)[:, None, None] * coords[None, :, None]
    return ((ramp + math.sqrt(2)) / (2 * math.sqrt(2)))[:, None]


def _digit_masks(gen: torch.Generator, labels: torch.Tensor) -> torch.Tensor:
    """(n, 1, 32, 32) masks: the label's digit near the centre and, on each side, often a neighbour."""
    atlas, widths = glyph_atlas()
    n = len(labels)
    font = torch.randint(len(atlas), (n,), generator=gen)
    height = _uniform(gen, n, 0.5, 0.85) / (GLYPH_HEIGHT / CANVAS)  # digit height as a fraction of the image
    aspect, angle = _uniform(gen, n, 0.8, 1.2), _uniform(gen, n, -0.2, 0.2)
    shear, shift = _uniform(gen, n, -0.25, 0.25), _uniform(gen, n, -0.12, 0.12, 2)
    advance = 2 * widths[font] * _uniform(gen, n, 1.1, 1.5)  # neighbour distance in canvas coordinates
    cos, sin = torch.cos(angle), torch.sin(angle)
    # forward map canvas -> image: M = height * rotation @ shear @ diag(aspect, 1)
    m = torch.stack([torch.stack([cos * aspect, cos * shear - sin], -1),
                     torch.stack([sin * aspect, sin * shear + cos], -1)], -2) * height[:, None, None]
    inverse = torch.linalg.inv(m)
    # The three slots (left neighbour, the label, right neighbour) placed in one grid_sample call.
    digits = torch.stack([torch.randint(10, (n,), generator=gen), labels, torch.randint(10, (n,), generator=gen)])
    present = torch.stack([torch.rand(n, generator=gen) < 0.7, torch.ones(n, dtype=torch.bool),
                           torch.rand(n, generator=gen) < 0.7]).float()  # (3, n)
    sides = torch.tensor([-1.0, 0.0, 1.0])[:, None, None]
    centres = shift + sides * m[:, :, 0] * advance[:, None]  # (3, n, 2) where each digit's centre lands
    theta = torch.cat([inverse.expand(3, n, 2, 2), -(inverse @ centres[..., None])], dim=3)  # image -> canvas
    grid = (theta.reshape(6 * n, 3) @ _pixel_centres().T).view(3 * n, 2, 1024).transpose(1, 2).reshape(3 * n, 32, 32, 2)
    glyphs = atlas[font.repeat(3), digits.reshape(-1)][:, None]  # (3n, 1, 48, 48)
    masks = F.grid_sample(glyphs, grid, align_corners=False).view(3, n, 1, 32, 32)
    return (masks * present[:, :, None, None, None]).amax(dim=0)


@functools.lru_cache(maxsize=1)
def _pixel_centres() -> torch.Tensor:
    """(1024, 3) homogeneous normalised coordinates (x, y, 1) of the pixel centres of a 32x32 image,
    as ``affine_grid`` makes them (computed here once: the library call costs more than the sampling)."""
    coords = (torch.arange(32, dtype=torch.float32) * 2 + 1) / 32 - 1
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([x.flatten(), y.flatten(), torch.ones(1024)], dim=1)


def _backgrounds(gen: torch.Generator, bg: torch.Tensor) -> torch.Tensor:
    """(n, 3, 32, 32): the background colour with a gradient towards a nearby colour and, for about
    half the images, a photo texture blended in."""
    n = len(bg)
    second = (bg + 0.25 * torch.randn(n, 3, generator=gen)).clamp(0, 1)
    strength = _uniform(gen, n, 0, 1) * (torch.rand(n, generator=gen) < 0.6)
    ramp = _ramp(gen, n, 32) * strength[:, None, None, None]
    image = bg[:, :, None, None] * (1 - ramp) + second[:, :, None, None] * ramp
    patch = torch.randint(PATCHES, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    texture = photo_textures()[patch + PATCHES * flip]
    alpha = _uniform(gen, n, 0.3, 1.0) * (torch.rand(n, generator=gen) < 0.5)
    return (image + alpha[:, None, None, None] * texture).clamp(0, 1)


def _blur(gen: torch.Generator, images: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of a random width (sigma 0.3 to 1.3 pixels) per image: a separable 5-tap filter,
    one depthwise convolution per direction with each image's own kernel on its three channels."""
    n = len(images)
    sigma = _uniform(gen, n, 0.3, 1.3)
    taps = torch.arange(-2, 3, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps[None, :] / sigma[:, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(3, dim=0)  # (3n, 5)
    x = F.pad(images, (2, 2, 2, 2), mode="replicate").reshape(1, 3 * n, 36, 36)
    x = F.conv2d(x, kernel[:, None, None, :], groups=3 * n)  # along the width: (1, 3n, 36, 32)
    return F.conv2d(x, kernel[:, None, :, None], groups=3 * n).reshape(n, 3, 32, 32)  # along the height


@dataclass
class ChunkDraws:
    """What one chunk of images is made of: the clean images and the random draws of their last steps."""

    labels: torch.Tensor
    """(n,) int64 digits."""
    clean: torch.Tensor
    """(n, 3, 32, 32) float images in [0, 1] after the blur, before sensor noise and JPEG."""
    strength: torch.Tensor
    """(n, 1, 1, 1) width of each image's uniform sensor noise (standard deviation up to 0.05)."""
    noise: torch.Tensor
    """(n, 3, 32, 32) uniform draws in [0, 1) of the sensor noise."""
    quality: torch.Tensor
    """(n,) JPEG quality of each image (30 to 95)."""

    def render(self, *, compress: bool = True) -> np.ndarray:
        """uint8 images (n, 32, 32, 3): the clean images with their sensor noise, JPEG-compressed (unless
        not ``compress``) and quantized."""
        image = (self.clean + self.strength * (self.noise - 0.5)).clamp(0, 1)
        image = jpeg(image, self.quality) if compress else image
        return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def chunk_draws(n: int, *, seed: int, split: str, index: int) -> ChunkDraws:
    """The draws of chunk ``index`` of a split, from the seed stream (seed, split, index) alone."""
    gen = torch.Generator().manual_seed(hash_seed(seed, split, index))
    labels = torch.randint(10, (n,), generator=gen)
    mask = _digit_masks(gen, labels)
    bg, fg = _colours(gen, n)
    foreground = fg[:, :, None, None] * (1 - 0.3 * _ramp(gen, n, 32) * torch.rand(n, 1, 1, 1, generator=gen))
    image = _blur(gen, torch.lerp(_backgrounds(gen, bg), foreground, mask))
    # sensor noise of a random strength (std up to 0.05), uniform: as good a model as Gaussian at
    # this level, and cheaper to draw
    strength = _uniform(gen, n, 0, 0.05 * math.sqrt(12))[:, None, None, None]
    noise = torch.rand(image.shape, generator=gen)
    return ChunkDraws(labels, image, strength, noise, torch.randint(30, 96, (n,), generator=gen).float())


def generate_chunk(n: int, *, seed: int, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk ``index`` of a split: uint8 images (n, 32, 32, 3) and int64 labels (n,), from the seed
    stream (seed, split, index) alone."""
    draws = chunk_draws(n, seed=seed, split=split, index=index)
    return draws.render(), draws.labels.numpy().astype(np.int64)


def hash_seed(seed: int, split: str, index: int) -> int:
    """A 63-bit seed for chunk ``index`` of ``split``, from NumPy's SeedSequence (well mixed)."""
    return int(np.random.SeedSequence([seed, SPLIT_IDS[split], index]).generate_state(1, np.uint64)[0] >> 1)


# --- whole splits --------------------------------------------------------------------------------

def generate(n: int, *, seed: int, split: str, workers: int | None = None,
             out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (n, 32, 32, 3) uint8 and labels (n,) of ``split`` for ``seed``, written into ``out``
    when given (e.g. a memory-mapped file), by ``workers`` threads (default: the CPU count).

    Threads, not processes: torch releases the GIL inside its operations, and nothing has to start
    up. Each operation runs on one torch thread meanwhile, so the bytes never depend on the count.
    """
    images = out if out is not None else np.empty((n, *IMAGE_SHAPE), np.uint8)
    labels = np.empty(n, np.int64)
    starts = range(0, n, CHUNK)
    glyph_atlas(), photo_textures()  # built once, before the threads share them

    def job(start: int) -> tuple[np.ndarray, np.ndarray]:
        return generate_chunk(min(CHUNK, n - start), seed=seed, split=split, index=start // CHUNK)

    # torch's thread count is per thread for its OpenMP pool: set it in each worker, not here
    with ThreadPoolExecutor(workers or os.cpu_count() or 1, initializer=torch.set_num_threads,
                            initargs=(1,)) as pool:
        return _fill(images, labels, pool.map(job, starts))


def _fill(images: np.ndarray, labels: np.ndarray, results) -> tuple[np.ndarray, np.ndarray]:
    start = 0
    for chunk_images, chunk_labels in results:
        images[start:start + len(chunk_labels)] = chunk_images
        labels[start:start + len(chunk_labels)] = chunk_labels
        start += len(chunk_labels)
    return images, labels


# --- the cache on disk ---------------------------------------------------------------------------

def cache_paths(folder: Path, split: str) -> tuple[Path, Path, Path]:
    """``<split>_images.npy``, ``<split>_labels.npy`` and the ``<split>.json`` record of how they were made."""
    return folder / f"{split}_images.npy", folder / f"{split}_labels.npy", folder / f"{split}.json"


def read_record(folder: Path, split: str) -> dict[str, Any] | None:
    """The split's generation record, or None when the split was never (completely) generated."""
    path = cache_paths(folder, split)[2]
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def generate_split(folder: Path, split: str, *, num_examples: int | None = None, seed: int = DEFAULT_SEED,
                   workers: int | None = None) -> dict[str, Any]:
    """Generate ``split`` into memory-mappable ``.npy`` files in ``folder`` and return its record.

    Each file is written beside its final name and renamed into place; the record, written last,
    marks a complete split, so an interrupted generation leaves nothing that looks finished.
    """
    n = get_dataset("synth-digits").split(split).num_examples if num_examples is None else num_examples
    if n < 1:
        raise UserError(f"synth-digits: --num-examples must be positive, got {n}")
    images_path, labels_path, record_path = cache_paths(folder, split)
    folder.mkdir(parents=True, exist_ok=True)
    record_path.unlink(missing_ok=True)  # from here on the split is incomplete until the record is back
    t0 = time.perf_counter()
    labels: dict[str, np.ndarray] = {}

    def write_images(tmp: Path) -> None:
        out = open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, *IMAGE_SHAPE))
        labels["y"] = generate(n, seed=seed, split=split, workers=workers, out=out)[1]
        out.flush()
        del out

    write_file(images_path, write_images)
    seconds = time.perf_counter() - t0
    write_npy(labels_path, labels["y"])
    record = {"dataset": "synth-digits", "split": split, "generator_version": GENERATOR_VERSION, "seed": seed,
              "num_examples": n, "image_shape": list(IMAGE_SHAPE), "chunk": CHUNK,
              "images_md5": md5sum(images_path, decompress=False), "labels_md5": md5sum(labels_path, decompress=False),
              "seconds": round(seconds, 2), "images_per_s": round(n / seconds, 1)}
    write_file(record_path, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
    return record


def load_split_arrays(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's images (memory-mapped, read-only) and labels, generated first (defaults) if absent
    or made by another generator version."""
    record = read_record(folder, split)
    if record is None or record.get("generator_version") != GENERATOR_VERSION:
        logger.info("generating synth-digits/%s in %s", split, folder)
        record = generate_split(folder, split, seed=DEFAULT_SEED if record is None else record["seed"])
    images_path, labels_path, _ = cache_paths(folder, split)
    try:
        return np.load(images_path, mmap_mode="r"), np.load(labels_path)
    except (OSError, ValueError) as e:
        raise UserError(f"synth-digits/{split}: cannot read {images_path} or {labels_path} ({e}); "
                        f"delete {folder / (split + '.json')} to regenerate it") from None


def check_split(folder: Path, split: str) -> list[FileCheck]:
    """A FileCheck per file (images first): md5 against the generation record ('missing' when the
    split was never generated)."""
    record = read_record(folder, split)
    checks = []
    for path, key in zip(cache_paths(folder, split)[:2], ("images_md5", "labels_md5")):
        name = path.name
        if record is None or not path.exists():
            checks.append(FileCheck(name, None, "missing"))
            continue
        actual = md5sum(path, decompress=False)
        status = "ok" if actual == record[key] else "mismatch"
        checks.append(FileCheck(name, path, status, expected_md5=record[key], actual_md5=actual))
    return checks


def verify_split(folder: Path, split: str) -> list[FileCheck]:
    """Raise UserError unless the cache matches its record (md5s, size, generator version) and its
    first chunk is what the generator makes for the recorded seed; returns the checks."""
    checks = check_split(folder, split)
    for check in checks:
        if check.status != "ok":
            raise UserError(f"synth-digits/{split}: {check.name} is {check.status}; "
                            f"run `svhn-vae data generate --dataset synth-digits --split {split}`")
    record = read_record(folder, split)
    images = np.load(cache_paths(folder, split)[0], mmap_mode="r")
    if record["generator_version"] != GENERATOR_VERSION or len(images) != record["num_examples"]:
        raise UserError(f"synth-digits/{split} was made by generator version {record['generator_version']} "
                        f"with {record['num_examples']} images; regenerate it with `svhn-vae data generate`")
    first, _ = generate_chunk(min(CHUNK, len(images)), seed=record["seed"], split=split, index=0)
    if not np.array_equal(first, images[:len(first)]):
        raise UserError(f"synth-digits/{split}: the images are not what seed {record['seed']} generates; "
                        "regenerate them with `svhn-vae data generate`")
    return checks
