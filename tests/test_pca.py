"""PCA against scikit-learn, streaming against one batch, whitening, persistence."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SkPCA

from svhn_vae.errors import UserError
from svhn_vae.pca import PCA


@pytest.fixture
def low_rank() -> np.ndarray:
    """(500, 40) float64 data of rank ~8 plus small noise, far from the origin."""
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(8, 40))
    return rng.normal(size=(500, 8)) * np.arange(8, 0, -1) @ basis + 0.01 * rng.normal(size=(500, 40)) + 5.0


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("k", [5, 12])
def test_matches_sklearn(low_rank, k):
    ours = PCA(k).fit(low_rank, batch_size=64)
    ref = SkPCA(k, svd_solver="full").fit(low_rank)
    signs = np.sign(np.sum(ours.components_.numpy() * ref.components_, axis=1))
    assert np.all(signs != 0)
    assert _rel(ours.components_.numpy() * signs[:, None], ref.components_) < 1e-5
    assert _rel(ours.explained_variance_, ref.explained_variance_) < 1e-5
    assert _rel(ours.explained_variance_ratio_, ref.explained_variance_ratio_) < 1e-5
    assert _rel(ours.singular_values_, ref.singular_values_) < 1e-5
    assert abs(ours.noise_variance_ - ref.noise_variance_) / ref.noise_variance_ < 1e-5
    assert _rel(ours.mean_, ref.mean_) < 1e-10
    codes = ours.transform(torch.from_numpy(low_rank)).numpy()
    assert _rel(codes * signs, ref.transform(low_rank)) < 1e-5
    back = ours.inverse_transform(torch.from_numpy(codes)).numpy()
    assert _rel(back, ref.inverse_transform(ref.transform(low_rank))) < 1e-5


def test_variance_fraction_matches_sklearn(low_rank):
    ours = PCA(0.9).fit(low_rank)
    assert ours.n_components_ == SkPCA(0.9, svd_solver="full").fit(low_rank).n_components_


def test_whitened_codes_have_unit_variance(low_rank):
    pca = PCA(6, whiten=True).fit(low_rank)
    codes = pca.transform(torch.from_numpy(low_rank))
    assert torch.allclose(codes.var(dim=0), torch.ones(6, dtype=torch.float64), atol=1e-8)
    back = pca.inverse_transform(codes)
    assert _rel(back, PCA(6).fit(low_rank).inverse_transform(PCA(6).fit(low_rank).transform(low_rank))) < 1e-8


def test_streaming_equals_one_batch(low_rank):
    one = PCA(8).fit(low_rank, batch_size=len(low_rank))
    many = PCA(8).fit_batches(np.array_split(low_rank, 37))
    assert _rel(many.components_, one.components_) < 1e-8
    assert _rel(many.explained_variance_, one.explained_variance_) < 1e-8


def test_uint8_rows_and_clipping():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(300, 16), dtype=np.uint8)
    pca = PCA(4).fit(images)
    x = pca.inverse_transform(pca.transform(torch.from_numpy(images).double()), clip=(0.0, 255.0))
    assert x.min() >= 0 and x.max() <= 255


def test_float32_input_keeps_dtype_and_device(low_rank):
    pca = PCA(3).fit(low_rank)
    codes = pca.transform(torch.from_numpy(low_rank).float())
    assert codes.dtype == torch.float32 and pca.inverse_transform(codes).dtype == torch.float32


def test_save_load_round_trip(low_rank, tmp_path):
    pca = PCA(5, whiten=True).fit(low_rank)
    pca.save(tmp_path / "pca.npz")
    loaded = PCA.load(tmp_path / "pca.npz")
    x = torch.from_numpy(low_rank)
    assert torch.equal(loaded.transform(x), pca.transform(x))
    assert loaded.noise_variance_ == pca.noise_variance_ and loaded.whiten


def test_discarded_eigenpairs_complete_the_covariance(low_rank, tmp_path):
    pca = PCA(5, keep_discarded=True).fit(low_rank)
    basis = torch.cat([pca.components_, pca.discarded_components_.double()])  # (40, 40)
    assert torch.allclose(basis @ basis.T, torch.eye(40, dtype=torch.float64), atol=1e-6)
    variances = torch.cat([pca.explained_variance_, pca.discarded_variance_])
    cov = basis.T @ torch.diag(variances) @ basis
    assert _rel(cov, np.cov(low_rank, rowvar=False)) < 1e-5
    assert pca.noise_variance_ == pytest.approx(float(pca.discarded_variance_.mean()))
    pca.save(tmp_path / "pca.npz")
    loaded = PCA.load(tmp_path / "pca.npz")
    assert torch.equal(loaded.discarded_components_, pca.discarded_components_)
    assert torch.equal(loaded.discarded_variance_, pca.discarded_variance_) and loaded.keep_discarded


def test_errors(tmp_path, low_rank):
    with pytest.raises(UserError, match="not fitted"):
        PCA(2).transform(low_rank)
    with pytest.raises(UserError, match="n_components"):
        PCA(41).fit(low_rank)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot read PCA file"):
        PCA.load(tmp_path / "bad.npz")
