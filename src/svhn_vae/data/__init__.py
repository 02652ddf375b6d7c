"""Datasets for the VAEs: SVHN, MNIST and Fashion-MNIST as uint8 NHWC arrays.

``load_split`` reads a split from disk (official files or torchvision's layout), ``download_split``
fetches it with resumable, md5-checked transfers; ``verify_split`` (raises), ``check_split``
(reports) and ``info`` say what is there.
"""

from svhn_vae.data.checksums import FileCheck
from svhn_vae.data.download import check_split, download_split, verify_split
from svhn_vae.data.loading import Split, info, load_split
from svhn_vae.data.paths import resolve_data_dir
from svhn_vae.data.registry import DATASETS, DatasetInfo, FileInfo, SplitInfo, get_dataset

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "FileCheck",
    "FileInfo",
    "Split",
    "SplitInfo",
    "check_split",
    "download_split",
    "get_dataset",
    "info",
    "load_split",
    "resolve_data_dir",
    "verify_split",
]
