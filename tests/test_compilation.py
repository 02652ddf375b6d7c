"""``--compile``: the same training and the same bounds as eager, and a one-line error where the
platform cannot compile."""

import pytest
import torch
from torch._dynamo.exc import BackendCompilerFailed

from svhn_vae import compilation
from svhn_vae.cli import main
from svhn_vae.compilation import Compiled, CompileUnavailable
from svhn_vae.train import TrainData, train
from test_train import synthetic_images, tiny_config


@pytest.fixture(autouse=True)
def fresh_compiler():
    torch._dynamo.reset()  # no code cached from another test's model
    yield
    torch._dynamo.reset()


def test_compiled_training_follows_eager_and_keeps_the_weights_names():
    images = synthetic_images(96, (8, 8, 3), seed=3)  # 3 batches of 32: one shape, one compilation
    eager = train(tiny_config(epochs=2), data=TrainData(images))
    fast = train(tiny_config(epochs=2, compile=True), data=TrainData(images))
    for a, b in zip(eager.history, fast.history):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)  # same seed, same draws; fused maths rounds apart
    assert eager.model.state_dict().keys() == fast.model.state_dict().keys()


def test_the_wrapper_shares_the_modules_parameters():
    module = torch.nn.Linear(3, 2)
    wrapped = Compiled(module)
    assert list(wrapped.parameters()) == list(module.parameters())
    assert torch.equal(wrapped(torch.ones(1, 3)), module(torch.ones(1, 3)))


def test_a_platform_that_cannot_compile_gives_one_line(tmp_path, monkeypatch, capsys):
    def broken(fn, **kwargs):
        def call(*args, **kw):
            raise BackendCompilerFailed("inductor", RuntimeError("no C++ compiler found\nmore detail"), None)
        return call

    monkeypatch.setattr(compilation.torch, "compile", broken)
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
