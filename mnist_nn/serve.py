"""A drawing page for a saved model: the server behind ``mnist-nn serve``.

This module owns a small HTTP server (the standard library's
``ThreadingHTTPServer``) that serves one page, where you draw a digit and
watch the network's answer change as you draw, and the JSON endpoints the
page calls:

    GET  /                the page (index.html, app.js, style.css: an explicit allow-list)
    GET  /api/model       {"name", "sizes", "test_correct", "test_total", "test_accuracy", "classes", ...}
    POST /api/predict     a drawing in, {"image", "probabilities", "prediction", "probability_kind"} out

A drawing is one of

    {"raster": {"width": W, "height": H, "pixels": [...]}}     W * H gray levels 0-255, numbers, row-major
    {"raster": {"width": W, "height": H, "levels": "..."}}     the same levels as W * H bytes, in base64
    {"png": "data:image/png;base64,..."}                       decoded by Pillow (the ``images`` extra)

with dark ink on light paper or light on dark, either works. ``levels`` is
the compact form the page sends: standard base64 (RFC 4648, with its ``=``
padding, no line breaks) of the W * H unsigned bytes, one per pixel in
row-major order, so exactly 4 * ceil(W * H / 3) characters. The page's
280x280 canvas is 105 KB that way, 300 KB as ``pixels``, and costs the
server a fifth of the CPU; both give exactly the same answer. A raster's
``levels`` are checked for their exact length before they are decoded, so no
request decodes more than W * H bytes, and W and H are at most
``MAX_RASTER_SIDE`` either way.

A drawing goes through exactly what
``mnist-nn predict`` does to an image file: ``images.to_mnist`` (for a PNG,
``images.load_image`` first), then ``Network.probabilities``; the answer's
``image`` is the 28x28 input the network was given (before the model's own
input transform, such as deskewing, if it was trained with one).

Every request is bounded (``MAX_BODY_BYTES``, ``MAX_RASTER_SIDE``), every
error is a JSON ``{"error": "..."}`` with a 4xx or 5xx status, and a bad
request never stops the server. A request whose head breaks HTTP's syntax, or
whose body's end could be read two ways (RFC 9112, section 6.3), is refused
and its connection closed; a body on a GET is read and dropped. What clients
can hold together is bounded too (see ``DrawingServer``): connections at once
(fewer when the process may open few files), the time to send a whole request
and to wait between two, the bytes of bodies in memory and of drawings being
decoded (``drawing_bytes``: a 22 KB PNG can decode to 48 MiB); a client that
resets or stalls costs a line on stderr only with ``verbose``. Responses carry
a ``Content-Security-Policy`` that allows nothing but the server's own files.

This is a library: it reads no arguments and prints no results. The command
(its flags, the default model, Ctrl-C) is ``mnist_nn.cli.serve``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import errno
import importlib.util
import io
import ipaddress
import json
import math
import os
import re
import socket
import socketserver
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

from mnist_nn.config import IMAGE_SIDE
from mnist_nn.errors import ImageError, RequestError
from mnist_nn.images import load_image, preparation, to_mnist
from mnist_nn.models import SavedModel
from mnist_nn.nn.network import Network
from mnist_nn.text import MESSAGE_LIMIT, first_line, json_type, one_line

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

MAX_BODY_BYTES = 5 * 2**20  # room for the largest raster, 1024x1024 pixels written as "255,"
MAX_RASTER_SIDE = 1024  # width and height of a raster or PNG drawing, in pixels
MAX_GRAY = 255
MAX_DRAINED_BYTES = 4 * MAX_BODY_BYTES  # an oversized body up to this is read and dropped, so the client sees the 413
REQUEST_TIMEOUT = 10.0  # seconds a client may take to send one whole request, head and body; also bounds each write
IDLE_TIMEOUT = 5.0  # seconds a kept-alive connection may wait for its next request; a client that pauses reconnects
MAX_CONNECTIONS = 256  # connections answered at once, one thread each; more get a 503 at once
MAX_BYTES_IN_FLIGHT = 2 * MAX_BODY_BYTES  # request bodies read or being answered at once; more wait for room
DRAWING_FLOAT_COPIES = 5  # float64 copies of a drawing's pixels held at once, at most, while decoded and preprocessed
MAX_DRAWING_BYTES = MAX_RASTER_SIDE**2 * (8 + 8 * DRAWING_FLOAT_COPIES)  # the costliest: 1024x1024 16-bit RGBA, 48 MiB
MAX_DECODED_BYTES_IN_FLIGHT = 2 * MAX_DRAWING_BYTES  # drawings decoded or preprocessed at once; more wait for room
DECODE_WAIT_SECONDS = 2.0  # the longest a drawing waits for room to be decoded (within its deadline); then a 503
DESCRIPTOR_RESERVE = 16  # file descriptors kept free for the server's own files, beyond two per connection
ACCEPT_BACKOFF_SECONDS = 0.1  # the pause after accept() finds no free descriptor, instead of retrying at once
RECLAIM_WAIT_SECONDS = 1.0  # how long a new connection waits for the slot of an idle one closed to make room
MALLOC_MMAP_THRESHOLD = 2**17  # bytes from which glibc's malloc maps a block on its own, unmapped once freed
LISTEN_BACKLOG = 1024  # connections the kernel holds until they are accepted (the standard library's default is 5)
BUSY_RETRY_SECONDS = 1  # the Retry-After of a 503
PNG_PREFIX = "data:image/png;base64,"
PILLOW_NEEDED = "PNG drawings need Pillow on the server: pip install 'mnist-nn[images]' (or send a raster)"

# URL path -> (file in mnist_nn/web, Content-Type). Nothing else is ever served.
PAGE_FILES: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
Preparation = Callable[..., npt.NDArray[np.float32]]  # a picture to the model's input (images.preparation)
API_MODEL = "/api/model"
API_PREDICT = "/api/predict"

SECURITY_HEADERS = {
    # The page's own files only: no inline script, nothing from elsewhere, no framing.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_HEADER_BYTES = 24  # signature, IHDR length and type, width, height
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG color type -> samples a pixel: gray, RGB, palette, gray+alpha, RGBA
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h


# --- predictions -----------------------------------------------------------------------


def predict_image(
    network: Network, image: npt.NDArray[np.floating[Any]], prepare: Preparation = to_mnist
) -> dict[str, Any]:
    """Classify a grayscale drawing as ``mnist-nn predict`` classifies an image file.

    Args:
        network: the model's network.
        image: (height, width) float grayscale in [0, 1], either polarity.
        prepare: how a picture becomes the model's input (``images.preparation`` of its data set).

    Returns:
        JSON-ready ``{"image": 28 lists of 28 floats (the input given to the network),
        "probabilities": 10 floats, "prediction": int, "probability_kind": str}``.

    Raises:
        ImageError: the image is not 2-D in [0, 1], or it holds no ink.
    """
    digit = prepare(image, name="drawing")  # (784,) float32
    probabilities = network.probabilities(digit.reshape(1, -1))[0]  # (n_out,) float64
    return {
        "image": digit.reshape(IMAGE_SIDE, IMAGE_SIDE).tolist(),
        "probabilities": [float(p) for p in probabilities],
        "prediction": int(np.argmax(probabilities)),
        "probability_kind": network.probability_kind,
    }


def predict_raster(network: Network, raster: npt.ArrayLike) -> dict[str, Any]:
    """Classify a drawing given as gray levels 0-255 (``predict_image`` of ``raster / 255``).

    Args:
        network: the model's network.
        raster: (height, width) gray levels in [0, 255], integers or floats.

    Returns:
        As ``predict_image``.

    Raises:
        ImageError: the raster is not 2-D in [0, 255], or it holds no ink.
    """
    values = np.asarray(raster)
    if values.dtype.kind not in "biuf":
        raise ImageError(f"drawing: expected gray levels as numbers, got dtype {values.dtype}")
    return predict_image(network, values.astype(np.float64) / MAX_GRAY)


def _raster_from_json(raster: Any) -> npt.NDArray[np.float64]:
    """The ``raster`` member of a request as (height, width) float64 gray in [0, 1]; RequestError if malformed."""
    if not isinstance(raster, dict):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"'raster' must be an object, got {json_type(raster)}")
    missing = [key for key in ("width", "height") if key not in raster]
    if "pixels" not in raster and "levels" not in raster:
        missing.append("pixels")
    if missing:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"'raster' is missing {', '.join(map(repr, missing))}" + (" (or 'levels')" if "pixels" in missing else ""),
        )
    if "pixels" in raster and "levels" in raster:
        raise RequestError(HTTPStatus.BAD_REQUEST, "'raster' must have one of 'pixels' or 'levels', not both")
    width, height = raster["width"], raster["height"]
    for key, side in (("width", width), ("height", height)):
        if type(side) is not int:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"'{key}' must be an integer, got {json_type(side)}")
        if not 1 <= side <= MAX_RASTER_SIDE:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"'{key}' must be between 1 and {MAX_RASTER_SIDE}, got {side}")
    if "levels" in raster:
        levels = _levels_from_base64(raster["levels"], width * height)  # (height * width,) uint8
        return (levels / MAX_GRAY).reshape(height, width)  # float64 levels / 255, as the list form below
    gray = _pixels_from_list(raster["pixels"], width, height)
    gray /= MAX_GRAY  # in place: a 1024x1024 drawing is 8 MiB a copy
    return gray


def _levels_from_base64(text: Any, count: int) -> npt.NDArray[np.uint8]:
    """The ``levels`` member of a raster: ``count`` bytes in base64, its length checked before decoding."""
    if not isinstance(text, str):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"'levels' must be a string (base64), got {json_type(text)}")
    expected = 4 * -(-count // 3)  # padded base64 of count bytes
    if len(text) != expected:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"expected width * height = {count} gray levels, {expected} characters of base64, got {len(text)}",
        )
    try:
        data = base64.b64decode(text, validate=True)  # at most count + 2 bytes: the length is checked
    except ValueError:  # binascii.Error (a ValueError), or a character beyond ASCII
        raise RequestError(HTTPStatus.BAD_REQUEST, "'levels' is not valid base64") from None
    if len(data) != count:  # the right length but the wrong padding
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"expected width * height = {count} gray levels, got {len(data)} in 'levels'"
        )
    return np.frombuffer(data, dtype=np.uint8)


def _pixels_from_list(pixels: Any, width: int, height: int) -> npt.NDArray[np.float64]:
    """The ``pixels`` member of a raster as (height, width) float64 levels 0-255; RequestError if malformed."""
    if not isinstance(pixels, list):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"'pixels' must be an array, got {json_type(pixels)}")
    if len(pixels) != width * height:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"expected width * height = {width} * {height} = {width * height} pixels, got {len(pixels)}",
        )
    # JSON gives int, float, str, bool, None, list or dict; bool is an int subclass, so test the type exactly.
    # Types and range are checked over the whole array at once: 7 ms for the page's 280x280 drawing, 15 by a loop.
    values: npt.NDArray[np.float64] | None = None
    if set(map(type, pixels)) <= {int, float}:
        try:
            values = np.array(pixels, dtype=np.float64)  # (height * width,)
        except OverflowError:  # an integer beyond float64: out of range, found below
            values = None
    if values is None or not ((values >= 0) & (values <= MAX_GRAY)).all():
        index = _first_bad_pixel(pixels) if values is None else int(np.argmin((values >= 0) & (values <= MAX_GRAY)))
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"pixels must be numbers from 0 to {MAX_GRAY}, got {pixels[index]!r} at index {index}",
        )
    return values.reshape(height, width)


def _first_bad_pixel(pixels: list[Any]) -> int:
    """The index of the first pixel that is not an int or float from 0 to 255 (there is one)."""
    return next(i for i, v in enumerate(pixels) if type(v) not in (int, float) or not 0 <= v <= MAX_GRAY)


def _image_from_png(data_url: Any) -> npt.NDArray[np.float64]:
    """Decode the ``png`` member of a request with ``images.load_image``; RequestError if malformed."""
    if not isinstance(data_url, str) or not data_url.startswith(PNG_PREFIX):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"'png' must be a string starting with {PNG_PREFIX!r}")
    try:
        data = base64.b64decode(data_url[len(PNG_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(HTTPStatus.BAD_REQUEST, "'png' is not valid base64") from None
    if len(data) < _PNG_HEADER_BYTES or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise RequestError(HTTPStatus.BAD_REQUEST, "'png' does not hold a PNG image")
    # The size is in the header: refuse big pictures before anything is decoded.
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not (1 <= width <= MAX_RASTER_SIDE and 1 <= height <= MAX_RASTER_SIDE):
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"the PNG must be between 1x1 and {MAX_RASTER_SIDE}x{MAX_RASTER_SIDE} pixels, got {width}x{height}",
        )
    if importlib.util.find_spec("PIL") is None:
        raise RequestError(HTTPStatus.BAD_REQUEST, PILLOW_NEEDED)
    # load_image reads files; going through it keeps PNG decoding identical to `mnist-nn predict`.
    with tempfile.TemporaryDirectory(prefix="mnist-nn-serve-") as folder:
        path = Path(folder) / "drawing.png"
        path.write_bytes(data)
        try:
            return load_image(path)
        except ImageError as exc:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(exc).replace(str(path), "png")) from None


def drawing_from_request(body: Any) -> npt.NDArray[np.float64]:
    """The drawing of a parsed ``POST /api/predict`` body as a grayscale image.

    Returns:
        (height, width) float64 in [0, 1], either polarity, for ``predict_image``.

    Raises:
        RequestError: a malformed drawing (400).
    """
    if not isinstance(body, dict):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"expected a JSON object, got {json_type(body)}")
    if ("raster" in body) == ("png" in body):
        raise RequestError(HTTPStatus.BAD_REQUEST, "expected an object with one of the keys 'raster' or 'png'")
    if "raster" in body:
        return _raster_from_json(body["raster"])
    return _image_from_png(body["png"])


def drawing_bytes(body: Any) -> int:
    """The bytes that a parsed ``POST /api/predict`` body's drawing takes while decoded and preprocessed.

    Read from the drawing's declared size alone, before anything is decoded: its
    pixels (a raster's levels, one byte each; a PNG's samples, 1 to 4 channels of 1
    or 2 bytes, from its IHDR chunk) and ``DRAWING_FLOAT_COPIES`` float64 copies of
    them, the most that decoding (a PNG with alpha) or preprocessing (a photo's
    background removal) holds at once. At most ``MAX_DRAWING_BYTES``.

    Returns:
        The bytes, or 0 for a malformed drawing (``drawing_from_request`` refuses it
        before decoding anything).
    """
    if not isinstance(body, dict) or ("raster" in body) == ("png" in body):
        return 0
    if "raster" in body:
        raster = body["raster"]
        if not isinstance(raster, dict):
            return 0
        width, height, sample_bytes = raster.get("width", 0), raster.get("height", 0), 1
    else:
        header = _png_header(body["png"])
        if header is None:
            return 0
        width, height, bit_depth, color_type = header
        sample_bytes = _PNG_SAMPLES.get(color_type, 4) * (2 if bit_depth == 16 else 1)
    if not all(type(side) is int and 1 <= side <= MAX_RASTER_SIDE for side in (width, height)):
        return 0
    return int(width) * int(height) * (sample_bytes + 8 * DRAWING_FLOAT_COPIES)


def _png_header(data_url: Any) -> tuple[int, int, int, int] | None:
    """A PNG data URL's width, height, bit depth and color type, from its first 36 base64 characters; else None."""
    if not isinstance(data_url, str) or not data_url.startswith(PNG_PREFIX):
        return None
    try:
        data = base64.b64decode(data_url[len(PNG_PREFIX) : len(PNG_PREFIX) + 36], validate=True)  # 27 bytes
    except ValueError:  # binascii.Error (a ValueError), or a character beyond ASCII
        return None
    if len(data) < _PNG_HEADER_BYTES + 2 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"), data[24], data[25]


