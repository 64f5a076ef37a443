"""Tests for ``mnist-nn serve`` through real HTTP on 127.0.0.1.

The server runs in a thread on a free port; requests go through ``requests``
(a dependency) or, where the exact bytes on the wire matter (paths that
``requests`` would normalize, missing headers), ``http.client`` and raw
sockets. Most tests use an untrained network saved to a file, which needs
no data; the test that a real digit gets the right answer trains one epoch
on the real MNIST files (skipped without ``MNIST_NN_MIRROR``, as in conftest).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import requests

from mnist_nn.cli import train_main
from mnist_nn.cli.serve import serve_main
from mnist_nn.data import MnistData
from mnist_nn.errors import RequestError
from mnist_nn.images import to_mnist
from mnist_nn.models import SavedModel, load_model, save_model
from mnist_nn.nn.network import Network
from mnist_nn.serve import (
    MAX_BODY_BYTES,
    MAX_RASTER_SIDE,
    PAGE_FILES,
    PILLOW_NEEDED,
    drawing_from_request,
    make_server,
    model_info,
    newest_model,
    predict_raster,
)

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "mnist_nn" / "web"
TIMEOUT = 10.0


# --- helpers shared with test_browser.py ------------------------------------------------


@contextmanager
def running_server(
    model: SavedModel, *, verbose: bool = False, host: str = "127.0.0.1", **bounds: Any
) -> Iterator[str]:
    """Serve ``model`` on a free port of ``host`` in a thread; yields the base URL, e.g. 'http://127.0.0.1:1234'.

    ``bounds`` go to ``make_server`` (request_timeout, max_connections, max_bytes_in_flight).
    """
    server = make_server(model, host, 0, verbose=verbose, **bounds)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.url.rstrip("/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def train_one_epoch(mnist_cache: Path, path: Path) -> SavedModel:
    """Nielsen's [784, 30, 10] network after one epoch on real MNIST (about 90% on test), saved and loaded."""
    code = train_main(["--epochs", "1", "--data-dir", str(mnist_cache), "--save", str(path), "--quiet"])
    assert code == 0
    return load_model(path)


def canvas_raster(digit: npt.NDArray[Any], scale: int = 10) -> npt.NDArray[np.int64]:
    """A (784,) MNIST digit in [0, 1] as a canvas would hold it: 0-255 integers, enlarged ``scale`` times."""
    levels = np.rint(np.asarray(digit, dtype=np.float64).reshape(28, 28) * 255).astype(np.int64)
    return np.kron(levels, np.ones((scale, scale), dtype=np.int64))  # (28 scale, 28 scale)


def raster_body(raster: npt.NDArray[Any]) -> dict[str, Any]:
    """The ``POST /api/predict`` body for a (height, width) array of gray levels."""
    height, width = raster.shape
    return {"raster": {"width": int(width), "height": int(height), "pixels": raster.ravel().tolist()}}


def compact_body(raster: npt.NDArray[Any]) -> dict[str, Any]:
    """The same drawing in the compact form the page sends: the gray levels as bytes, in base64."""
    height, width = raster.shape
    levels = base64.b64encode(np.asarray(raster, dtype=np.uint8).tobytes()).decode("ascii")
    return {"raster": {"width": int(width), "height": int(height), "levels": levels}}


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def untrained(tmp_path_factory: pytest.TempPathFactory) -> SavedModel:
    """A random [784, 16, 10] network in a model file with a made-up test count: no data needed."""
    path = tmp_path_factory.mktemp("untrained") / "random-784-16-10.npz"
    save_model(path, Network([784, 16, 10], seed=1), {"test_correct": 1234, "test_total": 10000})
    return load_model(path)


@pytest.fixture(scope="module")
def url(untrained: SavedModel) -> Iterator[str]:
    with running_server(untrained) as base:
        yield base


