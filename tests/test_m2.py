"""M2 (labels as a latent): its bounds against brute force, its objective's known cases, hidden
labels never read, and the commands that use it (evaluate, classify, the style/content grid)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.distributions import Normal, kl_divergence

from svhn_vae.classification import confusion_matrix
from svhn_vae.cli import main
from svhn_vae.config import Config, DataConfig, ModelConfig, TrainConfig, for_images, get_preset
from svhn_vae.errors import UserError
from svhn_vae.models import M2, build_vae
from svhn_vae.models import m2 as m2_module
from svhn_vae.semi_supervised import HIDDEN, Labels, choose_labelled
from svhn_vae.train import TrainData, train

SHAPE, D, C = (4, 4, 1), 16, 3


def model_config(**changes) -> ModelConfig:
    fields = dict(input="pixels", latent_dim=2, encoder_shared=(16,), decoder=(16,), classifier=(16,), dropout=0.0,
                  input_batchnorm=False, likelihood="bernoulli", classes=C)
    return ModelConfig(**{**fields, **changes})


def binary(n: int, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, D), 0.4), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def model() -> M2:
    torch.manual_seed(0)
    return M2(model_config(), data_dim=D, image_shape=SHAPE).eval()


@pytest.fixture
def at_the_mean(monkeypatch):
    """z = the posterior mean: every bound becomes a deterministic function to compare exactly."""
    monkeypatch.setattr(m2_module, "reparameterize", lambda mu, logvar, generator=None, n=None:
                        mu if n is None else mu.expand(n, *mu.shape))


def brute_force_labelled(model: M2, x: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x|y=c, z=mu) and KL(q(z|x,c) || N(0, I)), written out with torch.distributions."""
    onehot = torch.nn.functional.one_hot(torch.full((len(x),), c), C).float()
    mu, logvar = model.encoder(torch.cat([x, onehot], -1))
    probs = torch.sigmoid(model.decoder.head.logits(model.decoder.trunk(torch.cat([mu, onehot], -1))))
    rec = torch.distributions.Bernoulli(probs=probs).log_prob(x).sum(-1)
    kl = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    return rec, kl


def test_build_vae_makes_m2_with_label_latents():
    model = build_vae(model_config(), data_dim=D, image_shape=SHAPE)
    assert isinstance(model, M2) and model.latent_dim == 2 + C
    assert model.sample_latents(5).shape == (5, 2 + C)
    mu, logvar = model.eval().encode(binary(4))
    assert torch.allclose(mu[:, 2:].sum(-1), torch.ones(4))  # q(y|x)'s probabilities


def test_unlabelled_bound_is_the_brute_force_sum_over_the_classes(model, at_the_mean):
    x = binary(6)
    with torch.no_grad():
        terms = model(x)
        q = torch.softmax(model.classifier(x), -1)
        per_class = [brute_force_labelled(model, x, c) for c in range(C)]
        elbo_c = torch.stack([rec - kl for rec, kl in per_class], 1) + np.log(1 / C)  # L(x, c)
        expected = (q * elbo_c).sum(1) - (q * q.log()).sum(1)  # sum_y q(y|x) L(x, y) + H(q(y|x))
    assert torch.allclose(terms.elbo, expected, atol=1e-4)
    assert torch.equal(terms.log_q_label, torch.zeros(6))


def test_labelled_rows_give_the_labelled_elbo_and_their_log_q(model, at_the_mean):
    x, y = binary(5), torch.tensor([0, 2, 1, 1, 0])
    with torch.no_grad():
        terms = model(x, y=y)
        expected = torch.stack([(lambda r, k: r - k)(*brute_force_labelled(model, x[i:i + 1], int(y[i])))[0]
                                for i in range(5)]) + np.log(1 / C)
        log_q = torch.log_softmax(model.classifier(x), -1)[torch.arange(5), y]
    assert torch.allclose(terms.elbo, expected, atol=1e-4)
    assert torch.allclose(terms.log_q_label, log_q, atol=1e-5)


