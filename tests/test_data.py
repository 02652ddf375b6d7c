"""Tests of svhn_vae.data: registry, folder layouts, readers, the .npy cache and verification.

Everything runs on tiny files written here in the official formats; the real MNIST in
/work/shared/data/mnist is used when present.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from svhn_vae.data import (
    DATASETS, check_split, get_dataset, info, load_split, resolve_data_dir, verify_split,
)
from svhn_vae.data import mat_cache
from svhn_vae.data.fakes import with_md5s, write_fake_split, write_idx, write_svhn_mat
from svhn_vae.errors import UserError

REAL_MNIST = Path("/work/shared/data/mnist")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the user's env vars and cache out of every test."""
    monkeypatch.delenv("SVHN_VAE_DATA", raising=False)
    monkeypatch.delenv("SVHN_VAE_MIRROR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


# ---- registry -----------------------------------------------------------------------------


def test_registry_describes_the_four_datasets() -> None:
    assert set(DATASETS) == {"svhn", "mnist", "fashion-mnist", "synth-digits"}
    synth = get_dataset("synth-digits")
    assert synth.file_format == "generated" and synth.image_shape == (32, 32, 3)
    assert {name: s.num_examples for name, s in synth.splits.items()} == {"train": 73_257, "test": 26_032, "extra": 531_131}
    svhn = get_dataset("svhn")
    assert svhn.image_shape == (32, 32, 3)
    assert {name: s.num_examples for name, s in svhn.splits.items()} == {"train": 73_257, "test": 26_032, "extra": 531_131}
    assert svhn.split("extra").images.md5 == "a93ce644f1a588dc4d68dda5feec44a7"
    assert get_dataset("mnist").split("test").labels.md5 == "27ae3e4e09519cfbb04c329615203637"
    assert get_dataset("fashion-mnist").split("train").images.gz_md5 == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"


def test_unknown_dataset_and_split_list_the_valid_names() -> None:
    with pytest.raises(UserError, match="unknown dataset 'cifar'.*fashion-mnist, mnist, svhn"):
        get_dataset("cifar")
    with pytest.raises(UserError, match="unknown split 'extra'.*train, test"):
        load_split("mnist", "extra")


# ---- where data lives ---------------------------------------------------------------------


def test_data_dir_is_explicit_then_env_then_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_data_dir("svhn", None) == tmp_path / "xdg-cache" / "svhn-vae" / "svhn"
    monkeypatch.setenv("SVHN_VAE_DATA", str(tmp_path / "env"))
    assert resolve_data_dir("svhn", None) == tmp_path / "env" / "svhn"
    assert resolve_data_dir("svhn", tmp_path / "given") == tmp_path / "given" / "svhn"


@pytest.mark.parametrize(
    ("dataset", "subdir"),
    [
        ("svhn", "."),  # torchvision's SVHN keeps the .mat files in root itself
        ("svhn", "svhn"),
        ("mnist", "MNIST/raw"),
        ("mnist", "mnist"),
        ("fashion-mnist", "FashionMNIST/raw"),
    ],
)
def test_files_are_found_in_every_supported_layout(tmp_path: Path, dataset: str, subdir: str) -> None:
    root = tmp_path / "data"
    images, labels = write_fake_split(dataset, "test", root / subdir, num_examples=3)
    split = load_split(dataset, "test", data_dir=root)
    np.testing.assert_array_equal(split.images, images)
    np.testing.assert_array_equal(split.labels, labels)
    assert resolve_data_dir(dataset, root) == root / subdir


def test_missing_file_says_which_where_and_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        load_split("mnist", "train", data_dir=tmp_path)
    message = str(caught.value)
    assert "train-images-idx3-ubyte" in message and str(tmp_path) in message
    assert "svhn-vae data download --dataset mnist" in message and "--data-dir" in message
    assert "\n" not in message


# ---- SVHN .mat files and their cache ------------------------------------------------------


@pytest.mark.parametrize("y_dtype", [np.uint8, np.float64])
def test_svhn_mat_gives_nhwc_images_and_maps_label_10_to_0(tmp_path: Path, y_dtype: type) -> None:
    generator = np.random.default_rng(1)
    images = generator.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    write_svhn_mat(tmp_path / "test_32x32.mat", images, np.array([0, 1, 9, 0]), y_dtype=y_dtype)
    split = load_split("svhn", "test", data_dir=tmp_path)
    assert (split.dataset, split.split, len(split)) == ("svhn", "test", 4)
    assert split.images.dtype == np.uint8 and split.labels.dtype == np.int64
    np.testing.assert_array_equal(split.labels, [0, 1, 9, 0])
    np.testing.assert_array_equal(split.images, images)  # pixel (n, h, w, c) survives the round trip


def test_svhn_raw_x_layout_is_hwcn(tmp_path: Path) -> None:
    """Built by hand, independent of write_svhn_mat: X[h, w, c, n] is pixel (h, w, c) of image n."""
    from scipy.io import savemat

    x = np.zeros((32, 32, 3, 2), np.uint8)
    x[5, 7, 2, 1] = 200
    savemat(tmp_path / "train_32x32.mat", {"X": x, "y": np.array([[10.0], [3.0]])})
    split = load_split("svhn", "train", data_dir=tmp_path)
    assert split.images.shape == (2, 32, 32, 3) and split.images[1, 5, 7, 2] == 200
    assert split.images.sum() == 200
    np.testing.assert_array_equal(split.labels, [0, 3])


def test_svhn_is_cached_as_npy_and_reloaded_as_memmap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, _ = write_fake_split("svhn", "train", tmp_path, num_examples=5)
    load_split("svhn", "train", data_dir=tmp_path)
    for suffix in ("images.npy", "labels.npy", "cache.json"):
        assert (tmp_path / f"train_32x32.{suffix}").is_file()
    monkeypatch.setattr(mat_cache, "read_svhn_mat", _fail_if_called)
    again = load_split("svhn", "train", data_dir=tmp_path)
    assert isinstance(again.images, np.memmap) and not again.images.flags.writeable
    np.testing.assert_array_equal(again.images, images)
    assert not list(tmp_path.glob("*.tmp"))


def test_stale_cache_is_regenerated(tmp_path: Path) -> None:
    write_fake_split("svhn", "train", tmp_path, num_examples=5, seed=0)
    load_split("svhn", "train", data_dir=tmp_path)
    images, _ = write_fake_split("svhn", "train", tmp_path, num_examples=7, seed=1)
    source = tmp_path / "train_32x32.mat"
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    split = load_split("svhn", "train", data_dir=tmp_path)
    assert len(split) == 7
    np.testing.assert_array_equal(split.images, images)


def test_cache_falls_back_to_user_cache_when_source_folder_is_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source_dir = tmp_path / "read-only"
    images, _ = write_fake_split("svhn", "test", source_dir, num_examples=3)
    real_write = mat_cache.write_file

    def refuse_source_dir(final: Path, write: object) -> None:
        if final.parent == source_dir:
            raise PermissionError(f"read-only: {final}")
        real_write(final, write)  # type: ignore[arg-type]

    monkeypatch.setattr(mat_cache, "write_file", refuse_source_dir)
    split = load_split("svhn", "test", data_dir=source_dir)
    assert isinstance(split.images, np.memmap)
    np.testing.assert_array_equal(split.images, images)
    assert list((tmp_path / "xdg-cache" / "svhn-vae" / "converted").glob("*/test_32x32.images.npy"))
    assert not list(source_dir.glob("*.npy"))


def test_corrupt_mat_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, but then garbage")
    with pytest.raises(UserError, match="test_32x32.mat"):
        load_split("svhn", "test", data_dir=tmp_path)


# ---- IDX files ----------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_are_read_raw_or_gzipped(tmp_path: Path, gz: bool) -> None:
    images, labels = write_fake_split("fashion-mnist", "train", tmp_path, num_examples=12, gz=gz)
    split = load_split("fashion-mnist", "train", data_dir=tmp_path)
    assert split.images.shape == (12, 28, 28, 1) and split.images.dtype == np.uint8
    assert split.labels.dtype == np.int64
    np.testing.assert_array_equal(split.images, images)
    np.testing.assert_array_equal(split.labels, labels)


def _truncated(data: bytes) -> bytes:
    return data[:-10]


def _bad_magic(data: bytes) -> bytes:
    return b"\x00\x00\x0d" + data[3:]  # type code 0x0d is float, not uint8


@pytest.mark.parametrize("damage", [_truncated, _bad_magic])
@pytest.mark.parametrize("gz", [True, False])
def test_corrupt_idx_gives_user_error_naming_the_file(tmp_path: Path, damage: object, gz: bool) -> None:
    write_fake_split("mnist", "test", tmp_path, num_examples=3, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    data = damage(gzip.decompress(path.read_bytes()))  # type: ignore[operator]
    path.unlink()
    target = path if gz else path.with_suffix("")
    target.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(UserError, match=f"{target.name}.*corrupt"):
        load_split("mnist", "test", data_dir=tmp_path)


def test_truncated_gzip_gives_user_error_naming_the_file(tmp_path: Path) -> None:
    write_fake_split("mnist", "test", tmp_path, num_examples=3)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz"):
        load_split("mnist", "test", data_dir=tmp_path)


def test_idx_images_and_labels_must_agree(tmp_path: Path) -> None:
    write_fake_split("mnist", "test", tmp_path, num_examples=3)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8), gz=True)
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz"):
        load_split("mnist", "test", data_dir=tmp_path)


