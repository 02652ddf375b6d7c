"""A hierarchical VAE: a top latent under N(0, I) and further layers inferred top-down (Ladder VAE /
VDVAE style, dense latents or, for the convolutional architecture, maps of latents).

Layer 1 is the plain VAE's latent: q(z_1|x) from the encoder, prior N(0, I). Each lower layer l has
a prior p(z_l | z_<l) and a posterior q(z_l | x, z_<l), both diagonal Gaussians computed from a
top-down state t_l = block(z_1, ..., z_l-1) (the posterior also reads the encoder's features of x,
and is parameterized as a shift of the prior, NVAE's residual posterior, started at zero: every
lower layer begins with q = p and no KL; the prior's parameters and the posterior's shifts are
softly bounded, :func:`soft_clamp` with ``ladder_bound``). The decoder reads every layer,
p(x | z_1, ..., z_L), so
a model with no lower layer is exactly :class:`~svhn_vae.models.vae.VAE`.

With ``ladder_spatial`` (convolutional architecture) the lower layers are maps of latents at the
size of the encoder's second-to-last feature map (:class:`SpatialLadderLayer`): their priors and
posteriors come from 3x3 convolutions, and the decoder adds them into its feature map of that
size, so each latent speaks for one region of the image (VDVAE's spatial latents). They are
flattened (channel, row, column) into the latent vector of the model contract.

The KL of the ELBO is the sum over layers of KL(q(z_l | x, z_<l) || p(z_l | z_<l)), in closed form
given the sampled layers above (a one-sample estimate of the whole KL); the IWAE bound uses
log p(z) - log q(z|x) of the sampled layers. For the shared model contract, the "latents" of this
model are all layers concatenated (L = latent_dim + sum(hierarchy)): ``encode`` gives their
posterior means (each layer's given the means above) and log-variances, ``decode`` maps them to
p(x|z), ``sample_latents`` draws them ancestrally from the priors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from svhn_vae.config import ModelConfig
from svhn_vae.models.vae import VAE, gaussian_kl_dims, prior_log_ratio, reparameterize
from svhn_vae.networks import conv_sizes, dense_stack


def gaussian_kl_between(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor,
                        logvar_p: torch.Tensor) -> torch.Tensor:
    """(..., L) KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) per dimension, in nats."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) * torch.exp(-logvar_p) - 1.0)


def gaussian_log_ratio(z: torch.Tensor, mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor,
                       logvar_p: torch.Tensor) -> torch.Tensor:
    """(...) log N(z; mu_p, exp(logvar_p)) - log N(z; mu_q, exp(logvar_q)), summed over the last dimension."""
    return -0.5 * ((z - mu_p).pow(2) * torch.exp(-logvar_p) + logvar_p
                   - (z - mu_q).pow(2) * torch.exp(-logvar_q) - logvar_q).sum(-1)


def soft_clamp(x: torch.Tensor, bound: float) -> torch.Tensor:
    """``bound * tanh(x / bound)``: x where it is small, never beyond +-bound (NVAE's soft clamp);
    ``bound`` 0: x. Unbounded, a prior variance that shrinks under a posterior mean that moves made
    one batch's KL over 10^7 nats on synth-digits and spoilt training."""
    return bound * torch.tanh(x / bound) if bound > 0 else x


class LadderLayer(nn.Module):
    """One lower stochastic layer: prior and posterior of ``latent_dim`` latents given the layers above."""

    def __init__(self, *, context_dim: int, feature_dim: int, width: int, latent_dim: int, dropout: float,
                 bound: float) -> None:
        super().__init__()
        self.bound = bound
        self.top_down, _ = dense_stack(context_dim, (width,), dropout)
        self.prior = nn.Linear(width, 2 * latent_dim)
        blocks, _ = dense_stack(feature_dim + width, (width,), dropout)
        self.posterior = nn.Sequential(blocks, nn.Linear(width, 2 * latent_dim))
        nn.init.zeros_(self.posterior[-1].weight)  # q = p at the start: no KL to pay before it is worth it
        nn.init.zeros_(self.posterior[-1].bias)

    def forward(self, context: torch.Tensor, features: torch.Tensor | None = None
                ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]:
        """Prior (mean, log-variance), each (N, L), from the layers above ``context`` (N, C); with the
        encoder's ``features`` (N, H) also the posterior's, else None."""
        t = self.top_down(context)
        mu_p, logvar_p = soft_clamp(self.prior(t).float(), self.bound).chunk(2, dim=-1)
        if features is None:
            return (mu_p, logvar_p), None
        shift = self.posterior(torch.cat([features, t], dim=-1)).float()
        d_mu, d_logvar = soft_clamp(shift, self.bound).chunk(2, dim=-1)
        return (mu_p, logvar_p), (mu_p + d_mu, logvar_p + d_logvar)