def test_every_example_labelled_and_alpha_zero_is_the_labelled_elbo(model):
    labels = np.array([0, 1, 2, 0, 1, 2])
    stream = Labels(labels, np.arange(6), alpha=0.0, labelled_batch=4)
    idx = torch.arange(6)
    rows, extra = stream.batch(idx, stream.epoch_draws(1, torch.Generator().manual_seed(0))[0])
    x = binary(6)[rows]
    terms = model(x, generator=torch.Generator().manual_seed(1), **extra)
    again = model(x[:6], y=torch.from_numpy(labels), generator=torch.Generator().manual_seed(1))
    loss, batch_terms = stream.loss(terms, batch=6)
    assert torch.allclose(loss, -again.elbo.mean()) and torch.equal(batch_terms.rec, terms.rec[:6])
    weighted = Labels(labels, np.arange(6), alpha=0.5, labelled_batch=4)  # alpha * N_l * mean log q of the draws
    assert torch.allclose(weighted.loss(terms, batch=6)[0], -again.elbo.mean() - 0.5 * 6 * terms.log_q_label[6:].mean())


def test_labelled_weight_adds_the_drawn_examples_elbo(model):
    labels = np.array([0, 1, 2, 0, 1, 2])
    stream = Labels(labels, np.array([1, 4]), alpha=0.1, labelled_batch=3, labelled_weight=2.0)
    rows, extra = stream.batch(torch.arange(6), torch.tensor([1, 4, 1]))
    assert extra["elbo_rows"] is None  # the drawn rows' ELBO is needed too
    terms = model(binary(6)[rows], generator=torch.Generator().manual_seed(0), **extra)
    loss, batch_terms = stream.loss(terms, batch=6)
    expected = -terms.elbo[:6].mean() - 0.1 * 2 * terms.log_q_label[6:].mean() - 2.0 * terms.elbo[6:].mean()
    assert torch.allclose(loss, expected) and len(batch_terms.rec) == 6
    assert extra["y"].tolist() == [HIDDEN, 1, HIDDEN, HIDDEN, 1, HIDDEN, 1, 1, 1]


def test_consistency_reads_decoded_draws_with_the_classifier_held_fixed(model):
    model.train()
    stats = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    log_q = model.decoded_label_log_q(5, generator=torch.Generator().manual_seed(3))
    latents = model.sample_latents(5, generator=torch.Generator().manual_seed(3))
    y = latents[:, 2:].argmax(-1)
    decoded = model.decode(latents).mean()  # the decoder as it trains, the classifier as it classifies
    expected = torch.log_softmax(model.classifier.eval()(decoded), -1)[torch.arange(5), y]
    assert torch.allclose(log_q, expected, atol=1e-6)
    model.train()
    log_q.sum().backward()
    assert all(p.grad is None for p in model.classifier.parameters())  # the classifier is not taught
    assert all(p.grad is not None for p in model.decoder.parameters())  # the decoder is
    assert all(torch.equal(v, stats[k]) for k, v in model.classifier.state_dict().items())  # nor its statistics
    assert model.classifier.training


def test_consistency_adds_the_decoded_draws_cross_entropy(model):
    labels = np.array([0, 1, 2, 0, 1, 2])
    stream = Labels(labels, np.array([1, 4]), alpha=0.1, labelled_batch=3, consistency=5.0)
    rows, extra = stream.batch(torch.arange(6), torch.tensor([1, 4, 1]))
    assert extra["decoded_rows"] == 6
    terms = model(binary(6)[rows], generator=torch.Generator().manual_seed(0), **extra)
    loss, _ = stream.loss(terms, batch=6)
    expected = -terms.elbo[:6].mean() - 0.1 * 2 * terms.log_q_label[6:].mean() - 5.0 * terms.log_q_decoded.mean()
    assert terms.log_q_decoded.shape == (6,) and torch.allclose(loss, expected)
    assert "decoded_rows" not in Labels(labels, np.array([1, 4]), alpha=0.1, labelled_batch=3).batch(
        torch.arange(6), torch.tensor([1, 4, 1]))[1]


def test_importance_weights_add_the_classes_inside_every_draw(model, at_the_mean):
    x = binary(3)
    with torch.no_grad():
        w = model.log_weights(x, 2)
        q_terms = []
        for c in range(C):
            rec, _ = brute_force_labelled(model, x, c)
            onehot = torch.nn.functional.one_hot(torch.full((3,), c), C).float()
            mu, logvar = model.encoder(torch.cat([x, onehot], -1))
            log_ratio = Normal(0.0, 1.0).log_prob(mu).sum(-1) - Normal(mu, (0.5 * logvar).exp()).log_prob(mu).sum(-1)
            q_terms.append(rec + log_ratio + np.log(1 / C))
        expected = torch.logsumexp(torch.stack(q_terms), 0)
    assert w.shape == (2, 3) and torch.allclose(w, expected.expand(2, 3), atol=1e-4)


