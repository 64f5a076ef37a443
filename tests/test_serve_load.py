"""``mnist-nn serve`` under load and abuse, through real sockets on 127.0.0.1.

Each kind of hostile or unlucky client the server must survive: many at once
(the listen backlog, the bound on connections), slow ones (one deadline for a
request's whole head and body, not a timeout per read), ones that reset or
close mid-request or mid-answer (no tracebacks on stderr), DNS rebinding on
any loopback address, large bodies (the memory of one request, and of
many at once), small bodies that decode to large pictures, and clients that
hold connections open between requests while file descriptors run out (a
server in a subprocess with a low RLIMIT_NOFILE, its memory and CPU time read
from /proc). Deadlines are made short through ``make_server``'s arguments,
so that every test takes seconds; the bounds on elapsed time are generous,
several times the deadline. Speed (p99 of 200 clients) is measured by
``scripts/serve_load.py``, not here: a unit test asserts only that all are
answered.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import math
import os
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from mnist_nn.models import SavedModel, load_model, save_model
from mnist_nn.nn.network import Network
from mnist_nn.serve import (
    MAX_BODY_BYTES,
    MAX_DECODED_BYTES_IN_FLIGHT,
    MAX_DRAWING_BYTES,
    drawing_bytes,
    is_loopback,
    make_server,
)
from tests.test_serve import ROOT, TIMEOUT, raster_body, running_server

pytestmark = pytest.mark.reliability

DEADLINE = 1.0  # seconds: the request_timeout of the servers that test deadlines
PATIENCE = 8.0  # seconds a test waits for something that should take DEADLINE


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SavedModel:
    path = tmp_path_factory.mktemp("load") / "random-784-16-10.npz"
    save_model(path, Network([784, 16, 10], seed=2), {})
    return load_model(path)


def address(url: str) -> tuple[str, int]:
    """'http://127.0.0.1:1234' -> ('127.0.0.1', 1234)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host.strip("[]"), int(port)


def small_drawing() -> bytes:
    """A 28x28 stroke as the body of a predict request."""
    raster = np.full((28, 28), 255)
    raster[4:24, 12:16] = 0
    return json.dumps(raster_body(raster)).encode("utf-8")


def large_drawing(kind: str, height: int = 1024) -> bytes:
    """A drawing of up to 5 MB: ``height`` x 1024 gray levels written as "255," or 900x900 ones as "254.5,"."""
    height, width = (height, 1024) if kind == "int" else (900, 900)
    ink = np.zeros((height, width), dtype=bool)
    ink[height // 10 : height - height // 10, 400:480] = True
    levels = np.where(ink, 0, 255) if kind == "int" else np.where(ink, 0.5, 254.5)
    body = {"raster": {"width": width, "height": height, "pixels": levels.ravel().tolist()}}
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def head(url: str, length: int, path: str = "/api/predict") -> bytes:
    """The head of a POST with a body of ``length`` bytes, on a connection to close after the answer."""
    host, port = address(url)
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode("ascii")


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0) instead of a FIN, as a crashed or impatient client does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def status_of(reply: bytes) -> int | None:
    """The status code of a raw HTTP answer, None if there is none."""
    if not reply.startswith(b"HTTP/1.1 "):
        return None
    return int(reply.split(b" ", 2)[1])


def trickle(sock: socket.socket, first: bytes, byte: bytes, *, every: float = 0.2) -> tuple[bytes, float]:
    """Send ``first``, then ``byte`` every ``every`` seconds until the server answers or closes.

    Returns:
        What the server sent (b"" if it closed without a word) and the seconds it took,
        or (b"", PATIENCE) if it was still waiting after PATIENCE seconds.
    """
    sock.sendall(first)
    sock.settimeout(every)
    start = time.monotonic()
    while time.monotonic() - start < PATIENCE:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            try:
                sock.sendall(byte)
            except OSError:  # the server has closed
                return b"", time.monotonic() - start
            continue
        except ConnectionResetError:
            return b"", time.monotonic() - start
        sock.settimeout(TIMEOUT)
        return chunk + read_all(sock) if chunk else b"", time.monotonic() - start
    return b"", PATIENCE


