"""What each dataset is: image shape, splits, file names, download URLs and checksums.

The registry is data, not code paths: loaders and downloaders look a dataset up here and never
branch on its name.

Checksums are md5 hex digests. ``FileInfo.md5`` is the digest of the *decompressed* content, so
a gzip file of any encoding verifies as long as what it holds is the official file. Where only the
digest of the official ``.gz`` bytes is published (Fashion-MNIST), it is kept in ``gz_md5`` and a
``.gz`` file is checked against it; a raw (decompressed) Fashion-MNIST file has no published digest
and verifies as "unverified" rather than "ok".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from svhn_vae.errors import UserError

FileFormat = Literal["mat", "idx", "generated"]


@dataclass(frozen=True)
class FileInfo:
    """One file on disk that a split is read from."""

    name: str
    """Canonical (uncompressed) file name, e.g. ``train_32x32.mat`` or ``t10k-images-idx3-ubyte``."""
    url: str
    """Official download URL; its last path component is the name the download is saved under."""
    md5: str | None
    """md5 of the decompressed content, or None when no official digest is known."""
    gz_md5: str | None = None
    """md5 of the official ``.gz`` bytes; only used when ``md5`` is unknown."""
    may_be_gzipped: bool = False
    """Whether ``<name>.gz`` is accepted on disk as well as ``<name>``."""

    @property
    def download_name(self) -> str:
        """File name a download is stored under (the URL's last component)."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def accepted_names(self) -> tuple[str, ...]:
        """Names this file may have on disk, preferred (fastest to read) first."""
        return (self.name, f"{self.name}.gz") if self.may_be_gzipped else (self.name,)


@dataclass(frozen=True)
class SplitInfo:
    """One split (train, test, ...) of a dataset."""

    name: str
    num_examples: int
    """Number of examples in the official files."""
    images: FileInfo
    """File holding the images (for SVHN, also the labels)."""
    labels: FileInfo | None = None
    """Separate label file (IDX datasets), or None when ``images`` holds both."""

    @property
    def files(self) -> tuple[FileInfo, ...]:
        """All files of the split, images first."""
        return (self.images,) if self.labels is None else (self.images, self.labels)


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: its image shape, file format and splits."""

    name: str
    image_shape: tuple[int, int, int]
    """(H, W, C) of one image, uint8 pixels."""
    file_format: FileFormat
    """``mat`` (SVHN MATLAB files), ``idx`` (MNIST-style IDX files, raw or gzipped) or ``generated``
    (made on the machine and cached as ``.npy``: :mod:`svhn_vae.data.synth_digits`)."""
    splits: dict[str, SplitInfo]
    """Splits by name, in the registry's order (iterating gives the names, like ``DATASETS``)."""
    torchvision_subdir: str
    """Sub-folder where torchvision keeps the raw files under its ``root`` (e.g. ``MNIST/raw``)."""

    def split(self, name: str) -> SplitInfo:
        """Return the split called ``name``; UserError listing valid names if there is none."""
        if name in self.splits:
            return self.splits[name]
        valid = ", ".join(self.splits)
        raise UserError(f"unknown split {name!r} for dataset {self.name!r}; choose one of: {valid}")


def _by_name(*splits: SplitInfo) -> dict[str, SplitInfo]:
    """Splits keyed by their names."""
    return {split.name: split for split in splits}


def _svhn_split(name: str, num_examples: int, md5: str) -> SplitInfo:
    """One SVHN split: a single ``<name>_32x32.mat`` holding images and labels."""
    file_name = f"{name}_32x32.mat"
    url = f"http://ufldl.stanford.edu/housenumbers/{file_name}"
    return SplitInfo(name, num_examples, FileInfo(file_name, url, md5))


def _idx_split(
    name: str, num_examples: int, *, prefix: str, base_url: str, md5s: tuple[str | None, ...]
) -> SplitInfo:
    """One IDX split: ``<prefix>-images-idx3-ubyte`` and ``<prefix>-labels-idx1-ubyte``.

    ``md5s`` is (images md5, labels md5, images .gz md5, labels .gz md5); unknown ones are None.
    """
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    images, labels = (
        FileInfo(stem, f"{base_url}{stem}.gz", md5s[i], md5s[i + 2], may_be_gzipped=True)
        for i, stem in enumerate(stems)
    )
    return SplitInfo(name, num_examples, images, labels)


def _generated_split(name: str, num_examples: int) -> SplitInfo:
    """One split made on the machine: ``<name>_images.npy`` and ``<name>_labels.npy``, no URL, no
    published digest (the generation record holds the md5s)."""
    return SplitInfo(name, num_examples, FileInfo(f"{name}_images.npy", "", None),
                     FileInfo(f"{name}_labels.npy", "", None))


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

DATASETS: dict[str, DatasetInfo] = {
    "svhn": DatasetInfo(
        name="svhn",
        image_shape=(32, 32, 3),
        file_format="mat",
        splits=_by_name(
            _svhn_split("train", 73_257, "e26dedcc434d2e4c54c9b2d4a06d8373"),
            _svhn_split("test", 26_032, "eb5a983be6a315427106f1b164d9cef3"),
            _svhn_split("extra", 531_131, "a93ce644f1a588dc4d68dda5feec44a7"),
        ),
        torchvision_subdir="svhn",
    ),
    "mnist": DatasetInfo(
        name="mnist",
        image_shape=(28, 28, 1),
        file_format="idx",
        splits=_by_name(
            _idx_split("train", 60_000, prefix="train", base_url=_MNIST_URL, md5s=(
                "6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624", None, None,
            )),
            _idx_split("test", 10_000, prefix="t10k", base_url=_MNIST_URL, md5s=(
                "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637", None, None,
            )),
        ),
        torchvision_subdir="MNIST/raw",
    ),
    # Only the .gz digests are published (fashion-mnist README, torchvision's FashionMNIST).
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        image_shape=(28, 28, 1),
        file_format="idx",
        splits=_by_name(
            _idx_split("train", 60_000, prefix="train", base_url=_FASHION_URL, md5s=(
                None, None, "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
            )),
            _idx_split("test", 10_000, prefix="t10k", base_url=_FASHION_URL, md5s=(
                None, None, "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310",
            )),
        ),
        torchvision_subdir="FashionMNIST/raw",
    ),
    # Generated, SVHN-like colour digits in SVHN's split sizes (see svhn_vae.data.synth_digits).
    "synth-digits": DatasetInfo(
        name="synth-digits",
        image_shape=(32, 32, 3),
        file_format="generated",
        splits=_by_name(
            _generated_split("train", 73_257), _generated_split("test", 26_032), _generated_split("extra", 531_131),
        ),
        torchvision_subdir="synth-digits",
    ),
}


def get_dataset(name: str) -> DatasetInfo:
    """Return the registry entry for ``name``; UserError listing valid names if unknown."""
    try:
        return DATASETS[name]
    except KeyError:
        valid = ", ".join(sorted(DATASETS))
        raise UserError(f"unknown dataset {name!r}; choose one of: {valid}, or own images as folder:PATH "
                        "or npz:PATH") from None


def download_command(dataset: str) -> str:
    """The command line that fetches ``dataset`` (quoted at the end of error messages)."""
    return f"`svhn-vae data download --dataset {dataset}`"