@pytest.mark.parametrize("changes", [
    dict(likelihood="gaussian-logvar"), dict(likelihood="logistic-mixture", mixtures=2),
    dict(likelihood="logistic-mixture", mixtures=2, context_width=4), dict(likelihood="categorical"),
    dict(classifier_channels=(4,))])
def test_every_likelihood_trains_and_scores(changes):
    """M2's decoder is the plain VAE's, so every head works: a training step moves the classifier,
    encoder and decoder, and the importance weights of p(x) are finite."""
    torch.manual_seed(0)
    model = M2(model_config(**changes), data_dim=D, image_shape=SHAPE)
    x = torch.randint(0, 256, (6, D)).float() / 255
    terms = model(x, y=torch.tensor([0, -1, 2, -1, -1, 1]))
    (-terms.elbo.mean() - terms.log_q_label.mean()).backward()
    for part in (model.classifier, model.encoder, model.decoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert torch.isfinite(model.eval().log_weights(x, 3)).all()


def test_choose_labelled_is_balanced_seeded_and_refuses_too_many():
    labels = np.arange(100) % 10
    chosen = choose_labelled(labels, 23, classes=10, seed=3)
    assert len(chosen) == 23 == len(set(chosen))
    assert np.bincount(labels[chosen]).tolist() == [3, 3, 3] + [2] * 7
    assert np.array_equal(chosen, choose_labelled(labels, 23, classes=10, seed=3))
    assert not np.array_equal(chosen, choose_labelled(labels, 23, classes=10, seed=4))
    with pytest.raises(UserError, match="give fewer labels"):
        choose_labelled(labels, 200, classes=10, seed=0)


def test_a_label_never_given_to_training_is_never_read():
    """Two trainings whose hidden labels differ (one of them nonsense) end with the same weights."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 4, 4, 1), dtype=np.uint8)
    labels = np.arange(64) % C
    labelled = choose_labelled(labels, 6, classes=C, seed=0)
    swapped = (labels + 1) % C
    swapped[labelled] = labels[labelled]
    assert (swapped != labels).sum() == 64 - 6
    cfg = Config(data=DataConfig(dataset="mnist", dequantize=False), model=model_config(),
                 train=TrainConfig(epochs=2, batch_size=16, labels=6, labelled_batch=4, sample_every=0,
                                   device="cpu", early_stopping="none"))
    cfg.pca.complement = "isotropic"
    results = [train(cfg, data=TrainData(images, labels=found, labelled=labelled)) for found in (labels, swapped)]
    for (name, a), b in zip(results[0].model.state_dict().items(), results[1].model.state_dict().values()):
        assert torch.equal(a, b), name
    assert Labels(swapped, labelled, alpha=0.1, labelled_batch=4).visible.tolist().count(HIDDEN) == 64 - 6


def test_labels_and_the_label_latent_go_together():
    with pytest.raises(UserError, match="--preset m2"):
        Config(train=TrainConfig(labels=100))
    with pytest.raises(UserError, match="give --labels N"):
        Config(model=ModelConfig(classes=10))
    with pytest.raises(UserError, match="consistency.*--preset m2"):
        Config(train=TrainConfig(consistency=1.0))
    with pytest.raises(UserError, match="consistency.*pixel by pixel"):
        get_preset("m2").replace("model", likelihood="logistic-mixture", context_width=4)
    assert get_preset("m2").replace("model", likelihood="logistic-mixture").train.consistency == 100  # no context: fine
    with pytest.raises(UserError, match="dense blocks"):
        ModelConfig(input="pixels", architecture="conv", classes=10)


def test_auto_likelihood_is_chosen_from_the_channels():
    m2 = get_preset("m2")
    assert m2.model.likelihood == "auto"
    assert for_images(m2, 1).model.likelihood == "logistic-mixture"
    assert for_images(m2, 3).model.likelihood == "gaussian-logvar"
    bernoulli = m2.replace("model", likelihood="bernoulli")
    assert for_images(bernoulli, 1) is bernoulli  # a likelihood the user chose stays
    with pytest.raises(UserError, match="'auto'.*needs input 'pixels'"):
        get_preset("fast").replace("model", likelihood="auto")


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    matrix = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_m2_trains_resumes_and_every_command_uses_it(tmp_path, data_dir, capsys):
    run = tmp_path / "m2"
    flags = ["--dataset", "mnist", "--data-dir", str(data_dir), "--latent-dim", "3", "--encoder-shared", "16",
             "--decoder", "16", "--classifier-channels", "4,8", "--batch-size", "32",
             "--labels", "20", "--labelled-batch", "8", "--device", "cpu",
             "--no-progress", "--run-dir", str(run)]
    assert main(["train", "--preset", "m2", *flags, "--epochs", "1"]) == 0
    assert main(["train", "--preset", "m2", *flags, "--epochs", "2", "--resume"]) == 0  # 'auto' resolved alike
    assert json.loads((run / "config.json").read_text())["model"]["likelihood"] == "logistic-mixture"  # grey
    assert main(["evaluate", str(run), "--importance-samples", "4", "--probe-draws", "1", "--quality-samples", "40",
                 "--no-progress", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    result = json.loads((run / "eval.json").read_text())
    found = result["classification"]
    assert found["n"] == 24 and sum(map(sum, found["confusion"])) == 24 and 0 <= found["error"] <= 1
    assert "classifier q(y|x) with 20 labels: test error" in out
    assert result["bpd_elbo"] >= result["bpd_iwae"] > 0
    control = result["quality"]["label_control"]
    assert control["n_images"] == control["test_styles"]["n_images"] == 40 * 10 // 10
    assert 0 <= control["test_styles"]["read_as_label"] <= 1 and "with test images' styles" in out
    assert main(["classify", str(run), "--data-dir", str(data_dir), "--out", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["error"] == found["error"]
    capsys.readouterr()
    images = np.zeros((2, 28, 28, 1), np.uint8)
    np.save(tmp_path / "two.npy", images)
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(tmp_path / "one.png")
    assert main(["classify", str(run), str(tmp_path / "two.npy"), str(tmp_path / "one.png")]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    np.save(tmp_path / "small.npy", np.zeros((2, 8, 8), np.uint8))
    for bad in ("bad.png", "small.npy"):
        assert main(["classify", str(run), str(tmp_path / bad)]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["style-grid", str(run), "--data-dir", str(data_dir), "--scale", "1"]) == 0
    grid = json.loads(capsys.readouterr().out)
    assert (grid["width"], grid["height"]) == (10 * 30 + 2, 10 * 30 + 2)  # 10 styles x 10 labels, 28 px + pad 2
    assert main(["report", str(run), "--data-dir", str(data_dir)]) == 0
    assert "Style and content" in (run / "report.html").read_text()


@pytest.mark.parametrize("m1_flags", [["--preset", "fast"],
                                      ["--preset", "mnist-bernoulli", "--encoder-shared", "16", "--decoder", "16"]])
def test_m1_plus_m2_trains_on_the_latents_of_a_trained_vae(tmp_path, data_dir, capsys, m1_flags):
    """The stacked model: M2 on M1's latents; a self-contained checkpoint, the stacked likelihood
    scored on M1's data, the classifier and the figures through M1's decoder."""
    m1, run = tmp_path / "m1", tmp_path / "m1m2"
    common = ["--dataset", "mnist", "--data-dir", str(data_dir), "--components", "8", "--latent-dim", "3",
              "--batch-size", "32", "--epochs", "1", "--device", "cpu", "--no-progress"]
    assert main(["train", *m1_flags, *common, "--encoder-shared", "16", "--decoder", "16", "--run-dir", str(m1)]) == 0
    assert main(["train", "--preset", "m1-m2", *common, "--m1", str(m1), "--encoder-shared", "16", "--decoder", "16",
                 "--classifier", "16", "--labels", "20", "--run-dir", str(run)]) == 0
    for child in (m1 / "checkpoints").iterdir():  # the stacked run stands alone
        child.unlink()
    assert main(["evaluate", str(run), "--importance-samples", "4", "--no-probe", "--no-quality",
                 "--no-progress", "--data-dir", str(data_dir)]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert result["data"] == ("binarized" if "mnist-bernoulli" in m1_flags else "dequantized")
    assert result["bpd_elbo"] >= result["bpd_iwae"] > 0
    assert result["classification"]["n"] == 24
    assert main(["style-grid", str(run), "--data-dir", str(data_dir), "--scale", "1"]) == 0
    assert main(["train", "--preset", "m1-m2", *common, "--m1", str(m1), "--labels", "20",
                 "--run-dir", str(tmp_path / "gone")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train", "--preset", "m1-m2", *common, "--labels", "20", "--run-dir", str(tmp_path / "no-m1")]) == 2
    assert "with --m1 RUN" in capsys.readouterr().err
