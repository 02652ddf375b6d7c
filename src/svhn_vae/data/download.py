"""Download and verify dataset files, with resumable transfers and md5 checks.

A download streams into ``<file>.part``; if a ``.part`` is already there the transfer resumes
with an HTTP Range request (or restarts from zero when the server does not answer 206). The
finished ``.part`` is checked against the registry's md5 and only then moved into place with
``os.replace``, so a file under its final name is always complete and verified. A file already
present is never overwritten: a good one is kept, a bad one is reported for the user to delete.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from tqdm import tqdm

from svhn_vae.data import synth_digits
from svhn_vae.data.checksums import FileCheck, check_file
from svhn_vae.data.paths import data_root, find_file, locate_split, resolve_data_dir, search_dirs
from svhn_vae.data.registry import DatasetInfo, FileInfo, download_command, get_dataset
from svhn_vae.errors import UserError

logger = logging.getLogger(__name__)

MIRROR_ENV_VAR = "SVHN_VAE_MIRROR"
"""Environment variable overriding every dataset's download base URL (like ``base_url``)."""

_CHUNK = 1 << 20  # bytes per read while streaming
_TIMEOUT_S = 60.0  # per socket operation, not for the whole transfer
_NETWORK_HINT = f"check the network, or set {MIRROR_ENV_VAR} to a mirror holding the same files"


class NetworkUnavailable(UserError):
    """The download server could not be reached at all (no network, no DNS, connection refused)."""


def check_split(dataset: str, split: str, *, data_dir: str | Path | None = None) -> list[FileCheck]:
    """Check every file of a split against its official md5; one FileCheck per file, images first.

    For IDX files the md5 is of the decompressed content, so any gzip encoding passes. Never
    raises for a missing or bad file: look at ``FileCheck.status``.
    """
    info = get_dataset(dataset)
    if info.file_format == "generated":
        return synth_digits.check_split(resolve_data_dir(dataset, data_dir), info.split(split).name)
    dirs = search_dirs(info, data_root(data_dir))
    return [check_file(file, find_file(file, dirs)) for file in info.split(split).files]


def verify_split(dataset: str, split: str, *, data_dir: str | Path | None = None) -> list[FileCheck]:
    """Like ``check_split``, but raise UserError for the first missing, corrupt or wrong file.

    Returns the checks when every file is usable: ``ok``, or ``unverified`` where no official
    md5 is known (raw Fashion-MNIST files).
    """
    info = get_dataset(dataset)
    if info.file_format == "generated":
        return synth_digits.verify_split(resolve_data_dir(dataset, data_dir), info.split(split).name)
    locate_split(info, info.split(split), data_dir)  # UserError naming a missing file
    checks = check_split(dataset, split, data_dir=data_dir)
    for check in checks:
        if not check.usable:
            raise bad_file_error(dataset, check)
    return checks


def bad_file_error(dataset: str, check: FileCheck) -> UserError:
    """UserError for a present file that is corrupt or has the wrong md5."""
    return UserError(f"{check.describe()}; delete {check.path} and re-run {download_command(dataset)}")


def download_split(
    dataset: str,
    split: str,
    *,
    data_dir: str | Path | None = None,
    progress: bool = True,
    base_url: str | None = None,
) -> list[Path]:
    """Download a split's missing files and return the paths of all its files (images first).

    ``base_url`` (else ``$SVHN_VAE_MIRROR``, else the official URL) is the folder the files are
    fetched from. Raises UserError on network failure (the ``.part`` is kept for resuming) and on
    a checksum mismatch (nothing is left under the final name).
    """
    info = get_dataset(dataset)
    target_dir = resolve_data_dir(dataset, data_dir)
    if info.file_format == "generated":  # nothing to download: generate it (if it is not there yet)
        synth_digits.load_split_arrays(target_dir, info.split(split).name)
        return list(synth_digits.cache_paths(target_dir, split)[:2])
    checks = check_split(dataset, split, data_dir=data_dir)
    base = base_url or os.environ.get(MIRROR_ENV_VAR)
    return [
        _ensure_file(info, file, check, target_dir, base_url=base, progress=progress)
        for file, check in zip(info.split(split).files, checks)
    ]


def _ensure_file(
    info: DatasetInfo, file: FileInfo, check: FileCheck, target_dir: Path, *, base_url: str | None, progress: bool
) -> Path:
    """Path of ``file``: the one already there if usable, else a freshly downloaded one."""
    if check.path is not None:
        if check.usable:
            logger.info("%s is already present (%s)", check.path, check.status)
            return check.path
        raise bad_file_error(info.name, check)
    url = f"{base_url.rstrip('/')}/{file.download_name}" if base_url else file.url
    target = target_dir / file.download_name
    part = target.with_name(f"{target.name}.part")
    target_dir.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", url, target)
    _fetch(url, part, progress=progress)
    _accept(info, file, part, target)
    return target


def _accept(info: DatasetInfo, file: FileInfo, part: Path, target: Path) -> None:
    """Move a finished download into place if its md5 is right; else delete it and raise."""
    check = check_file(file, part)
    if not check.usable:
        part.unlink()  # complete but wrong: resuming from it could never succeed
        raise UserError(
            f"downloaded {target.name} is wrong ({check.describe()}); it was deleted, "
            f"re-run {download_command(info.name)} or try another mirror"
        )
    os.replace(part, target)
    logger.info("saved %s (%s)", target, check.status)


def _fetch(url: str, part: Path, *, progress: bool) -> None:
    """Stream ``url`` into ``part``, resuming from its current size when the server allows."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the .part is no prefix of the file: start over
            part.unlink()
            _fetch(url, part, progress=progress)
            return
        raise UserError(f"could not download {url}: HTTP {err.code} {err.reason}; {_NETWORK_HINT}") from err
    except (urllib.error.URLError, OSError) as err:
        raise NetworkUnavailable(f"could not download {url}: {err}; {_NETWORK_HINT}") from err
    with response:
        offset = _start_offset(response, offset, url)
        _stream(response, part, offset=offset, progress=progress)


def _open(url: str, offset: int) -> http.client.HTTPResponse:
    """Send the GET, asking for bytes from ``offset`` on when resuming."""
    request = urllib.request.Request(url)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=_TIMEOUT_S)


def _start_offset(response: http.client.HTTPResponse, offset: int, url: str) -> int:
    """Where the body starts in the file: ``offset`` if the server resumed (206), else 0."""
    if response.status != 206:
        if offset:
            logger.info("server did not resume %s; downloading it from the start", url)
        return 0
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    if match is None or int(match.group(1)) != offset:
        raise UserError(f"server sent a wrong range for {url}; delete the .part file and retry")
    return offset


def _stream(response: http.client.HTTPResponse, part: Path, *, offset: int, progress: bool) -> None:
    """Append the body to ``part`` (truncated first when ``offset`` is 0), with a progress bar."""
    length = response.headers.get("Content-Length")
    total = offset + int(length) if length is not None else None
    written = offset
    with open(part, "ab" if offset else "wb") as out, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, desc=part.name, disable=not progress
    ) as bar:
        try:
            while chunk := response.read(_CHUNK):
                written += out.write(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as err:
            raise _interrupted(part, written, err) from err
    if total is not None and written != total:
        raise _interrupted(part, written, f"got {written} of {total} bytes")


def _interrupted(part: Path, written: int, reason: object) -> UserError:
    """UserError for a transfer cut short; the .part stays for the next attempt to resume."""
    return UserError(
        f"download interrupted after {written} bytes ({reason!s}); "
        f"{part} was kept, run the same download again to resume"
    )
