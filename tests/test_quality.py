"""Sample quality: Fréchet-distance known answers, label diversity, the cached classifier, end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from svhn_vae.errors import UserError
from svhn_vae.figures import point_decode
from svhn_vae.quality import (
    ClassifierSettings,
    FeatureClassifier,
    classifier_features,
    default_classifier_path,
    feature_stats,
    frechet_distance,
    generate_images,
    label_diversity,
    load_or_train_classifier,
    sample_quality,
    train_classifier,
)
from test_probe import MNIST_DIR, data, labelled_images, slow, tiny_trained  # noqa: F401 - shared data and fixture

TINY = ClassifierSettings(channels=(8, 16), feature_dim=16, epochs=5, batch_size=50, lr=1e-2)


def _spd(dim: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(dim, dim))
    return a @ a.T + 0.1 * np.eye(dim)


@pytest.fixture(scope="module")
def classifier_file(data, tmp_path_factory) -> Path:
    """A trained tiny classifier, saved where sample_quality can be pointed at it."""
    path = tmp_path_factory.mktemp("classifier") / "synth.pt"
    load_or_train_classifier(dataset="synth", train_images=data["train_images"], train_labels=data["train_labels"],
                             path=path, settings=TINY)
    return path


@pytest.fixture(scope="module")
def classifier(data, classifier_file) -> FeatureClassifier:
    return load_or_train_classifier(dataset="synth", train_images=data["train_images"],
                                    train_labels=data["train_labels"], path=classifier_file)[0]


# --- the Fréchet distance ------------------------------------------------------------------------------

def test_frechet_distance_of_identical_gaussians_is_zero():
    mu, sigma = np.arange(6.0), _spd(6, seed=0)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_of_diagonal_gaussians_has_the_closed_form():
    m1, m2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)  # 7.25 + 4 + 1
    assert frechet_distance(m1, np.diag(s1), m2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(np.array([0.0]), np.array([[1.0]]), np.array([2.0]), np.array([[4.0]])) == pytest.approx(5.0)


def test_frechet_distance_is_symmetric_and_finite_for_singular_covariances():
    a, b = _spd(5, seed=1), _spd(5, seed=2)
    forward, backward = frechet_distance(np.zeros(5), a, np.ones(5), b), frechet_distance(np.ones(5), b, np.zeros(5), a)
    assert forward == pytest.approx(backward)
    v = np.random.default_rng(3).normal(size=(5, 1))
    rank_one = v @ v.T  # singular, as with fewer samples than features
    assert frechet_distance(np.zeros(5), rank_one, np.zeros(5), rank_one) == pytest.approx(0.0, abs=1e-4)
    assert np.isfinite(frechet_distance(np.zeros(5), np.zeros((5, 5)), np.zeros(5), b))


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_feature_stats_and_distance_of_two_samples_of_one_gaussian_is_small():
    rng = np.random.default_rng(0)
    mu, sigma = feature_stats(rng.normal(loc=3.0, size=(20000, 4)))
    np.testing.assert_allclose(mu, 3.0, atol=0.05)
    np.testing.assert_allclose(sigma, np.eye(4), atol=0.05)
    assert frechet_distance(mu, sigma, *feature_stats(rng.normal(loc=3.0, size=(20000, 4)))) < 0.01


# --- label diversity -----------------------------------------------------------------------------------

def test_label_diversity_of_a_uniform_and_of_a_collapsed_sampler():
    uniform = label_diversity(np.eye(10)[np.arange(1000) % 10])
    assert uniform["classes_covered"] == 10 and uniform["mean_confidence"] == pytest.approx(1.0)
    assert uniform["label_entropy_bits"] == pytest.approx(np.log2(10))
    collapsed = label_diversity(np.full((50, 10), 0.01) + 0.9 * np.eye(10)[np.full(50, 3)])  # all say 3, p=0.91
    assert collapsed["classes_covered"] == 1 and collapsed["label_entropy_bits"] == 0.0
    assert collapsed["label_histogram"][3] == 1.0 and collapsed["mean_confidence"] == pytest.approx(0.91)


def test_classes_below_one_percent_are_not_covered():
    labels = np.concatenate([np.zeros(995, int), np.ones(5, int)])  # class 1: 0.5 % of the samples
    assert label_diversity(np.eye(10)[labels])["classes_covered"] == 1


# --- the classifier -------------------------------------------------------------------------------------

def test_classifier_learns_separable_classes_and_is_seeded(classifier, data):
    features, probs = classifier_features(classifier, data["test_images"], batch_size=30)
    assert features.shape == (100, 16) and probs.shape == (100, 10)
    assert np.mean(probs.argmax(axis=1) == data["test_labels"]) > 0.9
    again = train_classifier(data["train_images"], data["train_labels"], settings=TINY)
    assert all(torch.equal(a, b) for a, b in zip(classifier.state_dict().values(), again.state_dict().values()))


def test_classifier_takes_colour_images_of_odd_size():
    images, labels = labelled_images(20, shape=(13, 11, 3))
    model = train_classifier(images, labels, settings=ClassifierSettings(channels=(4,), feature_dim=8, epochs=1))
    assert classifier_features(model, images)[0].shape == (20, 8)


def test_classifier_is_cached_in_the_user_cache(data, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    kwargs = {"dataset": "synth", "train_images": data["train_images"], "train_labels": data["train_labels"],
              "settings": TINY}
    first, info = load_or_train_classifier(**kwargs)
    path = default_classifier_path("synth", data["train_images"], data["train_labels"], TINY)
    assert info["path"] == str(path) and path.parent == tmp_path / "svhn-vae" / "classifiers" and not info["cached"]
    second, info2 = load_or_train_classifier(**kwargs)
    assert info2["cached"] and info2["train_seconds"] == info["train_seconds"]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    other_labels = np.roll(data["train_labels"], 1)
    assert default_classifier_path("synth", data["train_images"], other_labels, TINY) != path


def test_a_corrupt_classifier_file_is_a_user_error(data, tmp_path):
    bad = tmp_path / "clf.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read classifier"):
        load_or_train_classifier(dataset="synth", train_images=data["train_images"],
                                 train_labels=data["train_labels"], path=bad)


def test_a_classifier_for_other_image_sizes_is_a_user_error(data, classifier_file):
    with pytest.raises(UserError, match=r"trained on \(16, 16, 1\) images"):
        load_or_train_classifier(dataset="synth", train_images=data["train_images"][:, :8],
                                 train_labels=data["train_labels"], path=classifier_file)


# --- a trained VAE ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(data):
    return tiny_trained(data["train_images"])


def test_generated_images_are_seeded_uint8_images(trained):
    images = generate_images(trained, 25, seed=1, batch_size=10)
    assert images.shape == (25, 16, 16, 1) and images.dtype == np.uint8
    assert np.array_equal(images, generate_images(trained, 25, seed=1))
    assert not np.array_equal(images, generate_images(trained, 25, seed=2))


def test_generated_images_are_the_decode_asked_for(trained):
    """A Gaussian's mode is its mean; 'auto' picks the mode only for the discrete likelihoods."""
    assert np.array_equal(generate_images(trained, 8, decode="mode"), generate_images(trained, 8, decode="mean"))
    assert [point_decode(lik) for lik in ("logistic-mixture", "categorical", "bernoulli", "gaussian-logvar")] == [
        "mode", "mode", "mean", "mean"]
    assert point_decode("logistic-mixture", "mean") == "mean" and point_decode("gaussian-fixed", "mode") == "mode"


