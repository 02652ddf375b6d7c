"""Datasets for the VAEs: SVHN, MNIST, Fashion-MNIST, the generated synth-digits and own images
(``folder:PATH``, ``npz:PATH``: :mod:`svhn_vae.data.custom`) as uint8 NHWC arrays.

``load_split`` reads a split from disk (official files or torchvision's layout), ``download_split``
fetches it with resumable, md5-checked transfers; ``verify_split`` (raises), ``check_split``
(reports) and ``info`` say what is there.
"""

from svhn_vae.data import custom, synth_digits
from svhn_vae.data.checksums import FileCheck
from svhn_vae.data.download import NetworkUnavailable, check_split, download_split, verify_split
from svhn_vae.data.loading import Split, info, joined_split, load_configured, load_split, ready_dataset
from svhn_vae.data.paths import resolve_data_dir
from svhn_vae.data.registry import DATASETS, DatasetInfo, FileInfo, SplitInfo, get_dataset

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "FileCheck",
    "FileInfo",
    "NetworkUnavailable",
    "Split",
    "SplitInfo",
    "check_split",
    "custom",
    "download_split",
    "get_dataset",
    "info",
    "joined_split",
    "load_configured",
    "load_split",
    "ready_dataset",
    "resolve_data_dir",
    "synth_digits",
    "verify_split",
]