def predict_request(network: Network, body: Any, prepare: Preparation = to_mnist) -> dict[str, Any]:
    """Answer a parsed ``POST /api/predict`` body (``predict_image`` of ``drawing_from_request``).

    Raises:
        RequestError: a malformed drawing (400) or one without ink (400).
    """
    return _predict_drawing(network, drawing_from_request(body), prepare)


def _predict_drawing(network: Network, image: npt.NDArray[np.float64], prepare: Preparation) -> dict[str, Any]:
    """``predict_image``, with a drawing without ink refused as a RequestError (400)."""
    try:
        return predict_image(network, image, prepare)
    except ImageError as exc:
        raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None


def model_info(model: SavedModel) -> dict[str, Any]:
    """What the page shows about the model: file name, layer sizes and test accuracy (None if unknown)."""
    correct, total = model.metadata.get("test_correct"), model.metadata.get("test_total")
    if not (isinstance(correct, int) and isinstance(total, int) and 0 <= correct <= total and total > 0):
        correct = total = None  # an older or hand-made file without a test count
    return {
        "name": model.path.name,
        "sizes": list(model.network.sizes),
        "activation": model.network.activation.name,
        "cost": model.network.cost.name,
        "test_correct": correct,
        "test_total": total,
        "test_accuracy": correct / total if correct is not None and total else None,
        "probability_kind": model.network.probability_kind,
        "dataset": model.dataset,
        "classes": list(model.classes),
    }


