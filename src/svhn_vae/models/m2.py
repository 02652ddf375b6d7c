"""M2 (Kingma, Rezende, Mohamed, Welling 2014): the label y as a latent variable of the VAE.

Generative model: y ~ Uniform(C), z ~ N(0, I), x ~ p(x | y, z), the decoder reading [z, onehot(y)].
Inference: a classifier q(y|x) and an encoder q(z | x, y) reading [x, onehot(y)].

Per example, in nats:

- labelled (x, y): the ELBO of log p(x, y),
  L(x, y) = E_q(z|x,y)[log p(x|y,z)] - KL(q(z|x,y) || p(z)) + log p(y);
- unlabelled x: the ELBO of log p(x) with y summed out exactly over the C classes,
  U(x) = sum_y q(y|x) L(x, y) + H(q(y|x)).

In :class:`~svhn_vae.models.vae.ElboTerms` both are rec - kl: for U, rec = sum_y q(y|x) log p(x|y,z_y)
and kl = sum_y q(y|x) KL_z(y) + KL(q(y|x) || p(y)); for L, kl = KL_z(y) - log p(y). Rows labelled
-1 are unlabelled. ``log_q_label`` carries log q(y|x) of the given labels, which the training loss
weights by alpha (:mod:`svhn_vae.semi_supervised`).

For the shared model contract the latents are [z, y] (L = latent_dim + C, y one-hot; ``encode``
gives q(y|x)'s probabilities there). The importance-sampled bound of p(x) = sum_y p(x, y) draws K
z per class and adds the classes up inside each draw, log W_k = logsumexp_y [log p(y) + log
p(x|y,z_yk) + log p(z_yk) - log q(z_yk|x,y)]: (1/K) sum_k W_k is unbiased for p(x), so its log-mean
is a bound whose K = 1 value is already at least the M2 ELBO U(x).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from svhn_vae.config import ModelConfig
from svhn_vae.models.vae import VAE, ElboTerms, gaussian_kl, prior_log_ratio, reparameterize
from svhn_vae.networks import ToNCHW, conv_stack, dense_stack

LABEL_LOGVAR = math.log(1e-8)
"""Log-variance ``encode`` gives the label part of the latents: q(y|x)'s probabilities are not noisy."""


