"""Own images: ``folder:PATH`` (ImageFolder layout) and ``npz:PATH``, the cache, and bad input."""

import hashlib
import json
import logging
import re

import numpy as np
import pytest
from PIL import Image

from svhn_vae.cli import main
from svhn_vae.config import Config, DataConfig
from svhn_vae.data import custom, load_split
from svhn_vae.data.images import read_image
from svhn_vae.data.loading import image_shape
from svhn_vae.errors import UserError

CLASSES = ("cat", "ant", "bee")  # sorted: ant 0, bee 1, cat 2


def colour_images(n: int, seed: int, size=(28, 28), channels=3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *size, channels), dtype=np.uint8)


def write_pngs(folder, images, names=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
            folder / (names[i] if names else f"{i:03d}.png"))


def canonical(images, labels=None):
    """The order a reader must give: by the md5 of each image's pixels, then by label."""
    keys = [hashlib.md5(image.tobytes()).digest() + (b"" if labels is None else int(labels[i]).to_bytes(8, "big"))
            for i, image in enumerate(images)]
    order = sorted(range(len(images)), key=keys.__getitem__)
    return images[order], None if labels is None else labels[order]


def image_folder(root, *, per_class=(8, 3), seed=0):
    """root/train/<class>/*.png and root/test/<class>/*.png; returns {split: (images, labels)} in the
    order a reader must give them (the canonical one; labels by sorted class names)."""
    expected = {}
    for s, (split, n) in enumerate(zip(("train", "test"), per_class)):
        images, labels = [], []
        for label, name in enumerate(sorted(CLASSES)):
            batch = colour_images(n, seed + 10 * s + label)
            write_pngs(root / split / name, batch)
            images.append(batch)
            labels += [label] * n
        expected[split] = canonical(np.concatenate(images), np.array(labels))
    return expected


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """Conversions and feature classifiers go under tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SVHN_VAE_DATA", raising=False)
    return tmp_path / "xdg"


def files_of(folder):
    return sorted((p.relative_to(folder), p.read_bytes()) for p in folder.rglob("*") if p.is_file())


# --- reading ---------------------------------------------------------------------------------------


def test_image_folder_gives_its_pixels_and_sorted_class_labels(tmp_path, cache):
    expected = image_folder(tmp_path / "pics")
    for split, (images, labels) in expected.items():
        got = load_split(f"folder:{tmp_path / 'pics'}", split)
        assert got.images.dtype == np.uint8 and np.array_equal(got.images, images)
        assert np.array_equal(got.labels, labels) and got.labels.dtype == np.int64
    info = custom.describe(custom.OwnSource.from_name(f"folder:{tmp_path / 'pics'}"))
    assert info["classes"] == sorted(CLASSES) and info["image_shape"] == (28, 28, 3)


def test_npz_of_the_same_images_gives_the_same_arrays_byte_for_byte(tmp_path, cache):
    expected = image_folder(tmp_path / "pics")
    np.savez(tmp_path / "pics.npz", train_images=expected["train"][0], train_labels=expected["train"][1],
             test_images=expected["test"][0], test_labels=expected["test"][1])
    shuffle = np.random.default_rng(0).permutation(len(expected["train"][0]))  # any order: the same arrays
    np.savez(tmp_path / "plain.npz", images=expected["train"][0][shuffle], labels=expected["train"][1][shuffle],
             test_images=expected["test"][0], test_labels=expected["test"][1])
    for split in ("train", "test"):
        a = load_split(f"folder:{tmp_path / 'pics'}", split)
        assert len(np.unique(a.labels[:8])) > 1  # the classes mixed: the first N are a fair sample
        for npz in ("pics.npz", "plain.npz"):
            b = load_split(f"npz:{tmp_path / npz}", split)
            assert a.images.tobytes() == b.images.tobytes() and a.images.shape == b.images.shape
            assert a.labels.tobytes() == b.labels.tobytes()


def test_one_folder_is_split_by_test_fraction_as_its_npz_is(tmp_path, cache):
    images = colour_images(40, 1, channels=1)
    write_pngs(tmp_path / "flat", images)  # no class folders: unlabelled
    np.save(tmp_path / "flat.npy", images[..., 0])  # (N, H, W) grey
    folder = [load_split(f"folder:{tmp_path / 'flat'}", s, test_fraction=0.25) for s in ("train", "test")]
    arrays = [load_split(f"npz:{tmp_path / 'flat.npy'}", s, test_fraction=0.25) for s in ("train", "test")]
    assert [len(s) for s in folder] == [30, 10] and folder[0].labels is None
    for a, b in zip(folder, arrays):
        assert a.images.tobytes() == b.images.tobytes() and a.images.shape[-1] == 1
    together = np.concatenate([folder[0].images, folder[1].images])
    assert sorted(map(bytes, together)) == sorted(map(bytes, images))  # a partition of the images
    assert len(load_split(f"folder:{tmp_path / 'flat'}", "test")) == 4  # the default, 0.1


def test_resize_makes_mixed_sizes_one_with_the_stated_filter(tmp_path, cache):
    write_pngs(tmp_path / "mixed" / "a", colour_images(3, 0, size=(28, 28)))
    write_pngs(tmp_path / "mixed" / "b", colour_images(3, 1, size=(40, 30)), names=["x.png", "y.png", "z.png"])
    with pytest.raises(UserError, match=r"mixed/b/x.png: 40x30, .* give --resize 28x28"):
        load_split(f"folder:{tmp_path / 'mixed'}", "train", test_fraction=0.3)
    both = np.concatenate([load_split(f"folder:{tmp_path / 'mixed'}", s, resize="32x32", test_fraction=0.3).images
                           for s in ("train", "test")])
    assert both.shape == (6, 32, 32, 3)
    by_pillow = np.asarray(Image.open(tmp_path / "mixed" / "b" / "x.png").resize((32, 32), Image.Resampling.LANCZOS))
    assert sum(np.array_equal(image, by_pillow) for image in both) == 1


def test_sixteen_bit_palette_and_opaque_alpha_pngs_are_converted(tmp_path):
    grey16 = np.array([[0, 257, 65535, 128]], dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    assert read_image(tmp_path / "g16.png")[..., 0].tolist() == [[0, 1, 255, 0]]
    rgb = colour_images(1, 3, size=(4, 4))[0]
    Image.fromarray(rgb).quantize(colors=256).save(tmp_path / "pal.png")
    pal = read_image(tmp_path / "pal.png")
    assert pal.shape == (4, 4, 3) and np.array_equal(pal, np.asarray(Image.open(tmp_path / "pal.png").convert("RGB")))
    Image.fromarray(np.dstack([rgb, np.full((4, 4), 255, np.uint8)])).save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgb)


def test_jpeg_bmp_and_webp_files_are_read(tmp_path):
    rgb = colour_images(1, 4, size=(6, 5))[0]
    for name, options in (("a.bmp", {}), ("b.webp", {"lossless": True}), ("c.JPG", {"quality": 100, "subsampling": 0})):
        Image.fromarray(rgb).save(tmp_path / name, **options)
        pixels = read_image(tmp_path / name)
        assert pixels.shape == (6, 5, 3)
        if name != "c.JPG":  # lossless formats give the pixels back exactly, JPEG nearly
            assert np.array_equal(pixels, rgb)
        else:
            assert np.abs(pixels.astype(int) - rgb).mean() < 12


# --- the cache --------------------------------------------------------------------------------------


def test_converted_once_and_a_changed_file_is_noticed(tmp_path, cache, monkeypatch):
    expected = image_folder(tmp_path / "pics")
    name = f"folder:{tmp_path / 'pics'}"
    load_split(name, "train")
    decoded = []
    real = custom.decode_image
    monkeypatch.setattr(custom, "decode_image", lambda *a, **k: decoded.append(a[1]) or real(*a, **k))
    target = tmp_path / "pics" / "train" / "ant" / "000.png"
    target.touch()  # a new mtime, the same bytes: hashed again, not converted again
    assert np.array_equal(load_split(name, "train").images, expected["train"][0]) and decoded == []
    new = colour_images(1, 99)[0]
    Image.fromarray(new).save(target)
    got = load_split(name, "train").images
    assert len(decoded) == 33 and any(np.array_equal(image, new) for image in got)  # the whole source read again
    (tmp_path / "pics" / "train" / "bee" / "000.png").unlink()
    assert len(load_split(name, "train")) == 23


def test_data_commands_describe_and_verify_own_images(tmp_path, cache, capsys):
    image_folder(tmp_path / "pics")
    dataset = f"folder:{tmp_path / 'pics'}"
    assert main(["data", "info", "--dataset", dataset]) == 0
    out = capsys.readouterr().out
    assert "(28x28x3)" in out and "3 classes: ant, bee, cat" in out and re.search(r"train\s+24\s+true", out)
    assert main(["data", "verify", "--dataset", dataset]) == 0
    assert "33 source files and the cache" in capsys.readouterr().out
    assert main(["data", "download", "--dataset", dataset]) == 2
    assert "nothing to download" in capsys.readouterr().err
    assert main(["data", "info", "--dataset", "mnist", "--resize", "32x32"]) == 2
    assert "for own images" in capsys.readouterr().err


def test_config_makes_the_path_absolute_and_refuses_own_options_for_built_in_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert DataConfig(dataset="folder:pics").dataset == f"folder:{tmp_path / 'pics'}"
    assert Config.from_dict(Config(DataConfig(dataset="npz:a.npz")).to_dict()).data.dataset == f"npz:{tmp_path}/a.npz"
    for bad in ({"dataset": "mnist", "resize": "32x32"}, {"dataset": "folder:x", "resize": "32"},
                {"dataset": "folder:x", "test_fraction": 1.0}, {"dataset": "folder:"}):
        with pytest.raises(UserError):
            DataConfig(**bad)


# --- bad input: one line naming the file, nothing of the user's deleted --------------------------


def bad_folder(root, case):
    """A folder of good PNGs with one fault; returns the file (or folder) the error must name."""
    write_pngs(root / "a", colour_images(4, 0))
    write_pngs(root / "b", colour_images(4, 1))
    odd = root / "b" / "003.png"
    if case == "corrupt":
        odd.write_bytes(odd.read_bytes()[:60])  # truncated
    elif case == "not-an-image":
        odd = root / "b" / "notes.txt"
        odd.write_text("hello")
    elif case == "image-extension-but-text":
        odd.write_text("not a png")
    elif case == "grey-among-colour":
        Image.fromarray(colour_images(1, 5, channels=1)[0, ..., 0]).save(odd)
    elif case == "transparent":
        Image.fromarray(np.dstack([colour_images(1, 6)[0], np.zeros((28, 28), np.uint8)])).save(odd)
    elif case == "empty":
        for path in (root / "b").iterdir():
            path.unlink()
        odd = root / "b"
    elif case == "file-beside-classes":
        odd = root / "stray.png"
        Image.fromarray(colour_images(1, 7)[0]).save(odd)
    return odd


@pytest.mark.parametrize("case, message", [
    ("corrupt", "not a readable image"), ("not-an-image", "not an image file"),
    ("image-extension-but-text", "not a readable image"), ("grey-among-colour", "mixed grey and colour"),
    ("transparent", "transparent pixels"), ("empty", "no images found"),
    ("file-beside-classes", "beside the class folders")])
def test_bad_folders_give_one_line_naming_the_file(tmp_path, cache, capsys, case, message):
    root = tmp_path / "pics"
    odd = bad_folder(root, case)
    before = files_of(root)
    assert main(["data", "info", "--dataset", f"folder:{root}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and str(odd) in err
    assert files_of(root) == before


@pytest.mark.parametrize("arrays, message", [
    ({"images": np.zeros((4, 8, 8), np.uint8), "labels": np.array([0, 1, -1, 0])}, "labels out of range"),
    ({"images": np.zeros((4, 8, 8), np.uint8), "labels": np.array([0, 1, 5, 0]), "class_names": np.array(["a", "b"])},
     "labels out of range"),
    ({"images": np.zeros((4, 8, 8), np.float32)}, "not uint8"),
    ({"images": np.zeros((4, 8, 8, 2), np.uint8)}, "need (N, H, W)"),
    ({"images": np.zeros((4, 8, 8), np.uint8), "labels": np.array([0.5, 1, 1, 0])}, "must be integers"),
    ({"pixels": np.zeros((4, 8, 8), np.uint8)}, "no 'images' or 'train_images'"),
])
def test_bad_arrays_give_one_line_naming_the_file(tmp_path, cache, capsys, arrays, message):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    before = path.read_bytes()
    assert main(["data", "info", "--dataset", f"npz:{path}", "--test-fraction", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and str(path) in err
    assert path.read_bytes() == before


def test_a_corrupt_npz_file_and_a_missing_path(tmp_path, cache, capsys):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 broken")
    assert main(["data", "info", "--dataset", f"npz:{tmp_path / 'bad.npz'}"]) == 2
    assert "not a readable .npz" in capsys.readouterr().err
    assert main(["data", "info", "--dataset", f"folder:{tmp_path / 'nowhere'}"]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- the whole tool on own images ----------------------------------------------------------------


def test_own_colour_folder_trains_evaluates_reports_and_exports(tmp_path, cache, capsys):
    """The same commands as for a built-in dataset: likelihood, baselines, probe, sample quality."""
    image_folder(tmp_path / "pics", per_class=(40, 10))
    run = tmp_path / "run"
    flags = ["--dataset", f"folder:{tmp_path / 'pics'}", "--components", "8", "--latent-dim", "3",
             "--encoder-shared", "16", "--decoder", "16", "--batch-size", "32", "--device", "cpu", "--no-progress"]
    assert main(["train", "--preset", "fast", *flags, "--epochs", "1", "--run-dir", str(run)]) == 0
    assert main(["train", "--preset", "fast", *flags, "--epochs", "2", "--run-dir", str(run), "--resume"]) == 0
    assert main(["evaluate", str(run), "--importance-samples", "4", "--probe-draws", "1", "--quality-samples", "64",
                 "--no-progress"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert result["n"] == 30 and result["bpd_elbo"] >= result["bpd_iwae"] > 0
    assert result["baselines"]["best_bpd"] > 0 and "skipped" not in result
    assert result["probe"]["results"]["all"]["labels"] == 120
    assert len(result["quality"]["label_histogram"]) == 3 and result["quality"]["fid_classifier"] >= 0
    assert main(["report", str(run)]) == 0 and (run / "report.html").stat().st_size > 10_000
    assert main(["export", str(run), str(tmp_path / "card")]) == 0
    record = json.loads((tmp_path / "card" / "card.json").read_text())["dataset"]
    assert record["name"] == f"folder:{tmp_path / 'pics'}" and len(record["source_md5"]) == 32


def test_unlabelled_images_train_and_say_why_probe_and_quality_are_skipped(tmp_path, cache, capsys, caplog):
    write_pngs(tmp_path / "flat", colour_images(60, 2))
    run = tmp_path / "run"
    flags = ["--dataset", f"folder:{tmp_path / 'flat'}", "--test-fraction", "0.2", "--components", "8",
             "--latent-dim", "3", "--encoder-shared", "16", "--decoder", "16", "--epochs", "1", "--device", "cpu",
             "--no-progress"]
    assert main(["train", "--preset", "fast", *flags, "--run-dir", str(run)]) == 0
    with caplog.at_level(logging.WARNING):
        assert main(["evaluate", str(run), "--importance-samples", "2", "--no-progress"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert set(result["skipped"]) == {"probe", "quality"} and "has no labels" in result["skipped"]["probe"]
    assert "probe and quality skipped" in caplog.text and "probe" not in {k for k in result if k != "skipped"}
    assert main(["report", str(run)]) == 0
    assert image_shape(DataConfig(dataset=f"folder:{tmp_path / 'flat'}", test_fraction=0.2))[2] == 3  # m2: Gaussian
    assert main(["train", "--preset", "m2", *flags, "--run-dir", str(tmp_path / "m2")]) == 2
    assert "has no labels" in capsys.readouterr().err
