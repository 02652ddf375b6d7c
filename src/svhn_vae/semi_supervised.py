"""Few labels, many images: which training labels the M2 model may read, and its training loss.

``--labels N`` keeps a balanced, seeded subset of N training labels (:func:`choose_labelled`);
training reads only those (:class:`Labels` holds them, every other example marked -1), so a label
never given to training cannot change it (a test swaps the hidden ones and compares the weights).

The objective is Kingma et al. 2014's, per example of the N training images (equation 9 over N):

    J = (1/N) [sum_labelled -L(x, y) + sum_unlabelled -U(x)] - alpha * N_l * mean_labelled log q(y|x)

(:mod:`svhn_vae.models.m2` defines L and U; alpha N the weight of the summed log q(y|x), ``alpha``
a fraction of N). Every step estimates it without bias: the shuffled batch of training images
gives the first part (each row's L when its label is given, else U), and ``labelled_batch``
labelled examples drawn with replacement give the classifier's term, so every step sees both.
``labelled_weight`` > 0 adds that weight times the drawn examples' mean negative ELBO L, which
departs from J: the labelled examples then teach the decoder what y means at every step, not
only in the N_l / N of the batch rows that happen to be labelled. ``consistency`` > 0 departs from
it too: it adds that weight times the cross-entropy with which the classifier, held fixed, reads
the decoder's mean images of as many (prior style, uniform label) draws as the batch has rows
(:meth:`~svhn_vae.models.m2.M2.decoded_label_log_q`); like InfoGAN's (Chen et al. 2016) term, it
bounds the mutual information of y and the decoded image from below, so that y, not the style,
draws the digit.
"""

from __future__ import annotations

import numpy as np
import torch

from svhn_vae.errors import UserError
from svhn_vae.models.vae import ElboTerms

HIDDEN = -1
"""The label of an example whose label training may not read."""


def choose_labelled(labels: np.ndarray, n: int, *, classes: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` examples, n // classes of every class (the first n % classes classes one
    more), drawn without replacement with ``seed``."""
    labels = np.asarray(labels)
    if labels.max() >= classes:
        raise UserError(f"the labels go up to {labels.max()}, more than --classes {classes} holds; "
                        f"give --classes {labels.max() + 1}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(classes):
        want = n // classes + (c < n % classes)
        pool = np.flatnonzero(labels == c)
        if len(pool) < want:
            raise UserError(f"--labels {n} needs {want} training examples of class {c}, there are {len(pool)}; "
                            "give fewer labels")
        chosen.append(rng.choice(pool, size=want, replace=False))
    return np.sort(np.concatenate(chosen))


class Labels:
    """The labels training may read and the semi-supervised loss (see the module doc)."""

    def __init__(self, labels: np.ndarray, labelled: np.ndarray, *, alpha: float, labelled_batch: int,
                 labelled_weight: float = 0.0, consistency: float = 0.0,
                 device: torch.device | str = "cpu") -> None:
        visible = np.full(len(labels), HIDDEN, dtype=np.int64)
        visible[labelled] = np.asarray(labels)[labelled]  # the only labels read
        self.visible = torch.from_numpy(visible).to(device)
        self.labelled = torch.from_numpy(np.asarray(labelled, dtype=np.int64)).to(device)
        self.class_weight = alpha * len(labelled)
        self.labelled_batch = labelled_batch
        self.labelled_weight = labelled_weight
        self.consistency = consistency

    def epoch_draws(self, steps: int, generator: torch.Generator) -> torch.Tensor:
        """(steps, labelled_batch) indices of the labelled examples of every step of an epoch."""
        picks = torch.randint(len(self.labelled), (steps, self.labelled_batch), generator=generator)
        return self.labelled[picks.to(self.labelled.device)]

    def batch(self, idx: torch.Tensor, draws: torch.Tensor) -> tuple[torch.Tensor, dict[str, object]]:
        """Rows of a step: the batch ``idx`` then the labelled ``draws``, and the model's keyword
        arguments (their labels, the rows whose ELBO counts, and how many decoded draws to classify)."""
        rows = torch.cat([idx, draws])
        extra = {"y": self.visible[rows], "elbo_rows": None if self.labelled_weight else len(idx)}
        if self.consistency:
            extra["decoded_rows"] = len(idx)
        return rows, extra

    def loss(self, terms: ElboTerms, *, batch: int, beta: float = 1.0) -> tuple[torch.Tensor, ElboTerms]:
        """The step's estimate of J from the terms of :meth:`batch`'s rows, the first ``batch`` of them
        the batch's: its mean negative bound minus the classifier's term, alpha N_l times the mean
        log q(y|x) of the drawn labelled examples (and, with ``labelled_weight``, that times their
        mean negative ELBO; with ``consistency``, that times the decoded draws' mean -log q(y|x));
        and the batch's own terms."""
        n = batch
        bound = terms.objective(beta=beta)
        loss = -bound[:n].mean() - self.class_weight * terms.log_q_label[n:].mean()
        if self.labelled_weight:
            loss = loss - self.labelled_weight * bound[n:].mean()
        if self.consistency:
            loss = loss - self.consistency * terms.log_q_decoded.mean()
        return loss, ElboTerms(rec=terms.rec[:n], kl=terms.kl[:n])
