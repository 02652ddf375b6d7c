"""synth-digits: deterministic, SVHN-shaped, balanced, cached and verified, usable end to end offline."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from svhn_vae.cli import main
from svhn_vae.data import load_split, ready_dataset, synth_digits
from svhn_vae.data.jpeg import jpeg, jpeg_coefficients, quantisation_tables
from svhn_vae.errors import UserError


def test_same_seed_same_bytes_other_seed_or_split_differs():
    a, la = synth_digits.generate(300, seed=3, split="train", workers=1)
    b, lb = synth_digits.generate(300, seed=3, split="train", workers=1)
    assert a.dtype == np.uint8 and a.shape == (300, 32, 32, 3) and la.dtype == np.int64
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, synth_digits.generate(300, seed=4, split="train", workers=1)[0])
    assert not np.array_equal(a, synth_digits.generate(300, seed=3, split="test", workers=1)[0])


def test_parallel_generation_gives_the_same_bytes():
    serial = synth_digits.generate(2 * synth_digits.CHUNK + 7, seed=1, split="test", workers=1)
    parallel = synth_digits.generate(2 * synth_digits.CHUNK + 7, seed=1, split="test", workers=2)
    assert all(np.array_equal(s, p) for s, p in zip(serial, parallel))


def test_labels_are_uniform_within_two_points():
    _, labels = synth_digits.generate(6000, seed=0, split="train", workers=1)
    share = np.bincount(labels, minlength=10) / len(labels)
    assert set(np.unique(labels)) == set(range(10)) and np.abs(share - 0.1).max() < 0.02


def test_images_have_contrast_and_colour():
    images, _ = synth_digits.generate(500, seed=0, split="train", workers=1)
    x = images.astype(np.float32)
    assert x.std(axis=(1, 2, 3)).mean() > 20  # a digit on a background, not a flat patch
    assert np.abs(x[..., 0] - x[..., 1]).mean() > 10  # colour, not grey


def test_jpeg_steps_match_pils_encoder():
    images, _ = synth_digits.generate(64, seed=2, split="train", workers=1)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    for quality in (40, 90):
        ours = (jpeg(x, torch.full((64,), float(quality))).clamp(0, 1) * 255).round()
        ours = ours.permute(0, 2, 3, 1).numpy()
        pil = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
            pil.append(np.asarray(Image.open(buffer), np.float32))
        compression = np.abs(np.stack(pil) - images).mean()
        assert np.abs(ours - np.stack(pil)).mean() < 0.5 * compression  # the same losses, not just any blur


def test_the_coefficients_of_a_flat_grey_image_are_its_luma_dc_alone():
    """Each 8x8 luma block's DC is 8 times its level shifted by 128 over the step; grey has no chroma."""
    value, quality = torch.tensor([0.3, 0.9]), torch.tensor([50.0, 90.0])
    luma, chroma = jpeg_coefficients(value.view(2, 1, 1, 1).expand(2, 3, 32, 32), quality)
    steps = quantisation_tables(quality)[0][:, 0, 0]  # 16 and 3
    dc = torch.round(8 * (255 * value - 128) / steps)  # -25.75 -> -26, 270.67 -> 271
    assert torch.equal(luma[..., 0], dc[:, None].expand(2, 16))
    assert not luma[..., 1:].any() and not chroma.any()
    stored, _ = jpeg_coefficients(value.view(2, 1, 1, 1).expand(2, 3, 32, 32), quality, rounded=False)
    assert torch.allclose(stored[..., 0], (8 * (255 * value - 128) / steps)[:, None].expand(2, 16), atol=1e-3)


def test_blur_keeps_a_flat_image_flat():
    flat = torch.full((4, 3, 32, 32), 0.4)
    assert torch.allclose(synth_digits._blur(torch.Generator().manual_seed(0), flat), flat, atol=1e-6)


@pytest.fixture
def generated(tmp_path):
    """A data folder with small generated train (400) and test (200) splits."""
    for split, n in (("train", 400), ("test", 200)):
        assert main(["data", "generate", "--dataset", "synth-digits", "--split", split, "--num-examples", str(n),
                     "--seed", "5", "--workers", "1", "--data-dir", str(tmp_path)]) == 0
    return tmp_path


def test_generate_info_verify_and_load(generated, capsys):
    assert main(["data", "info", "--dataset", "synth-digits", "--data-dir", str(generated)]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "true     true" in out
    assert main(["data", "verify", "--dataset", "synth-digits", "--split", "train", "--data-dir", str(generated)]) == 0
    split = load_split("synth-digits", "train", data_dir=generated)
    assert split.images.shape == (400, 32, 32, 3) and len(split) == 400
    expected, labels = synth_digits.generate(400, seed=5, split="train", workers=1)
    assert np.array_equal(split.images, expected) and np.array_equal(split.labels, labels)


def test_verify_catches_changed_bytes_and_a_wrong_seed(generated, capsys):
    folder = generated / "synth-digits"
    record = json.loads((folder / "test.json").read_text())
    (folder / "test.json").write_text(json.dumps({**record, "seed": 6, "images_md5": record["images_md5"]}))
    assert main(["data", "verify", "--dataset", "synth-digits", "--split", "test", "--data-dir", str(generated)]) == 2
    assert "not what seed 6 generates" in capsys.readouterr().err
    images = np.load(folder / "train_images.npy", mmap_mode="r+")
    images[0, 0, 0, 0] ^= 1
    images.flush()
    del images
    assert main(["data", "verify", "--dataset", "synth-digits", "--split", "train", "--data-dir", str(generated)]) == 2
    err = capsys.readouterr().err
    assert "train_images.npy is mismatch" in err and len(err.strip().splitlines()) == 1


def test_an_interrupted_generation_leaves_no_finished_split(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth_digits, "generate", fail)
    with pytest.raises(KeyboardInterrupt):
        synth_digits.generate_split(tmp_path, "test", num_examples=10)
    assert synth_digits.read_record(tmp_path, "test") is None and not list(tmp_path.glob("*.npy"))


def test_ready_falls_back_when_the_server_cannot_be_reached(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SVHN_VAE_MIRROR", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setattr(synth_digits, "generate_split", _small_generate_split(synth_digits.generate_split))
    assert ready_dataset("svhn", fallback="synth-digits", data_dir=tmp_path) == "synth-digits"
    assert "svhn could not be downloaded" in caplog.text and "using synth-digits instead" in caplog.text
    assert load_split("synth-digits", "test", data_dir=tmp_path).images.shape == (50, 32, 32, 3)
    with pytest.raises(UserError, match="could not download"):
        ready_dataset("svhn", data_dir=tmp_path)  # no fallback: the error as it is


def _small_generate_split(real):
    def generate_split(folder, split, *, num_examples=None, seed=0, workers=None):
        return real(folder, split, num_examples=50, seed=seed, workers=1)
    return generate_split


def test_training_a_few_steps_on_generated_digits(generated, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--dataset", "synth-digits", "--data-dir", str(generated), "--components", "20", "--latent-dim",
            "4", "--encoder-shared", "32", "--decoder", "32", "--epochs", "2", "--batch-size", "100",
            "--sample-every", "2", "--warmup-steps", "0", "--no-progress", "--run-dir", str(run)]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["epochs"] == 2 and np.isfinite(result["loss"])
    assert (run / "samples" / "epoch_0002.png").exists()
    assert main(["evaluate", str(run), "--importance-samples", "2", "--no-probe", "--no-quality", "--no-progress"]) == 0
    assert json.loads((run / "eval.json").read_text())["dataset"] == "synth-digits"
