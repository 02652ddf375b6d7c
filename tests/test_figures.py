"""Figures: grid layout known answers, deterministic PNGs, and every figure command on tiny runs.

Two tiny runs trained for one epoch stand for the two image kinds and the two inputs: grayscale
MNIST-shaped images through a PCA, and RGB SVHN-shaped pixels with a Bernoulli output (a PCA of
32 x 32 x 3 pixels takes seconds; figures do not depend on the channel count). Their test splits
are small fake files in the official formats, read through ``--data-dir``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from svhn_vae import cli
from svhn_vae.checkpoint import load_trained
from svhn_vae.config import get_preset
from svhn_vae.data.fakes import write_fake_split
from svhn_vae.figures import (
    analogy_grid, interpolation_grid, lerp, loss_curves, most_diverse, pick_per_digit, png_bytes,
    reconstruction_grid, sample_grid, save_png, slerp, tile, to_uint8,
)
from svhn_vae.train import TrainData, train

SHAPES = {"mnist": (28, 28, 1), "svhn": (32, 32, 3)}


@dataclass
class TinyRun:
    """A run folder trained for one epoch, and a folder holding its fake test split."""

    path: Path
    data_dir: Path
    dataset: str
    pca: bool

    @property
    def tile_shape(self) -> tuple[int, int]:
        return SHAPES[self.dataset][:2]


def make_run(root: Path, dataset: str) -> TinyRun:
    """Train a tiny model on 64 random images (grayscale through PCA for mnist, RGB pixels for svhn)."""
    cfg = get_preset("fast" if dataset == "mnist" else "mnist-bernoulli")
    cfg = cfg.replace("model", latent_dim=4, encoder_shared=(32,), decoder=(32,))
    cfg = cfg.replace("pca", components=10).replace("data", dataset=dataset, download=False)
    cfg = cfg.replace("train", epochs=1, batch_size=32, sample_every=1, device="cpu")
    images = np.random.default_rng(0).integers(0, 256, (64, *SHAPES[dataset]), dtype=np.uint8)
    train(cfg, run_dir=root / "run", data=TrainData(images[:48], val_images=images[48:]))
    write_fake_split(dataset, "test", root / "data", num_examples=20)
    return TinyRun(root / "run", root / "data", dataset, pca=cfg.model.input == "pca")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and on a busy machine threads spin (an eigh: 0.2 s -> 20 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["mnist", "svhn"])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return make_run(tmp_path_factory.mktemp(request.param), request.param)


def grid_size(rows: int, cols: int, tile_shape: tuple[int, int], *, scale: int = 2, pad: int = 2) -> tuple[int, int]:
    """(width, height) of a grid as the docs state: r*h*s + (r+1)*p by c*w*s + (c+1)*p."""
    h, w = tile_shape
    return cols * w * scale + (cols + 1) * pad, rows * h * scale + (rows + 1) * pad


def figure(args: list[str], out: Path) -> Image.Image:
    """Run a figure command writing to ``out`` and open the PNG."""
    assert cli.main([*args, "--out", str(out)]) == 0
    return Image.open(out)


# --- layout and files ----------------------------------------------------------------------------


def test_tile_places_upscaled_tiles_between_white_lines() -> None:
    images = np.arange(5 * 3 * 4, dtype=np.uint8).reshape(5, 3, 4, 1)
    grid = tile(images, cols=2, scale=3, pad=2)
    assert grid.shape == (3 * 3 * 3 + 4 * 2, 2 * 4 * 3 + 3 * 2, 1)  # 3 rows (the last half empty), 2 columns
    second = grid[2:11, 2 + 12 + 2:2 + 12 + 2 + 12, 0]  # row 0, column 1: image 1, each pixel a 3 x 3 block
    assert np.array_equal(second, images[1, :, :, 0].repeat(3, 0).repeat(3, 1))
    assert (grid[:2] == 255).all() and (grid[:, 14:16] == 255).all()  # border and separator
    assert (grid[-11:-2, -14:-2] == 255).all()  # the empty sixth cell


def test_to_uint8_rounds_and_clips_floats() -> None:
    floats = torch.tensor([-0.5, 0.0, 0.5 / 255, 1.6 / 255, 1.0, 2.0])
    assert to_uint8(floats).tolist() == [0, 0, 0, 2, 255, 255]  # round half to even at 0.5
    assert to_uint8(np.array([7], np.uint8)).tolist() == [7]


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_png_round_trips_without_metadata(tmp_path: Path, channels: int, mode: str) -> None:
    image = np.random.default_rng(0).integers(0, 256, (5, 7, channels), dtype=np.uint8)
    path = save_png(image, tmp_path / "sub" / "x.png")
    data = path.read_bytes()
    assert data == png_bytes(image) and b"tIME" not in data and b"tEXt" not in data
    loaded = Image.open(path)
    assert loaded.mode == mode and np.array_equal(np.asarray(loaded).reshape(image.shape), image)


def test_slerp_keeps_the_norm_and_ends_at_the_endpoints() -> None:
    e1, e2 = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    path = slerp(e1, e2, torch.tensor([0.0, 0.5, 1.0]))[0]
    assert torch.allclose(path, torch.tensor([[2.0, 0.0], [math.sqrt(2), math.sqrt(2)], [0.0, 2.0]]), atol=1e-6)
    same = slerp(e1, 3 * e1, torch.tensor([0.5]))  # parallel: falls back to linear
    assert torch.allclose(same, lerp(e1, 3 * e1, torch.tensor([0.5]))) and torch.allclose(same, torch.tensor([4.0, 0]))


def test_most_diverse_greedily_takes_the_farthest_points() -> None:
    points = torch.tensor([[0.0], [0.1], [0.2], [10.0], [5.0]])
    assert most_diverse(points, 3).tolist() == [3, 0, 4]


def test_pick_per_digit_is_seeded_and_finds_each_digit() -> None:
    labels = np.arange(100) % 10
    picks = [pick_per_digit(labels, generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert list(picks[0]) == list(range(10)) and all(labels[i] == d for d, i in picks[0].items())
    assert picks[0] == picks[1] and picks[0] != picks[2]
    assert list(pick_per_digit(np.array([3, 1, 3]))) == [1, 3]  # missing digits are left out


def test_loss_curves_size_and_determinism() -> None:
    records = [{"epoch": e, "loss": 10.0 / e, "rec": -8.0 / e, "kl": 2.0, "val_loss": 11.0 / e} for e in (1, 2, 3)]
    image = loss_curves(records, width=6, height=2, dpi=50)
    assert image.shape == (100, 300, 3) and image.dtype == np.uint8
    assert png_bytes(image) == png_bytes(loss_curves(records, width=6, height=2, dpi=50))


# --- library figures on trained runs --------------------------------------------------------------


def test_library_figures_are_seeded_arrays_of_the_documented_size(run: TinyRun) -> None:
    trained = load_trained(run.path)
    model, rep = trained.model, trained.representation
    images, labels = np.random.default_rng(1).integers(0, 256, (30, *SHAPES[run.dataset]), np.uint8), np.arange(30) % 10

    def gen() -> torch.Generator:  # a fresh seeded generator per figure
        return torch.Generator().manual_seed(5)

    channels = SHAPES[run.dataset][2]
    grid = sample_grid(model, rep, n=100, mode="sample", generator=gen())
    assert grid.shape == (*grid_size(10, 10, run.tile_shape)[::-1], channels)
    assert np.array_equal(grid, sample_grid(model, rep, n=100, mode="sample", generator=gen()))
    analogies = analogy_grid(model, rep, images, labels, n_samples=4, pool=12, reconstruction=True, generator=gen())
    assert analogies.shape[:2] == grid_size(10, 1 + 1 + 4, run.tile_shape)[::-1]
    rec = reconstruction_grid(model, rep, images, n=6, generator=gen(), scale=1, pad=1)
    assert rec.image.shape[:2] == grid_size(3 if run.pca else 2, 6, run.tile_shape, scale=1, pad=1)[::-1]
    assert set(rec.errors) == ({"pca", "vae"} if run.pca else {"vae"}) and rec.errors["vae"].shape == (6,)
    lines = interpolation_grid(model, rep, images, pairs=3, steps=5, method="linear", generator=gen())
    assert lines.shape[:2] == grid_size(3, 7, run.tile_shape)[::-1]


def test_the_mode_grid_shows_each_likelihoods_most_probable_values(run: TinyRun) -> None:
    """Bernoulli pixels (svhn's tiny run): the mode is black or white; a Gaussian's (PCA, mnist) is its mean."""
    trained = load_trained(run.path)
    grids = {mode: sample_grid(trained.model, trained.representation, n=9, mode=mode,
                               generator=torch.Generator().manual_seed(2)) for mode in ("mean", "mode")}
    if run.pca:
        assert np.array_equal(grids["mode"], grids["mean"])
    else:
        assert set(np.unique(grids["mode"])) <= {0, 255} and not np.array_equal(grids["mode"], grids["mean"])


def test_sample_grid_leaves_a_training_model_untouched(run: TinyRun) -> None:
    model, rep = (t := load_trained(run.path)).model.train(), t.representation
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sample_grid(model, rep, n=4, generator=torch.Generator().manual_seed(0))
    assert model.training  # the training loop calls it between epochs
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BatchNorm statistics too


# --- the commands --------------------------------------------------------------------------------


def test_training_wrote_its_sample_grid(run: TinyRun) -> None:
    assert Image.open(run.path / "samples" / "epoch_0001.png").size == grid_size(8, 8, run.tile_shape)


def test_each_command_writes_a_png_of_the_documented_size(run: TinyRun, tmp_path: Path) -> None:
    data = ["--data-dir", str(run.data_dir)]
    mode = "L" if run.dataset == "mnist" else "RGB"
    expected = {
        ("sample",): grid_size(10, 10, run.tile_shape),
        ("sample", "--n", "16", "--scale", "3", "--temperature", "0.5"): grid_size(4, 4, run.tile_shape, scale=3),
        ("analogies", *data): grid_size(10, 10, run.tile_shape),
        ("analogies", "--pool", "20", "--reconstruction", *data): grid_size(10, 11, run.tile_shape),
        ("reconstruct", *data): grid_size(3 if run.pca else 2, 10, run.tile_shape),
        ("interpolate", "--method", "linear", *data): grid_size(5, 10, run.tile_shape),
    }
    for i, (args, size) in enumerate(expected.items()):
        image = figure([args[0], str(run.path), *args[1:]], tmp_path / f"{i}.png")
        assert (image.size, image.mode) == (size, mode), args
    assert figure(["curves", str(run.path)], tmp_path / "curves.png").size == (1200, 360)


def test_same_seed_gives_identical_bytes(run: TinyRun, tmp_path: Path) -> None:
    def png(command: str, seed: int, name: str) -> bytes:
        extra = ["--data-dir", str(run.data_dir), "--pool", "15"] if command == "analogies" else ["--mode", "sample"]
        figure([command, str(run.path), "--seed", str(seed), *extra], tmp_path / name)
        return (tmp_path / name).read_bytes()

    for command in ("sample", "analogies"):
        first = png(command, 3, "a.png")
        assert png(command, 3, "b.png") == first
        assert png(command, 4, "c.png") != first


def test_default_output_is_in_the_run_folder_also_for_a_checkpoint_file(run: TinyRun) -> None:
    assert cli.main(["sample", str(run.path / "checkpoints" / "last.pt"), "--n", "4"]) == 0
    assert Image.open(run.path / "figures" / "samples.png").size == grid_size(2, 2, run.tile_shape)
    assert cli.main(["reconstruct", str(run.path), "--data-dir", str(run.data_dir)]) == 0
    assert (run.path / "figures" / "reconstructions.json").exists()  # the per-image errors


def test_missing_test_data_is_a_one_line_error(run: TinyRun, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["analogies", str(run.path), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("svhn-vae: error:") and "\n" not in err
    assert cli.main(["curves", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
