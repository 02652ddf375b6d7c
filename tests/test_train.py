"""The training loop on tiny synthetic data: steps, evaluation, checkpoints, resume, the NaN guard."""

import json

import numpy as np
import pytest
import torch

from svhn_vae import checkpoint as ckpt
from svhn_vae.config import Config, get_preset
from svhn_vae.errors import UserError
from svhn_vae.models.vae import VAE
from svhn_vae.representation import Representation
from svhn_vae.train import (TrainData, TrainingDiverged, _run_epoch, batch_loss, build_model, evaluate_loss,
                             make_optimizer, train)


def synthetic_images(n: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """uint8 (n, H, W, C) images: smooth random blobs, so PCA and a VAE have structure to find."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    centres = rng.uniform(0.2, 0.8, size=(n, 2, 1, 1))
    blob = np.exp(-((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) / 0.02)
    colour = rng.uniform(0.3, 1.0, size=(n, 1, 1, c))
    return (255 * blob[..., None] * colour).astype(np.uint8)


def tiny_config(preset: str = "fast", **train_changes) -> Config:
    cfg = get_preset(preset)
    # 2 of the 10 components pinned: the preset's 32 would pin every output
    cfg = cfg.replace("model", latent_dim=4, encoder_shared=(32,), decoder=(32,), dropout=0.0,
                      fixed_variance_dims=min(cfg.model.fixed_variance_dims, 2))
    cfg = cfg.replace("pca", components=10).replace("data", download=False)
    # no warm-up: a preset's hundreds of warm-up steps are longer than a whole tiny run
    return cfg.replace("train", **{"epochs": 2, "batch_size": 32, "sample_every": 0, "device": "cpu",
                                   "warmup_steps": 0, **train_changes})


@pytest.fixture
def rgb() -> TrainData:
    return TrainData(synthetic_images(128, (8, 8, 3)))


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_training_step_changes_weights_and_evaluation_does_not(rgb):
    cfg = tiny_config()
    rep = Representation.fit(cfg, [rgb.images])
    model, data = build_model(cfg, rep), rep.prepare(rgb.images)
    before = _params(model)
    evaluate_loss(model, rep, data)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics too
    from tqdm import tqdm
    with tqdm(disable=True) as bar:
        _run_epoch(cfg, model, batch_loss(cfg, model, rep), make_optimizer(cfg, model), data, beta=1.0,
                   generator=torch.Generator(), bar=bar)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(before[k], v)]
    assert any("weight" in k for k in changed)


def test_pinned_outputs_share_one_pixel_space_variance_of_the_whitened_pca(rgb):
    cfg = tiny_config().replace("model", fixed_variance_dims=6, fixed_variance=0.1, fixed_variance_floor=0.0)
    rep = Representation.fit(cfg, [rgb.images])
    unit = rep.unit_variance()
    assert torch.equal(unit, rep.pca.explained_variance_.float())  # a whitened code's unit is its eigenvalue
    head = build_model(cfg, rep, init_data=rep.prepare(rgb.images)).decoder.head
    pixel = head.pinned_var * unit[:6]
    assert torch.allclose(pixel, (0.1 * head.data_var[5] * unit[5]).expand(6), rtol=1e-5)
    assert torch.equal(Representation.fit(cfg.replace("pca", whiten=False), [rgb.images]).unit_variance(), torch.ones(10))


@pytest.mark.parametrize("preset,shape", [("fast", (8, 8, 3)), ("mnist-bernoulli", (8, 8, 1))])
def test_loss_is_finite_and_decreases(preset, shape):
    # Fixed targets: the data-initialised output already fits the pixel marginals, so the decrease is
    # small, and dynamic binarization noise would hide it.
    cfg = tiny_config(preset, epochs=6, lr=3e-3, early_stopping="none").replace("model", binarize=False)
    result = train(cfg, data=TrainData(synthetic_images(256, shape)))
    losses = [r["loss"] for r in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_run_folder_files_and_save_load_identical_outputs(rgb, tmp_path):
    run = tmp_path / "run"
    result = train(tiny_config(early_stopping="none", sample_every=0), run_dir=run, data=rgb)
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.jsonl", "checkpoints"}
    assert (run / "checkpoints" / "last.pt").exists() and (run / "checkpoints" / "best.pt").exists()
    assert [r["epoch"] for r in ckpt.read_metrics(run)] == [1, 2]
    assert ckpt.load_checkpoint(ckpt.checkpoint_path(run, "best"))["epoch"] == 2  # no early stopping: best is last
    loaded = ckpt.load_trained(run, which="last")
    x = result.representation.encode(rgb.images[:16])
    assert torch.equal(loaded.model.encode(x)[0], result.model.encode(x)[0])
    assert torch.equal(loaded.representation.decode(x), result.representation.decode(x))


def test_resume_continues_exactly(rgb, tmp_path):
    # a constant learning rate: a cosine schedule spans --epochs, which this resume raises (see test_objectives)
    straight = train(tiny_config(epochs=3, early_stopping="none", lr_schedule="constant"), run_dir=tmp_path / "a",
                     data=rgb)
    train(tiny_config(epochs=1, early_stopping="none", lr_schedule="constant"), run_dir=tmp_path / "b", data=rgb)
    resumed = train(tiny_config(epochs=3, early_stopping="none", lr_schedule="constant"), run_dir=tmp_path / "b",
                    data=rgb, resume=True)
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k
    assert [r["epoch"] for r in ckpt.read_metrics(tmp_path / "b")] == [1, 2, 3]


def test_existing_run_is_not_overwritten(rgb, tmp_path):
    train(tiny_config(epochs=1), run_dir=tmp_path, data=rgb)
    with pytest.raises(UserError, match="--overwrite"):
        train(tiny_config(epochs=1), run_dir=tmp_path, data=rgb)
    with pytest.raises(UserError, match="settings differ"):
        train(tiny_config(epochs=1, lr=0.5), run_dir=tmp_path, data=rgb, resume=True)
    train(tiny_config(epochs=1), run_dir=tmp_path, data=rgb, overwrite=True)


def test_early_stopping_on_validation():
    cfg = tiny_config(epochs=50, early_stopping="val", patience=2, min_delta=1e6)  # only epoch 1 improves (on inf)
    result = train(cfg, data=TrainData(*np.split(synthetic_images(160, (8, 8, 3)), [120])))
    assert result.stopped_early and len(result.history) == 3 and "val_loss" in result.history[0]


def _inject_nan(monkeypatch, at_calls: set[int]) -> None:
    """Make VAE.forward return NaN terms on the given (0-based) training calls."""
    real, calls = VAE.forward, {"n": 0}

    def forward(self, x, **kw):
        terms = real(self, x, **kw)
        if self.training:
            calls["n"] += 1
            if calls["n"] - 1 in at_calls:
                terms.rec = terms.rec * float("nan")
        return terms

    monkeypatch.setattr(VAE, "forward", forward)


def test_nan_is_caught_and_learning_rate_lowered(rgb, tmp_path, monkeypatch):
    _inject_nan(monkeypatch, {5})  # once, in epoch 2 (4 steps per epoch)
    result = train(tiny_config(epochs=3, early_stopping="none", lr_schedule="constant"), run_dir=tmp_path, data=rgb)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert result.history[1]["lr"] == pytest.approx(0.5 * result.history[0]["lr"])
    assert all(torch.isfinite(v).all() for v in result.model.state_dict().values() if v.is_floating_point())


def test_persistent_nan_stops_with_a_clear_error_and_keeps_the_checkpoint(rgb, tmp_path, monkeypatch):
    _inject_nan(monkeypatch, set(range(4, 1000)))  # every step from epoch 2 on
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        train(tiny_config(epochs=5, nan_retries=2), run_dir=tmp_path, data=rgb)
    loaded = ckpt.load_trained(tmp_path, which="last")
    assert loaded.epoch == 1
    assert all(torch.isfinite(v).all() for v in loaded.model.state_dict().values() if v.is_floating_point())


def test_incompatible_or_corrupt_checkpoint(rgb, tmp_path):
    train(tiny_config(epochs=1), run_dir=tmp_path, data=rgb)
    path = ckpt.checkpoint_path(tmp_path, "last")
    state = torch.load(path, weights_only=True)
    torch.save({**state, "format_version": 99}, path)
    with pytest.raises(UserError, match="format version 99"):
        ckpt.load_checkpoint(path)
    path.write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt"):
        ckpt.load_checkpoint(path)


def test_config_json_round_trip(tmp_path):
    cfg = get_preset("blog-2017")
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(UserError, match="unknown keys"):
        Config.from_dict({**cfg.to_dict(), "modle": {}})
