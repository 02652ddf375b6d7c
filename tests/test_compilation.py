"""``--compile``: the same training and the same bounds as eager, the modes and when ``auto``
compiles, and one line where the platform cannot compile."""

import logging

import numpy as np
import pytest
import torch
from torch._dynamo.exc import BackendCompilerFailed

from svhn_vae import compilation, evaluate
from svhn_vae.cli import build_parser, config_from_args, main
from svhn_vae.checkpoint import TrainedModel
from svhn_vae.compilation import AUTO_MIN_STEPS, AUTO_MIN_WEIGHT_CALLS, Compiled, CompileUnavailable, wanted
from svhn_vae.config import PRESETS, Config, DataConfig, PCAConfig, TrainConfig, get_preset
from svhn_vae.evaluate import likelihood_metrics
from svhn_vae.models import VAE
from svhn_vae.representation import Representation
from svhn_vae.semi_supervised import choose_labelled
from svhn_vae.train import TrainData, batch_loss, build_model, train
from test_m2 import C, model_config
from test_train import synthetic_images, tiny_config


@pytest.fixture(autouse=True)
def fresh_compiler():
    torch._dynamo.reset()  # no code cached from another test's model
    yield
    torch._dynamo.reset()


@pytest.fixture
def no_compiler(monkeypatch):
    """torch.compile as on a platform without a C++ compiler: every compiled call fails."""
    def broken(fn, **kwargs):
        def call(*args, **kw):
            raise BackendCompilerFailed("inductor", RuntimeError("no C++ compiler found\nmore detail"), None)
        return call

    monkeypatch.setattr(compilation.torch, "compile", broken)


def test_compiled_training_follows_eager_and_keeps_the_weights_names():
    images = synthetic_images(96, (8, 8, 3), seed=3)  # 3 batches of 32: one shape, one compilation
    eager = train(tiny_config(epochs=2), data=TrainData(images))
    fast = train(tiny_config(epochs=2, compile="on"), data=TrainData(images))
    for a, b in zip(eager.history, fast.history):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)  # same seed, same draws; fused maths rounds apart
    assert eager.model.state_dict().keys() == fast.model.state_dict().keys()


def test_compiled_m2_training_follows_eager():
    """M2's step, with its labelled rows after the batch and the classifier's term, compiles too."""
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (64, 4, 4, 1), dtype=np.uint8), np.arange(64) % C
    data = TrainData(images, labels=labels, labelled=choose_labelled(labels, 6, classes=C, seed=0))
    cfg = Config(data=DataConfig(dataset="mnist", dequantize=False), model=model_config(),
                 pca=PCAConfig(complement="isotropic"),
                 train=TrainConfig(epochs=2, batch_size=16, labels=6, labelled_batch=4, sample_every=0,
                                   device="cpu", early_stopping="none"))
    eager, compiled = (train(cfg.replace("train", compile=mode), data=data) for mode in ("off", "on"))
    for a, b in zip(eager.history, compiled.history):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)


@pytest.mark.parametrize("preset", [name for name in PRESETS if get_preset(name).train.compile != "off"])
def test_a_preset_that_compiles_traces_its_step_as_one_graph(preset):
    """A graph break (a .item(), a data-dependent shape) would split the step and print Dynamo's warnings."""
    cfg = tiny_config(preset)
    images = synthetic_images(64, (8, 8, 3), seed=1)
    rep = Representation.fit(cfg, [images])
    stored = rep.prepare(images)
    loss_of = batch_loss(cfg, build_model(cfg, rep, init_data=stored), rep)
    explained = torch._dynamo.explain(loss_of)(stored[:32], torch.tensor(1.0), 32, {})
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons


def test_auto_compiles_long_runs_only():
    assert wanted("on", steps=1) and not wanted("off", steps=10 * AUTO_MIN_STEPS)
    assert wanted("auto", steps=AUTO_MIN_STEPS) and not wanted("auto", steps=AUTO_MIN_STEPS - 1)


