"""Where data lives: the data root, the folders searched inside it, and the files found there.

The data root is, in order: an explicit ``data_dir``, the ``SVHN_VAE_DATA`` environment variable,
or the per-user cache ``$XDG_CACHE_HOME/svhn-vae`` (default ``~/.cache/svhn-vae``). Inside a root
a dataset's files are looked for in ``<root>/``, ``<root>/<dataset>/`` and torchvision's layout
(``<root>/MNIST/raw``, ``<root>/FashionMNIST/raw``, ``<root>/svhn``), so a folder written by
torchvision, or one holding the files directly, works as it is. Downloads go to
``<root>/<dataset>/`` unless the dataset already has files in one of the searched folders.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from svhn_vae.data.registry import DatasetInfo, FileInfo, SplitInfo, download_command, get_dataset
from svhn_vae.errors import UserError

DATA_ENV_VAR = "SVHN_VAE_DATA"


def user_cache_dir() -> Path:
    """Per-user cache folder: ``$XDG_CACHE_HOME/svhn-vae`` or ``~/.cache/svhn-vae``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "svhn-vae"


def safe_file_name(text: str) -> str:
    """``text`` as part of a file name: runs of anything but letters, digits, '.', '_' and '-' become
    one '-', at most its last 40 characters ('folder:/a/b' -> 'folder-a-b')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[-40:] or "data"


def data_root(data_dir: str | Path | None) -> Path:
    """The data root: ``data_dir`` if given, else ``$SVHN_VAE_DATA``, else the user cache."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_ENV_VAR)
    return Path(from_env).expanduser() if from_env else user_cache_dir()


def search_dirs(info: DatasetInfo, root: Path) -> list[Path]:
    """Folders searched for ``info``'s files, in order, without repeats."""
    candidates = [root, root / info.name, root / info.torchvision_subdir]
    return list(dict.fromkeys(candidates))


def find_file(file: FileInfo, dirs: list[Path]) -> Path | None:
    """First existing file among ``dirs`` x ``file.accepted_names``, or None."""
    for folder in dirs:
        for name in file.accepted_names:
            if (folder / name).is_file():
                return folder / name
    return None


def resolve_data_dir(dataset: str, data_dir: str | Path | None) -> Path:
    """Folder holding ``dataset``'s files: the first searched folder with any of them in it.

    When none is found this is ``<root>/<dataset>``, where a download would put them.
    """
    info = get_dataset(dataset)
    dirs = search_dirs(info, data_root(data_dir))
    for folder in dirs:
        if any(find_file(file, [folder]) for split in info.splits.values() for file in split.files):
            return folder
    return data_root(data_dir) / info.name


def locate_split(info: DatasetInfo, split: SplitInfo, data_dir: str | Path | None) -> list[Path]:
    """Paths of ``split``'s files (images first); UserError naming the first missing one."""
    dirs = search_dirs(info, data_root(data_dir))
    paths = [find_file(file, dirs) for file in split.files]
    for file, path in zip(split.files, paths):
        if path is None:
            raise UserError(_missing_message(info, split, file, dirs))
    return [path for path in paths if path is not None]


def _missing_message(info: DatasetInfo, split: SplitInfo, file: FileInfo, dirs: list[Path]) -> str:
    """One-line message for a missing file: what, where we looked, what to do."""
    names = " or ".join(file.accepted_names)
    looked = ", ".join(str(folder) for folder in dirs)
    return (
        f"{info.name}/{split.name}: file {names} not found (looked in {looked}); "
        f"run {download_command(info.name)} or pass --data-dir pointing at the folder that has it"
    )
