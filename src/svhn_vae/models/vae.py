"""The VAE: encoder, decoder and a standard normal prior, returning per-example terms in nats.

``forward`` returns the reconstruction log-likelihood log p(x|z) and the closed-form
KL(q(z|x) || p(z)) for every example; the training loss is ``-(rec - beta * kl).mean()``, made in
one place (:func:`loss_from_terms`; with free bits, each latent dimension's batch-mean KL below a
threshold costs nothing there). With ``iw_samples=k > 1`` it also returns the IWAE bound
(Burda et al. 2016) of every example, and the loss is its negative mean. Importance weighting
lives in :meth:`VAE.log_weights`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from svhn_vae.config import ModelConfig
from svhn_vae.models.coarse import CoarseView
from svhn_vae.networks import build_decoder, build_encoder


@dataclass
class ElboTerms:
    """Per-example terms, each (B,) in nats."""

    rec: torch.Tensor
    """log p(x|z) for one z ~ q(z|x); with k samples, the mean over them."""
    kl: torch.Tensor
    """KL(q(z|x) || N(0, I)): in closed form for one sample; with k samples, the mean over them of
    log q(z|x) - log p(z)."""
    log_ratio: torch.Tensor | None = None
    """(k, B) log p(z) - log q(z|x) of each of k > 1 importance samples (None for the plain ELBO)."""
    rec_samples: torch.Tensor | None = None
    """(k, B) log p(x|z) of each importance sample (None for the plain ELBO)."""
    kl_dims: torch.Tensor | None = None
    """(B, L) the closed-form KL of each latent dimension (plain ELBO only); ``kl`` is their sum."""
    log_q_label: torch.Tensor | None = None
    """(B,) log q(y|x) of each given label, 0 where none is given (models with a label latent only)."""
    coarse: torch.Tensor | None = None
    """(B,) log-density of the image's coarse view given z (svhn_vae.models.coarse): a training term
    outside the bound, None without one."""
    log_q_decoded: torch.Tensor | None = None
    """(R,) log q(y | E[x|y,z]) of R decoded (prior style, label) pairs (M2 with ``decoded_rows``)."""

    @property
    def elbo(self) -> torch.Tensor:
        return self.rec - self.kl

    def objective(self, *, beta: float = 1.0) -> torch.Tensor:
        """(B,) the training bound in nats: the ELBO rec - beta * kl, or with k importance samples the
        IWAE bound logmeanexp_k(log p(x|z_k) + beta * (log p(z_k) - log q(z_k|x)))."""
        if self.log_ratio is None:
            return self.rec - beta * self.kl
        k = self.log_ratio.shape[0]
        return torch.logsumexp(self.rec_samples + beta * self.log_ratio, dim=0) - math.log(k)


def gaussian_kl_dims(mu: torch.Tensor, logvar: torch.Tensor, prior_logvar: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """(B, L) KL(N(mu, exp(logvar)) || N(0, 1)) = 0.5 * (mu^2 + exp(logvar) - 1 - logvar) per dimension, in
    nats; with ``prior_logvar`` p (L,), against N(0, exp(p)): 0.5 * ((mu^2 + exp(logvar)) / exp(p) - 1 - logvar + p)."""
    if prior_logvar is None:
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
    return 0.5 * ((mu.pow(2) + logvar.exp()) * torch.exp(-prior_logvar) - 1.0 - logvar + prior_logvar)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(B,) KL(N(mu, exp(logvar)) || N(0, I)), summed over the latent dimensions, in nats."""
    return gaussian_kl_dims(mu, logvar).sum(dim=-1)


def prior_log_ratio(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                    prior_logvar: torch.Tensor | None = None) -> torch.Tensor:
    """(...) log N(z; 0, I) - log N(z; mu, exp(logvar)), summed over the last dimension (the log(2 pi)
    terms cancel); with ``prior_logvar`` p (L,), the prior is N(0, diag(exp(p)))."""
    prior = z.pow(2) if prior_logvar is None else z.pow(2) * torch.exp(-prior_logvar) + prior_logvar
    return -0.5 * (prior - (z - mu).pow(2) * torch.exp(-logvar) - logvar).sum(-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, *, generator: torch.Generator | None = None,
                   n: int | None = None) -> torch.Tensor:
    """z = mu + exp(0.5 * logvar) * noise; (B, L), or (n, B, L) when ``n`` samples are asked for.

    The standard deviation is exp(0.5 * logvar); the write-up's code multiplied by the variance
    (exp(logvar)) by mistake.
    """
    shape = mu.shape if n is None else (n, *mu.shape)
    noise = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * noise


def loss_from_terms(terms: ElboTerms, *, beta: float = 1.0, free_bits: float = 0.0) -> torch.Tensor:
    """The training loss: the negative (beta-weighted) bound, summed over dimensions, averaged over the batch.

    ``free_bits`` > 0 (Kingma et al. 2016): each latent dimension's KL, averaged over the batch,
    counts as at least ``free_bits`` nats, so dimensions below it are free to carry information. A
    coarse view's log-density (``terms.coarse``) is maximised beside the bound.
    """
    coarse = 0.0 if terms.coarse is None else terms.coarse.mean()
    if free_bits <= 0:
        return -terms.objective(beta=beta).mean() - coarse
    if terms.kl_dims is None:
        raise ValueError("free bits need the per-dimension KL of the one-sample ELBO")
    return beta * terms.kl_dims.mean(0).clamp_min(free_bits).sum() - terms.rec.mean() - coarse