def post_all(url: str, body: bytes, clients: int) -> list[Any]:
    """POST ``body`` to /api/predict from ``clients`` threads released at once; each one's status or exception."""
    host, port = address(url)
    barrier = threading.Barrier(clients)
    results: list[Any] = [None] * clients

    def client(i: int) -> None:
        barrier.wait()
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            conn.request("POST", "/api/predict", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            results[i] = response.status
        except Exception as exc:  # a reset or a timeout is the result
            results[i] = type(exc).__name__
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


@contextmanager
def traced_peak() -> Iterator[list[int]]:
    """Trace Python allocations (in every thread); the list yielded holds the peak in bytes afterwards."""
    result: list[int] = []
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        yield result
        result.append(tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()


# --- many clients at once ---------------------------------------------------------------


def test_two_hundred_concurrent_predictions_are_all_answered(model: SavedModel) -> None:
    # The standard library's listen backlog of 5 reset most of them.
    with running_server(model) as url:
        results = post_all(url, small_drawing(), 200)
    assert results == [200] * 200, {str(r) for r in results}


def test_connections_beyond_the_limit_get_a_quick_503_and_one_line(
    model: SavedModel, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_server(model, max_connections=4, request_timeout=PATIENCE) as url:
        idle = [socket.create_connection(address(url), timeout=TIMEOUT) for _ in range(4)]
        try:
            for _ in range(3):
                with socket.create_connection(address(url), timeout=TIMEOUT) as sock:
                    start = time.monotonic()
                    sock.sendall(f"GET /api/model HTTP/1.1\r\nHost: {url.removeprefix('http://')}\r\n\r\n".encode())
                    reply = read_all(sock)
                    assert time.monotonic() - start < 2.0
                assert status_of(reply) == 503, reply[:100]
                assert b"\r\nRetry-After: 1\r\n" in reply and b'{"error": "the server is busy' in reply
        finally:
            for sock in idle:
                sock.close()
        deadline = time.monotonic() + PATIENCE  # the idle connections' threads notice the close and end
        while True:
            with socket.create_connection(address(url), timeout=TIMEOUT) as sock:
                sock.sendall(f"GET /api/model HTTP/1.1\r\nHost: {url.removeprefix('http://')}\r\n\r\n".encode())
                reply = sock.recv(65536)
            if status_of(reply) == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status_of(reply) == 200
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "4 connections in progress, the limit" in err, err


# --- slow clients -----------------------------------------------------------------------


def test_a_head_sent_a_byte_at_a_time_gets_408_at_the_request_deadline(model: SavedModel) -> None:
    # Every byte comes well within any timeout per read; the whole head never comes.
    with running_server(model, request_timeout=DEADLINE) as url:
        with socket.create_connection(address(url), timeout=TIMEOUT) as sock:
            reply, seconds = trickle(sock, b"GET /api/model HTTP/1.1\r\nX-Slow: ", b"a")
        assert status_of(reply) == 408, reply[:100]
        assert b"did not arrive within 1 seconds" in reply
        assert DEADLINE * 0.9 <= seconds < PATIENCE


def test_a_body_sent_a_byte_at_a_time_gets_408_not_500(model: SavedModel, capsys: pytest.CaptureFixture[str]) -> None:
    with running_server(model, request_timeout=DEADLINE) as url:
        with socket.create_connection(address(url), timeout=TIMEOUT) as sock:
            reply, seconds = trickle(sock, head(url, 10_000) + b'{"raster": ', b" ")
        assert status_of(reply) == 408, reply[:100]
        assert b"the body stalled after" in reply
        assert seconds < PATIENCE
    assert capsys.readouterr().err == ""  # a slow client is not a failure of the server


def test_a_body_that_stops_gets_408_not_500(model: SavedModel, capsys: pytest.CaptureFixture[str]) -> None:
    with running_server(model, request_timeout=DEADLINE) as url:
        with socket.create_connection(address(url), timeout=PATIENCE) as sock:
            sock.sendall(head(url, 1000) + b'{"raster": ')
            reply = read_all(sock)
        assert status_of(reply) == 408, reply[:100]
        assert b'"the body stalled after 11 of 1000 bytes' in reply
    assert capsys.readouterr().err == ""


def test_an_idle_connection_is_closed_at_the_deadline_without_an_answer(model: SavedModel) -> None:
    with running_server(model, request_timeout=DEADLINE) as url, socket.create_connection(address(url)) as sock:
        sock.settimeout(PATIENCE)
        start = time.monotonic()
        assert read_all(sock) == b""
        assert time.monotonic() - start < PATIENCE


def test_slow_clients_hold_no_thread_past_their_deadline(model: SavedModel) -> None:
    # 30 clients that trickle their heads: once their deadline has passed, new clients are answered at once
    # even with 30 connections as the limit.
    with running_server(model, request_timeout=DEADLINE, max_connections=30) as url:
        slow = [socket.create_connection(address(url), timeout=TIMEOUT) for _ in range(30)]
        try:
            for sock in slow:
                sock.sendall(b"GET / HTTP/1.1\r\nX-Slow: a")
            time.sleep(DEADLINE / 2)
            for sock in slow:
                sock.sendall(b"a")  # a byte inside any timeout per read
            replies = [read_all(sock) for sock in slow]
        finally:
            for sock in slow:
                sock.close()
        assert {status_of(reply) for reply in replies} == {408}
        assert post_all(url, small_drawing(), 5) == [200] * 5


# --- clients that reset or close --------------------------------------------------------


def test_clients_that_reset_or_close_mid_request_print_no_traceback(
    model: SavedModel, capsys: pytest.CaptureFixture[str]
) -> None:
    body = small_drawing()
    with running_server(model, request_timeout=DEADLINE) as url:
        for _ in range(10):
            for partial in (b"POST /api/pre", head(url, len(body)), head(url, len(body)) + body[:100]):
                sock = socket.create_connection(address(url), timeout=TIMEOUT)
                sock.sendall(partial)
                time.sleep(0.01)  # the server is reading when the reset comes
                reset(sock)
            sock = socket.create_connection(address(url), timeout=TIMEOUT)
            sock.sendall(head(url, len(body)) + body[:100])
            sock.close()  # a FIN mid-body: the body ends early
            sock = socket.create_connection(address(url), timeout=TIMEOUT)
            sock.sendall(head(url, len(body)) + body)
            reset(sock)  # gone before the answer is written, or while it is
        assert post_all(url, body, 3) == [200] * 3
    assert capsys.readouterr().err == ""


def test_clients_that_reset_while_the_answer_is_written_print_no_traceback(
    model: SavedModel, capsys: pytest.CaptureFixture[str]
) -> None:
    # A thousand pipelined requests for the page, whose answers are never read: they fill the socket's
    # buffers, so the server is in the middle of a write when the reset comes.
    with running_server(model) as url:
        request = f"GET / HTTP/1.1\r\nHost: {url.removeprefix('http://')}\r\n\r\n".encode() * 1000
        for _ in range(20):
            sock = socket.create_connection(address(url), timeout=TIMEOUT)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(request)
            time.sleep(0.05)
            reset(sock)
        assert post_all(url, small_drawing(), 3) == [200] * 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and err == "", err


# --- DNS rebinding ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("127.255.10.1", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.3", True),
        ("localhost", True),
        ("LocalHost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("127.evil.example", False),
        ("evil.example", False),
    ],
)
def test_is_loopback_knows_every_loopback_address(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    "bind",
    [
        "127.0.0.2",
        "127.1.2.3",
        pytest.param("::1", marks=pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")),
    ],
)
def test_every_loopback_bind_refuses_foreign_host_names(model: SavedModel, bind: str) -> None:
    with running_server(model, host=bind) as url:
        host, port = address(url)
        own = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for name, status in ((own, 200), ("localhost", 200), ("evil.example", 403), ("evil.example:80", 403)):
            conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
            try:
                conn.request("GET", "/api/model", headers={"Host": name})
                response = conn.getresponse()
                response.read()
                assert response.status == status, name
            finally:
                conn.close()


def test_the_command_says_this_computer_only_for_any_loopback_address(model: SavedModel) -> None:
    server = make_server(model, "127.0.0.5", 0)
    try:
        assert server.local_names is not None and "127.0.0.5" in server.local_names
    finally:
        server.server_close()
    server = make_server(model, "0.0.0.0", 0)
    try:
        assert server.local_names is None
    finally:
        server.server_close()


# --- memory -----------------------------------------------------------------------------


def _post_once(url: str, body: bytes) -> int | None:
    with socket.create_connection(address(url), timeout=60) as sock:
        sock.sendall(head(url, len(body)) + body)
        return status_of(read_all(sock))


@pytest.mark.parametrize("kind", ["int", "float"])
def test_one_large_request_peaks_at_a_small_multiple_of_its_body(model: SavedModel, kind: str) -> None:
    body = large_drawing(kind)
    assert 3 * 2**20 < len(body) <= MAX_BODY_BYTES
    with running_server(model) as url, traced_peak() as peak:
        assert _post_once(url, body) == 200
    # The parsed list (8 bytes a pixel for "255,", 32 for "254.5,") and the float64 image (8 bytes a pixel).
    assert peak[0] < 10 * len(body), f"{peak[0] / len(body):.1f} times the body"


def test_concurrent_large_requests_wait_for_room_and_are_all_answered(model: SavedModel) -> None:
    body = large_drawing("int", height=720)
    assert MAX_BODY_BYTES / 2 < len(body) <= MAX_BODY_BYTES
    with running_server(model) as url, traced_peak() as single:
        assert _post_once(url, body) == 200
    with running_server(model, max_bytes_in_flight=MAX_BODY_BYTES, request_timeout=60) as url, traced_peak() as peak:
        assert post_all(url, body, 4) == [200] * 4
    # One body at a time is read and answered; the other three wait in their sockets.
    assert peak[0] < 1.3 * single[0], f"{peak[0] / single[0]:.1f} times one request's peak"


def test_bounds_are_checked(model: SavedModel) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"request_timeout": 0}, "request_timeout must be a positive number of seconds, got 0"),
        ({"request_timeout": math.inf}, "request_timeout must be a positive number of seconds, got inf"),
        ({"max_connections": 0}, "max_connections must be at least 1, got 0"),
        ({"max_bytes_in_flight": 10}, f"max_bytes_in_flight must be at least {MAX_BODY_BYTES}, got 10"),
        ({"idle_timeout": -1}, "idle_timeout must be a positive number of seconds, got -1"),
        ({"idle_timeout": math.nan}, "idle_timeout must be a positive number of seconds, got nan"),
        ({"max_decoded_bytes": 2**20}, f"max_decoded_bytes must be at least {MAX_DRAWING_BYTES}, got {2**20}"),
    ]
    for bounds, message in cases:
        with pytest.raises(ValueError, match=message):
            make_server(model, "127.0.0.1", 0, **bounds)