def test_sample_quality_end_to_end(trained, data, classifier_file):
    kwargs = {**data, "dataset": "synth", "n_samples": 60, "seed": 0, "classifier_path": classifier_file}
    out = sample_quality(trained, **kwargs)
    json.dumps(out)  # goes into eval.json as it is
    assert out["n_samples"] == 60 and out["n_reference"] == 60 and out["feature_dim"] == 16
    assert out["fid_classifier"] >= 0 and out["fid_floor_train_vs_test"] >= 0
    assert out["classifier_test_accuracy"] > 0.9 and out["classifier"]["cached"]
    assert out["classifier"]["settings"]["feature_dim"] == 16  # the file's settings, not the defaults
    assert 1 <= out["classes_covered"] <= 10 and 0 <= out["label_entropy_bits"] <= out["label_entropy_max_bits"]
    assert "comparable only within this tool" in out["note"] and out["decode"] == "mean"
    again = sample_quality(trained, **kwargs)
    assert again["fid_classifier"] == out["fid_classifier"]
    assert sample_quality(trained, **{**kwargs, "seed": 1})["fid_classifier"] != out["fid_classifier"]


@slow
def test_classifier_on_real_mnist_is_accurate(tmp_path):
    from svhn_vae.data import load_split

    train_split, test_split = (load_split("mnist", s, data_dir=MNIST_DIR) for s in ("train", "test"))
    model, _ = load_or_train_classifier(dataset="mnist", train_images=train_split.images,
                                        train_labels=train_split.labels, path=tmp_path / "mnist.pt")
    _, probs = classifier_features(model, test_split.images)
    assert np.mean(probs.argmax(axis=1) == test_split.labels) > 0.98
