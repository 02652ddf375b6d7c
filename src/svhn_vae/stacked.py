"""M1+M2 (Kingma et al. 2014's stacked model): a model trained on the latents of a trained VAE.

``--m1 RUN`` takes a trained single-layer VAE of this tool (PCA-Gaussian, discrete, Bernoulli:
any likelihood) as M1. The new model (M2) sees M1's latents z1 as its data: while training, fresh
draws z1 ~ q(z1|x) of every image at every step, as Kingma et al. did; for the classifier, the
probe and the figures, their means. :class:`M1Latents` is that representation: images go in
through M1's own input pipeline and encoder, and M2's outputs go back to images through M1's
decoder (the mean of p(x|z1)). Everything of M1 is stored in the run's checkpoints, so a run and
its run card stand alone.

The likelihood of the images is the stacked model's, p(x) = int p1(x|z1) p2(z1) dz1 with p2 M2's
marginal, bounded by importance sampling with q(z1|x) and M2's own proposal given each z1
(:class:`StackedModel`): log w = log p1(x|z1) + log w2(z1) - log q(z1|x), with w2 M2's one-draw
importance weight (unbiased for p2(z1)), so the mean of the w is unbiased for p(x), and it is
scored on M1's data (dequantized, binarized or 8-bit, as M1 was) in bits/dim like any other run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributions import Normal

from svhn_vae.config import Config
from svhn_vae.errors import UserError
from svhn_vae.models import VAE, build_vae
from svhn_vae.models.vae import reparameterize
from svhn_vae.representation import Representation, training_input


class M1Latents(Representation):
    """M1's latents as the data of another model (see the module doc)."""

    def __init__(self, m1_config: Config, m1: VAE, m1_representation: Representation) -> None:
        super().__init__(m1_representation.image_shape)
        if type(m1) is not VAE:
            raise UserError("--m1 takes a single-layer VAE run (not a hierarchical or M2 one) as M1")
        self.m1_config, self.m1, self.m1_representation = m1_config, m1.eval(), m1_representation
        self.m1.requires_grad_(False)

    @classmethod
    def from_run(cls, run: str | Path) -> M1Latents:
        from svhn_vae.checkpoint import load_trained

        trained = load_trained(run)
        return cls(trained.config, trained.model, trained.representation)

    @property
    def data_dim(self) -> int:
        return self.m1.latent_dim

    def to(self, device: torch.device | str) -> M1Latents:
        self.m1.to(device)
        return self

    def prepare(self, images: np.ndarray, *, device: torch.device | str = "cpu",
                batch_size: int = 8192) -> torch.Tensor:
        """M1's stored form of the images (its encoder runs batch by batch in ``to_input``)."""
        self.to(device)
        return self.m1_representation.prepare(images, device=device, batch_size=batch_size)

    @torch.no_grad()
    def to_input(self, stored: torch.Tensor, *, noise: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """z1 (B, L1): with ``noise`` a draw from q(z1|x) of M1's noisy input (dequantized or
        binarized as M1 trained), else the posterior mean of its noise-free input."""
        stored_here = stored.to(next(self.m1.parameters()).device)
        x = (training_input(self.m1_config.model, self.m1_representation, stored_here, generator=generator)
             if noise else self.m1_representation.to_input(stored_here))
        mu, logvar = self.m1.encode(x)  # M1 stays in eval mode: it is never trained here
        return (reparameterize(mu, logvar, generator=generator) if noise else mu).to(stored.device)

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, H, W, C) in [0, 1]: the mean of M1's p(x|z1) for z1 rows (B, L1)."""
        return self.m1_representation.decode(self.m1.decode(x).mean())

    def scorer(self, model: nn.Module) -> tuple[nn.Module, Representation]:
        """The model of the images (M1 under the given model of its latents) and M1's representation."""
        return StackedModel(self.m1, model), self.m1_representation

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "m1": {"config": self.m1_config.to_dict(), "model": self.m1.state_dict(),
                                               "representation": self.m1_representation.state_dict()}}

    @classmethod
    def from_m1_state(cls, state: dict[str, Any]) -> M1Latents:
        config = Config.from_saved(state["config"])
        rep = Representation.from_state_dict(state["representation"])
        m1 = build_vae(config.model, data_dim=rep.data_dim, image_shape=rep.image_shape)
        m1.load_state_dict(state["model"])
        return cls(config, m1, rep)


class StackedModel(nn.Module):
    """p(x) of M1 with M2's marginal as the prior of its latents: the importance weights of the
    stacked model (see the module doc); ``cfg`` is M1's, whose likelihood says what is scored."""

    def __init__(self, m1: VAE, m2: nn.Module) -> None:
        super().__init__()
        self.m1, self.m2, self.cfg = m1, m2, m1.cfg

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, n_samples: int, *,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """(n_samples, B) log p1(x|z1) + log w2(z1) - log q(z1|x), z1 ~ q(z1|x) (M1's input rows x)."""
        mu, logvar = self.m1.encode(x)
        z1 = reparameterize(mu, logvar, generator=generator, n=n_samples)  # (S, B, L1)
        rec = self.m1.decode(z1).log_prob(x)
        prior = self.m2.log_weights(z1.flatten(0, 1), 1, generator=generator)[0].view(n_samples, len(x))
        return rec + prior - Normal(mu, torch.exp(0.5 * logvar)).log_prob(z1).sum(-1)