@pytest.fixture(scope="module")
def trained(mnist_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> SavedModel:
    return train_one_epoch(mnist_cache, tmp_path_factory.mktemp("trained") / "one-epoch.npz")


def post(url: str, body: Any, path: str = "/api/predict") -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    return requests.post(url + path, data=data, headers={"Content-Type": "application/json"}, timeout=TIMEOUT)


def raw_request(url: str, method: str, path: str, body: bytes | None = None, **headers: str) -> tuple[int, Any]:
    """Send exactly ``method path`` (no normalization); returns the status and the parsed JSON or text body."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read().decode("utf-8")
        if response.getheader("Content-Type") == "application/json":
            return response.status, json.loads(text)
        return response.status, text
    finally:
        conn.close()


def raw_socket(url: str, data: bytes) -> bytes:
    """Send raw bytes, half-close, and read whatever comes back."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def assert_still_serving(url: str) -> None:
    page = requests.get(url + "/", timeout=TIMEOUT)
    assert page.status_code == 200 and "<canvas" in page.text
    assert post(url, raster_body(np.full((5, 5), 255) - np.eye(5, dtype=np.int64) * 255)).status_code == 200


def png_bytes_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk declaring ``width`` x ``height`` (8-bit gray), nothing else."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + len(ihdr).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")


# --- predictions ------------------------------------------------------------------------


@pytest.mark.real_data
def test_real_digits_get_the_models_own_prediction_and_mostly_their_labels(
    trained: SavedModel, mnist: MnistData
) -> None:
    network = trained.network
    n = 50
    images, labels = mnist.test.images[:n], mnist.test.labels[:n]
    right = 0
    with running_server(trained) as url:
        for i, (digit, label) in enumerate(zip(images, labels, strict=True)):
            raster = canvas_raster(digit)  # light ink on dark, as MNIST
            if i % 2:
                raster = 255 - raster  # dark ink on light paper, as a drawing
            answer = post(url, raster_body(raster))
            assert answer.status_code == 200, answer.text
            got = answer.json()
            assert post(url, compact_body(raster)).json() == got  # the page's form: exactly the same answer
            expected_input = to_mnist(raster / 255.0)  # (784,) float32
            assert np.array_equal(np.array(got["image"], dtype=np.float32).ravel(), expected_input)
            assert got["prediction"] == int(network.predict(expected_input.reshape(1, -1))[0])
            expected = network.probabilities(expected_input.reshape(1, -1))[0]
            np.testing.assert_allclose(got["probabilities"], expected, rtol=0, atol=1e-12)
            assert got["probability_kind"] == network.probability_kind == "normalized sigmoid outputs"
            assert abs(sum(got["probabilities"]) - 1.0) < 1e-9
            if i == 0:
                assert int(label) == 7 and got["prediction"] == 7  # test digit 0: a clean 7
            right += got["prediction"] == int(label)
    # A one-epoch network (about 90% on test; 46 of these 50) gets most of them.
    assert right >= 42, f"only {right} of {n} test digits classified as their labels"


def test_the_answer_has_the_documented_shape(url: str, untrained: SavedModel) -> None:
    raster = np.full((200, 120), 255)
    raster[20:180, 50:70] = 0  # a "1" in dark ink
    answer = post(url, raster_body(raster))
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json"
    got = answer.json()
    assert set(got) == {"image", "probabilities", "prediction", "probability_kind"}
    assert len(got["image"]) == 28 and all(len(row) == 28 for row in got["image"])
    assert len(got["probabilities"]) == 10 and isinstance(got["prediction"], int)
    assert got == predict_raster(untrained.network, raster)


