"""The latent probe: balanced label draws, known answers on synthetic features, a tiny VAE end to end."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from svhn_vae.checkpoint import TrainedModel
from svhn_vae.config import get_preset
from svhn_vae.errors import UserError
from svhn_vae.probe import REFERENCE, balanced_indices, encode_means, knn_k, latent_probe, probe_features
from svhn_vae.train import TrainData, train

MNIST_DIR = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
slow = pytest.mark.skipif(os.environ.get("SVHN_VAE_SLOW") != "1", reason="set SVHN_VAE_SLOW=1 for real-MNIST runs")


def labelled_images(n: int, shape: tuple[int, int, int] = (16, 16, 1), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, H, W, C) of 10 easily told classes: class k is a bright square in cell k of
    a 4x4 grid over a noisy background; labels (n,) cycle through 0..9 (balanced)."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    labels = np.arange(n) % 10
    images = rng.integers(0, 60, size=(n, h, w, c))
    ch, cw = h // 4, w // 4
    for i, k in enumerate(labels):
        images[i, (k // 4) * ch:(k // 4 + 1) * ch, (k % 4) * cw:(k % 4 + 1) * cw] += 180
    return images.astype(np.uint8), labels.astype(np.int64)


def tiny_trained(images: np.ndarray) -> TrainedModel:
    """A tiny PCA VAE trained for one epoch, wrapped like a loaded checkpoint."""
    cfg = get_preset("fast").replace("model", latent_dim=4, encoder_shared=(32,), decoder=(32,))
    cfg = cfg.replace("pca", components=10).replace("train", epochs=1, batch_size=32, sample_every=0, device="cpu")
    result = train(cfg, data=TrainData(images))
    return TrainedModel(config=cfg, model=result.model, representation=result.representation, run_dir=None, epoch=1)


def gaussian_clusters(n: int, *, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features (n, 10): class k is N(separation * e_k, I), so centres are separation * sqrt(2)
    apart; labels (n,) cycle through 0..9."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    return separation * np.eye(10)[labels] + rng.normal(size=(n, 10)), labels


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    train_x, train_y = labelled_images(300, seed=0)
    test_x, test_y = labelled_images(100, seed=1)
    return {"train_images": train_x, "train_labels": train_y, "test_images": test_x, "test_labels": test_y}


@pytest.fixture(scope="module")
def trained(data) -> TrainedModel:
    return tiny_trained(data["train_images"])


# --- balanced draws ---------------------------------------------------------------------------------

def test_balanced_indices_are_balanced_unique_and_seeded():
    labels = np.repeat(np.arange(10), 30)
    idx = balanced_indices(labels, 50, rng=np.random.default_rng(0))
    assert len(np.unique(idx)) == 50 and np.all(np.diff(idx) > 0)
    assert np.all(np.bincount(labels[idx], minlength=10) == 5)
    assert np.array_equal(idx, balanced_indices(labels, 50, rng=np.random.default_rng(0)))
    assert not np.array_equal(idx, balanced_indices(labels, 50, rng=np.random.default_rng(1)))


@pytest.mark.parametrize("n", [55, 5])
def test_balanced_indices_rejects_counts_that_cannot_be_balanced(n):
    with pytest.raises(UserError, match="balanced"):
        balanced_indices(np.repeat(np.arange(10), 30), n, rng=np.random.default_rng(0))


def test_balanced_indices_rejects_a_too_small_class():
    labels = np.concatenate([np.repeat(np.arange(9), 30), [9, 9]])
    with pytest.raises(UserError, match="class 9 has 2"):
        balanced_indices(labels, 100, rng=np.random.default_rng(0))


def test_knn_k_is_five_but_at_most_the_labels_per_class():
    assert [knn_k(p) for p in (1, 3, 5, 10, 6000)] == [1, 3, 5, 5, 5]


# --- known answers on synthetic features ------------------------------------------------------------

def test_separable_clusters_give_near_zero_error():
    x_train, y_train = gaussian_clusters(2000, separation=10.0, seed=0)
    x_test, y_test = gaussian_clusters(500, separation=10.0, seed=1)
    results = probe_features(x_train, y_train, x_test, y_test, label_counts=(20, 100, None), draws=3, seed=0)
    for key in ("20", "100", "all"):
        assert results[key]["knn_error"] < 0.01 and results[key]["logreg_error"] < 0.01


def test_random_labels_give_chance_error():
    x_train, y_train = gaussian_clusters(2000, separation=10.0, seed=0)
    x_test, y_test = gaussian_clusters(1000, separation=10.0, seed=1)
    shuffled = np.random.default_rng(2).permutation(y_test)  # labels unrelated to the features
    results = probe_features(x_train, y_train, x_test, shuffled, label_counts=(100,), draws=3, seed=0)
    for name in ("knn", "logreg"):
        assert 0.8 < results["100"][f"{name}_error"] < 0.97


def test_draws_std_all_and_skipped_counts():
    x_train, y_train = gaussian_clusters(200, separation=1.0, seed=0)
    x_test, y_test = gaussian_clusters(200, separation=1.0, seed=1)
    results = probe_features(x_train, y_train, x_test, y_test, label_counts=(20, 1000, None), draws=4, seed=0)
    assert results["20"]["draws"] == 4 and results["20"]["labels"] == 20 and results["20"]["knn_k"] == 2
    assert results["20"]["knn_error_std"] > 0  # different draws, different errors
    assert results["all"] == {**results["all"], "draws": 1, "labels": 200, "knn_error_std": 0.0}
    assert "whole training set" in results["all"]["note"]
    assert "skipped" in results["1000"]


def test_max_train_subsamples_the_all_case_and_same_seed_repeats():
    x_train, y_train = gaussian_clusters(300, separation=2.0, seed=0)
    x_test, y_test = gaussian_clusters(100, separation=2.0, seed=1)
    kwargs = {"label_counts": (10, None), "draws": 2, "seed": 3, "max_train": 150}
    results = probe_features(x_train, y_train, x_test, y_test, **kwargs)
    assert results["all"]["labels"] == 150 and "max_train" in results["all"]["note"]
    assert results == probe_features(x_train, y_train, x_test, y_test, **kwargs)


# --- a trained VAE -----------------------------------------------------------------------------------

def test_encode_means_are_the_posterior_means_whatever_the_batch_size(trained, data):
    images = data["test_images"][:50]
    z = encode_means(trained, images, batch_size=7)
    with torch.no_grad():
        mu, _ = trained.model.encode(trained.representation.encode(images))
    assert z.shape == (50, 4) and z.dtype == np.float32
    np.testing.assert_allclose(z, mu.numpy(), rtol=1e-5, atol=1e-5)


def test_latent_probe_end_to_end(trained, data):
    out = latent_probe(trained, **data, label_counts=(10, 1000, None), draws=2, seed=0)
    json.dumps(out)  # goes into eval.json as it is
    assert out["encoder"] == "posterior mean" and out["latent_dim"] == 4
    assert (out["n_train"], out["n_test"]) == (300, 100)
    assert set(out["results"]) == {"10", "1000", "all"} and "skipped" in out["results"]["1000"]
    for key in ("10", "all"):
        assert 0.0 <= out["results"][key]["logreg_error"] <= 1.0
    assert out["reference"] == REFERENCE and REFERENCE["mnist"]["M1+TSVM_100"] == 0.1182


@slow
def test_probe_on_real_mnist_beats_chance_by_far():
    from svhn_vae.data import load_split

    train_split, test_split = (load_split("mnist", s, data_dir=MNIST_DIR) for s in ("train", "test"))
    cfg = get_preset("mnist-bernoulli").replace("train", epochs=1, sample_every=0, device="cpu")
    result = train(cfg, data=TrainData(train_split.images))
    trained_mnist = TrainedModel(config=cfg, model=result.model, representation=result.representation,
                                 run_dir=None, epoch=1)
    out = latent_probe(trained_mnist, train_images=train_split.images, train_labels=train_split.labels,
                       test_images=test_split.images, test_labels=test_split.labels,
                       label_counts=(100, None), draws=2, max_train=20000)
    assert out["results"]["100"]["knn_error"] < 0.5
    assert out["results"]["all"]["logreg_error"] < 0.15