def grid_size(cfg: ModelConfig, image_shape: tuple[int, int, int]) -> int:
    """The side of the lower layers' latent maps (``ladder_spatial``: the encoder's second-to-last
    feature map's), else 1."""
    return conv_sizes(image_shape[0], len(cfg.conv_channels))[-2] if cfg.ladder_spatial else 1


class SpatialLadderLayer(nn.Module):
    """One lower layer of latent maps (``channels`` per position of a size x size grid), prior and
    posterior from 3x3 convolutions; the same contract as :class:`LadderLayer`, on flattened maps.

    Its top-down state is the top latents through a dense layer onto the grid, plus the maps above
    it through a 1x1 convolution; the posterior also reads the encoder's feature map of the grid's
    size, and is a shift of the prior started at zero, as in :class:`LadderLayer`."""

    def __init__(self, *, top_dim: int, above_channels: int, feature_channels: int, size: int, channels: int,
                 bound: float) -> None:
        super().__init__()
        self.top_dim, self.size, self.bound, width = top_dim, size, bound, feature_channels
        self.from_top = nn.Linear(top_dim, width * size * size)
        self.from_above = nn.Conv2d(above_channels, width, 1) if above_channels else None
        self.top_down = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                                      nn.BatchNorm2d(width), nn.ReLU())
        self.prior = nn.Conv2d(width, 2 * channels, 3, padding=1)
        self.posterior = nn.Sequential(nn.Conv2d(feature_channels + width, width, 3, padding=1), nn.BatchNorm2d(width),
                                       nn.ReLU(), nn.Conv2d(width, 2 * channels, 3, padding=1))
        nn.init.zeros_(self.posterior[-1].weight)  # q = p at the start, as the dense layers
        nn.init.zeros_(self.posterior[-1].bias)

    def grid(self, rows: torch.Tensor) -> torch.Tensor:
        """(N, C * size * size) -> (N, C, size, size)."""
        return rows.reshape(len(rows), -1, self.size, self.size)

    def forward(self, context: torch.Tensor, features: torch.Tensor | None = None
                ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]:
        """Prior (mean, log-variance), each (N, channels * size^2), from the layers above ``context``
        (N, top_dim + the maps above, flattened); with the encoder's flattened feature map
        ``features`` also the posterior's, else None."""
        t = self.grid(self.from_top(context[:, :self.top_dim]))
        if self.from_above is not None:
            t = t + self.from_above(self.grid(context[:, self.top_dim:]))
        t = self.top_down(t)
        mu_p, logvar_p = soft_clamp(self.prior(t).float(), self.bound).flatten(1).chunk(2, dim=-1)
        if features is None:
            return (mu_p, logvar_p), None
        shift = self.posterior(torch.cat([self.grid(features).to(t.dtype), t], dim=1)).float()
        d_mu, d_logvar = soft_clamp(shift, self.bound).flatten(1).chunk(2, dim=-1)
        return (mu_p, logvar_p), (mu_p + d_mu, logvar_p + d_logvar)


@dataclass
class LadderPass:
    """One top-down pass over N rows (S samples of B examples flattened, sample-major)."""

    z: torch.Tensor
    """(N, L) every layer's latents, concatenated top first."""
    kl_dims: torch.Tensor
    """(N, L) each layer's closed-form KL given the sampled layers above."""
    log_ratio: torch.Tensor
    """(N,) log p(z) - log q(z|x) of the sampled latents."""
    mu: torch.Tensor
    """(N, L) the posterior means."""
    logvar: torch.Tensor
    """(N, L) the posterior log-variances."""


