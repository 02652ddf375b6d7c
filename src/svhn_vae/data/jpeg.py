"""The lossy steps of a baseline JPEG encoder, vectorised over a batch with torch.

A JPEG file loses information in three places: the RGB -> YCbCr transform (rounded), 4:2:0 chroma
subsampling, and the quantisation of each 8x8 block's DCT coefficients by a table scaled with the
quality; the entropy coding after that is lossless. :func:`jpeg` applies those steps to many small
images at once (Pillow's encoder needs one call per image, too slow for generating datasets); a
test holds it to Pillow's output.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

# The baseline JPEG quantisation tables (ITU T.81, annex K) for luma and chroma.
_LUMA_TABLE = torch.tensor([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=torch.float32).view(8, 8)
_CHROMA_TABLE = torch.full((8, 8), 99.0)
_CHROMA_TABLE[:4, :4] = torch.tensor([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]],
                                     dtype=torch.float32)
_RGB_TO_YCC = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_YCC_TO_RGB = torch.linalg.inv(_RGB_TO_YCC)


@functools.lru_cache(maxsize=1)
def _block_dct() -> torch.Tensor:
    """(64, 64) the orthonormal 2-D DCT-II of a row-major 8x8 block as one matrix: the Kronecker
    product of the 8-point DCT matrix with itself (one large matrix product beats many 8x8 ones)."""
    k, i = torch.arange(8.0)[:, None], torch.arange(8.0)[None, :]
    d = torch.cos((2 * i + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return torch.kron(d, d)


def _coefficients(plane: torch.Tensor, tables: torch.Tensor, rounded: bool) -> torch.Tensor:
    """(n, blocks, 64) the DCT coefficients of the 8x8 blocks of planes (n, H, W), row by row, divided by
    ``tables`` (n, 8, 8) and (if ``rounded``) rounded: the integers a JPEG file stores."""
    n, h, w = plane.shape
    blocks = plane.reshape(n, h // 8, 8, w // 8, 8).transpose(2, 3).reshape(n, -1, 64)
    coefficients = blocks @ _block_dct().T / tables.reshape(n, 1, 64)
    return torch.round(coefficients) if rounded else coefficients


def _planes(coefficients: torch.Tensor, tables: torch.Tensor, size: int) -> torch.Tensor:
    """(n, size, size) planes from quantised coefficients (n, blocks, 64): times ``tables``, inverse DCT."""
    n = coefficients.shape[0]
    blocks = (coefficients * tables.reshape(n, 1, 64)) @ _block_dct()
    return blocks.reshape(n, size // 8, size // 8, 8, 8).transpose(2, 3).reshape(n, size, size)


@functools.lru_cache(maxsize=1)
def _chroma_resampling() -> tuple[torch.Tensor, torch.Tensor]:
    """(16, 32) averaging of pixel pairs and (32, 16) bilinear upsampling (half-pixel centres, as
    ``F.interpolate(..., align_corners=False)``), applied along each axis as matrix products."""
    down = torch.zeros(16, 32)
    down[torch.arange(16), 2 * torch.arange(16)] = 0.5
    down[torch.arange(16), 2 * torch.arange(16) + 1] = 0.5
    up = F.interpolate(torch.eye(16)[None, None], size=(32, 16), mode="bilinear", align_corners=False)[0, 0]
    return down, up


def _colour_transform(images: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """matrix (3, 3) @ each pixel's channels (n, 3, H, W), plus offset (3,)."""
    n, c, h, w = images.shape
    return (matrix @ images.reshape(n, c, h * w) + offset[:, None]).reshape(n, c, h, w)


def quantisation_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 8, 8) luma and chroma quantisation steps for ``quality`` (n,) in 1..100: the standard tables
    scaled by the IJG quality formula."""
    scale = torch.where(quality < 50, 5000 / quality, 200 - 2 * quality)[:, None, None] / 100
    return tuple(torch.floor(table * scale + 0.5).clamp(1, 255) for table in (_LUMA_TABLE, _CHROMA_TABLE))


def jpeg_coefficients(images: torch.Tensor, quality: torch.Tensor, *, rounded: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The integers baseline JPEG at ``quality`` (n,) stores for float images (n, 3, 32, 32) in [0, 1]:
    luma (n, 16, 64) and chroma (n, 2, 4, 64) quantised DCT coefficients, blocks row by row (YCbCr,
    4:2:0 chroma subsampling, the tables of :func:`quantisation_tables`); not ``rounded``: before
    the rounding, an affine function of the images."""
    luma_q, chroma_q = quantisation_tables(quality)
    # every plane centred on 0: the level shift of 128 cancels the chroma offsets of 128
    ycc = _colour_transform(images, _RGB_TO_YCC * 255, torch.tensor([-128.0, 0.0, 0.0]))
    down, _ = _chroma_resampling()
    chroma = down @ ycc[:, 1:] @ down.T  # 4:2:0, the mean of each 2x2 block: (n, 2, 16, 16)
    luma = _coefficients(ycc[:, 0], luma_q, rounded)
    return luma, torch.stack([_coefficients(chroma[:, c], chroma_q, rounded) for c in (0, 1)], 1)


def jpeg(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Float images (n, 3, 32, 32) in [0, 1] after the lossy steps of baseline JPEG at ``quality`` (n,)
    in 1..100: :func:`jpeg_coefficients`, then decoded. (The entropy coding that follows in a file is
    lossless.)"""
    luma_q, chroma_q = quantisation_tables(quality)
    luma, chroma = jpeg_coefficients(images, quality)
    _, up = _chroma_resampling()
    cb, cr = (_planes(chroma[:, c], chroma_q, 16) for c in (0, 1))
    chroma = up @ torch.stack([cb, cr], 1) @ up.T  # back to (n, 2, 32, 32)
    ycc = torch.cat([_planes(luma, luma_q, 32)[:, None], chroma], 1)
    return _colour_transform(ycc, _YCC_TO_RGB / 255, _YCC_TO_RGB[:, 0] * 128 / 255)
