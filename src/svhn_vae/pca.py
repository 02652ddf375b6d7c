"""Exact streaming PCA on torch tensors, with the scikit-learn estimator contract.

The mean and the (uncentred) second moment are accumulated batch by batch in float64, so a
dataset never has to exist as one float array: 604,388 SVHN images of 3,072 pixels stream
through a D x D accumulator (75 MB). The eigenproblem is solved once, exactly, with
``torch.linalg.eigh``; results equal ``sklearn.decomposition.PCA`` up to the sign of each component.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svhn_vae.errors import UserError

Array = torch.Tensor | np.ndarray


def _as_float64(batch: Array) -> torch.Tensor:
    return torch.as_tensor(np.asarray(batch) if not torch.is_tensor(batch) else batch).to(torch.float64)


class PCA:
    """Principal component analysis fitted from a stream of batches.

    Learned attributes (float64 CPU tensors, scikit-learn names):
    ``mean_`` (D,), ``components_`` (K, D) with orthonormal rows, ``explained_variance_`` (K,),
    ``explained_variance_ratio_`` (K,), ``singular_values_`` (K,), ``noise_variance_`` (a float: the
    mean of the discarded eigenvalues, as in probabilistic PCA), ``n_components_``, ``n_samples_``.
    With ``keep_discarded`` also ``discarded_components_`` (D - K, D) float32, the orthonormal
    eigenvectors of every other direction, and ``discarded_variance_`` (D - K,) their eigenvalues
    (0 beyond the rank when there were fewer samples than pixels).
    """

    def __init__(self, n_components: int | float | None = None, *, whiten: bool = False,
                 shift: Array | None = None, keep_discarded: bool = False) -> None:
        """``n_components``: an int K, a fraction in (0, 1) of the variance to keep, or None for all.

        ``shift``: an optional rough mean (D,) subtracted before accumulating, which keeps the
        second moment well conditioned for data far from the origin (the first batch's mean is
        used when None).
        """
        self.n_components = n_components
        self.whiten = whiten
        self.shift = shift
        self.keep_discarded = keep_discarded

    # --- fitting ----------------------------------------------------------------------------------

    def reset(self) -> PCA:
        """Forget every batch seen so far."""
        self._n = 0
        self._sum: torch.Tensor | None = None  # (D,) sum of shifted rows
        self._sq: torch.Tensor | None = None  # (D, D) sum of outer products of shifted rows
        self._shift: torch.Tensor | None = None if self.shift is None else _as_float64(self.shift)
        return self

    def partial_fit(self, batch: Array) -> PCA:
        """Accumulate one batch of rows (N, D); call :meth:`finalize` after the last one."""
        if not hasattr(self, "_n"):
            self.reset()
        x = _as_float64(batch)
        if x.ndim != 2:
            raise UserError(f"PCA expects a 2-D batch (N, D), got shape {tuple(x.shape)}")
        if self._shift is None:
            self._shift = x.mean(dim=0)
        x = x - self._shift
        if self._sum is None:
            self._sum = torch.zeros(x.shape[1], dtype=torch.float64)
            self._sq = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
        self._sum += x.sum(dim=0)
        self._sq.addmm_(x.T, x)
        self._n += x.shape[0]
        return self

    def finalize(self) -> PCA:
        """Solve the eigenproblem of the accumulated covariance (ddof=1, like scikit-learn)."""
        if getattr(self, "_n", 0) < 2:
            raise UserError("PCA needs at least 2 samples to estimate a covariance")
        n, d = self._n, self._sum.shape[0]
        mean_shifted = self._sum / n
        cov = (self._sq - n * torch.outer(mean_shifted, mean_shifted)) / (n - 1)
        eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
        eigvals, eigvecs = eigvals.flip(0).clamp_min(0.0), eigvecs.flip(1)
        rank = min(n, d)  # scikit-learn keeps min(N, D) eigenvalues
        eigvals[rank:] = 0.0
        self._set_fitted(self._shift + mean_shifted, eigvecs.T, eigvals, n, rank=rank)
        del self._sum, self._sq
        return self

    def fit(self, X: Array, *, batch_size: int = 4096) -> PCA:
        """Fit on an (N, D) array or tensor, streamed in row batches; returns self."""
        return self.fit_batches((X[i:i + batch_size] for i in range(0, len(X), batch_size)))

    def fit_batches(self, batches: Iterable[Array]) -> PCA:
        """Fit on an iterable of (n_i, D) batches; returns self."""
        self.reset()
        for batch in batches:
            self.partial_fit(batch)
        return self.finalize()

    def _n_kept(self, eigvals: torch.Tensor) -> int:
        k = self.n_components
        if k is None:
            return len(eigvals)
        if isinstance(k, float) and 0 < k < 1:
            ratio = torch.cumsum(eigvals, 0) / eigvals.sum()
            return int(torch.searchsorted(ratio, torch.tensor(k, dtype=ratio.dtype), right=True)) + 1
        if not (isinstance(k, int) and 0 < k <= len(eigvals)):
            raise UserError(f"PCA n_components={k} must be an int in [1, {len(eigvals)}] (the values of one image) "
                            f"or a fraction in (0, 1); give --components {len(eigvals)} or fewer")
        return k

    def _set_fitted(self, mean: torch.Tensor, vecs: torch.Tensor, eigvals: torch.Tensor, n: int, *,
                    rank: int) -> None:
        """From all D eigenpairs (eigenvalues descending, 0 beyond ``rank``)."""
        k = self._n_kept(eigvals[:rank])
        # Deterministic signs: the largest-magnitude entry of each component is positive.
        idx = vecs.abs().argmax(dim=1)
        signs = torch.sign(vecs[torch.arange(len(vecs)), idx])
        vecs = vecs * signs[:, None]
        self.mean_ = mean
        self.components_ = vecs[:k].contiguous()
        self.explained_variance_ = eigvals[:k].clone()
        self.explained_variance_ratio_ = eigvals[:k] / eigvals.sum()
        self.singular_values_ = torch.sqrt(eigvals[:k] * (n - 1))
        self.noise_variance_ = float(eigvals[k:rank].mean()) if k < rank else 0.0
        if self.keep_discarded:
            self.discarded_components_ = vecs[k:].float().contiguous()
            self.discarded_variance_ = eigvals[k:].clone()
        self.n_components_ = k
        self.n_samples_ = n
        self.n_features_in_ = mean.shape[0]

    # --- using the fitted basis -------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "components_"):
            raise UserError("this PCA is not fitted yet: call fit() first or load a fitted one")

    def _cached(self, slot: str, key: tuple, make: Callable[[], Any]) -> Any:
        """``make()``, kept in ``slot`` until ``key`` changes (one entry per slot, so memory stays bounded)."""
        cache = self.__dict__.setdefault("_cache", {})
        if slot not in cache or cache[slot][0] != key:
            cache[slot] = (key, make())
        return cache[slot][1]

    def _params(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, components and per-component scale, on ``like``'s device and float dtype.

        Cached per (device, dtype): training transforms every batch, and converting the (K, D)
        float64 basis each time would cost as much as the projection.
        """
        self._check_fitted()
        dtype = like.dtype if like.is_floating_point() else torch.float32

        def make() -> tuple[torch.Tensor, ...]:
            scale = self.explained_variance_.sqrt() if self.whiten else torch.ones_like(self.explained_variance_)
            return tuple(t.to(device=like.device, dtype=dtype) for t in (self.mean_, self.components_, scale))

        return self._cached("params", (like.device, dtype, id(self.components_), self.whiten), make)

    def discarded_basis(self, device: torch.device | str) -> torch.Tensor:
        """The discarded eigenvectors (D - K, D) in float64 on ``device`` (stored in float32), converted
        once: evaluation projects every batch on them."""
        return self._cached("discarded", (torch.device(device), id(self.discarded_components_)),
                            lambda: self.discarded_components_.to(device, torch.float64))

    def transform(self, X: Array) -> torch.Tensor:
        """Codes (N, K) of rows (N, D): (X - mean) @ components.T, divided by sqrt(eigenvalue) if whiten."""
        x = torch.as_tensor(X)
        mean, comps, scale = self._params(x)
        return ((x.to(mean.dtype) - mean) @ comps.T) / scale

    def inverse_transform(self, Z: Array, *, clip: tuple[float, float] | None = None) -> torch.Tensor:
        """Rows (N, D) from codes (N, K); ``clip=(lo, hi)`` clamps to the valid pixel range."""
        z = torch.as_tensor(Z)
        mean, comps, scale = self._params(z)
        x = (z * scale) @ comps + mean
        return x.clamp(*clip) if clip is not None else x

    # --- persistence as plain arrays ---------------------------------------------------------------

    _ARRAYS = ("mean_", "components_", "explained_variance_", "explained_variance_ratio_", "singular_values_")

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and numbers: safe for ``torch.load(weights_only=True)`` and ``np.savez``."""
        self._check_fitted()
        state: dict[str, Any] = {name: getattr(self, name).clone() for name in self._ARRAYS}
        state.update(noise_variance_=self.noise_variance_, n_samples_=self.n_samples_, whiten=self.whiten)
        if self.keep_discarded:
            state.update(discarded_components_=self.discarded_components_.clone(),
                         discarded_variance_=self.discarded_variance_.clone())
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PCA:
        keep = "discarded_components_" in state
        pca = cls(int(state["components_"].shape[0]), whiten=bool(state["whiten"]), keep_discarded=keep)
        for name in cls._ARRAYS:
            setattr(pca, name, torch.as_tensor(np.asarray(state[name]), dtype=torch.float64))
            if not torch.isfinite(getattr(pca, name)).all():
                raise UserError(f"PCA array {name} holds NaN or infinite values; the file or checkpoint is corrupt: "
                                "refit the PCA or retrain")
        if keep:
            pca.discarded_components_ = torch.as_tensor(np.asarray(state["discarded_components_"]), dtype=torch.float32)
            pca.discarded_variance_ = torch.as_tensor(np.asarray(state["discarded_variance_"]), dtype=torch.float64)
        pca.noise_variance_ = float(state["noise_variance_"])
        pca.n_samples_ = int(state["n_samples_"])
        pca.n_components_ = pca.components_.shape[0]
        pca.n_features_in_ = pca.components_.shape[1]
        return pca

    def save(self, path: str | Path) -> None:
        """Write the fitted arrays to an ``.npz`` file (atomically)."""
        from svhn_vae.atomic import atomic_write

        state = {k: np.asarray(v) for k, v in self.state_dict().items()}
        with atomic_write(Path(path)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **state)

    @classmethod
    def load(cls, path: str | Path) -> PCA:
        try:
            with np.load(Path(path)) as f:
                return cls.from_state_dict({k: f[k] for k in f.files})
        except (OSError, KeyError, ValueError) as e:
            raise UserError(f"cannot read PCA file {path}: {e}; re-create it with 'svhn-vae pca fit'") from None
