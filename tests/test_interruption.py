"""Nothing lost: graceful stops, checkpoints inside an epoch, a full disk, non-finite values."""

import errno
import math
import os
import signal

import numpy as np
import pytest
import torch

from svhn_vae import checkpoint as ckpt
from svhn_vae import train as train_module
from svhn_vae.atomic import DiskWriteError
from svhn_vae.cli import main
from svhn_vae.errors import UserError
from svhn_vae.finite import MetricNotFinite
from svhn_vae.interruption import StopRequest, TrainingStopped
from svhn_vae.pca import PCA
from svhn_vae.train import TrainData, train
from test_train import synthetic_images, tiny_config

TIMING = {"seconds", "images_per_s"}


@pytest.fixture
def data() -> TrainData:
    return TrainData(synthetic_images(160, (8, 8, 3)))  # 5 steps of 32 per epoch


def _terms(history):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


def _signal_at_step(monkeypatch, step: int, signum: int = signal.SIGINT) -> None:
    """Send ``signum`` to this process during the ``step``-th call that makes model input (1-based)."""
    real, calls = train_module.training_input, [0]

    def model_input(*args, **kwargs):
        calls[0] += 1
        if calls[0] == step:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)
    monkeypatch.setattr(train_module, "training_input", model_input)


def test_second_ctrl_c_quits_at_once():
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the tests run in the background (nohup, CI)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # restored


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_epoch_checkpoints_that_step_and_resume_is_exact(data, tmp_path, monkeypatch, signum):
    cfg = tiny_config(epochs=3, early_stopping="none")
    straight = train(cfg, run_dir=tmp_path / "a", data=data)
    _signal_at_step(monkeypatch, 9, signum)  # call 1 starts the heads from data; 9 is epoch 2, step 3
    with pytest.raises(TrainingStopped, match=f"stopped by {signal.Signals(signum).name} at epoch 2, step 3"):
        train(cfg, run_dir=tmp_path / "b", data=data)
    monkeypatch.undo()
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "b"))
    assert state["epoch"] == 1 and state["position"]["step"] == 3
    assert [r["epoch"] for r in ckpt.read_metrics(tmp_path / "b")] == [1]  # no line for the partial epoch
    resumed = train(cfg, run_dir=tmp_path / "b", data=data, resume=True)
    assert _terms(ckpt.read_metrics(tmp_path / "b")) == _terms(straight.history)
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_signal_exits_the_cli_with_one_line(data, tmp_path, monkeypatch, capsys):
    _signal_at_step(monkeypatch, 2)
    run = tmp_path / "R"
    monkeypatch.setattr(train_module, "load_train_data", lambda cfg: data)
    code = main(["-q", "train", "--preset", "fast", "--run-dir", str(run), "--latent-dim", "4",
                 "--encoder-shared", "32", "--decoder", "32", "--components", "10", "--batch-size", "32", "--warmup-steps", "0",
                 "--epochs", "2", "--sample-every", "0", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 130 and len(err.splitlines()) == 1 and "continue with --resume" in err


def test_checkpoints_inside_epochs_change_nothing(data, tmp_path):
    plain = train(tiny_config(epochs=2, early_stopping="none"), data=data)
    every = train(tiny_config(epochs=2, early_stopping="none", checkpoint_every_steps=2), run_dir=tmp_path / "r",
                  data=data)
    assert _terms(every.history) == _terms(plain.history)


def test_full_disk_stops_with_one_line_and_keeps_the_last_checkpoint(data, tmp_path, monkeypatch):
    cfg = tiny_config(epochs=3, early_stopping="none")
    real_save, saves = torch.save, [0]

    def save(obj, f, *args, **kwargs):
        saves[0] += 1
        if saves[0] > 2:  # epoch 1 wrote best and last; epoch 2's first write fails
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(ckpt.torch, "save", save)
    with pytest.raises(DiskWriteError, match="the disk is full: free some space; the previous file is intact"):
        train(cfg, run_dir=tmp_path, data=data)
    monkeypatch.undo()
    assert ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path))["epoch"] == 1
    assert not list(tmp_path.rglob("*.tmp"))
    train(cfg, run_dir=tmp_path, data=data, resume=True)  # the resume after freeing space works
    assert [r["epoch"] for r in ckpt.read_metrics(tmp_path)] == [1, 2, 3]


def test_read_only_metrics_file_is_one_line(data, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", "metrics.jsonl")
    monkeypatch.setattr(ckpt, "append_metrics", refuse)
    with pytest.raises(DiskWriteError, match="read-only"):
        train(tiny_config(epochs=1), run_dir=tmp_path, data=data)


def test_non_finite_metric_is_never_written(data, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "evaluate_loss", lambda *a, **k: {"loss": math.nan, "rec": 0.0, "kl": 0.0})
    with pytest.raises(MetricNotFinite, match="val_loss is nan"):
        train(tiny_config(epochs=1), run_dir=tmp_path, data=TrainData(data.images[:128], data.images[128:]))
    assert ckpt.read_metrics(tmp_path) == []


@pytest.mark.parametrize("flag", [["--lr", "nan"], ["--eps", "inf"], ["--val-fraction", "nan"]])
def test_non_finite_flags_are_one_line_errors(flag, tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "r"), *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a finite number" in err and not (tmp_path / "r").exists()


def test_non_finite_pca_arrays_are_refused(tmp_path):
    pca = PCA(2).fit(np.random.default_rng(0).normal(size=(50, 4)))
    state = pca.state_dict()
    state["components_"][0, 1] = math.nan
    with pytest.raises(UserError, match="components_ holds NaN"):
        PCA.from_state_dict(state)
