"""Tests of svhn_vae.data.download against a local HTTP server (never the internet).

The server serves tiny SVHN/MNIST files, honours ``Range: bytes=N-`` with 206 answers, records
the Range header of every request, and can cut a response in half to simulate a dropped transfer.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from svhn_vae.data import DATASETS, download_split, load_split, verify_split
from svhn_vae.data.fakes import with_md5s, write_fake_split
from svhn_vae.errors import UserError


@dataclass
class FileServer:
    """What the test server serves and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    ranges: list[str | None] = field(default_factory=list)
    """The Range header of each request, in order (None when absent)."""
    cut_next: bool = False
    """Send only half of the next response body, then close the connection."""
    honour_range: bool = True
    url: str = ""


def _handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``state``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            body = state.files.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            requested = self.headers.get("Range")
            state.ranges.append(requested)
            match = re.fullmatch(r"bytes=(\d+)-", requested or "")
            start = int(match.group(1)) if match and state.honour_range else 0
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            payload = body[start:]
            if state.cut_next:
                state.cut_next, payload = False, payload[: len(payload) // 2]
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[FileServer]:
    """A FileServer listening on 127.0.0.1 on a free port."""
    state = FileServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/files"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the user's env vars and cache out of every test."""
    monkeypatch.delenv("SVHN_VAE_DATA", raising=False)
    monkeypatch.delenv("SVHN_VAE_MIRROR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def _serve_fake(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: str, *, trust: bool = True
) -> np.ndarray:
    """Serve tiny files of ``dataset``/train (registry md5s patched to match if ``trust``); returns the images."""
    source = tmp_path / "served"
    images, _ = write_fake_split(dataset, "train", source, num_examples=20)
    for path in source.iterdir():
        server.files[f"files/{path.name}"] = path.read_bytes()
    if trust:
        monkeypatch.setitem(DATASETS, dataset, with_md5s(dataset, "train", source))
    return images


@pytest.mark.parametrize("dataset", ["svhn", "mnist"])
@pytest.mark.parametrize("via_env", [False, True])
def test_good_download_is_put_in_place_and_loads(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: str, via_env: bool
) -> None:
    images = _serve_fake(server, tmp_path, monkeypatch, dataset)
    if via_env:
        monkeypatch.setenv("SVHN_VAE_MIRROR", server.url)
    base_url = None if via_env else server.url
    paths = download_split(dataset, "train", data_dir=tmp_path / "data", progress=False, base_url=base_url)
    assert all(path.parent == tmp_path / "data" / dataset for path in paths)
    assert server.ranges == [None] * len(paths) and not list(paths[0].parent.glob("*.part"))
    assert all(check.ok for check in verify_split(dataset, "train", data_dir=tmp_path / "data"))
    np.testing.assert_array_equal(load_split(dataset, "train", data_dir=tmp_path / "data").images, images)


def test_present_good_file_is_not_downloaded_again(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve_fake(server, tmp_path, monkeypatch, "svhn")
    download_split("svhn", "train", data_dir=tmp_path / "data", progress=False, base_url=server.url)
    download_split("svhn", "train", data_dir=tmp_path / "data", progress=False, base_url=server.url)
    assert len(server.ranges) == 1


def test_bad_checksum_names_the_file_and_leaves_nothing(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve_fake(server, tmp_path, monkeypatch, "svhn", trust=False)  # registry keeps the official md5
    served_md5 = hashlib.md5(server.files["files/train_32x32.mat"]).hexdigest()
    folder = tmp_path / "data" / "svhn"
    folder.mkdir(parents=True)
    (folder / "test_32x32.mat").write_bytes(b"the user's own file")
    with pytest.raises(UserError) as caught:
        download_split("svhn", "train", data_dir=tmp_path / "data", progress=False, base_url=server.url)
    message = str(caught.value)
    assert "train_32x32.mat" in message and served_md5 in message
    assert "e26dedcc434d2e4c54c9b2d4a06d8373" in message and "svhn-vae data download --dataset svhn" in message
    assert sorted(p.name for p in folder.iterdir()) == ["test_32x32.mat"]
    assert (folder / "test_32x32.mat").read_bytes() == b"the user's own file"


def test_bad_file_already_in_place_is_reported_not_overwritten(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve_fake(server, tmp_path, monkeypatch, "svhn")
    user_file = tmp_path / "data" / "train_32x32.mat"
    user_file.parent.mkdir()
    user_file.write_bytes(b"not what the registry expects")
    with pytest.raises(UserError, match=f"delete {re.escape(str(user_file))} and re-run"):
        download_split("svhn", "train", data_dir=tmp_path / "data", progress=False, base_url=server.url)
    assert user_file.read_bytes() == b"not what the registry expects" and server.ranges == []


def test_interrupted_transfer_keeps_part_and_resumes_with_range(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve_fake(server, tmp_path, monkeypatch, "svhn")
    size = len(server.files["files/train_32x32.mat"])
    target = tmp_path / "data" / "svhn" / "train_32x32.mat"
    server.cut_next = True
    with pytest.raises(UserError, match="interrupted.*run the same download again to resume"):
        download_split("svhn", "train", data_dir=tmp_path / "data", progress=False, base_url=server.url)
    part = target.with_name("train_32x32.mat.part")
    assert part.stat().st_size == size // 2 and not target.exists()
    download_split("svhn", "train", data_dir=tmp_path / "data", progress=False, base_url=server.url)
    assert server.ranges == [None, f"bytes={size // 2}-"]
    assert target.read_bytes() == server.files["files/train_32x32.mat"] and not part.exists()


def test_server_ignoring_range_restarts_from_zero(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve_fake(server, tmp_path, monkeypatch, "svhn")
    target = tmp_path / "data" / "svhn" / "train_32x32.mat"
    target.parent.mkdir(parents=True)
    target.with_name("train_32x32.mat.part").write_bytes(b"stale bytes from elsewhere")
    server.honour_range = False
    download_split("svhn", "train", data_dir=tmp_path / "data", progress=False, base_url=server.url)
    assert server.ranges == ["bytes=26-"]
    assert target.read_bytes() == server.files["files/train_32x32.mat"]


def test_load_split_downloads_missing_files_when_asked(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = _serve_fake(server, tmp_path, monkeypatch, "mnist")
    monkeypatch.setenv("SVHN_VAE_MIRROR", server.url)
    with pytest.raises(UserError, match="not found"):
        load_split("mnist", "train", data_dir=tmp_path / "data")
    split = load_split("mnist", "train", data_dir=tmp_path / "data", download=True)
    np.testing.assert_array_equal(split.images, images)


def test_http_error_is_a_user_error(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="could not download .*train_32x32.mat: HTTP 404"):
        download_split("svhn", "train", data_dir=tmp_path / "data", progress=False, base_url=server.url)