# ---- verification and info ----------------------------------------------------------------


def test_verify_compares_with_the_registry_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_split("svhn", "test", tmp_path, num_examples=3)
    (check,) = check_split("svhn", "test", data_dir=tmp_path)
    assert check.status == "mismatch" and check.expected_md5 == "eb5a983be6a315427106f1b164d9cef3"
    with pytest.raises(UserError, match="test_32x32.mat: md5 .*, expected eb5a983be6a3.*; delete .* and re-run"):
        verify_split("svhn", "test", data_dir=tmp_path)
    monkeypatch.setitem(DATASETS, "svhn", with_md5s("svhn", "test", tmp_path))
    (check,) = verify_split("svhn", "test", data_dir=tmp_path)
    assert check.ok and check.path == tmp_path / "test_32x32.mat"


def test_verify_reports_missing_files(tmp_path: Path) -> None:
    assert [c.status for c in check_split("svhn", "train", data_dir=tmp_path)] == ["missing"]
    with pytest.raises(UserError, match="train_32x32.mat not found"):
        verify_split("svhn", "train", data_dir=tmp_path)


def test_fashion_mnist_raw_files_are_unverified_and_gz_files_use_the_gz_md5(tmp_path: Path) -> None:
    write_fake_split("fashion-mnist", "test", tmp_path / "raw", num_examples=3, gz=False)
    checks = verify_split("fashion-mnist", "test", data_dir=tmp_path / "raw")  # usable: no raise
    assert [c.status for c in checks] == ["unverified"] * 2
    write_fake_split("fashion-mnist", "test", tmp_path / "gz", num_examples=3, gz=True)
    checks = check_split("fashion-mnist", "test", data_dir=tmp_path / "gz")
    assert [c.expected_md5 for c in checks] == ["bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"]
    assert [c.status for c in checks] == ["mismatch"] * 2