def test_ctrl_c_just_after_a_connection_started_stops_the_server_and_frees_the_slot_once(
    model: SavedModel, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ctrl-C lands in the accepting thread after the connection's thread has started (and here,
    # finished): the server must stop, and the slot be freed by that thread alone.
    server = make_server(model, "127.0.0.1", 0, max_connections=1)
    answered = threading.Event()
    interrupt = [True]
    answer_connection = server.process_request_thread

    def answer_then_note(request: Any, client_address: Any) -> None:
        answer_connection(request, client_address)
        answered.set()

    start_thread = socketserver.ThreadingMixIn.process_request

    def start_then_ctrl_c(self: socketserver.ThreadingMixIn, request: Any, client_address: Any) -> None:
        start_thread(self, request, client_address)
        if interrupt:
            interrupt.clear()
            answered.wait(TIMEOUT)
            raise KeyboardInterrupt

    monkeypatch.setattr(server, "process_request_thread", answer_then_note)
    monkeypatch.setattr(socketserver.ThreadingMixIn, "process_request", start_then_ctrl_c)
    stopped_by: list[BaseException] = []

    def serve() -> None:
        try:
            server.serve_forever(poll_interval=0.05)
        except BaseException as error:  # what stopped the server, KeyboardInterrupt included
            stopped_by.append(error)

    url = server.url.rstrip("/")
    try:
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert _post_once(url, small_drawing()) == 200
        thread.join(PATIENCE)
        assert [type(error) for error in stopped_by] == [KeyboardInterrupt]
        # Served again with its one slot: a leaked slot would give 503, a double release an error line.
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert _post_once(url, small_drawing()) == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)
    assert capsys.readouterr().err == ""