def test_a_png_drawing_gives_the_same_answer_as_its_raster(url: str) -> None:
    image_module = pytest.importorskip("PIL.Image")
    raster = np.full((140, 140), 255, dtype=np.uint8)
    raster[20:120, 60:80] = 0
    raster[20:40, 40:80] = 0
    buffer = io.BytesIO()
    image_module.fromarray(raster, mode="L").save(buffer, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    from_png = post(url, {"png": data_url})
    assert from_png.status_code == 200, from_png.text
    assert from_png.json() == post(url, raster_body(raster)).json()


def _drawing(height: int, width: int, seed: int) -> npt.NDArray[np.uint8]:
    """Dark strokes of varied grays on light paper with some noise: (height, width) levels 0-255."""
    rng = np.random.default_rng(seed)
    raster = rng.integers(200, 256, size=(height, width), dtype=np.uint8)
    for _ in range(3):
        top, left = rng.integers(0, height), rng.integers(0, width)
        raster[top : top + max(1, height // 3), left : left + max(1, width // 8)] = rng.integers(0, 120)
    return raster


# Sizes of every remainder of width * height / 3 (base64 padding of none, "==" and "="), the page's canvas among them.
@pytest.mark.parametrize(("height", "width"), [(280, 280), (28, 28), (1, 1), (2, 1), (7, 5), (100, 61), (3, 300)])
def test_the_compact_form_gives_exactly_the_answer_of_the_list_form(url: str, height: int, width: int) -> None:
    for seed in range(3):
        raster = _drawing(height, width, seed)
        from_list, from_levels = post(url, raster_body(raster)), post(url, compact_body(raster))
        assert from_levels.status_code == from_list.status_code
        assert from_levels.json() == from_list.json()
        assert np.array_equal(
            drawing_from_request(compact_body(raster)), drawing_from_request(raster_body(raster))
        )  # the very same float64 image, not merely the same answer


def test_the_pages_canvas_is_a_third_of_the_bytes_in_the_compact_form() -> None:
    raster = _drawing(280, 280, 0)
    compact, listed = (len(json.dumps(body)) for body in (compact_body(raster), raster_body(raster)))
    assert compact < 110_000 and compact < listed / 2.5


def test_without_pillow_a_png_is_refused_with_a_hint(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)  # `import PIL` now fails, in the server's thread too
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes_header(28, 28)).decode("ascii")
    answer = post(url, {"png": data_url})
    assert answer.status_code == 400
    assert answer.json() == {"error": PILLOW_NEEDED}
    assert "pip install 'mnist-nn[images]'" in PILLOW_NEEDED


def test_the_model_endpoint_describes_the_model(url: str, untrained: SavedModel) -> None:
    answer = requests.get(url + "/api/model", timeout=TIMEOUT)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    assert answer.json() == {
        "name": "random-784-16-10.npz",
        "sizes": [784, 16, 10],
        "activation": "sigmoid",
        "cost": "quadratic",
        "test_correct": 1234,
        "test_total": 10000,
        "test_accuracy": 0.1234,
        "probability_kind": "normalized sigmoid outputs",
        "dataset": "mnist",  # a file that does not say is MNIST's, its classes the digits
        "classes": [str(d) for d in range(10)],
    }


def test_a_model_without_a_test_count_has_an_unknown_accuracy(tmp_path: Path) -> None:
    path = tmp_path / "bare.npz"
    save_model(path, Network([784, 10], seed=0), {"test_correct": "lots"})
    info = model_info(load_model(path))
    assert info["test_correct"] is None and info["test_total"] is None and info["test_accuracy"] is None


def test_concurrent_requests_all_get_answers(url: str) -> None:
    raster = np.full((100, 100), 255)
    raster[10:90, 45:55] = 0
    body = raster_body(raster)
    results: list[int] = []

    def ask() -> None:
        results.append(post(url, body).status_code)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert results == [200] * 8


# --- refusals ---------------------------------------------------------------------------


def _raster(width: Any = 2, height: Any = 2, pixels: Any = (0, 255, 255, 255)) -> dict[str, Any]:
    return {
        "raster": {"width": width, "height": height, "pixels": list(pixels) if isinstance(pixels, tuple) else pixels}
    }


def _levels(levels: Any = "AP///w==", width: Any = 2, height: Any = 2) -> dict[str, Any]:
    """A compact raster; the default is levels 0, 255, 255, 255."""
    return {"raster": {"width": width, "height": height, "levels": levels}}


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("not JSON", b"{bad", "not valid JSON"),
    ("empty body", b"", "not valid JSON"),
    ("not UTF-8", b"\xff\xfe\xfa{", "not valid JSON"),
    ("NaN", b'{"raster": {"width": 1, "height": 1, "pixels": [NaN]}}', "NaN is not allowed"),
    ("nested too deep", b"[" * 100_000, "not valid JSON"),
    ("an array", [1, 2], "expected a JSON object, got an array"),
    ("no drawing", {}, "one of the keys 'raster' or 'png'"),
    ("both drawings", {**_raster(), "png": ""}, "one of the keys 'raster' or 'png'"),
    ("raster not an object", {"raster": [1, 2]}, "'raster' must be an object, got an array"),
    ("missing pixels", {"raster": {"width": 2, "height": 2}}, "'raster' is missing 'pixels'"),
    ("missing everything", {"raster": {}}, "'raster' is missing 'width', 'height', 'pixels' (or 'levels')"),
    ("width a string", _raster(width="2"), "'width' must be an integer, got a string"),
    ("width a boolean", _raster(width=True), "'width' must be an integer, got a boolean"),
    ("width a float", _raster(width=2.0), "'width' must be an integer, got a number"),
    ("height 0", _raster(height=0), f"'height' must be between 1 and {MAX_RASTER_SIDE}, got 0"),
    ("width too large", _raster(width=MAX_RASTER_SIDE + 1), f"'width' must be between 1 and {MAX_RASTER_SIDE}"),
    ("pixels not an array", _raster(pixels="0,255"), "'pixels' must be an array, got a string"),
    ("too few pixels", _raster(pixels=(0, 255, 255)), "expected width * height = 2 * 2 = 4 pixels, got 3"),
    ("too many pixels", _raster(pixels=(0,) * 5), "expected width * height = 2 * 2 = 4 pixels, got 5"),
    ("pixel above 255", _raster(pixels=(0, 255, 256, 0)), "pixels must be numbers from 0 to 255, got 256 at index 2"),
    ("pixel negative", _raster(pixels=(0, -1, 0, 0)), "got -1 at index 1"),
    ("pixel a string", _raster(pixels=(0, "7", 0, 0)), "got '7' at index 1"),
    ("pixel null", _raster(pixels=(0, 0, None, 0)), "got None at index 2"),
    ("pixel a boolean", _raster(pixels=(True, 0, 0, 0)), "got True at index 0"),
    ("pixel a list", _raster(pixels=([0], 0, 0, 0)), "got [0] at index 0"),
    ("pixel huge", b'{"raster": {"width": 1, "height": 1, "pixels": [1e999]}}', "got inf at index 0"),
    ("empty drawing", _raster(pixels=(255,) * 4), "the image is empty (no digit found)"),
    ("levels empty drawing", _levels("/////w=="), "the image is empty (no digit found)"),
    ("levels a number", _levels(7), "'levels' must be a string (base64), got a number"),
    ("levels null", _levels(None), "'levels' must be a string (base64), got null"),
    ("levels an array", _levels([0, 255, 255, 255]), "'levels' must be a string (base64), got an array"),
    ("levels and pixels", {"raster": {**_levels()["raster"], "pixels": [0] * 4}}, "one of 'pixels' or 'levels'"),
    ("levels too short", _levels("AP//"), "expected width * height = 4 gray levels, 8 characters of base64, got 4"),
    ("levels too long", _levels("AP////8AAAA="), "8 characters of base64, got 12"),
    ("levels unpadded", _levels("AP////8"), "8 characters of base64, got 7"),
    ("levels wrong padding", _levels("AP////8A"), "expected width * height = 4 gray levels, got 6 in 'levels'"),
    ("levels bad characters", _levels("AP//**8="), "'levels' is not valid base64"),
    ("levels URL-safe alphabet", _levels("AP__/w=="), "'levels' is not valid base64"),
    ("levels a line break", _levels("AP//\n/w="), "'levels' is not valid base64"),
    ("levels beyond ASCII", _levels("AP//\u00ff/w="), "'levels' is not valid base64"),
    ("levels padding inside", _levels("AP==//8="), "'levels' is not valid base64"),
    (
        "levels width too large",
        _levels("", width=MAX_RASTER_SIDE + 1),
        f"'width' must be between 1 and {MAX_RASTER_SIDE}",
    ),
    ("levels height 0", _levels("", height=0), f"'height' must be between 1 and {MAX_RASTER_SIDE}, got 0"),
    ("levels height a string", _levels("", height="2"), "'height' must be an integer, got a string"),
    ("uniform gray", _raster(width=3, height=3, pixels=(128,) * 9), "the image is empty"),
    ("png not a data URL", {"png": "iVBORw0KGgo="}, "'png' must be a string starting with 'data:image/png;base64,'"),
    ("png a number", {"png": 7}, "'png' must be a string"),
    ("png bad base64", {"png": "data:image/png;base64,***"}, "'png' is not valid base64"),
    ("png not a PNG", {"png": "data:image/png;base64," + base64.b64encode(b"GIF89a" * 10).decode()}, "PNG image"),
    (
        "png too large",
        {"png": "data:image/png;base64," + base64.b64encode(png_bytes_header(5000, 20)).decode()},
        f"between 1x1 and {MAX_RASTER_SIDE}x{MAX_RASTER_SIDE} pixels, got 5000x20",
    ),
]


@pytest.mark.parametrize(("body", "message"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES])
def test_malformed_drawings_get_400_with_a_json_error(url: str, body: Any, message: str) -> None:
    answer = post(url, body)
    assert answer.status_code == 400, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    error = answer.json()
    assert set(error) == {"error"} and message in error["error"]
    assert "\n" not in error["error"] and len(error["error"]) < 300


def test_the_default_compact_raster_is_a_drawing(url: str) -> None:
    assert base64.b64decode(_levels()["raster"]["levels"]) == bytes([0, 255, 255, 255])
    assert post(url, _levels()).json() == post(url, _raster()).json()


@pytest.mark.parametrize(
    ("raster", "message"),
    [
        # 5 MB of base64 for a 1x1 drawing, and for one of 1024x1024: refused by their length alone.
        ({"width": 1, "height": 1, "levels": "A" * MAX_BODY_BYTES}, "4 characters of base64"),
        ({"width": 1024, "height": 1024, "levels": "A" * MAX_BODY_BYTES}, "1398104 characters of base64"),
        ({"width": 10**12, "height": 10**12, "levels": "AAAA"}, "'width' must be between 1 and"),
    ],
    ids=["long for its size", "long for the largest size", "huge sides"],
)
def test_a_malformed_compact_raster_is_refused_before_anything_large_is_made(raster: Any, message: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(RequestError, match=message) as refused:
            drawing_from_request({"raster": raster})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused.value.status == 400
    assert peak < 64 * 2**10, f"{peak} bytes allocated before refusing"


def test_base64_of_the_right_length_but_bad_is_refused_having_decoded_at_most_its_size() -> None:
    levels = "A" * (4 * -(-(MAX_RASTER_SIDE**2) // 3) - 1) + "*"
    tracemalloc.start()
    try:
        with pytest.raises(RequestError, match="not valid base64"):
            drawing_from_request({"raster": {"width": MAX_RASTER_SIDE, "height": MAX_RASTER_SIDE, "levels": levels}})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(levels) + 2 * MAX_RASTER_SIDE**2  # its ASCII bytes and at most the levels they hold


def test_a_truncated_png_is_refused_by_the_decoder(url: str) -> None:
    pytest.importorskip("PIL")
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes_header(28, 28) + b"junk").decode()
    answer = post(url, {"png": data_url})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error.startswith("png: not a readable image") and "/tmp" not in error


def test_oversized_bodies_get_413_and_the_server_goes_on(url: str) -> None:
    answer = post(url, b" " * (MAX_BODY_BYTES + 1))
    assert answer.status_code == 413
    assert "more than the limit" in answer.json()["error"]
    # A declared length far beyond the limit is refused before anything is read.
    status, body = raw_request(url, "POST", "/api/predict", b"{}", **{"Content-Length": str(10**12)})
    assert status == 413 and "more than the limit" in body["error"]
    assert_still_serving(url)


def test_a_body_needs_a_content_length(url: str) -> None:
    host = url.removeprefix("http://")
    reply = raw_socket(url, f"POST /api/predict HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 411 ") and b"Content-Length header is required" in reply
    chunked = f"POST /api/predict HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
    assert raw_socket(url, chunked.encode()).startswith(b"HTTP/1.1 411 ")
    status, body = raw_request(url, "POST", "/api/predict", b"{}", **{"Content-Length": "two"})
    assert status == 400 and "bad Content-Length" in body["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/../pyproject.toml",
        "/%2e%2e/pyproject.toml",
        "/%2e%2e/",
        "/..%2fpyproject.toml",
        "/mnist_nn/serve.py",
        "/web/app.js",
        "/app.js/",
        "/static/../app.js",
        "//etc/passwd",
        "/index.htm",
        "/api",
        "/api/",
        "/api/models",
        "/favicon.ico",
        "/%00",
    ],
)
def test_only_the_page_files_are_served(url: str, path: str) -> None:
    status, body = raw_request(url, "GET", path)
    assert status == 404
    assert body == {"error": f"no such page: {path.replace('//', '/')}"}  # http.server collapses a leading //


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("POST", "/", 405, "GET, HEAD"),
        ("POST", "/app.js", 405, "GET, HEAD"),
        ("PUT", "/api/model", 405, "GET, HEAD"),
        ("GET", "/api/predict", 405, "POST"),
        ("DELETE", "/api/predict", 405, "POST"),
        ("OPTIONS", "/api/predict", 405, "POST"),
        ("PATCH", "/index.html", 405, "GET, HEAD"),
        ("POST", "/nowhere", 404, None),
        ("BREW", "/", 501, None),
    ],
)
def test_wrong_methods_are_refused(url: str, method: str, path: str, status: int, allow: str | None) -> None:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        conn.request(method, path, body=b"{}" if method != "GET" else None)
        response = conn.getresponse()
        assert response.status == status
        assert response.getheader("Allow") == allow
        assert "error" in json.loads(response.read())
    finally:
        conn.close()


