"""The VAE: encoder, decoder and a standard normal prior, returning per-example terms in nats.

``forward`` returns the reconstruction log-likelihood log p(x|z) and the closed-form
KL(q(z|x) || p(z)) for every example; the training loss is ``-(rec - beta * kl).mean()``, made in
one place (:func:`loss_from_terms`). Importance weighting lives in :meth:`VAE.log_weights`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from svhn_vae.config import ModelConfig
from svhn_vae.networks import build_networks


@dataclass
class ElboTerms:
    """Per-example terms, each (B,) in nats."""

    rec: torch.Tensor
    """log p(x|z) for one z ~ q(z|x)."""
    kl: torch.Tensor
    """KL(q(z|x) || N(0, I)) in closed form."""

    @property
    def elbo(self) -> torch.Tensor:
        return self.rec - self.kl


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(B,) KL(N(mu, exp(logvar)) || N(0, I)) = 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar), in nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, *, generator: torch.Generator | None = None,
                   n: int | None = None) -> torch.Tensor:
    """z = mu + exp(0.5 * logvar) * noise; (B, L), or (n, B, L) when ``n`` samples are asked for.

    The standard deviation is exp(0.5 * logvar); the write-up's code multiplied by the variance
    (exp(logvar)) by mistake.
    """
    shape = mu.shape if n is None else (n, *mu.shape)
    noise = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * noise


def loss_from_terms(terms: ElboTerms, *, beta: float = 1.0) -> torch.Tensor:
    """The training loss: the negative (beta-weighted) ELBO summed over dimensions, averaged over the batch."""
    return -(terms.rec - beta * terms.kl).mean()


class VAE(nn.Module):
    """A VAE over flat inputs (B, D): PCA codes or pixels in [0, 1]."""

    def __init__(self, cfg: ModelConfig, *, data_dim: int, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.data_dim = data_dim
        self.latent_dim = cfg.latent_dim
        self.encoder, self.decoder = build_networks(cfg, data_dim=data_dim, image_shape=image_shape)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance (B, L) of q(z|x)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor):
        """The output distribution p(x|z) for z (B, L)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> ElboTerms:
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, generator=generator)
        return ElboTerms(rec=self.decode(z).log_prob(x), kl=gaussian_kl(mu, logvar))

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, n_samples: int, *,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """(n_samples, B) importance log-weights log p(x|z) + log p(z) - log q(z|x), z ~ q(z|x), in nats.

        logsumexp over samples minus log(n_samples) is the IWAE bound (Burda et al. 2016).
        """
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, generator=generator, n=n_samples)  # (S, B, L)
        rec = self.decode(z.flatten(0, 1)).log_prob(x.repeat(n_samples, 1)).view(n_samples, -1)
        # log N(z; 0, I) - log N(z; mu, exp(logvar)); the log(2 pi) terms cancel.
        noise_sq = (z - mu).pow(2) * torch.exp(-logvar)
        return rec - 0.5 * (z.pow(2) - noise_sq - logvar).sum(-1)

    @torch.no_grad()
    def sample_latents(self, n: int, *, temperature: float = 1.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, L) draws from the prior N(0, temperature^2 I)."""
        device = next(self.parameters()).device
        return temperature * torch.randn(n, self.latent_dim, generator=generator, device=device)


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