def test_evaluation_compiles_from_enough_chunks_and_scores_what_eager_scores(monkeypatch):
    cfg = get_preset("mnist-bernoulli").replace("model", latent_dim=3, encoder_shared=(8,), decoder=(8,))
    torch.manual_seed(0)
    trained = TrainedModel(cfg, VAE(cfg.model, data_dim=12, image_shape=(2, 2, 3)).eval(), Representation((2, 2, 3)),
                           None, 0)
    images = np.random.default_rng(0).integers(0, 256, (8, 2, 2, 3), dtype=np.uint8)
    made = []
    monkeypatch.setattr(evaluate, "Compiled", lambda fn, **kw: made.append(kw) or Compiled(fn, **kw))

    def score(mode):  # 4 batches x 2 chunks of samples: 8 chunks
        return likelihood_metrics(trained, images, importance_samples=4, batch_size=2, sample_chunk=2, compile=mode)

    eager = score("auto")
    assert made == []  # fewer chunks than AUTO_MIN_WEIGHT_CALLS
    monkeypatch.setattr(evaluate, "AUTO_MIN_WEIGHT_CALLS", 8)
    compiled = score("auto")
    assert made == [{"fall_back": True}]
    assert compiled["iwae_nats"] == pytest.approx(eager["iwae_nats"], rel=1e-5)
    assert compiled["elbo_nats"] == pytest.approx(eager["elbo_nats"], rel=1e-5)
    assert not wanted("off", steps=8, auto_from=8) and wanted("on", steps=1, auto_from=AUTO_MIN_WEIGHT_CALLS)


def test_the_flags_and_old_configs_give_the_modes():
    parser = build_parser()
    base = ["train", "--preset", "fast", "--run-dir", "unused"]
    assert config_from_args(parser.parse_args(base)).train.compile == "auto"  # the preset's
    assert config_from_args(parser.parse_args(base + ["--compile"])).train.compile == "on"
    assert config_from_args(parser.parse_args(base + ["--compile", "off"])).train.compile == "off"
    assert config_from_args(parser.parse_args(base + ["--no-compile"])).train.compile == "off"
    old = Config().to_dict()
    old["train"]["compile"] = True  # written when the field was a bool
    assert Config.from_dict(old).train.compile == "on"
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--compile", "sometimes"])
    scoring = ["evaluate", "unused"]
    assert [parser.parse_args(scoring + flags).compile for flags in ([], ["--compile"], ["--no-compile"])] == [
        "auto", "on", "off"]


def test_auto_trains_eagerly_where_the_platform_cannot_compile(no_compiler, caplog):
    doubled = Compiled(lambda x: 2 * x, fall_back=True)
    with caplog.at_level(logging.WARNING, logger="svhn_vae.compilation"):
        assert torch.equal(doubled(torch.ones(2)), torch.full((2,), 2.0))
        assert torch.equal(doubled(torch.ones(2)), torch.full((2,), 2.0))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "running it eagerly" in warnings[0] and "\n" not in warnings[0]


def test_a_platform_that_cannot_compile_gives_one_line(no_compiler, tmp_path, capsys):
    with pytest.raises(CompileUnavailable, match=r"cannot compile this model here .* run without --compile"):
        Compiled(torch.nn.Linear(3, 2))(torch.ones(1, 3))
    images_dir = tmp_path / "data"
    from svhn_vae.data.fakes import write_fake_split
    write_fake_split("mnist", "train", images_dir, num_examples=64, seed=1)
    write_fake_split("mnist", "test", images_dir, num_examples=16, seed=2)
    argv = ["train", "--preset", "fast", "--dataset", "mnist", "--data-dir", str(images_dir), "--components", "8",
            "--latent-dim", "3", "--epochs", "1", "--compile", "--no-progress", "--run-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run without --compile" in err