def test_garbage_and_abandoned_requests_never_stop_the_server(url: str) -> None:
    # Without a valid HTTP version, http.server answers as HTTP/0.9 would: the body alone.
    assert raw_socket(url, b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n").startswith(b'{"error": "Bad request')
    assert raw_socket(url, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 414 ")
    host = url.removeprefix("http://")
    # A body that stops halfway: the client gives up.
    raw_socket(url, f"POST /api/predict HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n\r\n{{".encode())
    # A client that connects and leaves at once.
    socket.create_connection(("127.0.0.1", int(host.split(":")[1])), timeout=TIMEOUT).close()
    assert_still_serving(url)


# --- the page's files and headers -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/", "text/html; charset=utf-8"),
        ("/index.html", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/api/model", "application/json"),
        ("/nowhere", "application/json"),
    ],
)
def test_every_answer_has_a_content_type_and_a_restrictive_policy(url: str, path: str, content_type: str) -> None:
    answer = requests.get(url + path, timeout=TIMEOUT)
    assert answer.headers["Content-Type"] == content_type
    assert answer.headers["Content-Security-Policy"].startswith("default-src 'self';")
    assert "unsafe" not in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    if answer.ok:
        name = PAGE_FILES.get(path, ("", ""))[0]
        if name:
            assert answer.content == (WEB / name).read_bytes()


def test_head_gives_the_headers_without_a_body(url: str) -> None:
    answer = requests.head(url + "/", timeout=TIMEOUT)
    assert answer.status_code == 200 and answer.content == b""
    assert int(answer.headers["Content-Length"]) == len((WEB / "index.html").read_bytes())


def test_the_page_fetches_nothing_from_elsewhere_and_has_no_inline_code() -> None:
    html = (WEB / "index.html").read_text("utf-8")
    scripts = html.count("<script")
    assert scripts == 1 and '<script src="app.js" defer></script>' in html  # inline code would break the CSP
    assert " style=" not in html and "<style" not in html and not re.search(r"\son[a-z]+\s*=", html)
    for name in ("index.html", "app.js", "style.css"):
        text = (WEB / name).read_text("utf-8")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
        assert "@import" not in text and "url(" not in text, name


def test_requests_are_not_logged_unless_verbose(untrained: SavedModel, capsys: pytest.CaptureFixture[str]) -> None:
    with running_server(untrained) as quiet:
        requests.get(quiet + "/", timeout=TIMEOUT)
        requests.get(quiet + "/nowhere", timeout=TIMEOUT)
    assert capsys.readouterr().err == ""
    with running_server(untrained, verbose=True) as loud:
        requests.get(loud + "/", timeout=TIMEOUT)
    assert '"GET / HTTP/1.1" 200' in capsys.readouterr().err


# --- choosing the model and the command line --------------------------------------------


def _touch(path: Path, mtime: float) -> Path:
    path.write_bytes(b"")
    os.utime(path, (mtime, mtime))
    return path


def test_newest_model_is_the_latest_npz_file(tmp_path: Path) -> None:
    assert newest_model(tmp_path / "missing") is None
    assert newest_model(tmp_path) is None
    _touch(tmp_path / "old.npz", 1_000_000)
    newest = _touch(tmp_path / "new.npz", 2_000_000)
    _touch(tmp_path / ".new.npz.abc.tmp", 3_000_000)  # a save in progress
    _touch(tmp_path / ".hidden.npz", 3_000_000)
    _touch(tmp_path / "notes.txt", 3_000_000)
    (tmp_path / "folder.npz").mkdir()
    assert newest_model(tmp_path) == newest


def test_without_a_model_serve_says_how_to_train_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("mnist_nn.cli.serve.default_models_dir", lambda: tmp_path / "models")
    assert serve_main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("mnist-nn serve: error: no model given and no .npz file in ")
    assert "train one with: mnist-nn train --save" in err


def test_without_a_model_serve_picks_the_newest(
    tmp_path: Path, untrained: SavedModel, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    _touch(folder / "old.npz", 1_000_000)  # not a model: serve must not pick it
    (folder / "new.npz").write_bytes(untrained.path.read_bytes())
    monkeypatch.setattr("mnist_nn.cli.serve.default_models_dir", lambda: folder)
    # A busy port makes serve stop right after choosing and loading the model.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert serve_main(["--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err == f"mnist-nn serve: error: cannot listen on 127.0.0.1 port {port}: Address already in use\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "70000"], "--port must be between 0 and 65535, got 70000"),
        (["--port", "-1"], "--port must be between 0 and 65535, got -1"),
        (["missing.npz"], "missing.npz"),
        (["not-a-model.npz"], "not-a-model.npz"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str],
    message: str,
    untrained: SavedModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not-a-model.npz").write_text("hello")
    if argv[0] == "--port":
        argv = [str(untrained.path), *argv]
    assert serve_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mnist-nn serve: error: ") and message in err


@pytest.mark.parametrize(("argv", "message"), [(["--port", "x"], "invalid int value"), (["a", "b"], "unrecognized")])
def test_unparsable_arguments_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        serve_main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "(see --help)" in err


def test_help_names_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        serve_main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("MODEL", "--host", "--port", "--open", "--verbose", "127.0.0.1", "8000"):
        assert flag in out


def test_serve_runs_opens_the_browser_and_stops_cleanly_on_ctrl_c(untrained: SavedModel, tmp_path: Path) -> None:
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.py"
    browser.write_text(f"import sys, pathlib\npathlib.Path({str(opened)!r}).write_text(sys.argv[1])\n")
    code = "from mnist_nn.cli.serve import serve_main; raise SystemExit(serve_main())"
    env = {**os.environ, "BROWSER": f"{sys.executable} {browser} %s", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(untrained.path), "--port", "0", "--open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"Serving {untrained.path} at http://127.0.0.1:"), line
        assert "(this computer only); Ctrl-C stops" in line
        page_url = line.split(" at ", 1)[1].split(" ", 1)[0]
        assert requests.get(page_url, timeout=TIMEOUT).status_code == 200
        deadline = time.monotonic() + TIMEOUT
        while not opened.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert opened.read_text() == page_url
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0
    assert err == "mnist-nn serve: stopped\n"


class _BrokenNetwork(Network):
    """A network whose every answer fails, as a bug would."""

    def probabilities(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        raise RuntimeError("something broke")


def test_a_failure_inside_the_server_is_a_500_and_the_server_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    model = SavedModel(network=_BrokenNetwork([784, 10]), metadata={}, resume=None, path=Path("broken.npz"))
    raster = np.full((10, 10), 255)
    raster[2:8, 4:6] = 0
    with running_server(model) as url:
        answer = post(url, raster_body(raster))
        assert answer.status_code == 500
        assert answer.json() == {"error": "the server failed: something broke"}
        assert requests.get(url + "/api/model", timeout=TIMEOUT).json()["test_accuracy"] is None
    assert capsys.readouterr().err == "mnist-nn serve: error answering /api/predict: something broke\n"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.2:80", "[::2]:80"])
def test_a_foreign_host_name_is_refused_when_serving_this_computer_only(url: str, host: str) -> None:
    # DNS rebinding: a web page whose own name now points at 127.0.0.1 sends its own Host.
    status, body = raw_request(url, "GET", "/api/model", Host=host)
    assert status == 403 and "answers only to" in body["error"]
    status, body = raw_request(url, "POST", "/api/predict", b"{}", Host=host)
    assert status == 403
    for local in ("localhost", "127.0.0.1:9", "[::1]:9"):
        status, _ = raw_request(url, "GET", "/api/model", Host=local)
        assert status == 200
    assert_still_serving(url)