# --- small bodies that decode to large pictures -------------------------------------------


def _load_script() -> ModuleType:
    """scripts/serve_load.py as a module: its drawings are the ones the load figures are measured with."""
    spec = importlib.util.spec_from_file_location("serve_load", ROOT / "scripts" / "serve_load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def largest_png_body() -> bytes:
    """A predict body holding a 1024x1024 16-bit RGBA PNG: 22 KB that decode to 48 MiB (drawing_bytes)."""
    body: bytes = _load_script().drawing_body(1024, "png")
    return body


def test_drawing_bytes_come_from_the_declared_size() -> None:
    png = json.loads(largest_png_body())
    assert drawing_bytes(png) == MAX_DRAWING_BYTES == 1024 * 1024 * (4 * 2 + 5 * 8)
    assert drawing_bytes({"raster": {"width": 280, "height": 280, "levels": ""}}) == 280 * 280 * (1 + 5 * 8)
    malformed: list[Any] = [{}, {"png": "data:image/png;base64,AAAA"}, {"raster": {"width": 10**9, "height": 1}}, []]
    for body in malformed:
        assert drawing_bytes(body) == 0  # refused before anything is decoded


def _post(url: str, body: bytes) -> tuple[int, dict[str, str], Any]:
    """POST ``body`` to /api/predict; the status, the headers and the parsed JSON answer."""
    conn = http.client.HTTPConnection(*address(url), timeout=PATIENCE)
    try:
        conn.request("POST", "/api/predict", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        conn.close()


def test_a_drawing_without_room_to_be_decoded_waits_then_gets_503(model: SavedModel) -> None:
    pytest.importorskip("PIL")
    body = largest_png_body()
    server = make_server(model, "127.0.0.1", 0, request_timeout=DEADLINE)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = server.url.rstrip("/")
    try:
        # Room for all but one byte of the largest drawing is taken, as other drawings being decoded would.
        with server.decode_budget.reserve(server.decode_budget.total - MAX_DRAWING_BYTES + 1, math.inf):
            start = time.monotonic()
            status, headers, answer = _post(url, body)
            assert status == 503 and headers["Retry-After"] == "1", answer
            assert "busy" in answer["error"] and time.monotonic() - start < PATIENCE
            assert _post(url, small_drawing())[0] == 200  # a small drawing fits beside them
        assert _post(url, body)[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


SERVER_PROCESS = """
import json, os, resource, sys, threading
from mnist_nn.models import load_model
from mnist_nn.serve import make_server

path, descriptors, hold, bounds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
if descriptors:
    resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
server = make_server(load_model(path), "127.0.0.1", 0, **bounds)
taken = []
while hold:  # every free descriptor, given back after `hold` seconds
    try:
        taken.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        threading.Timer(hold, lambda: [os.close(fd) for fd in taken]).start()
        break
print(server.url, flush=True)
server.serve_forever(poll_interval=0.05)
"""
SERVE_COMMAND = "from mnist_nn.cli.serve import serve_main; raise SystemExit(serve_main())"  # as `mnist-nn serve`


@dataclass
class ServerProcess:
    """A server in a process of its own: its address, its process, and what it wrote on stderr once stopped."""

    url: str
    process: subprocess.Popen[str]
    stderr: str = ""

    def status(self) -> dict[str, int]:
        """Its /proc/PID/status lines of memory, in KiB (VmRSS: now, VmHWM: the peak)."""
        with open(f"/proc/{self.process.pid}/status", encoding="ascii") as status:
            lines = [line.split(":", 1) for line in status if line.startswith("Vm")]
        return {name: int(value.split()[0]) for name, value in lines}

    def cpu_seconds(self) -> float:
        """The CPU time it has used, user and system, from /proc/PID/stat."""
        with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # after the command's name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime and stime, fields 14 and 15


@contextmanager
def server_process(
    model: SavedModel, *, command: bool = False, descriptors: int = 0, hold: float = 0.0, **bounds: Any
) -> Iterator[ServerProcess]:
    """``make_server(model, **bounds)`` serving in a subprocess, its RLIMIT_NOFILE at ``descriptors`` if given.

    With ``hold``, the process takes every free descriptor for ``hold`` seconds once it listens.
    With ``command``, the subprocess is ``mnist-nn serve MODEL --port 0`` instead, as users run it.
    """
    if not Path("/proc/self/stat").exists():
        pytest.skip("reads the server's memory and CPU time from /proc")
    args = [str(model.path), str(descriptors), str(hold), json.dumps(bounds)]
    code = (
        [sys.executable, "-c", SERVE_COMMAND, str(model.path), "--port", "0"]
        if command
        else [sys.executable, "-c", SERVER_PROCESS, *args]
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(code, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    server = ServerProcess("", process)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the URL, or "Serving MODEL at URL (this computer only); ..."
        server.url = line.split(" at ")[-1].split(" ")[0].strip().rstrip("/")
        assert server.url.startswith("http://"), line
        yield server
    finally:
        process.terminate()
        server.stderr = process.communicate(timeout=TIMEOUT)[1]


def test_many_small_pngs_that_decode_large_stay_within_the_decode_budget(model: SavedModel) -> None:
    pytest.importorskip("PIL")
    body = largest_png_body()
    assert len(body) < 25_000 and drawing_bytes(json.loads(body)) == 48 * 2**20
    with server_process(model, command=True) as server:
        assert _post(server.url, _load_script().drawing_body(28, "png"))[0] == 200  # Pillow loaded
        before = server.status()["VmRSS"]
        results = post_all(server.url, body, 48)
        growth = (server.status()["VmHWM"] - before) * 2**10
    assert set(results) <= {200, 503} and 200 in results, results
    # The drawings decoded at once, and the rest: bodies, threads. With each thread's malloc arena keeping
    # what it freed, and no bound on decoding, it was 0.2 to 1.2 GB.
    assert growth < MAX_DECODED_BYTES_IN_FLIGHT + 64 * 2**20, f"{growth / 2**20:.0f} MiB more at the peak"
    assert "Traceback" not in server.stderr


class _SlowNetwork(Network):
    """A network that takes a while over each answer and counts how many it gives at once."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__(sizes, seed=4)
        self.lock = threading.Lock()
        self.now = self.most = 0

    def probabilities(self, x: npt.ArrayLike) -> npt.NDArray[np.floating[Any]]:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.3)  # while the drawing's pictures are held
        with self.lock:
            self.now -= 1
        return super().probabilities(x)


def test_no_more_drawings_are_decoded_at_once_than_the_budget_holds(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    network = _SlowNetwork([784, 10])
    slow = SavedModel(network=network, metadata={}, resume=None, path=tmp_path / "slow.npz")
    # Room for two of the largest drawings: four at once are answered two at a time.
    with running_server(slow, max_decoded_bytes=2 * MAX_DRAWING_BYTES, request_timeout=PATIENCE) as url:
        assert post_all(url, largest_png_body(), 4) == [200] * 4
    assert network.most <= 2


# --- idle connections and file descriptors ----------------------------------------------


def _get(url: str) -> bytes:
    """A GET /api/model that keeps its connection open."""
    return f"GET /api/model HTTP/1.1\r\nHost: {url.removeprefix('http://')}\r\n\r\n".encode()


def read_answer(sock: socket.socket) -> bytes:
    """One whole answer (head and Content-Length body) from a connection that stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    length = int(top.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length and (chunk := sock.recv(65536)):
        body += chunk
    return top + b"\r\n\r\n" + body


def test_a_kept_alive_connection_is_closed_when_idle_but_a_slow_request_is_not(model: SavedModel) -> None:
    with running_server(model, request_timeout=PATIENCE, idle_timeout=DEADLINE) as url:
        with socket.create_connection(address(url), timeout=PATIENCE) as sock:
            sock.sendall(_get(url))
            assert status_of(read_answer(sock)) == 200
            start = time.monotonic()
            assert read_all(sock) == b""  # closed at the idle timeout, long before the request timeout
            assert DEADLINE * 0.9 <= time.monotonic() - start < PATIENCE / 2
        with socket.create_connection(address(url), timeout=PATIENCE) as sock:
            sock.sendall(_get(url))
            assert status_of(read_answer(sock)) == 200
            time.sleep(DEADLINE / 2)
            sock.sendall(b"GET /api/model HTTP/1.1\r\n")  # the next request begins within the idle timeout,
            time.sleep(DEADLINE * 1.5)  # and takes longer than it, well within the request timeout
            sock.sendall(f"Host: {url.removeprefix('http://')}\r\n\r\n".encode())
            assert status_of(read_answer(sock)) == 200


def test_idle_kept_alive_clients_cannot_take_every_descriptor(model: SavedModel) -> None:
    # 140 clients that keep their connections open, with 128 descriptors: a new client is answered at
    # once, in the place of one that waits, and the server does not spin on accept() meanwhile.
    with server_process(model, descriptors=128) as server:
        clients = []
        try:
            for _ in range(140):
                sock = socket.create_connection(address(server.url), timeout=PATIENCE)
                sock.sendall(_get(server.url))
                clients.append(sock)
            time.sleep(0.5)
            cpu = server.cpu_seconds()
            time.sleep(2.0)
            cpu = server.cpu_seconds() - cpu
            start = time.monotonic()
            with socket.create_connection(address(server.url), timeout=PATIENCE) as sock:
                sock.sendall(_get(server.url))
                reply = read_answer(sock)
            seconds = time.monotonic() - start
        finally:
            for sock in clients:
                sock.close()
    assert status_of(reply) == 200, reply[:100]
    assert seconds < 3.0, f"answered after {seconds:.1f} s"
    assert cpu < 0.5, f"{cpu:.2f} s of CPU in 2 s with every client idle"
    assert "Traceback" not in server.stderr, server.stderr


def test_accept_without_a_free_descriptor_backs_off_instead_of_spinning(model: SavedModel) -> None:
    hold = 4.0
    with server_process(model, hold=hold) as server:
        start = time.monotonic()
        with socket.create_connection(address(server.url), timeout=hold + PATIENCE) as sock:
            sock.sendall(_get(server.url))  # waits in the listen backlog: accept() fails with EMFILE
            time.sleep(0.3)
            cpu = server.cpu_seconds()
            time.sleep(2.0)
            cpu = server.cpu_seconds() - cpu
            reply = read_answer(sock)  # once the descriptors are given back
        seconds = time.monotonic() - start
    assert cpu < 0.5, f"{cpu:.2f} s of CPU in 2 s of accept() failing"
    assert status_of(reply) == 200 and seconds < hold + PATIENCE
    assert "Traceback" not in server.stderr and server.stderr.count("\n") <= 2, server.stderr
    assert "cannot accept connections: Too many open files (file descriptor limit" in server.stderr
