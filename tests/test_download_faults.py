"""Download faults against a real HTTP/1.1 server on 127.0.0.1: what a hostile or broken mirror can do.

Faults injected: a body that stalls halfway (read timeout), a body or a head
trickled one byte at a time (the low-speed rule and the download deadline), a
slow but steady mirror that must not be cut, more bytes than
Content-Length (also poisoning a kept-alive connection), a Content-Length
shorter or longer than the body or unparsable, a redirect loop and redirects
to a malformed or non-HTTP target, an HTML error page served with status 200,
a gzip bomb sent as ``Content-Encoding: gzip``, a cache file changed after it
was verified, two processes filling one cache at once, and a process
interrupted (SIGINT) in the middle of a download. Every test checks
that the cache ends up holding only verified files: nothing partial, no temp
files. The real ``requests`` client is used and only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import mnist_nn
from mnist_nn.cli import download_main
from mnist_nn.config import DATA_ENV, MIRROR_ENV
from mnist_nn.data.download import ensure_files
from mnist_nn.errors import DownloadError, UsageError
from tests.test_download import Sample, listing, make_sample

pytestmark = pytest.mark.reliability

STALL_LIMIT = 10.0  # seconds a stalled reply waits at most (the fixture releases it at the end of the test)
TRICKLE_LIMIT = 6.0  # seconds a trickled reply goes on at most before hanging up (so old code fails, not hangs)
TIMEOUT = (1.0, 0.5)  # (connect, read) seconds for every download here
REPO = Path(mnist_nn.__file__).resolve().parents[1]


# --- the fake mirror server ------------------------------------------------------------


@dataclass
class Reply:
    """One response: status, headers, body and the fault to inject while sending it."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    length: str | None = None  # the Content-Length to announce; None: the body's true length
    stall_after: int | None = None  # send this many body bytes, then stall until the test ends
    close: bool = False  # hang up after sending (no Connection: close header)
    silent: bool = False  # send nothing at all (not even a status line) until the test ends
    before_body: Callable[[], None] | None = None  # runs after the headers are sent
    trickle: float | None = None  # send the body one step per this many seconds (for TRICKLE_LIMIT at most)
    trickle_head: bool = False  # with ``trickle``: the status line and headers too
    trickle_step: int = 1  # with ``trickle``: bytes per step


@dataclass
class Mirrors:
    """The server's routes, the requests it saw, and the event that releases stalled replies."""

    base: str = ""
    routes: dict[str, list[Reply]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, mirror: str) -> str:
        return f"{self.base}/{mirror}/"

    def route(self, path: str, *replies: Reply) -> None:
        """Answer ``path`` with ``replies`` in turn; the last one repeats."""
        self.routes[path] = list(replies)

    def count(self, path: str | None = None) -> int:
        with self.lock:
            return sum(1 for hit in self.hits if path is None or hit == path)


class _Server(ThreadingHTTPServer):
    mirrors: Mirrors

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up on purpose (timeouts, refusals) are expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real mirrors do

    def do_GET(self) -> None:
        assert isinstance(self.server, _Server)
        mirrors = self.server.mirrors
        with mirrors.lock:
            mirrors.hits.append(self.path)
            queue = mirrors.routes.get(self.path)
            reply = Reply(b"no such file", 404)
            if queue:
                reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if reply.silent:
            mirrors.release.wait(STALL_LIMIT)
            self.close_connection = True
            return
        if reply.trickle is not None:
            self._trickle(reply, mirrors)
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)) if reply.length is None else reply.length)
        self.end_headers()
        if reply.before_body is not None:
            reply.before_body()
        if reply.stall_after is not None:
            self.wfile.write(reply.body[: reply.stall_after])
            self.wfile.flush()
            mirrors.release.wait(STALL_LIMIT)
            self.close_connection = True
            return
        self.wfile.write(reply.body)
        self.wfile.flush()
        if reply.close:
            self.close_connection = True

    def _trickle(self, reply: Reply, mirrors: Mirrors) -> None:
        """Send the reply ``trickle_step`` bytes per ``trickle`` seconds: never idle long enough for a read timeout."""
        assert reply.trickle is not None
        head = f"HTTP/1.1 {reply.status} OK\r\nContent-Length: {len(reply.body)}\r\n\r\n".encode()
        if not reply.trickle_head:
            self.wfile.write(head)
            head = b""
        ends = time.monotonic() + TRICKLE_LIMIT
        data, step = head + reply.body, reply.trickle_step
        for offset in range(0, len(data), step):
            if mirrors.release.wait(reply.trickle) or time.monotonic() > ends:
                break
            self.wfile.write(data[offset : offset + step])
            self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean


@pytest.fixture
def server() -> Iterator[Mirrors]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.mirrors = Mirrors(base=f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd.mirrors
    finally:
        httpd.mirrors.release.set()
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
    return tmp_path / "cache"


def fetch(samples: list[Sample], data_dir: Path, mirrors: list[str], **kwargs: Any) -> list[Any]:
    """``ensure_files`` with short timeouts and no backoff."""
    kwargs = {"backoff": 0.0, "timeout": TIMEOUT, "retries": 0, **kwargs}
    return ensure_files([s.file for s in samples], data_dir, mirrors=mirrors, **kwargs)


def assert_only_verified(data_dir: Path, *samples: Sample) -> None:
    """The cache holds exactly ``samples``, each byte for byte: no temp, partial or unverified file."""
    assert listing(data_dir) == sorted(s.name for s in samples)
    for s in samples:
        assert (data_dir / s.name).read_bytes() == s.payload


def fails(samples: list[Sample], data_dir: Path, mirrors: list[str], **kwargs: Any) -> str:
    """The one-line DownloadError message of a fetch that must fail, after checking the cache is empty."""
    with pytest.raises(DownloadError) as info:
        fetch(samples, data_dir, mirrors, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert_only_verified(data_dir)
    return message


# --- a body that stalls ----------------------------------------------------------------


def test_stalled_body_times_out_and_moves_to_the_next_mirror(server: Mirrors, data_dir: Path) -> None:
    sample = make_sample(size=20_000)
    server.route(f"/m1/{sample.name}", Reply(sample.payload, stall_after=10_000))
    server.route(f"/m2/{sample.name}.gz", Reply(sample.gz))

    start = time.monotonic()
    [result] = fetch([sample], data_dir, [server.url("m1"), server.url("m2")], retries=1)

    assert time.monotonic() - start < 5  # two read timeouts of 0.5 s, not the 10 s stall
    assert result.source == server.url("m2")
    assert server.count(f"/m1/{sample.name}") == 2  # the first try and one retry
    assert_only_verified(data_dir, sample)


def test_stalled_body_on_every_mirror_is_a_clear_error(server: Mirrors, data_dir: Path) -> None:
    sample = make_sample(size=20_000)
    server.route(f"/m1/{sample.name}.gz", Reply(sample.gz, stall_after=100))
    server.route(f"/m2/{sample.name}.gz", Reply(sample.gz, stall_after=0))

    message = fails([sample], data_dir, [server.url("m1"), server.url("m2")])

    assert message.count("read timed out") == 2


def test_a_reply_that_never_starts_times_out(server: Mirrors, data_dir: Path) -> None:
    sample = make_sample()
    server.route(f"/m1/{sample.name}.gz", Reply(sample.gz, silent=True))

    assert "read timed out" in fails([sample], data_dir, [server.url("m1")])


# --- a mirror that trickles: the download deadline --------------------------------------


def test_a_trickling_mirror_fails_at_its_deadline_and_the_next_is_tried(server: Mirrors, data_dir: Path) -> None:
    # One byte every 0.1 s never lets the 0.5 s read timeout fire: only the deadline stops it.
    sample = make_sample(size=5000)
    server.route(f"/m1/{sample.name}.gz", Reply(sample.gz, trickle=0.1))
    server.route(f"/m2/{sample.name}.gz", Reply(sample.gz))

    start = time.monotonic()
    [result] = fetch([sample], data_dir, [server.url("m1"), server.url("m2")], deadline=1.0, retries=1)

    assert time.monotonic() - start < TRICKLE_LIMIT - 2  # the 1 s deadline, not the trickle's end
    assert result.source == server.url("m2")
    assert server.count(f"/m1/{sample.name}.gz") == 1  # the deadline covers retries: no second try
    assert_only_verified(data_dir, sample)


def test_the_deadline_is_one_line_naming_itself_and_how_to_allow_more(server: Mirrors, data_dir: Path) -> None:
    sample = make_sample(size=5000)
    server.route(f"/m1/{sample.name}.gz", Reply(sample.gz, trickle=0.05))

    start = time.monotonic()
    message = fails([sample], data_dir, [server.url("m1")], deadline=0.5)

    assert time.monotonic() - start < 2
    assert "still incomplete after the 0.5 s download deadline: 0 of 5,000 bytes" in message
    assert "--download-deadline" in message and "MNIST_NN_DOWNLOAD_DEADLINE" in message


def test_the_deadline_waits_for_the_progress_bar_to_release_its_locks(
    server: Mirrors, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each bar update here takes 0.15 s inside tqdm's lock, so the 0.5 s deadline's timer fires during
    # one. Raising there would leave the lock taken (tqdm's lock includes one that forked processes share).
    from tqdm import tqdm

    sample = make_sample(size=5000)
    server.route(f"/m1/{sample.name}", Reply(sample.payload, trickle=0.05))  # uncompressed: each byte counts
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: the bar is drawn
    started, finished = [], []

    def slow_update(bar: Any, n: float = 1) -> None:
        started.append(n)
        with bar.get_lock():
            time.sleep(0.15)
        finished.append(n)

    monkeypatch.setattr(tqdm, "update", slow_update)
    start = time.monotonic()
    message = fails([sample], data_dir, [server.url("m1")], deadline=0.5)

    assert time.monotonic() - start < 2
    assert "still incomplete after the 0.5 s download deadline" in message
    assert started and len(finished) == len(started)  # no update was cut short
    taken = threading.Event()

    def take() -> None:
        with tqdm.get_lock():  # type: ignore[no-untyped-call]
            taken.set()

    other = threading.Thread(target=take, daemon=True)  # left waiting, should the lock never come free
    other.start()
    other.join(timeout=5)
    assert taken.is_set()  # free for another thread: nothing left it taken


def test_the_deadline_never_cuts_the_removal_of_a_temporary_file_short(
    server: Mirrors, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The mirror's bytes fail verification, and removing the temporary file then takes 0.4 s, past the
    # 0.2 s deadline: an interruption inside the removal would leave the .part file in the cache.
    sample = make_sample()
    server.route(f"/m1/{sample.name}.gz", Reply(bytes(len(sample.payload))))
    unlink = Path.unlink
    removing: list[str] = []

    def slow_unlink(path: Path, missing_ok: bool = False) -> None:
        if path.name.endswith(".part"):
            removing.append(path.name)
            time.sleep(0.4)
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", slow_unlink)
    message = fails([sample], data_dir, [server.url("m1")], deadline=0.2)

    assert removing  # the removal ran, and took past the deadline
    assert "checksum mismatch" in message  # the mirror's own failure, not a deadline cut into its cleanup


def test_a_deadline_ends_the_wait_between_retries(server: Mirrors, data_dir: Path) -> None:
    sample = make_sample()
    server.route(f"/m1/{sample.name}.gz", Reply(b"busy", 503))

    start = time.monotonic()
    message = fails([sample], data_dir, [server.url("m1")], deadline=0.5, retries=3, backoff=5.0)

    assert time.monotonic() - start < 2  # not the 5 s wait before the first retry
    assert "0.5 s download deadline" in message
    assert server.count(f"/m1/{sample.name}.gz") == 1


def test_a_trickled_status_line_and_headers_meet_the_deadline_too(server: Mirrors, data_dir: Path) -> None:
    sample = make_sample()
    server.route(f"/m1/{sample.name}.gz", Reply(sample.gz, trickle=0.05, trickle_head=True))

    start = time.monotonic()
    message = fails([sample], data_dir, [server.url("m1")], deadline=0.5)

    assert time.monotonic() - start < 2
    assert "download deadline" in message


def test_the_deadline_comes_from_the_environment(
    server: Mirrors, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = make_sample(size=5000)
    server.route(f"/m1/{sample.name}.gz", Reply(sample.gz, trickle=0.05))
    monkeypatch.setenv("MNIST_NN_DOWNLOAD_DEADLINE", "0.5")

    start = time.monotonic()
    message = fails([sample], data_dir, [server.url("m1")])

    assert time.monotonic() - start < 2
    assert "0.5 s download deadline" in message


@pytest.mark.parametrize("value", ["abc", "0", "-1", "inf", "nan"])
def test_a_bad_deadline_in_the_environment_is_a_usage_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MNIST_NN_DOWNLOAD_DEADLINE", value)
    with pytest.raises(UsageError, match="MNIST_NN_DOWNLOAD_DEADLINE must be a number of seconds > 0"):
        fetch([make_sample()], data_dir, [])


def test_the_deadline_is_checked_between_reads_outside_the_main_thread(server: Mirrors, data_dir: Path) -> None:
    # No timer signal there: the deadline is checked as each byte of the 30-byte body (~1.5 s) arrives.
    sample = make_sample(size=30)
    server.route(f"/m1/{sample.name}", Reply(sample.payload, trickle=0.05))
    failures: list[str] = []

    def run() -> None:
        with pytest.raises(DownloadError) as info:
            fetch([sample], data_dir, [server.url("m1")], deadline=0.5)
        failures.append(str(info.value))

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=TRICKLE_LIMIT + 5)

    assert failures and "still incomplete after the 0.5 s download deadline" in failures[0]
    assert_only_verified(data_dir)


def test_a_callers_interval_timer_and_alarm_handler_are_restored(server: Mirrors, data_dir: Path) -> None:
    sample = make_sample(size=5000)
    server.route(f"/m1/{sample.name}.gz", Reply(sample.gz, trickle=0.05))
    server.route(f"/m2/{sample.name}.gz", Reply(sample.gz))

    def callers_handler(signum: int, frame: Any) -> None:
        raise AssertionError("the caller's timer fired during the test")

    previous = signal.signal(signal.SIGALRM, callers_handler)
    signal.setitimer(signal.ITIMER_REAL, 100.0)
    try:
        fetch([sample], data_dir, [server.url("m1"), server.url("m2")], deadline=0.3)
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        handler = signal.getsignal(signal.SIGALRM)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    assert handler is callers_handler
    assert 95.0 < remaining < 100.0


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_download_command_gives_up_on_a_trickling_mirror_in_one_line(
    server: Mirrors, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    # The public mirrors are asked through a proxy that refuses at once, so nothing leaves 127.0.0.1.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    server.route("/m1/train-images-idx3-ubyte.gz", Reply(bytes(5000), trickle=0.05))
    argv = ["--mirror", server.url("m1"), "--data-dir", str(data_dir), "--quiet"]
    if how == "flag":
        argv += ["--download-deadline", "0.5"]
    else:
        monkeypatch.setenv("MNIST_NN_DOWNLOAD_DEADLINE", "0.5")

    start = time.monotonic()
    code = download_main(argv, "mnist-nn download")

    assert time.monotonic() - start < TRICKLE_LIMIT - 2
    err = capsys.readouterr().err
    assert code == 1 and len(err.splitlines()) == 1, err
    assert f"{server.url('m1')} (still incomplete after the 0.5 s download deadline" in err
    assert "allow more time with --download-deadline" in err
    assert_only_verified(data_dir)


def test_download_help_explains_the_deadline(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        download_main(["--help"], "mnist-nn download")
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--download-deadline SECONDS" in help_text and "$MNIST_NN_DOWNLOAD_DEADLINE, else 600" in help_text


# --- a mirror that stalls: the low-speed rule -------------------------------------------

STALLED = "stalled: under 1 kB/s for {} s"  # the reason given for a mirror under the default 1 kB/s


@pytest.mark.parametrize("head", [False, True], ids=["body", "head"])
def test_a_trickling_mirror_is_stalled_said_at_once_and_the_next_is_tried(
    server: Mirrors, data_dir: Path, head: bool
) -> None:
    # 20 bytes/s, one byte every 0.05 s: no read timeout (0.5 s) fires, and the deadline is 600 s.
    sample = make_sample(size=5000)
    server.route(f"/m1/{sample.name}.gz", Reply(sample.gz, trickle=0.05, trickle_head=head))
    server.route(f"/m2/{sample.name}.gz", Reply(sample.gz))
    notes: list[tuple[float, str]] = []
    start = time.monotonic()

    def note(line: str) -> None:
        notes.append((time.monotonic() - start, line))

    [result] = fetch([sample], data_dir, [server.url("m1"), server.url("m2")], speed_time=1.0, retries=1, note=note)

    elapsed = time.monotonic() - start
    assert elapsed < TRICKLE_LIMIT - 3  # the 1 s of the rule, not the trickle's 6 s nor the 600 s deadline
    [(when, line)] = notes
    assert 0.9 < when < 2.5  # said as the rule ends the mirror, before the next one is asked
    assert line == f"{sample.name}: {server.url('m1')} ({STALLED.format(1)}); trying the next mirror"
    assert result.source == server.url("m2")
    assert server.count(f"/m1/{sample.name}.gz") == 1  # a stalled mirror is not retried
    assert_only_verified(data_dir, sample)


def test_a_slow_but_steady_mirror_above_the_limit_is_not_cut(server: Mirrors, data_dir: Path) -> None:
    # 4 kB/s (200 bytes every 0.05 s), head included, for 2 s: four times the 0.5 s the rule looks at.
    sample = make_sample(size=8000)
    server.route(f"/m1/{sample.name}", Reply(sample.payload, trickle=0.05, trickle_head=True, trickle_step=200))
    notes: list[str] = []

    start = time.monotonic()
    [result] = fetch([sample], data_dir, [server.url("m1")], speed_time=0.5, note=notes.append)

    assert time.monotonic() - start > 1.5  # it really was slow
    assert result.source == server.url("m1") and notes == []
    assert_only_verified(data_dir, sample)


def test_a_mirror_that_goes_quiet_halfway_is_stalled_before_a_long_read_timeout(
    server: Mirrors, data_dir: Path
) -> None:
    sample = make_sample(size=20_000)
    server.route(f"/m1/{sample.name}", Reply(sample.payload, stall_after=10_000))

    start = time.monotonic()
    message = fails([sample], data_dir, [server.url("m1")], timeout=(1.0, 8.0), speed_time=1.0)

    assert time.monotonic() - start < 4  # about 1 s after the last byte, not the 8 s read timeout
    assert f"{server.url('m1')} ({STALLED.format(1)})" in message
    assert "allow slower mirrors with $MNIST_NN_DOWNLOAD_SPEED_LIMIT" in message


def test_the_low_speed_rule_is_checked_between_reads_outside_the_main_thread(server: Mirrors, data_dir: Path) -> None:
    # No timer signal there: the rule is checked as each trickled byte arrives.
    sample = make_sample(size=5000)
    server.route(f"/m1/{sample.name}.gz", Reply(sample.gz, trickle=0.05))
    failures: list[str] = []

    def run() -> None:
        with pytest.raises(DownloadError) as info:
            fetch([sample], data_dir, [server.url("m1")], speed_time=0.5)
        failures.append(str(info.value))

    start = time.monotonic()
    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=TRICKLE_LIMIT + 5)

    assert time.monotonic() - start < TRICKLE_LIMIT - 3
    assert failures and STALLED.format(0.5) in failures[0]
    assert_only_verified(data_dir)


def test_the_low_speed_rule_comes_from_the_environment(
    server: Mirrors, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = make_sample(size=5000)
    server.route(f"/m1/{sample.name}.gz", Reply(sample.gz, trickle=0.05))
    monkeypatch.setenv("MNIST_NN_DOWNLOAD_SPEED_TIME", "0.5")

    assert STALLED.format(0.5) in fails([sample], data_dir, [server.url("m1")])

    monkeypatch.setenv("MNIST_NN_DOWNLOAD_SPEED_LIMIT", "10")  # bytes/s: the 20 bytes/s trickle passes it
    message = fails([sample], data_dir, [server.url("m1")], deadline=1.5)
    assert "stalled" not in message and "1.5 s download deadline" in message

    monkeypatch.setenv("MNIST_NN_DOWNLOAD_SPEED_LIMIT", "0")  # no rule at all
    message = fails([sample], data_dir, [server.url("m1")], deadline=1.0)
    assert "stalled" not in message and "1 s download deadline" in message


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MNIST_NN_DOWNLOAD_SPEED_LIMIT", "abc", "a number of bytes per second >= 0"),
        ("MNIST_NN_DOWNLOAD_SPEED_LIMIT", "-1", "a number of bytes per second >= 0"),
        ("MNIST_NN_DOWNLOAD_SPEED_LIMIT", "inf", "a number of bytes per second >= 0"),
        ("MNIST_NN_DOWNLOAD_SPEED_TIME", "0", "a number of seconds > 0"),
        ("MNIST_NN_DOWNLOAD_SPEED_TIME", "nan", "a number of seconds > 0"),
    ],
)
def test_a_bad_low_speed_rule_in_the_environment_is_a_usage_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match=f"{name} must be {expected}"):
        fetch([make_sample()], data_dir, [])


@pytest.mark.parametrize(
    "kwargs", [{"speed_limit": -1.0}, {"speed_limit": math.nan}, {"speed_time": 0.0}, {"speed_time": math.inf}]
)
def test_a_bad_low_speed_rule_argument_is_a_value_error(data_dir: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="expected a speed_"):
        fetch([make_sample()], data_dir, [], **kwargs)


@pytest.mark.parametrize("terminal", [True, False])
def test_download_command_says_which_mirror_stalled_on_a_terminal_and_in_a_log(
    server: Mirrors,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    terminal: bool,
) -> None:
    # The public mirrors are asked through a proxy that refuses at once, so nothing leaves 127.0.0.1.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("MNIST_NN_DOWNLOAD_SPEED_TIME", "0.5")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)  # a terminal shows progress; a log has none
    server.route("/m1/train-images-idx3-ubyte.gz", Reply(bytes(5000), trickle=0.05, trickle_head=True))

    start = time.monotonic()
    code = download_main(["--mirror", server.url("m1"), "--data-dir", str(data_dir)], "mnist-nn download")

    assert time.monotonic() - start < TRICKLE_LIMIT - 0.5  # the rule's 0.5 s, then the refused public mirrors
    err = capsys.readouterr().err
    note = f"train-images-idx3-ubyte: {server.url('m1')} ({STALLED.format(0.5)}); trying the next mirror"
    assert code == 1 and note in err, err
    assert err.splitlines()[-1].startswith("mnist-nn download: error: cannot get train-images-idx3-ubyte")
    assert_only_verified(data_dir)


# --- Content-Length that lies ----------------------------------------------------------


def test_bytes_beyond_content_length_are_ignored(server: Mirrors, data_dir: Path) -> None:
    sample = make_sample()
    server.route(
        f"/m1/{sample.name}.gz", Reply(sample.gz + b"<html>trailing junk</html>" * 100, length=str(len(sample.gz)))
    )

    [result] = fetch([sample], data_dir, [server.url("m1")])

    assert result.data == sample.payload
    assert_only_verified(data_dir, sample)


def test_bytes_beyond_content_length_on_a_kept_alive_connection(server: Mirrors, data_dir: Path) -> None:
    # The junk stays in the socket and is what the client reads as the next response's status line.
    first, second = make_sample("a", seed=1), make_sample("b", seed=2)
    server.route(f"/m1/{first.name}.gz", Reply(first.gz + b"JUNK" * 500, length=str(len(first.gz))))
    server.route(f"/m1/{second.name}.gz", Reply(second.gz))

    results = fetch([first, second], data_dir, [server.url("m1")], retries=1)

    assert [r.data for r in results] == [first.payload, second.payload]
    assert_only_verified(data_dir, first, second)


def test_more_bytes_than_the_file_can_need_are_refused(server: Mirrors, data_dir: Path) -> None:
    # The payload, then 200 KB of empty gzip members: it inflates to the right bytes, yet never ends.
    sample = make_sample()
    server.route(f"/m1/{sample.name}.gz", Reply(sample.gz + gzip.compress(b"", mtime=0) * 10_000))
    server.route(f"/m2/{sample.name}", Reply(sample.payload + bytes(200_000)))

    assert "more data than a 1000-byte file can need" in fails([sample], data_dir, [server.url("m1")])
    # Plain bytes beyond the size: which check speaks first depends on how much the first read brings.
    message = fails([sample], data_dir, [server.url("m2")])
    assert "larger than the expected 1000 bytes" in message or "more data than a 1000-byte file" in message


@pytest.mark.parametrize("compressed", [True, False], ids=["gz", "plain"])
def test_content_length_shorter_than_the_body(server: Mirrors, data_dir: Path, compressed: bool) -> None:
    sample = make_sample(size=5000)
    body = sample.gz if compressed else sample.payload
    name = sample.name + (".gz" if compressed else "")
    server.route(f"/m1/{name}", Reply(body, length=str(len(body) - 10), close=True))
    server.route(f"/m2/{sample.name}.gz", Reply(sample.gz))

    # The 10 bytes left over may poison the kept-alive connection m2 (the same host) is asked on next;
    # that is a dropped connection, which is retried on a fresh one.
    [result] = fetch([sample], data_dir, [server.url("m1"), server.url("m2")], retries=1)
    assert result.source == server.url("m2")
    assert_only_verified(data_dir, sample)

    reason = "not a valid gzip file (truncated)" if compressed else "size mismatch: got 4990 bytes, expected 5000"
    assert reason in fails([sample], data_dir / "other", [server.url("m1")])


@pytest.mark.parametrize("close", [True, False], ids=["then-hang-up", "then-wait"])
def test_content_length_longer_than_the_body(server: Mirrors, data_dir: Path, close: bool) -> None:
    sample = make_sample(size=5000)
    body = sample.payload
    if close:
        server.route(f"/m1/{sample.name}", Reply(body, length=str(len(body) + 100), close=True))
    else:
        server.route(f"/m1/{sample.name}", Reply(body, length=str(len(body) + 100), stall_after=len(body)))
    server.route(f"/m2/{sample.name}", Reply(sample.payload))

    [result] = fetch([sample], data_dir, [server.url("m1"), server.url("m2")], retries=1)

    assert result.source == server.url("m2")
    assert server.count(f"/m1/{sample.name}") == 2  # a cut-short body is transient: retried once
    assert_only_verified(data_dir, sample)
    reason = "connection dropped mid-download" if close else "read timed out"
    assert reason in fails([sample], data_dir / "other", [server.url("m1")])


@pytest.mark.parametrize("length", ["abc", "-5", "1e3", " "])
def test_unparsable_content_length_still_needs_a_verified_body(server: Mirrors, data_dir: Path, length: str) -> None:
    sample = make_sample()
    impostor = make_sample(sample.name, seed=7)
    server.route(f"/m1/{sample.name}.gz", Reply(impostor.gz, length=length, close=True))
    server.route(f"/m2/{sample.name}.gz", Reply(sample.gz, length=length, close=True))

    [result] = fetch([sample], data_dir, [server.url("m1"), server.url("m2")])

    assert result.source == server.url("m2")
    assert_only_verified(data_dir, sample)


# --- redirects -----------------------------------------------------------------------


def test_redirect_loop_is_a_clear_bounded_error(server: Mirrors, data_dir: Path) -> None:
    sample = make_sample()
    path = f"/loop/{sample.name}.gz"
    server.route(path, Reply(status=302, headers={"Location": path}))
    server.route(f"/m2/{sample.name}.gz", Reply(sample.gz))

    start = time.monotonic()
    [result] = fetch([sample], data_dir, [server.url("loop"), server.url("m2")], retries=2)

    assert time.monotonic() - start < 5
    assert result.source == server.url("m2")
    assert server.count(path) <= 31  # requests gives up after 30 redirects, and it is not retried
    assert_only_verified(data_dir, sample)
    message = fails([sample], data_dir / "other", [server.url("loop")], retries=2)
    assert "Exceeded 30 redirects" in message


def test_redirect_ping_pong_between_two_paths(server: Mirrors, data_dir: Path) -> None:
    sample = make_sample()
    a, b = f"/a/{sample.name}.gz", f"/b/{sample.name}.gz"
    server.route(a, Reply(status=301, headers={"Location": server.base + b}))
    server.route(b, Reply(status=307, headers={"Location": a}))

    assert "redirects" in fails([sample], data_dir, [server.url("a")])
    assert server.count() <= 31


def test_redirect_to_the_file_is_followed(server: Mirrors, data_dir: Path) -> None:
    sample = make_sample()
    server.route(f"/m1/{sample.name}.gz", Reply(status=302, headers={"Location": f"/real/{sample.name}.gz"}))
    server.route(f"/real/{sample.name}.gz", Reply(sample.gz))

    [result] = fetch([sample], data_dir, [server.url("m1")])

    assert result.source == server.url("m1")
    assert_only_verified(data_dir, sample)


@pytest.mark.parametrize(
    "location",
    [
        "file:///{local}",
        "ftp://127.0.0.1/x",
        "http://[::1",
        "//[/",
        "http://a..b/",
        "http://127.0.0.1:99999/x",
        "http://\xff\xfe/",
        "\x7f",
    ],
)
def test_redirect_to_a_bad_or_non_http_target_is_refused(
    server: Mirrors, data_dir: Path, tmp_path: Path, location: str
) -> None:
    sample = make_sample()
    local = tmp_path / "served-locally"
    local.write_bytes(sample.payload)  # a redirect must not make the downloader read local files
    target = location.format(local=str(local).lstrip("/"))
    server.route(f"/m1/{sample.name}.gz", Reply(status=302, headers={"Location": target}))

    message = fails([sample], data_dir, [server.url("m1")])

    assert server.url("m1") in message


# --- wrong content -------------------------------------------------------------------


ERROR_PAGE = b"<!DOCTYPE html><html><head><title>Service unavailable</title></head><body>Try later</body></html>\n"


@pytest.mark.parametrize("pad", [True, False], ids=["same-size", "other-size"])
def test_html_error_page_with_status_200_moves_to_the_next_mirror(server: Mirrors, data_dir: Path, pad: bool) -> None:
    sample = make_sample()
    page = ERROR_PAGE.ljust(sample.file.size, b" ") if pad else ERROR_PAGE
    for name in (f"{sample.name}.gz", sample.name):
        server.route(f"/m1/{name}", Reply(page, headers={"Content-Type": "text/html; charset=utf-8"}))
    server.route(f"/m2/{sample.name}.gz", Reply(sample.gz))

    [result] = fetch([sample], data_dir, [server.url("m1"), server.url("m2")])

    assert result.source == server.url("m2")
    assert server.count(f"/m1/{sample.name}.gz") == 1  # a 200 is an answer: not retried, no fallback name
    assert_only_verified(data_dir, sample)
    reason = "checksum mismatch" if pad else f"size mismatch: got {len(ERROR_PAGE)} bytes, expected 1000"
    assert reason in fails([sample], data_dir / "other", [server.url("m1")])


def test_content_encoding_gzip_on_a_gz_file_is_unwrapped_once(server: Mirrors, data_dir: Path) -> None:
    sample = make_sample()
    server.route(f"/m1/{sample.name}.gz", Reply(gzip.compress(sample.gz), headers={"Content-Encoding": "gzip"}))

    [result] = fetch([sample], data_dir, [server.url("m1")])

    assert result.data == sample.payload
    assert_only_verified(data_dir, sample)


def test_content_encoding_gzip_bomb_is_refused_without_inflating_it(server: Mirrors, data_dir: Path) -> None:
    sample = make_sample()
    bomb = gzip.compress(bytes(200 * 2**20), compresslevel=9)  # ~200 KB that inflate to 200 MiB
    server.route(f"/m1/{sample.name}.gz", Reply(bomb, headers={"Content-Encoding": "gzip"}))

    tracemalloc.start()
    try:
        message = fails([sample], data_dir, [server.url("m1")])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert "more data than a 1000-byte file can need" in message
    assert peak < 8 * 2**20  # urllib3 inflates a bounded chunk at a time, and the payload refuses early


# --- the cache after verification ------------------------------------------------------------


def _change_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[500] ^= 0x01
    stat = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime: only the hash can tell


def _change_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


def _change_append(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0")


def _change_replace(path: Path) -> None:
    path.write_bytes(make_sample(path.name, seed=9).payload)


@pytest.mark.parametrize("change", [_change_flip, _change_truncate, _change_append, _change_replace])
def test_cache_file_changed_after_verification_is_fetched_again(
    server: Mirrors, data_dir: Path, change: Callable[[Path], None]
) -> None:
    sample = make_sample()
    path = f"/m1/{sample.name}.gz"
    server.route(path, Reply(sample.gz))
    fetch([sample], data_dir, [server.url("m1")])
    [cached] = fetch([sample], data_dir, [server.url("m1")])
    assert cached.source == "cache" and server.count(path) == 1

    change(data_dir / sample.name)
    with pytest.raises(DownloadError, match="no mirrors to try"):
        fetch([sample], data_dir, [])  # never handed out as the payload
    [result] = fetch([sample], data_dir, [server.url("m1")])

    assert result.source == server.url("m1") and result.data == sample.payload
    assert server.count(path) == 2
    assert_only_verified(data_dir, sample)


def test_cache_file_touched_but_unchanged_is_reused(server: Mirrors, data_dir: Path) -> None:
    sample = make_sample()
    server.route(f"/m1/{sample.name}.gz", Reply(sample.gz))
    fetch([sample], data_dir, [server.url("m1")])
    os.utime(data_dir / sample.name, (0, 0))

    [result] = fetch([sample], data_dir, [server.url("m1")])

    assert result.source == "cache" and server.count() == 1


# --- two processes, one cache ----------------------------------------------------------------


CHILD = """
import json, signal, sys
from pathlib import Path
# Ctrl-C raises KeyboardInterrupt even when the tests run as a background job, which ignores SIGINT.
signal.signal(signal.SIGINT, signal.default_int_handler)
from mnist_nn.data.download import MnistFile, ensure_files
files = [MnistFile(*f) for f in json.loads(sys.argv[1])]
results = ensure_files(files, Path(sys.argv[2]), mirrors=[sys.argv[3]], timeout=(5.0, 30.0), retries=0)
print(json.dumps([[r.name, r.source, len(r.data)] for r in results]))
"""


def start_child(command: list[str]) -> subprocess.Popen[str]:
    """Start ``command`` with this checkout importable and no mirror, data folder or proxy from the environment."""
    dropped = {MIRROR_ENV, DATA_ENV, "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in dropped}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_fill_one_cache(server: Mirrors, data_dir: Path) -> None:
    samples = [make_sample("a", size=300_000, seed=1), make_sample("b", size=200_000, seed=2)]
    seen_during_download: list[list[str]] = []
    both_downloading = threading.Barrier(2, action=lambda: seen_during_download.append(listing(data_dir)), timeout=30)

    def wait_for_the_other() -> None:
        both_downloading.wait()

    first, second = samples
    # Each process holds back the first file's body until the other process is downloading it too.
    server.route(f"/m1/{first.name}.gz", Reply(first.gz, before_body=wait_for_the_other))
    server.route(f"/m1/{second.name}.gz", Reply(second.gz))
    files = json.dumps([[s.file.name, s.file.sha256, s.file.size] for s in samples])
    data_dir.mkdir()

    command = [sys.executable, "-c", CHILD, files, str(data_dir), server.url("m1")]
    processes = [start_child(command) for _ in range(2)]
    outputs = []
    try:
        for p in processes:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            outputs.append(json.loads(out))
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()

    for output in outputs:
        assert output[0] == ["a", server.url("m1"), 300_000]  # both really downloaded the first file
        assert output[1][0] == "b" and output[1][2] == 200_000
    [during] = seen_during_download
    assert len([name for name in during if name.startswith(".a.") and name.endswith(".part")]) == 2
    assert server.count(f"/m1/{first.name}.gz") == 2
    assert_only_verified(data_dir, *samples)


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGINT delivered to a child process")
def test_a_process_interrupted_mid_download_leaves_no_temp_file(server: Mirrors, data_dir: Path) -> None:
    sample = make_sample(size=200_000)
    downloading = threading.Event()
    server.route(f"/m1/{sample.name}", Reply(sample.payload, stall_after=100_000, before_body=downloading.set))
    files = json.dumps([[sample.file.name, sample.file.sha256, sample.file.size]])
    data_dir.mkdir()

    command = [sys.executable, "-c", CHILD, files, str(data_dir), server.url("m1")]
    process = start_child(command)
    try:
        assert downloading.wait(30), "the child never asked for the file"
        time.sleep(0.2)  # let the first half of the body reach the temp file
        [temp] = listing(data_dir)
        assert temp.startswith(f".{sample.name}.") and temp.endswith(".part")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode != 0 and "KeyboardInterrupt" in err
    assert_only_verified(data_dir)