def test_info_reports_counts_shape_and_file_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_split("mnist", "test", tmp_path, num_examples=3)
    monkeypatch.setitem(DATASETS, "mnist", with_md5s("mnist", "test", tmp_path))
    report = info("mnist", data_dir=tmp_path)
    assert report["image_shape"] == (28, 28, 1) and report["data_dir"] == str(tmp_path)
    test, train = report["splits"]["test"], report["splits"]["train"]
    assert test["num_examples"] == 10_000 and test["present"] and test["verified"]
    assert not train["present"] and [f["status"] for f in train["files"]] == ["missing", "missing"]


# ---- the real MNIST -----------------------------------------------------------------------

needs_mnist = pytest.mark.skipif(not REAL_MNIST.is_dir(), reason="real MNIST not at /work/shared/data/mnist")


@needs_mnist
def test_real_mnist_loads_and_verifies() -> None:
    train, test = (load_split("mnist", s, data_dir=REAL_MNIST) for s in ("train", "test"))
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.images.shape == (60_000, 28, 28, 1) and set(np.unique(test.labels)) == set(range(10))
    for split in ("train", "test"):
        assert [check.status for check in verify_split("mnist", split, data_dir=REAL_MNIST)] == ["ok", "ok"]


@needs_mnist
def test_corrupted_copy_of_real_mnist_fails_verification_naming_the_file(tmp_path: Path) -> None:
    for path in REAL_MNIST.glob("t10k-*.gz"):
        shutil.copy(path, tmp_path / path.name)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(labels.read_bytes()))
    data[100] = (data[100] + 1) % 10  # one wrong label: still a valid IDX file
    labels.write_bytes(gzip.compress(bytes(data)))
    images_check, labels_check = check_split("mnist", "test", data_dir=tmp_path)
    assert images_check.ok and labels_check.status == "mismatch"
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz: md5 .*, expected 27ae3e4e09519cfbb04c329615203637"):
        verify_split("mnist", "test", data_dir=tmp_path)


def _fail_if_called(*args: object) -> None:
    raise AssertionError("the .mat file was read again instead of the cache")
