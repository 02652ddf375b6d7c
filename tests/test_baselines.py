"""Known answers for the linear-Gaussian baselines and the pixel-space units."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal

from svhn_vae.baselines import (
    RIDGE, baseline_metrics, bits_per_dim, complement_log_prob, dequantize, dequantized_rows, fit_full_pca,
    full_gaussian, ppca, split_subspace,
)
from svhn_vae.errors import UserError
from svhn_vae.pca import PCA


@pytest.fixture
def correlated() -> torch.Tensor:
    """(400, 6) float64 rows with a strongly non-isotropic covariance."""
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(6, 6, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 2, 1, 0.5, 0.2, 0.1]).double()
    return torch.randn(400, 6, generator=gen, dtype=torch.float64) @ mix.T + 0.3


def test_bpd_of_uniform_density_is_8():
    # A density of 1 on [0, 1]^D has NLL 0: every 8-bit pixel bin gets probability 256^-D.
    assert bits_per_dim(0.0, dims=3072) == pytest.approx(8.0)
    assert bits_per_dim(784 * math.log(2), dims=784, scale=1.0) == pytest.approx(1.0)  # fair coin pixels


def test_dequantize_range_and_seed_independent_of_batch_size():
    images = np.random.default_rng(0).integers(0, 256, (50, 4, 4, 3), dtype=np.uint8)
    u = dequantize(images, generator=torch.Generator().manual_seed(3))
    assert u.shape == (50, 48) and u.dtype == torch.float64
    assert (u >= 0).all() and (u < 1).all()
    assert torch.equal(torch.floor(u * 256), torch.as_tensor(images.reshape(50, -1)).double())
    batched = torch.cat(list(dequantized_rows(images, seed=3, batch_size=7)))
    assert torch.equal(u, batched)


def test_split_subspace_recovers_coordinates_and_residual(correlated):
    pca = PCA(2).fit(correlated)
    coords, residual_sq = split_subspace(correlated, mean=pca.mean_, components=pca.components_)
    assert torch.allclose(coords, pca.transform(correlated))
    back = pca.inverse_transform(coords)
    assert torch.allclose(residual_sq, (correlated - back).pow(2).sum(-1))


def test_ppca_matches_multivariate_normal(correlated):
    pca = fit_pca_all(correlated)
    model = ppca(pca, 2)
    lam, vecs = pca.explained_variance_, pca.components_
    sigma2 = float(lam[2:].mean())
    w = vecs[:2].T * (lam[:2] - sigma2).sqrt()  # Tipping & Bishop's ML W (D, k), up to a rotation
    direct = MultivariateNormal(pca.mean_, w @ w.T + sigma2 * torch.eye(6, dtype=torch.float64))
    assert model.noise_variance == pytest.approx(sigma2)
    assert torch.allclose(model.log_prob(correlated[:20]), direct.log_prob(correlated[:20]), atol=1e-9)


def test_full_gaussian_matches_multivariate_normal_with_sample_covariance(correlated):
    model = full_gaussian(fit_pca_all(correlated))
    cov = torch.cov(correlated.T) + RIDGE * torch.eye(6, dtype=torch.float64)
    direct = MultivariateNormal(correlated.mean(0), cov)
    assert torch.allclose(model.log_prob(correlated[:20]), direct.log_prob(correlated[:20]), atol=1e-8)


def test_full_gaussian_with_fewer_samples_than_dims_uses_the_ridge():
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model = full_gaussian(fit_pca_all(x))
    cov = torch.cov(x.T) + RIDGE * torch.eye(6, dtype=torch.float64)
    direct = MultivariateNormal(x.mean(0), cov)
    assert torch.allclose(model.log_prob(x), direct.log_prob(x), rtol=1e-6)


def test_complement_needs_positive_variance():
    assert torch.equal(complement_log_prob(torch.ones(3), dims=0, variance=0.0), torch.zeros(3))
    with pytest.raises(UserError, match="zero variance"):
        complement_log_prob(torch.ones(3), dims=2, variance=0.0)


def test_ppca_rejects_bad_component_counts(correlated):
    with pytest.raises(UserError, match="components"):
        ppca(fit_pca_all(correlated), 6)
    few = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3)).astype(np.uint8)  # 5 images, 48 pixels
    pca = fit_full_pca(few, seed=0)
    assert len(ppca(pca, len(pca.components_)).variances) == len(pca.components_)
    with pytest.raises(UserError, match="lower --ppca-components"):  # directions the images gave no variance
        ppca(pca, len(pca.components_) + 1)


def test_baseline_metrics_units_and_order():
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (1, 4, 4, 3))
    train = np.clip(base + rng.normal(0, 20, (300, 4, 4, 3)), 0, 255).astype(np.uint8)
    test = np.clip(base + rng.normal(0, 20, (100, 4, 4, 3)), 0, 255).astype(np.uint8)
    out = baseline_metrics(train_images=train, test_images=test, components=3, seed=0)
    assert out["ppca_components"] == 3 and out["train_n"] == 300
    assert out["gaussian_bpd"] == pytest.approx(bits_per_dim(out["gaussian_nats"], dims=48))
    assert 0 < out["gaussian_bpd"] < 8  # better than uniform on these concentrated pixels
    # Same seed, same answer: the fits are deterministic.
    assert baseline_metrics(train_images=train, test_images=test, components=3, seed=0) == out


def test_fit_full_pca_keeps_every_component():
    images = np.random.default_rng(0).integers(0, 256, (30, 2, 2, 3), dtype=np.uint8)
    pca = fit_full_pca(images, seed=0)
    assert pca.n_components_ == 12 and pca.noise_variance_ == 0.0


def fit_pca_all(x: torch.Tensor) -> PCA:
    return PCA(None).fit(x)


def test_independent_bernoulli_baseline_matches_torch_distributions():
    from torch.distributions import Bernoulli, Independent

    from svhn_vae.baselines import bernoulli_baseline_metrics, binarized_rows

    rng = np.random.default_rng(5)
    train = rng.integers(0, 256, (200, 3, 3, 1), dtype=np.uint8)
    train[:, 0, 0, 0] = 0  # a never-lit pixel: its marginal is clamped to 1e-3, so the cost stays finite
    test = rng.integers(0, 256, (30, 3, 3, 1), dtype=np.uint8)
    out = bernoulli_baseline_metrics(train_images=train, test_images=test, seed=2, batch_size=7)
    probs = torch.from_numpy(train.reshape(200, -1).mean(0) / 255.0).clamp(1e-3, 1 - 1e-3).float()
    x = torch.cat(list(binarized_rows(test, seed=2, batch_size=7)))
    expected = -Independent(Bernoulli(probs=probs.expand_as(x)), 1).log_prob(x).mean().item()
    assert out["independent_bernoulli_nats"] == pytest.approx(expected, rel=1e-5)
    assert out["independent_bernoulli_bpd"] == pytest.approx(expected / (9 * math.log(2)), rel=1e-5)