# A header line as RFC 9112 (section 5) allows it: a name of token characters right before the colon, and a
# value of visible characters, spaces, tabs and bytes beyond ASCII; the line ends in CRLF (or LF alone).
_FIELD_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r?\n")
_DIGITS = re.compile(r"[0-9]+")  # a Content-Length value (int() would also take signs, spaces, "_" and other digits)


def _check_head_lines(lines: list[bytes]) -> None:
    """Refuse (400) a head whose header lines (each as read, with its line end) break RFC 9112's syntax.

    The standard library's parser reads such lines its own way: a line with whitespace
    before its colon ends the head there, unread, and a bare CR splits a line in two.
    """
    for line in lines:
        if line in (b"\r\n", b"\n"):  # the empty line that ends the head
            return
        if line[:1] in (b" ", b"\t"):
            raise RequestError(HTTPStatus.BAD_REQUEST, "a folded header line (obs-fold) is not accepted")
        if not _FIELD_LINE.fullmatch(line):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"bad header line: {line[:60]!r}")
    raise RequestError(HTTPStatus.BAD_REQUEST, "the request's head ended before its empty line")


def _body_length(headers: Message, request_version: str) -> int | None:
    """The length of a request's body from its Content-Length (None without one); RequestError if ambiguous.

    The refusals and their statuses are those of ``_Handler._check_framing``.
    """
    codings_sent = headers.get_all("Transfer-Encoding")
    lengths_sent = headers.get_all("Content-Length")
    if codings_sent is not None:
        if request_version in ("HTTP/0.9", "HTTP/1.0"):
            raise RequestError(HTTPStatus.BAD_REQUEST, "Transfer-Encoding is not allowed in an HTTP/1.0 request")
        if lengths_sent is not None:
            raise RequestError(
                HTTPStatus.BAD_REQUEST, "both Transfer-Encoding and Content-Length: the body's length is ambiguous"
            )
        codings = [c.split(";")[0].strip(" \t").lower() for value in codings_sent for c in value.split(",")]
        codings = [coding for coding in codings if coding]
        if not codings or codings[-1] != "chunked":
            raise RequestError(HTTPStatus.BAD_REQUEST, "the last transfer coding is not chunked: the body has no end")
        if codings.count("chunked") > 1:
            raise RequestError(HTTPStatus.BAD_REQUEST, "the chunked transfer coding is applied twice")
        unknown = [coding for coding in codings if coding != "chunked"]
        if unknown:
            raise RequestError(
                HTTPStatus.NOT_IMPLEMENTED,
                f"the transfer coding {unknown[0][:40]!r} is not implemented; send the body with a Content-Length",
            )
        raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length, not chunked")
    if lengths_sent is None:
        return None
    # A list of equal values is that value (RFC 9112, section 6.3); empty list elements are ignored (RFC 9110, 5.6.1).
    values = [item.strip(" \t") for value in lengths_sent for item in value.split(",")]
    values = [value for value in values if value]
    bad = next((value for value in values if not _DIGITS.fullmatch(value)), None)
    if not values or bad is not None:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"bad Content-Length: {', '.join(lengths_sent)[:40]!r}")
    lengths = {int(value.lstrip("0")[:20] or "0") for value in values}  # 20 digits are more than any limit
    if len(lengths) > 1:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"Content-Length values differ: {', '.join(map(str, sorted(lengths)))[:60]}"
        )
    return lengths.pop()


