"""How ``mnist-nn serve`` finds where a request's body ends (RFC 9112, section 6.3), through raw sockets.

A request whose framing is ambiguous (two lengths, a length and a transfer
coding, a header hidden by whitespace or a folded line) could be read one way
by this server and another by a proxy in front of it, which lets a client
smuggle a second request inside the body of the first. Each such request is
refused with a JSON error and its connection closed; a body on a GET or HEAD
is read and dropped, never taken for the next request.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest

from mnist_nn.models import SavedModel, load_model, save_model
from mnist_nn.nn.network import Network
from mnist_nn.serve import MAX_BODY_BYTES
from tests.test_serve import TIMEOUT, assert_still_serving, raster_body, running_server

Answer = tuple[int, dict[str, str], bytes]  # status, headers (names in lower case), body


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SavedModel:
    path = tmp_path_factory.mktemp("framing") / "random-784-16-10.npz"
    save_model(path, Network([784, 16, 10], seed=3), {})
    return load_model(path)


@pytest.fixture(scope="module")
def url(model: SavedModel) -> Iterator[str]:
    with running_server(model) as base:
        yield base


def drawing() -> bytes:
    """A small drawing that the server classifies (200) whenever it reads it as a predict body."""
    raster = np.full((28, 28), 255)
    raster[4:24, 12:16] = 0
    return json.dumps(raster_body(raster)).encode("utf-8")


def exchange(url: str, data: bytes, *, head: bool = False) -> list[Answer]:
    """Send ``data``, half-close, and parse every answer the server sends before it closes (to HEADs if ``head``)."""
    host, port = url.removeprefix("http://").split(":")
    chunks = []
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return parse_answers(b"".join(chunks), head=head)


def parse_answers(reply: bytes, *, head: bool = False) -> list[Answer]:
    """The HTTP/1.1 answers in ``reply``, one after another (each with a Content-Length; no body if ``head``)."""
    answers = []
    while reply:
        top, separator, rest = reply.partition(b"\r\n\r\n")
        assert separator, f"an incomplete answer: {reply[:200]!r}"
        status_line, *lines = top.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
        length = 0 if head else int(headers.get("content-length", "0"))
        answers.append((int(status_line.split(" ")[1]), headers, rest[:length]))
        reply = rest[length:]
    return answers


def request(url: str, head: str, body: bytes = b"", *, method: str = "POST", version: str = "HTTP/1.1") -> bytes:
    """The bytes of a request: its line, Host, the header lines in ``head`` (CRLF between them), the body."""
    path = "/api/predict" if method == "POST" else "/api/model"
    host = url.removeprefix("http://")
    lines = [f"{method} {path} {version}", f"Host: {host}", "Content-Type: application/json", *head.split("\r\n")]
    return ("\r\n".join(line for line in lines if line) + "\r\n\r\n").encode("latin-1") + body


def assert_refused(answers: list[Answer], status: int, message: str) -> None:
    """One answer only: ``status``, a JSON error naming ``message``, and the connection closed."""
    assert [a[0] for a in answers] == [status], answers
    _, headers, body = answers[0]
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    error = json.loads(body)
    assert set(error) == {"error"} and message in error["error"], error


BODY = drawing()
N = len(BODY)

# (name, header lines, body, status, words of the error). A server that reads the first Content-Length, or
# one that ignores a coding or a header line it does not understand, classifies the drawing or takes the
# body for the next request; another reader in front of it could find the body's end elsewhere.
AMBIGUOUS: list[tuple[str, str, bytes, int, str]] = [
    ("two lengths", f"Content-Length: {N}\r\nContent-Length: {N + 5}", BODY + b" " * 5, 400, "Content-Length"),
    ("two lengths in one", f"Content-Length: {N}, {N + 5}", BODY + b" " * 5, 400, "Content-Length"),
    ("a length and chunked", f"Content-Length: {N}\r\nTransfer-Encoding: chunked", BODY, 400, "both"),
    ("chunked and a length", f"Transfer-Encoding: chunked\r\nContent-Length: {N}", BODY, 400, "both"),
    ("a length and gzip", f"Content-Length: {N}\r\nTransfer-Encoding: gzip", BODY, 400, "both"),
    ("gzip alone", "Transfer-Encoding: gzip", BODY, 400, "not chunked"),
    ("a coding after chunked", "Transfer-Encoding: chunked, gzip", BODY, 400, "not chunked"),
    ("chunked twice", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", b"0\r\n\r\n", 400, "twice"),
    ("an empty coding", f"Transfer-Encoding: \r\nContent-Length: {N}", BODY, 400, "both"),
    ("a length with a sign", f"Content-Length: +{N}", BODY, 400, "bad Content-Length"),
    ("a negative length", "Content-Length: -1", BODY, 400, "bad Content-Length"),
    ("a length and junk", f"Content-Length: {N} x", BODY, 400, "bad Content-Length"),
    ("a length with an underscore", f"Content-Length: {str(N)[:1]}_{str(N)[1:]}", BODY, 400, "bad Content-Length"),
    ("a length in hex", f"Content-Length: {N:#x}", BODY, 400, "bad Content-Length"),
    ("a length and a form feed", f"Content-Length: \x0c{N}", BODY, 400, "header"),
    ("an empty length", "Content-Length: ", BODY, 400, "bad Content-Length"),
    ("space before the colon", f"Content-Length : {N}", BODY, 400, "header"),
    ("a tab before the colon", f"Content-Length\t: {N}", BODY, 400, "header"),
    ("a folded line", f"Content-Length: {N}\r\nX-Note: a\r\n  folded line", BODY, 400, "folded"),
    ("a folded length", f"X-Note: a\r\n Content-Length: {N}", BODY, 400, "folded"),
    ("a bare CR", f"X-Note: a\rContent-Length: {N}", BODY, 400, "header"),
    ("a NUL in a value", f"Content-Length: {N}\r\nX-Note: a\0b", BODY, 400, "header"),
]


@pytest.mark.parametrize(
    ("head", "body", "status", "message"), [case[1:] for case in AMBIGUOUS], ids=[case[0] for case in AMBIGUOUS]
)
def test_ambiguous_framing_is_refused_and_the_connection_closed(
    url: str, head: str, body: bytes, status: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A second request after the body: answered only if the connection stayed open after the refusal.
    follow = request(url, "Content-Length: 2", b"{}")
    assert_refused(exchange(url, request(url, head, body) + follow), status, message)
    assert_still_serving(url)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("codings", ["gzip, chunked", "x-custom, chunked", "deflate;q=1, chunked"])
def test_transfer_codings_the_server_does_not_implement_get_501(url: str, codings: str) -> None:
    answers = exchange(url, request(url, f"Transfer-Encoding: {codings}", b"2\r\n{}\r\n0\r\n\r\n"))
    assert_refused(answers, 501, "not implemented")


def test_chunked_alone_gets_411_and_the_connection_closed(url: str) -> None:
    answers = exchange(url, request(url, "Transfer-Encoding: chunked", b"2\r\n{}\r\n0\r\n\r\n"))
    assert_refused(answers, 411, "Content-Length")


def test_a_transfer_coding_in_an_http_1_0_request_is_refused(url: str) -> None:
    answers = exchange(url, request(url, "Transfer-Encoding: chunked", b"0\r\n\r\n", version="HTTP/1.0"))
    assert_refused(answers, 400, "HTTP/1.0")


@pytest.mark.parametrize(
    "head", [f"Content-Length: {N}, {N}", f"Content-Length: {N}\r\nContent-Length: {N}", f"Content-Length: {N} "]
)
def test_the_same_length_twice_is_one_length(url: str, head: str) -> None:
    answers = exchange(url, request(url, head, BODY))
    assert [a[0] for a in answers] == [200], answers
    assert set(json.loads(answers[0][2])) >= {"prediction", "probabilities"}


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_body_on_a_get_is_read_and_dropped_not_answered_as_a_request(url: str, method: str) -> None:
    host = url.removeprefix("http://")
    smuggled = f"GET /nowhere HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    sent = request(url, f"Content-Length: {len(smuggled)}", smuggled, method=method)
    answers = exchange(url, sent, head=method == "HEAD")
    assert [a[0] for a in answers] == [200], answers  # the body is no request: no 404 for /nowhere
    # The connection stays usable: the request after the body is answered, once.
    answers = exchange(url, sent + request(url, "", method=method), head=method == "HEAD")
    assert [a[0] for a in answers] == [200, 200], answers
    assert answers[0][1]["content-length"] == answers[1][1]["content-length"]


def test_a_get_with_an_oversized_body_gets_413_and_the_connection_closed(url: str) -> None:
    sent = request(url, f"Content-Length: {MAX_BODY_BYTES + 1}", b"x" * 1000, method="GET")
    assert_refused(exchange(url, sent), 413, "more than the limit")
    assert_still_serving(url)


def test_bad_framing_is_refused_before_inviting_the_body(url: str) -> None:
    # A client that asks before sending its body gets the refusal, not "100 Continue".
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(request(url, f"Content-Length: {N}\r\nContent-Length: 1\r\nExpect: 100-continue"))
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:100]


def test_an_oversized_body_announced_with_expect_100_is_refused_at_once(url: str) -> None:
    # The client waits for "100 Continue" before sending its body: the 413 must not wait for the body.
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(request(url, f"Content-Length: {MAX_BODY_BYTES + 1}\r\nExpect: 100-continue"))
        start = time.monotonic()
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:100]
    assert time.monotonic() - start < 2.0
