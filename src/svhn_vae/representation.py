"""What the VAE sees: pixels scaled to [0, 1], or their PCA codes, and the way back to images.

Images enter as uint8 (N, H, W, C) and are flattened in that order. ``prepare`` turns a whole
split into the compact tensor kept in memory for training (uint8 pixels, or float32 PCA codes
computed once); ``to_input`` turns a batch of it into model input; ``decode`` maps model-space rows
back to float images in [0, 1], through the inverse PCA and clipping where needed.

Pixels become numbers in [0, 1] in one of two ways. Dequantized (Gaussian models, the default):
u = (x + U[0, 1)) / 256 with fresh noise at every training step, exactly the data that the
evaluation's bits/dim score, and the bin centres (x + 0.5) / 256 where a fixed input is wanted
(figures, probes). Otherwise x / 255, as the write-up (and every Bernoulli model) did. With
dequantization the PCA is fitted on dequantized pixels too, so no eigenvalue falls below the
noise's 1 / (12 * 256^2) and whitening is safe on images with constant pixels (MNIST's borders).

A PCA model's training noise is drawn in code space. The codes of dequantized pixels are the bin
centres' codes plus the projection of the centred noise, (U - 1/2) / 256 @ V^T: mean 0 and, the
components being orthonormal, covariance I / (12 * 256^2) (over the eigenvalues when whitened).
Projecting D fresh uniforms every step cost more than the model's own matrix products (`fast`:
128 x 3072 x 700 per step); the codes of the bin centres are computed once, and each step adds
Gaussian noise of that exact mean and covariance. A sum of D = 784 or 3072 independent uniforms
along a component v is Gaussian but for an excess kurtosis of -1.2 sum(v_i^4), about -1.2 / D for
components spread over the image (:func:`code_noise_kurtosis` gives the largest of a basis); the
evaluation scores the exact uniform dequantization in pixel space either way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from svhn_vae.config import Config, ModelConfig, scored_data
from svhn_vae.errors import UserError
from svhn_vae.pca import PCA

PIXEL_MAX = 255.0
BINS = 256.0


NOISE_STD = 1.0 / (BINS * 12 ** 0.5)
"""Standard deviation of one pixel's dequantization noise U[0, 1) / 256, and of its projection on
any unit direction."""


def code_noise_kurtosis(pca: PCA) -> float:
    """The largest |excess kurtosis| of the projected dequantization noise over the kept components:
    1.2 max_k sum_i V_ki^4 (0 for a Gaussian; a uniform's own is 1.2)."""
    return 1.2 * float((pca.components_.double() ** 4).sum(dim=1).max())


def iter_rows(images: np.ndarray | torch.Tensor, batch_size: int) -> Iterator[np.ndarray | torch.Tensor]:
    """Flattened (n, D) row batches of an (N, H, W, C) array, without copying the whole array."""
    for i in range(0, len(images), batch_size):
        yield images[i:i + batch_size].reshape(min(batch_size, len(images) - i), -1)


def dequantize(images: np.ndarray | torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """Flat float64 rows (N, D) u = (x + U[0, 1)) / 256 in [0, 1) from uint8 images (N, ...), on the CPU."""
    x = torch.tensor(np.asarray(images), dtype=torch.float64).reshape(len(images), -1)
    return (x + torch.rand(x.shape, generator=generator, dtype=torch.float64)) / BINS


def dequantized_rows(images: np.ndarray, *, seed: int, batch_size: int = 4096) -> Iterator[torch.Tensor]:
    """Dequantized (n, D) float64 batches of uint8 images (N, H, W, C), one seeded noise stream
    (the same numbers whatever the batch size)."""
    generator = torch.Generator().manual_seed(seed)
    for rows in iter_rows(images, batch_size):
        yield dequantize(rows, generator=generator)


def training_input(model_cfg: ModelConfig, rep: Representation, stored: torch.Tensor, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A training batch of the stored form: fresh dequantization noise, and for Bernoulli models
    dynamic binarization (x ~ Bernoulli(pixel))."""
    x = rep.to_input(stored, noise=True, generator=generator)
    return torch.bernoulli(x, generator=generator) if model_cfg.likelihood == "bernoulli" and model_cfg.binarize else x


class Representation:
    """The map between uint8 images and the VAE's input space."""

    def __init__(self, image_shape: Sequence[int], pca: PCA | None = None, *, dequantized: bool = False) -> None:
        self.image_shape = tuple(int(s) for s in image_shape)  # (H, W, C)
        self.pca = pca
        self.dequantized = dequantized

    @property
    def pixel_dim(self) -> int:
        h, w, c = self.image_shape
        return h * w * c

    @property
    def data_dim(self) -> int:
        """D of the VAE's input: K for PCA codes, H * W * C for pixels."""
        return self.pca.n_components_ if self.pca is not None else self.pixel_dim

    @classmethod
    def fit(cls, cfg: Config, splits: Sequence[np.ndarray], *, batch_size: int = 4096) -> Representation:
        """Fit the PCA (if the config asks for one) on the training images only, streamed in batches;
        on dequantized pixels (noise seeded by ``train.seed``) when the model trains on them."""
        if cfg.model.m1 is not None:  # M1+M2: the latents of a trained VAE
            from svhn_vae.stacked import M1Latents

            if not cfg.model.m1:
                raise UserError("M1+M2 trains M2 on the latents of a trained VAE: give its run folder with --m1 RUN")
            latents = M1Latents.from_run(cfg.model.m1)
            if latents.image_shape != tuple(splits[0].shape[1:]):
                raise UserError(f"--m1 {cfg.model.m1} models {latents.image_shape} images, {cfg.data.dataset} has "
                                f"{tuple(splits[0].shape[1:])}: give an M1 trained on the same dataset")
            return latents
        image_shape = splits[0].shape[1:]
        dequantized = cfg.data.dequantize and scored_data(cfg.model.likelihood) == "dequantized"
        if cfg.model.input != "pca":
            return cls(image_shape, dequantized=dequantized)
        if dequantized:
            batches = (u for i, images in enumerate(splits)
                       for u in dequantized_rows(images, seed=cfg.train.seed + i, batch_size=batch_size))
        else:
            batches = (rows / PIXEL_MAX for images in splits for rows in iter_rows(images, batch_size))
        pca = PCA(cfg.pca.components, whiten=cfg.pca.whiten,
                  keep_discarded=cfg.pca.complement == "diagonal").fit_batches(batches)
        if pca.whiten and float(pca.explained_variance_.min()) < 1e-10:
            raise UserError("whitening divides by a PCA eigenvalue of almost 0 (pixels that never change); "
                            "train with --dequantize, or keep fewer --components, or drop --whiten")
        return cls(image_shape, pca, dequantized=dequantized)

    def unit_variance(self) -> torch.Tensor:
        """(D,) float32 pixel-space variance of one unit of each model input: a whitened PCA code's
        eigenvalue, else 1 (unwhitened codes are lengths along orthonormal components)."""
        if self.pca is not None and self.pca.whiten:
            return self.pca.explained_variance_.float()
        return torch.ones(self.data_dim)

    def prepare(self, images: np.ndarray, *, device: torch.device | str = "cpu",
                batch_size: int = 8192) -> torch.Tensor:
        """The whole split in its stored form: uint8 pixel rows (N, D), or float32 PCA codes (N, K),
        computed once, of pixels / 255 or, dequantized, of the bin centres (x + 0.5) / 256."""
        if self.pca is None:
            return torch.tensor(np.asarray(images).reshape(len(images), -1), device=device)  # copies a read-only memmap
        shift, scale = (0.5, BINS) if self.dequantized else (0.0, PIXEL_MAX)
        codes = [self.pca.transform((torch.from_numpy(np.asarray(rows, dtype=np.float32)) + shift) / scale)
                 for rows in iter_rows(images, batch_size)]
        return torch.cat(codes).to(device)

    def to_input(self, stored: torch.Tensor, *, noise: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Model input (B, D) float32 from a batch of the stored form.

        Dequantized pixels get fresh uniform noise with ``noise`` (from ``generator``, else the
        global RNG), else the centre of each bin; dequantized PCA codes get the projected noise's
        Gaussian (module doc).
        """
        if stored.dtype != torch.uint8:  # PCA codes computed once
            if not (noise and self.dequantized):
                return stored
            return stored + torch.randn(stored.shape, generator=generator, device=stored.device) * self._code_noise_std(stored)
        x = stored.float()
        if not self.dequantized:
            u = x / PIXEL_MAX
        elif noise:
            u = (x + torch.rand(x.shape, generator=generator, device=x.device)) / BINS
        else:
            u = (x + 0.5) / BINS
        return u if self.pca is None else self.pca.transform(u)

    def _code_noise_std(self, like: torch.Tensor) -> torch.Tensor:
        """(K,) standard deviation of each code's dequantization noise: NOISE_STD over the square root
        of one code unit's pixel-space variance (:meth:`unit_variance`)."""
        return NOISE_STD / self.unit_variance().to(like.device).sqrt()

    def encode(self, images: np.ndarray | torch.Tensor, *, device: torch.device | str = "cpu") -> torch.Tensor:
        """Model input for uint8 images (N, H, W, C) (bin centres when dequantized)."""
        return self.to_input(self.prepare(np.asarray(images), device=device))

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Float images (B, H, W, C) in [0, 1] from model-space rows (B, D)."""
        pixels = x.clamp(0, 1) if self.pca is None else self.pca.inverse_transform(x, clip=(0.0, 1.0))
        return pixels.reshape(len(x), *self.image_shape)

    def project(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """PCA-only reconstruction in [0, 1] (images unchanged for pixel models): what PCA alone loses."""
        return self.decode(self.encode(images))

    def scorer(self, model: Any) -> tuple[Any, Representation]:
        """The model whose likelihood of images evaluation scores, and the representation of its
        input: ``model`` and this one (a representation of latents gives the stacked model)."""
        return model, self

    def state_dict(self) -> dict[str, Any]:
        return {"image_shape": list(self.image_shape), "pca": None if self.pca is None else self.pca.state_dict(),
                "dequantized": self.dequantized}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Representation:
        if state.get("m1") is not None:
            from svhn_vae.stacked import M1Latents

            return M1Latents.from_m1_state(state["m1"])
        pca = None if state["pca"] is None else PCA.from_state_dict(state["pca"])
        return cls(state["image_shape"], pca, dequantized=bool(state["dequantized"]))