class VAE(nn.Module):
    """A VAE over flat inputs (B, D): PCA codes or pixels in [0, 1]."""

    def __init__(self, cfg: ModelConfig, *, data_dim: int, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.data_dim = data_dim
        self.latent_dim = self.decoded_latents(cfg, image_shape)
        self.encoder = build_encoder(cfg, data_dim=self.encoded_inputs(cfg, data_dim), image_shape=image_shape)
        self.decoder = build_decoder(dataclasses.replace(cfg, latent_dim=self.vector_latents(cfg, image_shape)),
                                     data_dim=data_dim, image_shape=image_shape)
        self.coarse = (CoarseView(latent_dim=self.latent_dim, image_shape=image_shape, size=cfg.coarse_size,
                                  variance=cfg.coarse_variance) if cfg.coarse_size else None)
        # log-variances of p(z) of the (top) latents, or None for N(0, I)
        self.prior_logvar = nn.Parameter(torch.zeros(cfg.latent_dim)) if cfg.prior == "learned-scale" else None

    @staticmethod
    def decoded_latents(cfg: ModelConfig, image_shape: tuple[int, int, int]) -> int:
        """L, the latents the decoder reads (a family with more than the top layer overrides this)."""
        return cfg.latent_dim

    @classmethod
    def vector_latents(cls, cfg: ModelConfig, image_shape: tuple[int, int, int]) -> int:
        """The latents the decoder's dense layer reads: all of them (a family whose decoder takes some
        as feature maps overrides this)."""
        return cls.decoded_latents(cfg, image_shape)

    @staticmethod
    def encoded_inputs(cfg: ModelConfig, data_dim: int) -> int:
        """Inputs of the encoder: the data's D (a family that also feeds it a label overrides this)."""
        return data_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance (B, L) of q(z|x), float32 even under bf16 autocast (the KL and the
        importance weights are computed from them)."""
        mu, logvar = self.encoder(x)
        return mu.float(), logvar.float()

    def decode(self, z: torch.Tensor):
        """The output distribution p(x|z) for z (..., L): one per row, with z's leading shape."""
        if z.dim() == 2:
            return self.decoder(*self.decoder_inputs(z))
        return self.decoder(*self.decoder_inputs(z.flatten(0, -2))).unflatten(z.shape[:-1])

    def decoder_inputs(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What the decoder reads for latent rows z (N, L): z itself (a family with latent maps overrides this)."""
        return (z,)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, unit_variance: torch.Tensor | None = None) -> None:
        """Start the decoder's output at the data: its mean and per-dimension variance over inputs x (N, D)
        (and fix a coarse view's variances from them); ``unit_variance`` (D,): the pixel-space variance
        of one unit of each input (default 1)."""
        if self.coarse is not None:
            self.coarse.init_from_data(x)
        x = x.double()
        self.decoder.head.init_from_data(x.mean(0).float(), x.var(0).clamp_min(1e-12).float(), unit_variance)

    def forward(self, x: torch.Tensor, *, generator: torch.Generator | None = None, iw_samples: int = 1) -> ElboTerms:
        """Per-example terms for inputs x (B, D): one posterior sample and the closed-form KL, or with
        ``iw_samples`` k > 1 the k importance samples an IWAE bound needs."""
        if iw_samples > 1:
            rec, log_ratio = self._importance_terms(x, iw_samples, generator=generator)
            return ElboTerms(rec=rec.mean(0), kl=-log_ratio.mean(0), log_ratio=log_ratio, rec_samples=rec)
        z, kl_dims = self._one_sample(x, generator=generator)
        coarse = None if self.coarse is None else self.coarse.log_prob(z, x)
        return ElboTerms(rec=self.decode(z).log_prob(x), kl=kl_dims.sum(dim=-1), kl_dims=kl_dims, coarse=coarse)

    def _one_sample(self, x: torch.Tensor, *, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, L) ~ q(z|x) and the closed-form KL of each latent dimension (B, L), in nats."""
        mu, logvar = self.encode(x)
        return reparameterize(mu, logvar, generator=generator), gaussian_kl_dims(mu, logvar, self.prior_logvar)

    def _importance_terms(self, x: torch.Tensor, n_samples: int, *,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(x|z) and log p(z) - log q(z|x), each (n_samples, B) in nats, for z ~ q(z|x)."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, generator=generator, n=n_samples)  # (S, B, L)
        rec = self.decode(z).log_prob(x)  # x (B, D) broadcast against the (S, B, D) outputs
        return rec, prior_log_ratio(z, mu, logvar, self.prior_logvar)

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, n_samples: int, *,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """(n_samples, B) importance log-weights log p(x|z) + log p(z) - log q(z|x), z ~ q(z|x), in nats.

        logsumexp over samples minus log(n_samples) is the IWAE bound (Burda et al. 2016).
        """
        rec, log_ratio = self._importance_terms(x, n_samples, generator=generator)
        return rec + log_ratio

    @torch.no_grad()
    def sample_latents(self, n: int, *, temperature: float = 1.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, L) draws from the prior, its standard deviations times ``temperature``."""
        return self.prior_draws(n, self.latent_dim, temperature=temperature, generator=generator)

    def prior_draws(self, n: int, size: int, *, temperature: float = 1.0,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, size) draws of the top latents from N(0, temperature^2 I), or with a learned prior scale
        from N(0, temperature^2 diag(s^2))."""
        device = next(self.parameters()).device
        z = temperature * torch.randn(n, size, generator=generator, device=device)
        return z if self.prior_logvar is None else z * torch.exp(0.5 * self.prior_logvar)


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """The number of parameters of ``model`` (only those that train, unless ``trainable_only=False``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