class HierarchicalVAE(VAE):
    """A VAE with ``cfg.hierarchy`` further stochastic layers under its top latent (see the module doc)."""

    def __init__(self, cfg: ModelConfig, *, data_dim: int, image_shape: tuple[int, int, int]) -> None:
        super().__init__(cfg, data_dim=data_dim, image_shape=image_shape)
        self.layer_sizes = sizes = (cfg.latent_dim, *(c * grid_size(cfg, image_shape) ** 2 for c in cfg.hierarchy))
        if cfg.ladder_spatial:
            channels, size, _ = self.encoder.map_shape
            self.ladder = nn.ModuleList(
                SpatialLadderLayer(top_dim=cfg.latent_dim, above_channels=sum(cfg.hierarchy[:i]),
                                   feature_channels=channels, size=size, channels=c, bound=cfg.ladder_bound)
                for i, c in enumerate(cfg.hierarchy))
        else:
            self.ladder = nn.ModuleList(
                LadderLayer(context_dim=sum(sizes[:i]), feature_dim=self.encoder.feature_dim, width=cfg.ladder_width,
                            latent_dim=size, dropout=cfg.dropout, bound=cfg.ladder_bound)
                for i, size in enumerate(sizes) if i > 0)

    @staticmethod
    def decoded_latents(cfg: ModelConfig, image_shape: tuple[int, int, int]) -> int:
        """Every layer's latents (maps flattened): the decoder reads them all."""
        return cfg.latent_dim + sum(cfg.hierarchy) * grid_size(cfg, image_shape) ** 2

    @classmethod
    def vector_latents(cls, cfg: ModelConfig, image_shape: tuple[int, int, int]) -> int:
        """The top latents alone where the lower layers are maps the decoder adds into its feature map."""
        return cfg.latent_dim if cfg.ladder_spatial else cls.decoded_latents(cfg, image_shape)

    def decoder_inputs(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """z (N, L), or with latent maps the top latents (N, latent_dim) and the maps (N, C, H', W')."""
        if not self.cfg.ladder_spatial:
            return (z,)
        top = self.cfg.latent_dim
        return z[:, :top], self.ladder[0].grid(z[:, top:])

    def _pass(self, x: torch.Tensor, *, samples: int = 1, generator: torch.Generator | None = None,
              at_mean: bool = False) -> LadderPass:
        """Infer every layer for inputs x (B, D): ``samples`` draws per example (rows sample-major), or
        with ``at_mean`` one pass through the posterior means."""
        if self.cfg.ladder_spatial:  # the lower layers read the encoder's feature map of their size
            h, feature_map = self.encoder.features_and_map(x)
            lower = feature_map.flatten(1)
        else:
            h = lower = self.encoder.features(x)
        mu, logvar = (t.float() for t in self.encoder.posterior(h))
        z = mu if at_mean else reparameterize(mu, logvar, generator=generator, n=samples).flatten(0, 1)
        if not at_mean:
            lower, mu, logvar = (t.repeat(samples, 1) for t in (lower, mu, logvar))
        zs, kls, mus, logvars = [z], [gaussian_kl_dims(mu, logvar, self.prior_logvar)], [mu], [logvar]
        log_ratio = prior_log_ratio(z, mu, logvar, self.prior_logvar)
        for layer in self.ladder:
            (mu_p, logvar_p), (mu_q, logvar_q) = layer(torch.cat(zs, dim=-1), lower)
            z = mu_q if at_mean else reparameterize(mu_q, logvar_q, generator=generator)
            zs.append(z), mus.append(mu_q), logvars.append(logvar_q)
            kls.append(gaussian_kl_between(mu_q, logvar_q, mu_p, logvar_p))
            log_ratio = log_ratio + gaussian_log_ratio(z, mu_q, logvar_q, mu_p, logvar_p)
        return LadderPass(torch.cat(zs, -1), torch.cat(kls, -1), log_ratio, torch.cat(mus, -1), torch.cat(logvars, -1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior means and log-variances (B, L) of every layer, each layer's given the means above."""
        p = self._pass(x, at_mean=True)
        return p.mu, p.logvar

    def _one_sample(self, x: torch.Tensor, *, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One top-down sample z (B, L) and each layer's closed-form KL given the layers above (B, L)."""
        p = self._pass(x, generator=generator)
        return p.z, p.kl_dims

    def _importance_terms(self, x: torch.Tensor, n_samples: int, *,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(x|z) and log p(z) - log q(z|x), each (n_samples, B) in nats, for z ~ q(z|x) top-down."""
        p = self._pass(x, samples=n_samples, generator=generator)
        z = p.z.unflatten(0, (n_samples, len(x)))
        return self.decode(z).log_prob(x), p.log_ratio.unflatten(0, (n_samples, len(x)))

    @torch.no_grad()
    def sample_latents(self, n: int, *, temperature: float = 1.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, L) ancestral draws: the top layer from its prior (:meth:`VAE.prior_draws`), each lower one
        from its prior given those above, its standard deviation times ``temperature``."""
        was_training = self.training
        self.eval()  # BatchNorm of the top-down blocks: running statistics, and none updated
        try:
            zs = [self.prior_draws(n, self.layer_sizes[0], temperature=temperature, generator=generator)]
            for layer in self.ladder:
                (mu_p, logvar_p), _ = layer(torch.cat(zs, dim=-1))
                zs.append(reparameterize(mu_p, logvar_p + 2 * math.log(temperature), generator=generator)
                          if temperature > 0 else mu_p)
            return torch.cat(zs, dim=-1)
        finally:
            self.train(was_training)