class M2(VAE):
    """The M2 model over flat inputs (B, D) (see the module doc); ``cfg.classes`` label values."""

    def __init__(self, cfg: ModelConfig, *, data_dim: int, image_shape: tuple[int, int, int]) -> None:
        super().__init__(cfg, data_dim=data_dim, image_shape=image_shape)  # its encoder is q(z|x,y)
        self.classes = cfg.classes
        convs: list[nn.Module] = []
        self.classifier_inputs = min(cfg.classifier_inputs or data_dim, data_dim)
        width = self.classifier_inputs
        if cfg.classifier_channels:
            stack, width = conv_stack(image_shape, cfg.classifier_channels)
            convs = [ToNCHW(image_shape), stack]
        trunk, width = dense_stack(width, cfg.classifier, cfg.dropout)
        self.classifier = nn.Sequential(*convs, trunk, nn.Linear(width, cfg.classes))  # q(y|x)

    @staticmethod
    def decoded_latents(cfg: ModelConfig, image_shape: tuple[int, int, int]) -> int:
        """[z, onehot(y)]: the decoder reads both."""
        return cfg.latent_dim + cfg.classes

    @staticmethod
    def encoded_inputs(cfg: ModelConfig, data_dim: int) -> int:
        """[x, onehot(y)]: the encoder q(z|x,y) reads both."""
        return data_dim + cfg.classes

    def log_prior_y(self) -> float:
        return -math.log(self.classes)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """log q(y|x), (B, C) float32."""
        return F.log_softmax(self.classifier(x[:, :self.classifier_inputs]).float(), dim=-1)

    def decoded_label_log_q(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n,) log q(y | E[x|y,z]) of n draws z ~ N(0, I), y ~ Uniform(C): how surely the classifier
        reads the decoder's mean images as their labels. The classifier is held fixed (its
        parameters detached, BatchNorm on its running statistics), so the gradient teaches the
        decoder alone; ``train.consistency`` weights this term (:mod:`svhn_vae.semi_supervised`)."""
        latents = self.sample_latents(n, generator=generator)  # no_grad: z and y are inputs here
        y = latents[:, self.cfg.latent_dim:].argmax(-1)
        x = self.decode(latents).mean()[:, :self.classifier_inputs]
        fixed = {name: t.detach() for name, t in self.classifier.state_dict(keep_vars=True).items()}
        was_training = self.classifier.training
        self.classifier.eval()
        try:
            logits = functional_call(self.classifier, fixed, (x,))
        finally:
            self.classifier.train(was_training)
        return F.log_softmax(logits.float(), dim=-1).gather(1, y[:, None])[:, 0]

    def _onehot(self, y: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.classes).float()

    def _z_posterior(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance (B, L) of q(z | x, y) for labels y (B,)."""
        mu, logvar = self.encoder(torch.cat([x, self._onehot(y)], dim=-1))
        return mu.float(), logvar.float()

    def _labelled_elbo(self, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(x|y,z) for one z ~ q(z|x,y), and KL(q(z|x,y) || p(z)) in closed form, each (B,)."""
        mu, logvar = self._z_posterior(x, y)
        z = reparameterize(mu, logvar, generator=generator)
        return self.decode(self.with_labels(z, y)).log_prob(x), gaussian_kl(mu, logvar)

    def forward(self, x: torch.Tensor, *, y: torch.Tensor | None = None, elbo_rows: int | None = None,
                decoded_rows: int = 0, generator: torch.Generator | None = None, iw_samples: int = 1) -> ElboTerms:
        """Per-example terms of inputs x (B, D) with labels y (B,) (-1: unlabelled; None: all unlabelled).

        The ELBO terms are computed for the first ``elbo_rows`` rows (default all); ``log_q_label``
        (B,) for every row, 0 where unlabelled; ``log_q_decoded`` for ``decoded_rows`` decoded prior
        draws (:meth:`decoded_label_log_q`) when that is > 0. With ``iw_samples`` k > 1 (no labels):
        the k importance log-weights of p(x) (see the module doc) as ``rec_samples``.
        """
        if iw_samples > 1:
            if y is not None:
                raise ValueError("the importance-sampled bound is of p(x): give no labels")
            w = self.log_weights(x, iw_samples, generator=generator)
            return ElboTerms(rec=w.mean(0), kl=torch.zeros_like(w[0]), log_ratio=torch.zeros_like(w), rec_samples=w)
        y = torch.full((len(x),), -1, dtype=torch.long, device=x.device) if y is None else y
        log_q = self.classify(x)  # (B, C)
        log_q_label = torch.where(y >= 0, log_q.gather(1, y.clamp_min(0)[:, None])[:, 0], torch.zeros_like(log_q[:, 0]))
        n = len(x) if elbo_rows is None else elbo_rows
        x, y, log_q = x[:n], y[:n], log_q[:n]
        # One pass (one set of BatchNorm statistics): the labelled rows once, the others once per class.
        known = y >= 0
        xu, log_qu = x[~known], log_q[~known]
        classes = torch.arange(self.classes, device=x.device).repeat_interleave(len(xu))  # class-major rows
        rec_all, kl_all = self._labelled_elbo(torch.cat([x[known], xu.repeat(self.classes, 1)]),
                                              torch.cat([y[known], classes]), generator=generator)
        n_known = int(known.sum())
        rec, kl = torch.empty(n, device=x.device), torch.empty(n, device=x.device)
        rec[known], kl[known] = rec_all[:n_known], kl_all[:n_known] - self.log_prior_y()
        rec_c, kl_c = (t[n_known:].view(self.classes, len(xu)) for t in (rec_all, kl_all))
        q = log_qu.exp().T  # (C, U)
        rec[~known] = (q * rec_c).sum(0)
        kl[~known] = (q * kl_c).sum(0) + (q * (log_qu.T - self.log_prior_y())).sum(0)
        decoded = self.decoded_label_log_q(decoded_rows, generator=generator) if decoded_rows else None
        return ElboTerms(rec=rec, kl=kl, log_q_label=log_q_label, log_q_decoded=decoded)

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, n_samples: int, *,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """(n_samples, B) log W_k = logsumexp_y [log p(y) + log p(x|y,z) + log p(z) - log q(z|x,y)],
        z ~ q(z|x,y) drawn for every class: logsumexp over samples minus log(n_samples) bounds log p(x)."""
        b, per_class = len(x), []
        for c in range(self.classes):
            y = torch.full((b,), c, dtype=torch.long, device=x.device)
            mu, logvar = self._z_posterior(x, y)
            z = reparameterize(mu, logvar, generator=generator, n=n_samples)  # (S, B, L)
            latents = self.with_labels(z, y.expand(n_samples, b))
            per_class.append(self.decode(latents).log_prob(x) + prior_log_ratio(z, mu, logvar))
        return torch.logsumexp(torch.stack(per_class), dim=0) + self.log_prior_y()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means (B, L + C): q(z | x, y_hat)'s, y_hat the most probable class, then q(y|x)'s
        probabilities; log-variances: q(z|x,y_hat)'s, then LABEL_LOGVAR."""
        log_q = self.classify(x)
        mu, logvar = self._z_posterior(x, log_q.argmax(-1))
        return torch.cat([mu, log_q.exp()], -1), torch.cat([logvar, torch.full_like(log_q, LABEL_LOGVAR)], -1)

    def with_labels(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Latents [z, onehot(y)] (B, L + C) of styles z (B, latent_dim) and labels y (B,)."""
        return torch.cat([z, self._onehot(y)], dim=-1)

    @torch.no_grad()
    def sample_latents(self, n: int, *, temperature: float = 1.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, L + C): z from N(0, temperature^2 I) and y from the uniform prior."""
        device = next(self.parameters()).device
        z = temperature * torch.randn(n, self.cfg.latent_dim, generator=generator, device=device)
        return self.with_labels(z, torch.randint(self.classes, (n,), generator=generator, device=device))


def has_label_latent(model: nn.Module) -> bool:
    """Whether a model has a label latent (M2): a classifier q(y|x) and a decoder that reads y."""
    return isinstance(model, M2)
