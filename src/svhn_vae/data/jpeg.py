"""The lossy steps of a baseline JPEG encoder, vectorised over a batch with torch.

A JPEG file loses information in three places: the RGB -> YCbCr transform (rounded), 4:2:0 chroma
subsampling, and the quantisation of each 8x8 block's DCT coefficients by a table scaled with the
quality; the entropy coding after that is lossless. :func:`jpeg` applies those steps to many small
images at once (Pillow's encoder needs one call per image, too slow for generating datasets); a
test holds it to Pillow's output.
"""

from __future__ import annotations

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


def _dct_matrix() -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix (8, 8)."""
    k, i = torch.arange(8.0)[:, None], torch.arange(8.0)[None, :]
    d = torch.cos((2 * i + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d


def _quantise_blocks(plane: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """DCT, quantise with ``tables`` (n, 8, 8), round and invert, on the 8x8 blocks of planes (n, H, W)."""
    n, h, w = plane.shape
    d = _dct_matrix()
    blocks = plane.reshape(n, h // 8, 8, w // 8, 8).transpose(2, 3)  # (n, by, bx, 8, 8)
    coeffs = d @ blocks @ d.T
    q = tables[:, None, None]
    blocks = d.T @ (torch.round(coeffs / q) * q) @ d
    return blocks.transpose(2, 3).reshape(n, h, w)


def jpeg(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Float images (n, 3, 32, 32) in [0, 1] after the lossy steps of baseline JPEG at ``quality`` (n,)
    in 1..100: YCbCr, 4:2:0 chroma subsampling, 8x8 DCT coefficients quantised with the standard
    tables scaled by the IJG quality formula. (The entropy coding that follows in a file is lossless.)"""
    scale = torch.where(quality < 50, 5000 / quality, 200 - 2 * quality)[:, None, None] / 100
    luma_q = (torch.floor(_LUMA_TABLE * scale + 0.5)).clamp(1, 255)
    chroma_q = (torch.floor(_CHROMA_TABLE * scale + 0.5)).clamp(1, 255)
    ycc = torch.einsum("cd,ndhw->nchw", _RGB_TO_YCC, images * 255) + torch.tensor([0.0, 128, 128])[:, None, None]
    y = _quantise_blocks(ycc[:, 0] - 128, luma_q) + 128
    chroma = F.avg_pool2d(ycc[:, 1:], 2)  # (n, 2, 16, 16)
    cb, cr = (_quantise_blocks(chroma[:, c] - 128, chroma_q) + 128 for c in (0, 1))
    chroma = F.interpolate(torch.stack([cb, cr], 1), scale_factor=2, mode="bilinear", align_corners=False)
    ycc = torch.cat([y[:, None], chroma], 1) - torch.tensor([0.0, 128, 128])[:, None, None]
    return torch.einsum("cd,ndhw->nchw", torch.linalg.inv(_RGB_TO_YCC), ycc) / 255