def _reject_constant(name: str) -> Any:
    """json.loads hook: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not allowed in JSON")


# --- the server ------------------------------------------------------------------------


LOCAL_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})  # Host header names of this computer
_CLIENT_ERRORS = (ConnectionError, TimeoutError)  # a client that reset, closed or stalled: its doing, not a fault
_BUSY_NOTE_SECONDS = 10.0  # at most one "busy" line on stderr per this many seconds


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this computer only: "localhost", 127.0.0.0/8, ::1 (or 127.x mapped into IPv6)."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


class DrawingServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` that holds the model and the page's files, and bounds what clients can hold.

    Each connection gets a thread, at most ``connection_limit`` at once: ``max_connections``,
    or fewer when the process may not open enough files for them (two descriptors each,
    ``DESCRIPTOR_RESERVE`` kept free). A connection beyond the limit takes the place of the
    kept-alive connection that has waited longest for its next request, which is closed;
    when none is waiting, it is answered 503 at once, without a thread. When accept() finds
    no free descriptor, the server closes such an idle connection and pauses
    ``ACCEPT_BACKOFF_SECONDS`` rather than retrying at once.

    Each request must arrive whole, head and body, within ``request_timeout`` seconds (one
    deadline, however the client spreads its bytes), else it gets a 408 and its connection
    is closed; a kept-alive connection is closed when its next request has not begun
    within ``idle_timeout`` seconds. The bodies being read or answered share
    ``max_bytes_in_flight`` bytes, and the drawings being decoded and preprocessed share
    ``max_decoded_bytes`` (as ``drawing_bytes`` counts them); a body or drawing that does
    not fit waits for room (a drawing at most ``DECODE_WAIT_SECONDS``), then gets a 503.
    """

    daemon_threads = True  # a stuck client never delays shutdown
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        model: SavedModel,
        address: tuple[str, int],
        *,
        verbose: bool = False,
        request_timeout: float = REQUEST_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        max_bytes_in_flight: int = MAX_BYTES_IN_FLIGHT,
        max_decoded_bytes: int = MAX_DECODED_BYTES_IN_FLIGHT,
    ) -> None:
        for name, seconds in (("request_timeout", request_timeout), ("idle_timeout", idle_timeout)):
            if not (math.isfinite(seconds) and seconds > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {seconds}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        if max_bytes_in_flight < MAX_BODY_BYTES:
            raise ValueError(f"max_bytes_in_flight must be at least {MAX_BODY_BYTES}, got {max_bytes_in_flight}")
        if max_decoded_bytes < MAX_DRAWING_BYTES:
            raise ValueError(f"max_decoded_bytes must be at least {MAX_DRAWING_BYTES}, got {max_decoded_bytes}")
        self.model = model
        self.prepare = preparation(model.dataset)
        self.model_json = json.dumps(model_info(model)).encode("utf-8")
        self.pages = _read_pages()
        self.verbose = verbose
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.budget = _ByteBudget(max_bytes_in_flight)
        self.decode_budget = _ByteBudget(max_decoded_bytes)
        self._idle: dict[socket.socket, float] = {}  # connections waiting for their next request, the longest first
        self._idle_lock = threading.Lock()
        self._noted = {"busy": -math.inf, "accept": -math.inf}  # time.monotonic() of each note's last line
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.descriptor_limit = _descriptor_limit()
        self.connection_limit = max_connections
        in_use = _descriptors_in_use()
        if self.descriptor_limit is not None and in_use is not None:
            room = (self.descriptor_limit - in_use - DESCRIPTOR_RESERVE) // 2  # a socket, and a PNG's file
            self.connection_limit = max(1, min(max_connections, room))
        self._slots = threading.BoundedSemaphore(self.connection_limit)
        # Bound to this computer only (any of 127.0.0.0/8, ::1), the server also answers only to this
        # computer's names: a web page that rebinds its own name to a loopback address gets a 403.
        bound = str(self.server_address[0])
        self.local_names: frozenset[str] | None = None
        if is_loopback(bound):
            names = {f"[{bound}]" if ":" in bound else bound}
            if not _is_address(address[0]):
                names.add(address[0].lower())  # the name it was given, e.g. localhost
            self.local_names = LOCAL_NAMES | names

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s reverse DNS lookup of the host, which can take seconds."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    @property
    def url(self) -> str:
        """The page's address; a wildcard host is shown as this computer."""
        host, port = str(self.server_address[0]), int(self.server_address[1])
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1" if host != "::" else "::1"
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection; out of descriptors (or memory), close the idlest kept-alive one and pause, then raise.

        ``serve_forever`` calls this when the listening socket is readable and ignores
        its OSError; retried at once, an accept() that fails for want of a descriptor
        would keep one core busy until a descriptor is freed.
        """
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                closed = self.close_idlest()
                self._note(
                    "accept",
                    f"cannot accept connections: {exc.strerror} (file descriptor limit {self.descriptor_limit}); "
                    + ("closing idle ones" if closed else "new ones wait until some end"),
                )
                time.sleep(ACCEPT_BACKOFF_SECONDS)
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        """Answer the connection on a thread of its own, in an idle one's place, or with a 503 when all are taken."""
        if not self._slots.acquire(blocking=False) and not (
            self.close_idlest() and self._slots.acquire(timeout=RECLAIM_WAIT_SECONDS)
        ):
            self._refuse_busy(request)
            return
        # Only an Exception means that the thread never started. A KeyboardInterrupt (Ctrl-C) may arrive
        # after it started, and the thread frees its slot itself: releasing it here too would raise
        # ValueError, which the server reports and goes on, swallowing the Ctrl-C.
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Answer the connection, then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def mark_idle(self, connection: socket.socket) -> None:
        """Note that ``connection`` waits for its next request: ``close_idlest`` may close it to make room."""
        with self._idle_lock:
            self._idle[connection] = time.monotonic()

    def mark_busy(self, connection: socket.socket) -> bool:
        """Note that ``connection`` no longer waits; False if ``close_idlest`` closed it meanwhile."""
        with self._idle_lock:
            return self._idle.pop(connection, None) is not None

    def close_idlest(self) -> bool:
        """Shut down the connection that has waited longest for its next request; False if none waits.

        Its thread, woken by the shutdown, ends the connection and frees its slot and descriptor.
        """
        with self._idle_lock:
            if not self._idle:
                return False
            connection = next(iter(self._idle))  # entries are added when a wait begins: the first is the oldest
            del self._idle[connection]
            with contextlib.suppress(OSError):  # the client closed it already
                connection.shutdown(socket.SHUT_RDWR)
        return True

    def _refuse_busy(self, request: socket.socket) -> None:
        """Answer 503 from the accepting thread, never blocking; what came first is read, so closing does not reset."""
        try:
            request.setblocking(False)
            with contextlib.suppress(BlockingIOError):  # BlockingIOError: nothing more has arrived yet
                for _ in range(16):
                    if not request.recv(2**16):
                        break
            request.send(_BUSY_ANSWER)  # a few hundred bytes: a new socket's send buffer takes them at once
        except OSError:
            pass  # the client has gone already
        self.shutdown_request(request)
        reason = "" if self.connection_limit == self.max_connections else f" for {self.descriptor_limit} descriptors"
        self._note(
            "busy",
            f"{self.connection_limit} connections in progress, the limit{reason}; "
            "new ones get 503 (busy) until some end",
        )

    def _note(self, kind: str, message: str) -> None:
        """One line on stderr, at most one of each ``kind`` per ``_BUSY_NOTE_SECONDS``."""
        now = time.monotonic()
        if now - self._noted[kind] >= _BUSY_NOTE_SECONDS:
            self._noted[kind] = now
            print(f"mnist-nn serve: {message}", file=sys.stderr)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line on stderr for a failure outside a handler's answers, none for a client that reset or left."""
        error = sys.exc_info()[1]
        if error is None or (isinstance(error, _CLIENT_ERRORS) and not self.verbose):
            return
        print(f"mnist-nn serve: client {_format_address(client_address)}: {first_line(error)}", file=sys.stderr)


def return_freed_memory() -> bool:
    """Have the C library's malloc give every large block back to the system once it is freed (glibc only).

    glibc serves blocks of up to 32 MiB from per-thread arenas once a block that large
    has been freed, and keeps what is freed there. With a thread per connection, many
    arenas each come to hold a drawing's worth of pictures, and the server's memory
    grows with its threads, not with the drawings decoded at once (which
    ``max_decoded_bytes`` bounds). A fixed ``M_MMAP_THRESHOLD`` of
    ``MALLOC_MMAP_THRESHOLD`` maps each larger block on its own, unmapped when freed.
    The setting is the whole process's, so ``mnist-nn serve`` makes it, not ``make_server``.

    Returns:
        Whether the setting was made: False off Linux, or where malloc has no such setting.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD))  # musl's mallopt does nothing and returns 0


def _descriptor_limit() -> int | None:
    """The process's soft limit on open file descriptors (RLIMIT_NOFILE); None if unlimited or unknown."""
    try:
        import resource  # Unix only
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _descriptors_in_use() -> int | None:
    """How many file descriptors the process has open (Linux's /proc, or /dev/fd elsewhere); None if unknown."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return len(os.listdir(folder))
    return None


def _is_address(host: str) -> bool:
    """Whether ``host`` is an IP address rather than a name."""
    try:
        ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False
    return True


def _format_address(client_address: Any) -> str:
    """A client's (host, port, ...) as host:port."""
    if isinstance(client_address, tuple) and len(client_address) >= 2:
        return f"{client_address[0]}:{client_address[1]}"
    return str(client_address)


def _busy_answer() -> bytes:
    """The whole 503 answer given when every connection slot is taken."""
    body = json.dumps({"error": "the server is busy; try again in a moment"}).encode("utf-8")
    head = [
        "HTTP/1.1 503 Service Unavailable",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        f"Retry-After: {BUSY_RETRY_SECONDS}",
        "Connection: close",
        *(f"{key}: {value}" for key, value in SECURITY_HEADERS.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


_BUSY_ANSWER = _busy_answer()


class _ByteBudget:
    """Bytes that request bodies may hold at once; a body waits for room until its request's deadline."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, size: int, deadline: float) -> Iterator[None]:
        """Hold ``size`` bytes of the budget; RequestError (503) if there is no room by ``deadline`` (monotonic)."""
        with self._changed:
            while self.free < size:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RequestError(
                        HTTPStatus.SERVICE_UNAVAILABLE, "the server is busy with other large drawings; try again"
                    )
                self._changed.wait(left)
            self.free -= size
        try:
            yield
        finally:
            with self._changed:
                self.free += size
                self._changed.notify_all()


class _DeadlineReader(io.RawIOBase):
    """A socket's incoming bytes, every read bounded by one deadline for the whole request, not a timeout per read."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self.deadline = math.inf  # time.monotonic() by which the request must have arrived
        self.received = 0  # bytes read since the deadline was set
        self.expired = False  # a read ran into the deadline

    def start(self, seconds: float, received: int = 0) -> None:
        """Set the deadline of the next request (or wait), ``seconds`` from now; ``received`` of its bytes are in."""
        self.deadline = time.monotonic() + seconds
        self.received = received
        self.expired = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.expired = True
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(left)
        try:
            count = self._sock.recv_into(buffer)
        except TimeoutError:
            self.expired = True
            raise
        self.received += count
        return count


class _HeadReader(io.BufferedReader):
    """A request's buffered bytes that can keep the lines read, so that its head is checked as it was sent."""

    lines: list[bytes] | None = None  # the lines read since recording began, or None when not recording

    def readline(self, size: int | None = -1, /) -> bytes:
        line = super().readline(size)
        if self.lines is not None:
            self.lines.append(line)
        return line


def _read_pages() -> dict[str, bytes]:
    """The page's files from the package, read once (FileNotFoundError if the package lacks them)."""
    web = resources.files("mnist_nn").joinpath("web")
    return {name: web.joinpath(name).read_bytes() for name, _ in set(PAGE_FILES.values())}


def make_server(
    model: SavedModel,
    host: str,
    port: int,
    *,
    verbose: bool = False,
    request_timeout: float = REQUEST_TIMEOUT,
    idle_timeout: float = IDLE_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    max_bytes_in_flight: int = MAX_BYTES_IN_FLIGHT,
    max_decoded_bytes: int = MAX_DECODED_BYTES_IN_FLIGHT,
) -> DrawingServer:
    """A server for ``model``, bound and listening; call ``serve_forever()`` to answer requests.

    Args:
        model: a loaded model file.
        host: the address to listen on, e.g. "127.0.0.1" (this computer only) or "0.0.0.0".
        port: the TCP port; 0 picks a free one (see ``server.server_address``).
        verbose: log every request to stderr, as ``http.server`` does, and every client that
            resets or stalls.
        request_timeout: seconds a client has to send a whole request, head and body (and
            the bound on each write of an answer).
        idle_timeout: seconds a kept-alive connection may wait for its next request to begin.
        max_connections: connections answered at once (fewer if the descriptor limit,
            RLIMIT_NOFILE, is low); beyond them, an idle kept-alive connection is closed to
            make room, or the new one gets a 503 at once.
        max_bytes_in_flight: bytes of request bodies read or answered at once (at least
            ``MAX_BODY_BYTES``); a body that does not fit waits, until its deadline.
        max_decoded_bytes: bytes of drawings decoded and preprocessed at once, as
            ``drawing_bytes`` counts them (at least ``MAX_DRAWING_BYTES``); a drawing that
            does not fit waits up to ``DECODE_WAIT_SECONDS``, then gets a 503.

    Returns:
        The server; ``server.url`` is the page's address.

    Raises:
        OSError: the address cannot be bound (in use, not this computer's, ...).
        FileNotFoundError: the package was installed without its ``web`` files.
        ValueError: a bound is not positive.
    """
    return DrawingServer(
        model,
        (host, port),
        verbose=verbose,
        request_timeout=request_timeout,
        idle_timeout=idle_timeout,
        max_connections=max_connections,
        max_bytes_in_flight=max_bytes_in_flight,
        max_decoded_bytes=max_decoded_bytes,
    )


class _Handler(BaseHTTPRequestHandler):
    """Answers GET for the allow-listed files and /api/model, POST for /api/predict; nothing else.

    Before any answer, a request's head is checked and where its body ends is found
    (RFC 9112, sections 5 and 6.3): see ``_check_framing``. A body on any request but a
    predict is read and dropped, so that it is never taken for the next request.
    """

    server: DrawingServer
    protocol_version = "HTTP/1.1"
    error_content_type = "application/json"
    disable_nagle_algorithm = True  # head and body go in two writes: no waiting for the client's delayed ACK

    def setup(self) -> None:
        """The socket's streams; reads go through a ``_DeadlineReader``."""
        super().setup()
        self.connection.settimeout(self.server.request_timeout)  # bounds each write (sendall's total since 3.5)
        self.rfile.close()  # the per-read-timeout reader of socket.makefile: replaced, the socket stays open
        self._reader = _DeadlineReader(self.connection)
        self._head_reader = _HeadReader(self._reader)
        self.rfile = self._head_reader
        self._answered = False
        self._requests = 0  # requests begun on this connection
        self._body_length: int | None = None  # the request's Content-Length, None without one
        self._framed = False  # the request's framing has been checked

    def handle(self) -> None:
        """Answer requests until the connection closes; a client that resets or stalls ends it quietly."""
        try:
            super().handle()
        except _CLIENT_ERRORS as exc:
            self.close_connection = True
            self.log_message("connection ended: %s", first_line(exc))

    def handle_one_request(self) -> None:
        """One request, its head and body under one deadline; a request cut short by it gets a 408.

        The first request's deadline counts from the connection's start; a later one's from its
        first byte, which must come within the idle timeout.
        """
        if self._requests and not self._await_request():
            self.close_connection = True
            return
        if self._requests:
            self._reader.start(self.server.request_timeout, received=len(self._head_reader.peek(0)))
        else:
            self._reader.start(self.server.request_timeout)
        self._requests += 1
        self._answered = False
        self._body_length, self._framed = None, False
        # What http.server sets once it has a request line, for an answer given before that.
        self.command, self.requestline, self.request_version = "", "", self.protocol_version
        super().handle_one_request()  # a read past the deadline raises TimeoutError, caught there
        if self._reader.expired and self._reader.received and not self._answered:
            self._send_error_json(
                HTTPStatus.REQUEST_TIMEOUT,
                f"the request did not arrive within {self.server.request_timeout:g} seconds",
            )

    def _await_request(self) -> bool:
        """Wait up to the idle timeout for the next request on a kept-alive connection; False to close it.

        Meanwhile the server may close the connection to make room for another (``close_idlest``).
        """
        self._reader.start(self.server.idle_timeout)
        self.server.mark_idle(self.connection)
        try:
            arrived = self._head_reader.peek(1)  # at once if pipelined bytes are buffered already
        except TimeoutError:
            arrived = b""
        finally:
            kept = self.server.mark_busy(self.connection)
        return bool(arrived) and kept

    def parse_request(self) -> bool:
        """``http.server``'s parsing of the request line and head, then the checks of ``_check_framing``.

        A body on anything but a predict request is read and dropped here.
        """
        self._head_reader.lines = []
        try:
            if not super().parse_request() or not (self._framed or self._check_framing()):
                return False
        finally:
            self._head_reader.lines = None
        if self._body_length and not (self.command == "POST" and urlsplit(self.path).path == API_PREDICT):
            try:
                self._discard_body(self._body_length)
            except RequestError as exc:
                self._send_error_json(exc.status, exc.message)
                return False
        return True

    def handle_expect_100(self) -> bool:
        """Check the framing before inviting the body with "100 Continue" (a refused body is never sent)."""
        return self._check_framing(body_follows=False) and super().handle_expect_100()

    def _check_framing(self, *, body_follows: bool = True) -> bool:
        """Refuse a request whose head is malformed or whose body's end is ambiguous; False once refused.

        Sets ``_body_length``. The refusals, each with the connection closed (RFC 9112):
        a header line with whitespace before its colon, a folded line, or a control
        character (400, section 5); Transfer-Encoding in an HTTP/1.0 request, or with a
        Content-Length, or not ending in chunked, or chunked twice (400, section 6.3:
        another reader could find another end); a Content-Length that is not digits, or
        values that differ (400; the same value repeated is that value); a coding other
        than chunked (501, "not implemented", section 6.1); chunked alone (411: this server
        reads no chunked bodies, and asks for a Content-Length instead); a body over
        ``MAX_BODY_BYTES`` (413; the body is read and dropped first if ``body_follows``, as
        ``_drain`` says).
        """
        self._framed = True
        try:
            _check_head_lines(self._head_reader.lines or [])
            self._body_length = _body_length(self.headers, self.request_version)
        except RequestError as exc:
            self._drop_arrived()
            self._send_error_json(exc.status, exc.message)
            return False
        if self._body_length is not None and self._body_length > MAX_BODY_BYTES:
            if body_follows:
                self._drain(self._body_length)
            self._send_error_json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the body is {self._body_length} bytes, more than the limit of {MAX_BODY_BYTES}; "
                "send a smaller drawing",
            )
            return False
        return True

    def _foreign_host(self) -> bool:
        """Refuse (403) a request whose Host is not this computer's, when serving this computer only."""
        names = self.server.local_names
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.split("]")[0] + "]" if host.startswith("[") else host.split(":")[0]
        if names is None or name in names:
            return False
        self._send_error_json(HTTPStatus.FORBIDDEN, f"this server answers only to {', '.join(sorted(names))}")
        return True

    def do_GET(self) -> None:
        if self._foreign_host():
            return
        path = urlsplit(self.path).path  # the query string is ignored; no unquoting, no normalizing
        if path in PAGE_FILES:
            name, content_type = PAGE_FILES[path]
            self._send(HTTPStatus.OK, self.server.pages[name], content_type)
        elif path == API_MODEL:
            self._send(HTTPStatus.OK, self.server.model_json, "application/json")
        elif path == API_PREDICT:
            self._send_error_json(HTTPStatus.METHOD_NOT_ALLOWED, "use POST for /api/predict", allow="POST")
        else:
            self._send_error_json(HTTPStatus.NOT_FOUND, f"no such page: {path[:200]}")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        if self._foreign_host():
            return
        path = urlsplit(self.path).path
        if path != API_PREDICT:
            self._refuse_method(path)
            return
        try:
            length = self._body_length
            if length is None:
                raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
            with self.server.budget.reserve(length, self._reader.deadline):
                answer = self._answer(self._read_body(length))
        except RequestError as exc:
            self._send_error_json(exc.status, exc.message)
            return
        except _CLIENT_ERRORS:
            raise  # the client reset or left mid-request: handle() ends the connection quietly
        except Exception as exc:  # a bug, or memory running out: answer, and keep serving
            print(
                f"mnist-nn serve: error answering {one_line(path, MESSAGE_LIMIT)}: {first_line(exc)}", file=sys.stderr
            )
            self._send_error_json(HTTPStatus.INTERNAL_SERVER_ERROR, f"the server failed: {first_line(exc)}")
            return
        self._send(HTTPStatus.OK, answer, "application/json")

    def do_PUT(self) -> None:
        self._refuse_method(urlsplit(self.path).path)

    do_DELETE = do_PATCH = do_OPTIONS = do_PUT  # noqa: N815

    def _refuse_method(self, path: str) -> None:
        """405 for a known path with the wrong method, 404 for any other path."""
        if path in PAGE_FILES or path == API_MODEL:
            self._send_error_json(HTTPStatus.METHOD_NOT_ALLOWED, f"use GET for {path}", allow="GET, HEAD")
        elif path == API_PREDICT:
            self._send_error_json(HTTPStatus.METHOD_NOT_ALLOWED, f"use POST for {path}", allow="POST")
        else:
            self._send_error_json(HTTPStatus.NOT_FOUND, f"no such page: {path[:200]}")

    def _read_body(self, length: int) -> bytearray:
        """The body's ``length`` bytes, read into one buffer of that size; 408 if it stalls past the deadline."""
        data = bytearray(length)
        received = 0
        with memoryview(data) as view:
            try:
                while received < length:
                    count = self.rfile.readinto1(view[received:])  # what has come, so a stall counts it
                    if not count:
                        break
                    received += count
            except TimeoutError:
                raise RequestError(
                    HTTPStatus.REQUEST_TIMEOUT,
                    f"the body stalled after {received} of {length} bytes; a request must arrive "
                    f"within {self.server.request_timeout:g} seconds",
                ) from None
        if received < length:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"the body ended after {received} of {length} bytes")
        return data

    def _answer(self, data: bytearray) -> bytes:
        """The JSON answer to a predict body; ``data`` is emptied once parsed, to free its memory early."""
        try:
            text = data.decode(json.detect_encoding(data), "surrogatepass")  # as json.loads decodes bytes
            data.clear()
            body = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise RequestError(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON: {first_line(exc)}") from None
        del text
        # The drawing's pixels are reserved before they are decoded: a 22 KB PNG can take 48 MiB.
        room_by = min(self._reader.deadline, time.monotonic() + DECODE_WAIT_SECONDS)
        with self.server.decode_budget.reserve(drawing_bytes(body), room_by):
            image = drawing_from_request(body)
            del body  # the parsed JSON takes up to 4 times the image: gone before the preprocessing's copies
            answer = _predict_drawing(self.server.model.network, image, self.server.prepare)
            del image
        return json.dumps(answer).encode("utf-8")

    def _discard_body(self, length: int) -> None:
        """Read and drop a body of ``length`` bytes (at most ``MAX_BODY_BYTES``) within the request's deadline."""
        left = length
        while left > 0:
            chunk = self.rfile.read1(min(left, 2**16))  # a stall past the deadline raises TimeoutError: a 408
            if not chunk:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"the body ended after {length - left} of {length} bytes")
            left -= len(chunk)

    def _drop_arrived(self) -> None:
        """Read and drop what the client has sent so far, without waiting: closing on unread bytes would reset."""
        with contextlib.suppress(OSError):  # BlockingIOError: nothing more has come; or the client has gone
            self.connection.setblocking(False)
            for _ in range(16):
                if not self.connection.recv(2**16):
                    break

    def _drain(self, length: int) -> None:
        """Read and drop an oversized body (if not absurdly large): closing on unread data resets the connection."""
        if length > MAX_DRAINED_BYTES:
            return
        try:
            while length > 0:
                chunk = self.rfile.read(min(length, 2**16))
                if not chunk:
                    return
                length -= len(chunk)
        except TimeoutError:
            return  # the deadline: the 413 goes out all the same

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self._answered = True
        self.connection.settimeout(self.server.request_timeout)  # the reader left it at what remained of the deadline
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error_json(self, status: HTTPStatus, message: str, *, allow: str | None = None) -> None:
        """An error answer; the connection is closed, since an unread body may follow the request."""
        self.close_connection = True
        headers = {"Connection": "close"}
        if allow is not None:
            headers["Allow"] = allow
        if status == HTTPStatus.SERVICE_UNAVAILABLE:
            headers["Retry-After"] = str(BUSY_RETRY_SECONDS)
        body = json.dumps({"error": message}).encode("utf-8")
        self._send(status, body, "application/json", headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, unsupported method, ...) as JSON too."""
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.BAD_REQUEST
        self._send_error_json(status, message or status.phrase)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


# --- choosing a model ------------------------------------------------------------------


def newest_model(folder: Path) -> Path | None:
    """The most recently modified ``*.npz`` file in ``folder`` (hidden files skipped), or None."""
    try:
        candidates = [p for p in Path(folder).glob("*.npz") if not p.name.startswith(".") and p.is_file()]
    except OSError:
        return None
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.stat().st_mtime, p.name))
