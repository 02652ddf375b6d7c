"""Output distributions p(x|z) and the decoder heads that produce them, one family per module.

The shared contract: each distribution is a small object with ``log_prob(x)`` (per example, in
nats, summed over dimensions, broadcast against its parameters), ``mean()``, ``sample(generator=...)``
and ``unflatten(shape)``; each head is an ``nn.Module`` mapping the decoder's last hidden features
to one distribution, with ``init_from_data`` to start at the training data. What the
distribution is *of* is stated once, by :func:`svhn_vae.config.scored_data`:

- Gaussians (:mod:`.gaussian`) are densities on dequantized pixels (or their PCA codes): bits per
  dimension add the D ln 256 of the dequantization;
- Bernoulli (:mod:`.bernoulli`) is a probability of binarized pixels;
- the discrete likelihoods (:mod:`.discrete`, and :mod:`.autoregressive`, whose pixels also depend
  on the ones decoded before them) are probabilities of the 8-bit values themselves.

The model picks a head by config name (:func:`make_head`), never by dataset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from svhn_vae.config import ModelConfig
from svhn_vae.likelihoods.autoregressive import Autoregressive, AutoregressiveHead, MaskedConv2d
from svhn_vae.likelihoods.base import OutputLayer, init_output
from svhn_vae.likelihoods.bernoulli import Bernoulli, BernoulliHead
from svhn_vae.likelihoods.discrete import (
    Categorical, CategoricalHead, DiscretizedLogisticMixture, LogisticMixtureHead, log_bin_mass,
    logistic_mixture_params,
)
from svhn_vae.likelihoods.gaussian import (
    FixedVarianceHead, Gaussian, GaussianHead, LogVarHead, ReluEpsHead, SharedVarianceHead,
)

__all__ = [
    "Autoregressive", "AutoregressiveHead", "Bernoulli", "BernoulliHead", "Categorical", "CategoricalHead",
    "DiscretizedLogisticMixture", "FixedVarianceHead", "Gaussian", "GaussianHead", "LogVarHead",
    "LogisticMixtureHead", "MaskedConv2d", "OutputLayer", "ReluEpsHead", "SharedVarianceHead", "init_output",
    "log_bin_mass", "logistic_mixture_params", "make_head",
]


def make_head(cfg: ModelConfig, *, data_dim: int, image_shape: tuple[int, int, int], output_layer: OutputLayer,
              var_net: Callable[[], nn.Module]) -> nn.Module:
    """The decoder head named by ``cfg.likelihood`` over ``data_dim`` outputs (pixels of ``image_shape``
    (H, W, C) for the discrete likelihoods).

    ``var_net`` builds the ReLU+eps variance network (dense blocks of ``cfg.variance_head`` then an
    output layer); the decoder supplies it because only it knows its hidden shape.
    """
    name = cfg.likelihood
    if cfg.context_width:  # pixels that see the ones before them (ModelConfig allows it for CONTEXT_LIKELIHOODS)
        independent = make_head(dataclasses.replace(cfg, context_width=0), data_dim=data_dim, image_shape=image_shape,
                                output_layer=output_layer, var_net=var_net)
        per_pixel = image_shape[2] if name == "bernoulli" else logistic_mixture_params(image_shape[2], cfg.mixtures)
        return AutoregressiveHead(independent, image_shape=image_shape, per_pixel=per_pixel,
                                  width=cfg.context_width, kernel=cfg.context_kernel)
    if name == "bernoulli":
        return BernoulliHead(output_layer, data_dim=data_dim)
    if name == "logistic-mixture":
        return LogisticMixtureHead(output_layer, data_dim=data_dim, channels=image_shape[2], mixtures=cfg.mixtures)
    if name == "categorical":
        return CategoricalHead(output_layer, data_dim=data_dim)
    common = {"data_dim": data_dim, "relative": cfg.relative_variance, "pinned": min(cfg.fixed_variance_dims, data_dim),
              "fixed_variance": cfg.fixed_variance, "fixed_variance_floor": cfg.fixed_variance_floor}
    if name == "gaussian-fixed":
        return FixedVarianceHead(output_layer, **common)
    if name == "gaussian-relu-eps":
        return ReluEpsHead(output_layer, var_net=var_net(), eps=cfg.eps, frozen=cfg.frozen_variance_head, **common)
    if name == "gaussian-logvar":
        return LogVarHead(output_layer, logvar_min=cfg.logvar_min, **common)
    if name == "gaussian-shared":
        return SharedVarianceHead(output_layer, **common)
    raise ValueError(f"unknown likelihood {name!r}")  # unreachable: ModelConfig validates it
