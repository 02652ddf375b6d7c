"""The model families, one per module, all with one contract.

A model returns per-example terms in nats (:class:`ElboTerms`: log p(x|z) and the KL; with k
importance samples their per-sample values), decodes latents (B, L) to its likelihood's
distribution (``decode``), gives posterior means for the probe and the figures (``encode``) and
prior draws (``sample_latents``). Evaluation, figures, probe, export and resume use only that.

- :mod:`.vae`: the single-layer VAE (dense or convolutional, PCA codes or pixels);
- :mod:`.hierarchical`: further stochastic layers inferred top-down (``ModelConfig.hierarchy``);
- :mod:`.m2`: the label as a latent variable (Kingma et al. 2014's M2, ``ModelConfig.classes``).
"""

from __future__ import annotations

from svhn_vae.config import ModelConfig
from svhn_vae.models.hierarchical import HierarchicalVAE
from svhn_vae.models.m2 import M2
from svhn_vae.models.vae import VAE, ElboTerms, count_parameters, loss_from_terms

__all__ = ["VAE", "ElboTerms", "HierarchicalVAE", "M2", "build_vae", "count_parameters", "loss_from_terms"]


def build_vae(cfg: ModelConfig, *, data_dim: int, image_shape: tuple[int, int, int]) -> VAE:
    """The model family ``cfg`` describes: M2 when it has label values, hierarchical when it has lower
    layers, else the plain VAE."""
    family = M2 if cfg.classes else HierarchicalVAE if cfg.hierarchy else VAE
    return family(cfg, data_dim=data_dim, image_shape=tuple(image_shape))
