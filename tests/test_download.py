"""Tests for mnist_nn.data.download against a real HTTP server on 127.0.0.1.

The server serves tiny synthetic files under path prefixes (``/m1/``, ``/m2/``,
...), each prefix acting as one mirror, and injects faults on request. The
real ``requests`` client is used; nothing leaves the machine because every
test passes ``mirrors=`` explicitly and ``$MNIST_NN_MIRROR`` is unset.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mnist_nn.config import DATA_ENV, MIRROR_ENV
from mnist_nn.data.download import FetchResult, MnistFile, ensure_files, mirror_list
from mnist_nn.errors import DownloadError

FIX_HINT = "download the files yourself and point MNIST_NN_MIRROR (or --mirror) at their folder"


# --- synthetic files ---------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """A synthetic payload and the ``MnistFile`` that pins it."""

    file: MnistFile
    payload: bytes

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def gz(self) -> bytes:
        return gzip.compress(self.payload, mtime=0)


def make_sample(name: str = "labels-idx1-ubyte", size: int = 1000, seed: int = 1) -> Sample:
    """An IDX-like payload (big-endian magic 2049 first, so never gzip's 1f 8b)."""
    header = (2049).to_bytes(4, "big") + (size - 8).to_bytes(4, "big")
    body = bytes((i * 31 + seed) % 251 for i in range(size - 8))
    payload = header + body
    return Sample(MnistFile(name, hashlib.sha256(payload).hexdigest(), size), payload)


def fetch(samples: Sequence[Sample], data_dir: Path, mirrors: Sequence[str], **kwargs: Any) -> list[FetchResult]:
    """``ensure_files`` with test settings: no backoff, short timeouts, quiet."""
    kwargs = {"backoff": 0.0, "timeout": (2.0, 2.0), **kwargs}
    return ensure_files([s.file for s in samples], data_dir, mirrors=mirrors, **kwargs)


def listing(folder: Path) -> list[str]:
    """Every entry in ``folder``, hidden temp files included (none when a failed download removed it)."""
    return sorted(os.listdir(folder)) if folder.exists() else []


# --- the fake mirror server ---------------------------------------------------


@dataclass
class FakeServer:
    """What the server serves, the faults it injects and the requests it saw.

    ``faults[path]`` is a queue: each request to ``path`` takes the next fault,
    and once the queue is empty the file is served normally (404 if absent).
    Faults: ``"500"``; ``"drop"`` (announce the full length, send half, close);
    ``"slow"`` (wait a second before answering).
    """

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, list[str]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, mirror: str) -> str:
        return f"{self.base}/{mirror}/"

    def serve(self, path: str, body: bytes, *faults: str) -> None:
        self.files[path] = body
        self.faults[path] = list(faults)

    def count(self, path: str | None = None) -> int:
        with self.lock:
            return sum(1 for hit in self.hits if path is None or hit == path)


class _Server(ThreadingHTTPServer):
    fake: FakeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up on purpose (timeouts, refusals) are expected here


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        assert isinstance(self.server, _Server)
        fake = self.server.fake
        with fake.lock:
            fake.hits.append(self.path)
            queue = fake.faults.get(self.path, [])
            fault = queue.pop(0) if queue else None
        body = fake.files.get(self.path)
        if fault == "500":
            self.send_error(500)
            return
        if fault == "slow":
            time.sleep(1.0)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if fault == "drop":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean


@pytest.fixture
def server() -> Iterator[FakeServer]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.fake = FakeServer(base=f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd.fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No mirror or data folder from the environment, no proxy between us and 127.0.0.1."""
    for name in (MIRROR_ENV, DATA_ENV, "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"  # missing on purpose: ensure_files creates it


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# --- downloads -----------------------------------------------------------------


def test_downloads_gzip_file(server: FakeServer, data_dir: Path) -> None:
    sample = make_sample()
    server.serve(f"/m1/{sample.name}.gz", sample.gz)

    [result] = fetch([sample], data_dir, [server.url("m1")])

    assert result == FetchResult(sample.name, data_dir / sample.name, server.url("m1"), sample.payload)
    assert (data_dir / sample.name).read_bytes() == sample.payload
    assert listing(data_dir) == [sample.name]
    assert server.hits == [f"/m1/{sample.name}.gz"]


def test_downloads_uncompressed_file_when_gz_is_404(server: FakeServer, data_dir: Path) -> None:
    sample = make_sample()
    server.serve(f"/m1/{sample.name}", sample.payload)

    [result] = fetch([sample], data_dir, [server.url("m1")])

    assert result.data == sample.payload
    assert server.hits == [f"/m1/{sample.name}.gz", f"/m1/{sample.name}"]
    assert listing(data_dir) == [sample.name]


def test_several_files_in_order(server: FakeServer, data_dir: Path) -> None:
    samples = [make_sample("a", 500, seed=1), make_sample("b", 700, seed=2)]
    for s in samples:
        server.serve(f"/m1/{s.name}.gz", s.gz)

    results = fetch(samples, data_dir, [server.url("m1")])

    assert [r.data for r in results] == [s.payload for s in samples]
    assert listing(data_dir) == ["a", "b"]


def test_checksum_mismatch_moves_to_next_mirror(server: FakeServer, data_dir: Path) -> None:
    sample = make_sample()
    impostor = make_sample(sample.name, seed=2)  # same name and size, other bytes
    server.serve(f"/m1/{sample.name}.gz", impostor.gz)
    server.serve(f"/m2/{sample.name}.gz", sample.gz)

    [result] = fetch([sample], data_dir, [server.url("m1"), server.url("m2")])

    assert result.source == server.url("m2")
    assert (data_dir / sample.name).read_bytes() == sample.payload
    assert listing(data_dir) == [sample.name]


def test_404_moves_to_next_mirror(server: FakeServer, data_dir: Path) -> None:
    sample = make_sample()
    server.serve(f"/m2/{sample.name}.gz", sample.gz)

    [result] = fetch([sample], data_dir, [server.url("m1"), server.url("m2")])

    assert result.source == server.url("m2")
    assert server.hits == [
        f"/m1/{sample.name}.gz",
        f"/m1/{sample.name}",
        f"/m2/{sample.name}.gz",
    ]
    assert listing(data_dir) == [sample.name]


def test_500_is_retried(server: FakeServer, data_dir: Path) -> None:
    sample = make_sample()
    path = f"/m1/{sample.name}.gz"
    server.serve(path, sample.gz, "500")

    [result] = fetch([sample], data_dir, [server.url("m1")])

    assert result.source == server.url("m1")
    assert server.count(path) == 2
    assert listing(data_dir) == [sample.name]


def test_dropped_connection_is_retried(server: FakeServer, data_dir: Path) -> None:
    sample = make_sample(size=20_000)
    path = f"/m1/{sample.name}"  # uncompressed, so half the body is valid payload
    server.serve(path, sample.payload, "drop")

    [result] = fetch([sample], data_dir, [server.url("m1")])

    assert result.data == sample.payload
    assert server.count(path) == 2
    assert listing(data_dir) == [sample.name]


def test_dropping_every_time_moves_to_next_mirror(server: FakeServer, data_dir: Path) -> None:
    sample = make_sample(size=20_000)
    server.serve(f"/m1/{sample.name}.gz", sample.gz, "drop", "drop", "drop")
    server.serve(f"/m2/{sample.name}.gz", sample.gz)

    [result] = fetch([sample], data_dir, [server.url("m1"), server.url("m2")], retries=2)

    assert result.source == server.url("m2")
    assert server.count(f"/m1/{sample.name}.gz") == 3  # first try + 2 retries
    assert listing(data_dir) == [sample.name]


def test_every_mirror_failing_raises_one_line(server: FakeServer, data_dir: Path, tmp_path: Path) -> None:
    sample = make_sample()
    impostor = make_sample(sample.name, seed=2)
    server.serve(f"/wrong/{sample.name}.gz", impostor.gz)
    server.serve(f"/badgz/{sample.name}.gz", b"\x1f\x8b" + b"not deflate at all" * 10)
    server.serve(f"/short/{sample.name}.gz", sample.gz[:-20])
    server.serve(f"/down/{sample.name}.gz", sample.gz, "500", "500")
    refused = closed_port_url()
    mirrors = [
        server.url("empty"),
        server.url("wrong"),
        server.url("badgz"),
        server.url("short"),
        server.url("down"),
        refused,
        str(tmp_path / "no-such-folder"),
    ]

    with pytest.raises(DownloadError) as info:
        fetch([sample], data_dir, mirrors, retries=1)

    message = str(info.value)
    assert "\n" not in message
    assert sample.name in message
    for mirror in mirrors:
        assert mirror in message
    for reason in (
        "HTTP 404",
        "checksum mismatch",
        "not a valid gzip file",
        "not a valid gzip file (truncated)",
        "HTTP 500",
        "connection failed",
        "no such folder",
    ):
        assert reason in message
    assert message.endswith(FIX_HINT)
    assert server.count(f"/down/{sample.name}.gz") == 2
    assert listing(data_dir) == []


def test_read_timeout_is_reported(server: FakeServer, data_dir: Path) -> None:
    sample = make_sample()
    server.serve(f"/m1/{sample.name}.gz", sample.gz, "slow")

    with pytest.raises(DownloadError, match="read timed out"):
        fetch([sample], data_dir, [server.url("m1")], timeout=(2.0, 0.2), retries=0)

    assert listing(data_dir) == []


def test_empty_mirror_list_raises(data_dir: Path) -> None:
    with pytest.raises(DownloadError, match="no mirrors"):
        fetch([make_sample()], data_dir, [])


def test_zip_bomb_is_refused(server: FakeServer, data_dir: Path) -> None:
    sample = make_sample()
    bomb = gzip.compress(b"\0" * 20_000_000, mtime=0)  # ~20 KB that inflates to 20 MB
    server.serve(f"/m1/{sample.name}.gz", bomb)

    with pytest.raises(DownloadError, match="larger than the expected 1000 bytes"):
        fetch([sample], data_dir, [server.url("m1")])

    assert listing(data_dir) == []


# --- the cache -------------------------------------------------------------------


def test_verified_cache_is_used_without_any_request(server: FakeServer, data_dir: Path) -> None:
    sample = make_sample()
    server.serve(f"/m1/{sample.name}.gz", sample.gz)
    data_dir.mkdir()
    (data_dir / sample.name).write_bytes(sample.payload)

    [result] = fetch([sample], data_dir, [server.url("m1"), closed_port_url()])

    assert result == FetchResult(sample.name, data_dir / sample.name, "cache", sample.payload)
    assert server.count() == 0


def test_corrupt_cache_is_fetched_again(server: FakeServer, data_dir: Path) -> None:
    sample = make_sample()
    server.serve(f"/m1/{sample.name}.gz", sample.gz)
    data_dir.mkdir()
    corrupt = bytearray(sample.payload)
    corrupt[100] ^= 0xFF
    (data_dir / sample.name).write_bytes(bytes(corrupt))

    [result] = fetch([sample], data_dir, [server.url("m1")])

    assert result.source == server.url("m1")
    assert (data_dir / sample.name).read_bytes() == sample.payload
    assert listing(data_dir) == [sample.name]


def test_concurrent_downloads_into_one_cache(server: FakeServer, data_dir: Path) -> None:
    sample = make_sample(size=200_000)
    server.serve(f"/m1/{sample.name}.gz", sample.gz)
    results: list[FetchResult] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.extend(fetch([sample], data_dir, [server.url("m1")]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert [r.data for r in results] == [sample.payload, sample.payload]
    assert (data_dir / sample.name).read_bytes() == sample.payload
    assert listing(data_dir) == [sample.name]


# --- local mirrors and mirror order ---------------------------------------------------


@pytest.mark.parametrize("form", ["folder", "file-url"])
@pytest.mark.parametrize("compressed", [True, False])
def test_local_mirror(tmp_path: Path, data_dir: Path, form: str, compressed: bool) -> None:
    sample = make_sample()
    folder = tmp_path / "mirror"
    folder.mkdir()
    if compressed:
        (folder / f"{sample.name}.gz").write_bytes(sample.gz)
    else:
        (folder / sample.name).write_bytes(sample.payload)
    mirror = str(folder) if form == "folder" else folder.as_uri()

    [result] = fetch([sample], data_dir, [mirror])

    assert result.source == mirror
    assert (data_dir / sample.name).read_bytes() == sample.payload
    assert listing(data_dir) == [sample.name]


def test_env_mirror_goes_first(
    server: FakeServer, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = make_sample()
    server.serve(f"/m1/{sample.name}.gz", sample.gz)
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / f"{sample.name}.gz").write_bytes(sample.gz)
    monkeypatch.setenv(MIRROR_ENV, str(folder))

    [result] = fetch([sample], data_dir, [server.url("m1")])

    assert result.source == str(folder)
    assert server.count() == 0


def test_mirror_list_order(monkeypatch: pytest.MonkeyPatch) -> None:
    assert mirror_list(mirrors=["a/", "b"]) == ["a/", "b"]
    assert mirror_list("b", mirrors=["a", "b/"]) == ["b", "a"]
    monkeypatch.setenv(MIRROR_ENV, "env")
    assert mirror_list(mirrors=["a", "env"]) == ["env", "a"]
    assert mirror_list("cli", mirrors=["a"]) == ["cli", "a"]
    monkeypatch.setenv(MIRROR_ENV, "")
    assert mirror_list(mirrors=[]) == []
