"""Property-based fuzzing of every parser of outside bytes (hypothesis).

Each parser gets arbitrary and mutated input and must either return valid data
or raise the project's own error with a one-line message: ``DataFormatError``
for IDX files, ``DownloadError`` for what a mirror serves (``MirrorError``,
its one-line reason, when the gzip layer is driven directly) and
``ModelFileError`` for model files. Nothing else may escape, nothing may hang
(a SIGALRM guard per test, hypothesis deadlines per example), and a hostile
header may not make anything allocate more than the input (``tracemalloc``).

Fuzz cases per run, by parser: hypothesis examples (``max_examples``), then the
fixed cases and exhaustive loops that run every time.

    IDX files: parse_idx, parse_images, parse_labels        2,600 examples
        random bytes 600, headers built field by field 600, random huge dims
        under tracemalloc 200, bit flips 400, magic and dims overwritten or
        swapped 500, slices deleted or bytes inserted 300; each example runs
        all three parsers. Fixed: 6 hostile headers under tracemalloc (2**31
        images, ...), 8 trailing-byte cases, truncation at every cut point of
        a 3-image file and a 20-label file (2,368 + 28 cuts).
    gzip layer of the downloader (download.Payload)        1,650 examples
        random streams 400, valid gzip or plain in random chunks 150, bit
        flips 300, gzip header / trailer fields overwritten 300, multi-member
        streams and trailing bytes 150, and 350 through ensure_files on a
        local mirror folder (random, flipped, spliced .gz and plain files).
        Fixed: truncation at every cut point of a 318-byte .gz (318 cuts fed
        whole and in two chunks, 318 more through ensure_files), a 64 MiB
        gzip bomb under tracemalloc.
    model files: serialization.load_model                   1,450 examples
        random bytes 150, bit flips in the zip and .npy structures 300, zip
        directory / local header / .npy preamble fields overwritten or
        swapped 350, .npy header dicts rewritten 200, metadata JSON rewritten
        250 (``input_size``, ``layers`` and the other keys), hostile dense
        ``layers`` under tracemalloc 100, slices deleted or bytes inserted
        100. Fixed: truncation at every cut point of a (784, 8, 10) float32
        model (27,148 cuts) and of a (4, 3, 2) model with a resume state
        (4,338 cuts), both format 2, 10 hostile ``layers`` under tracemalloc,
        a deflated member claiming 64 MiB.
    pictures for predict: images.load_image, load_digit    800 examples
        (skipped while mnist_nn/images.py does not exist) random bytes as
        .npy/.png/.jpg/.gif/.bin 150, bit flips in PNG (L, RGBA, I;16, P),
        GIF, BMP, TIFF and JPEG files 250, PNG IHDR fields overwritten (with
        and without a fixed CRC) 150, .npy header dicts rewritten 150, .npy
        bit flips 100. Fixed: truncation at every cut point of 5 pictures
        (about 2,850 cuts with Pillow 13) and 2 .npy files (4,176 cuts), 8
        hostile .npy headers.

The examples are random on each run (no example database is written); a
failure prints the falsifying example and a ``@reproduce_failure`` blob.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import importlib
import io
import itertools
import json
import os
import signal
import struct
import tempfile
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_nn.config import MIRROR_ENV
from mnist_nn.data import parse_idx, parse_images, parse_labels
from mnist_nn.data.download import MnistFile, Payload, ensure_files
from mnist_nn.errors import DataFormatError, DownloadError, MirrorError, MnistNNError, ModelFileError
from mnist_nn.models import ResumeState, load_model, save_model
from mnist_nn.nn.network import Network

pytestmark = pytest.mark.reliability

T = TypeVar("T")
ByteOrder = Literal["little", "big"]

MiB = 2**20
TEST_TIME_LIMIT = 60  # seconds for any one test in this file: a hang becomes a failure


def fuzz(max_examples: int) -> Callable[[T], T]:
    """Hypothesis settings for one fuzz test: its example budget, a generous deadline, no example database."""
    return settings(
        max_examples=max_examples,
        deadline=2000,  # ms per example; every input here is at most a few KB
        database=None,  # keep the working tree clean
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class _Hang(BaseException):
    """Raised by SIGALRM; a BaseException, so no ``except Exception`` in the code under test can swallow it."""


@pytest.fixture(autouse=True)
def time_limit() -> Iterator[None]:
    """Fail (instead of hanging) a test that runs longer than ``TEST_TIME_LIMIT``."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise _Hang(f"test ran longer than {TEST_TIME_LIMIT} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIME_LIMIT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No mirror from the environment: ensure_files must only see the folders given here."""
    monkeypatch.delenv(MIRROR_ENV, raising=False)


def assert_one_line(exc: BaseException) -> None:
    message = str(exc)
    assert message, f"empty message from {type(exc).__name__}"
    assert "\n" not in message and "\r" not in message, f"multi-line message: {message!r}"


def peak_allocation(call: Callable[[], object]) -> int:
    """Bytes allocated at the peak of ``call()`` beyond what was allocated before it (errors ignored)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with contextlib.suppress(MnistNNError):
            call()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def flip_bits(raw: bytes, flips: list[tuple[int, int]]) -> bytes:
    """``raw`` with bit ``bit`` of byte ``pos % len(raw)`` flipped, for each ``(pos, bit)``."""
    out = bytearray(raw)
    for pos, bit in flips:
        out[pos % len(out)] ^= 1 << bit
    return bytes(out)


def put_uint(raw: bytes, offset: int, width: int, value: int, order: ByteOrder) -> bytes:
    """``raw`` with the ``width``-byte unsigned field at ``offset`` set to ``value`` (mod 2**(8*width))."""
    field: bytes = (value % 2 ** (8 * width)).to_bytes(width, order)
    return raw[:offset] + field + raw[offset + width :]


def get_uint(raw: bytes, offset: int, width: int, order: ByteOrder) -> int:
    return int.from_bytes(raw[offset : offset + width], order)


def interesting_uints(width: int, original: int) -> st.SearchStrategy[int]:
    """Values for a ``width``-byte field: limits, powers of two, the original value and its neighbours."""
    top = 2 ** (8 * width) - 1
    specials = [0, 1, 2, 3, 7, 8, 9, 10, 28, 255, 256, top, top - 1, top // 2, top // 2 + 1, original]
    specials += [original + d for d in (-2, -1, 1, 2, 16)] + [2**k for k in range(8 * width)]
    return st.one_of(
        st.sampled_from(sorted({v % (top + 1) for v in specials})),
        st.integers(0, top),
    )


flips_strategy = st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 7)), min_size=1, max_size=8)


# ======================================================================================
# IDX: parse_idx, parse_images, parse_labels
# ======================================================================================


def idx_file(array: np.ndarray, magic_type: int = 0x08) -> bytes:
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


_rng = np.random.default_rng(0)
GOOD_IMAGES = idx_file(_rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8))  # 16 + 2352 bytes
GOOD_LABELS = idx_file(_rng.integers(0, 10, size=20, dtype=np.uint8))  # 8 + 20 bytes
IDX_PARSERS: dict[str, Callable[[bytes], np.ndarray]] = {
    "parse_idx": parse_idx,
    "parse_images": parse_images,
    "parse_labels": parse_labels,
}


def check_idx(raw: bytes) -> dict[str, np.ndarray | DataFormatError]:
    """Run every IDX parser on ``raw``; each returns data consistent with the header or a one-line error."""
    outcomes: dict[str, np.ndarray | DataFormatError] = {}
    for name, parser in IDX_PARSERS.items():
        try:
            array = parser(raw)
        except DataFormatError as exc:
            assert_one_line(exc)
            outcomes[name] = exc
            continue
        assert array.dtype == np.uint8
        ndim = raw[3]
        dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
        header = 4 + 4 * ndim
        assert raw[:3] == bytes([0, 0, 0x08])
        assert len(raw) == header + array.size
        assert array.tobytes() == raw[header:]
        if name == "parse_idx":
            assert array.shape == dims
        elif name == "parse_images":
            assert get_uint(raw, 0, 4, "big") == 2051
            assert dims[1:] == (28, 28) and array.shape == (dims[0], 784)
        else:
            assert get_uint(raw, 0, 4, "big") == 2049
            assert array.shape == dims and (array.size == 0 or int(array.max()) <= 9)
        outcomes[name] = array
    return outcomes


@fuzz(600)
@given(st.one_of(st.binary(max_size=64), st.binary(max_size=4096)))
def test_idx_random_bytes(raw: bytes) -> None:
    check_idx(raw)


_dim = st.one_of(
    st.sampled_from([0, 1, 2, 3, 10, 28, 784, 2**31 - 1, 2**31, 2**32 - 1]),
    st.integers(0, 64),
    st.integers(0, 2**32 - 1),
)


@st.composite
def idx_headers(draw: st.DrawFn) -> bytes:
    """A header built field by field (magic bytes, type, ndim, dims), then a body near the size it implies."""
    zero_bytes = draw(st.sampled_from([b"\0\0", b"\0\0", b"\0\0", b"\0\1", b"\1\0", b"\xff\xff"]))
    type_code = draw(st.one_of(st.sampled_from([0x08, 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]), st.integers(0, 255)))
    ndim = draw(st.one_of(st.integers(0, 4), st.sampled_from([31, 32, 33, 63, 64, 65, 255]), st.integers(0, 255)))
    dims = [draw(_dim) if draw(st.booleans()) else draw(st.integers(0, 3)) for _ in range(ndim)]
    header = zero_bytes + bytes([type_code, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims)
    header = header[: draw(st.sampled_from([len(header), len(header), draw(st.integers(0, len(header)))]))]
    implied = int(np.prod(dims, dtype=object)) if dims else 0
    body_size = draw(st.sampled_from([implied, implied - 1, implied + 1, draw(st.integers(0, 3000))]))
    body_size = max(0, min(body_size, 3000))  # never build a huge body
    return header + draw(st.binary(min_size=body_size, max_size=body_size))


@fuzz(600)
@given(idx_headers())
def test_idx_structured_headers(raw: bytes) -> None:
    check_idx(raw)


HOSTILE_IDX_HEADERS = {
    "2**31 images": b"\0\0\x08\x03" + (2**31).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2,
    "2**32-1 images": b"\0\0\x08\x03" + (2**32 - 1).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2,
    "2**31 labels": b"\0\0\x08\x01" + (2**31).to_bytes(4, "big"),
    "huge 28x28 images": b"\0\0\x08\x03" + (2**20).to_bytes(4, "big") + (2**32 - 1).to_bytes(4, "big") * 2,
    "255 huge dims": b"\0\0\x08\xff" + (2**32 - 1).to_bytes(4, "big") * 255,
    "zero and huge dims": b"\0\0\x08\x03" + b"\0\0\0\0" + (2**32 - 1).to_bytes(4, "big") * 2,
}


@pytest.mark.parametrize("name", list(HOSTILE_IDX_HEADERS))
def test_idx_hostile_header_is_refused_without_allocating(name: str) -> None:
    raw = HOSTILE_IDX_HEADERS[name] + bytes(1000)
    for parser in IDX_PARSERS.values():
        with pytest.raises(DataFormatError) as info:
            parser(raw)
        assert_one_line(info.value)
        assert peak_allocation(functools.partial(parser, raw)) < len(raw) + MiB


@fuzz(200)
@given(
    ndim=st.integers(1, 255),
    dims=st.lists(st.integers(0, 2**32 - 1), min_size=255, max_size=255),
    body=st.binary(max_size=2000),
)
def test_idx_headers_never_drive_allocation(ndim: int, dims: list[int], body: bytes) -> None:
    raw = bytes([0, 0, 0x08, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims[:ndim]) + body
    for parser in IDX_PARSERS.values():
        assert peak_allocation(functools.partial(parser, raw)) < len(raw) + MiB
    check_idx(raw)


@pytest.mark.parametrize("good", [GOOD_IMAGES, GOOD_LABELS], ids=["images", "labels"])
def test_idx_truncated_at_every_cut_point_raises(good: bytes) -> None:
    for cut in range(len(good)):
        outcomes = check_idx(good[:cut])
        assert all(isinstance(o, DataFormatError) for o in outcomes.values()), f"cut at {cut} parsed"


@pytest.mark.parametrize("good", [GOOD_IMAGES, GOOD_LABELS], ids=["images", "labels"])
@pytest.mark.parametrize("extra", [b"\0", b"\0" * 4, b"\xff" * 784, GOOD_LABELS])
def test_idx_trailing_bytes_raise(good: bytes, extra: bytes) -> None:
    outcomes = check_idx(good + extra)
    assert all(isinstance(o, DataFormatError) for o in outcomes.values())


@fuzz(400)
@given(good=st.sampled_from([GOOD_IMAGES, GOOD_LABELS]), flips=flips_strategy, in_header=st.booleans())
def test_idx_bit_flips(good: bytes, flips: list[tuple[int, int]], in_header: bool) -> None:
    header = 16 if good is GOOD_IMAGES else 8
    if in_header:
        flips = [(pos % header, bit) for pos, bit in flips]
    check_idx(flip_bits(good, flips))


@st.composite
def idx_field_edits(draw: st.DrawFn) -> bytes:
    """A good file with header fields (magic, each dim) overwritten with chosen values or swapped."""
    raw = draw(st.sampled_from([GOOD_IMAGES, GOOD_LABELS]))
    fields = [0] + [4 + 4 * i for i in range(raw[3])]  # offsets of the 4-byte header fields
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()) and len(fields) > 1:
            a, b = draw(st.lists(st.sampled_from(fields), min_size=2, max_size=2, unique=True))
            va, vb = get_uint(raw, a, 4, "big"), get_uint(raw, b, 4, "big")
            raw = put_uint(put_uint(raw, a, 4, vb, "big"), b, 4, va, "big")
        else:
            offset = draw(st.sampled_from(fields))
            raw = put_uint(raw, offset, 4, draw(interesting_uints(4, get_uint(raw, offset, 4, "big"))), "big")
    if draw(st.booleans()):  # the byte that says how many dims follow
        raw = raw[:3] + bytes([draw(st.integers(0, 255))]) + raw[4:]
    return raw


@fuzz(500)
@given(idx_field_edits())
def test_idx_header_fields_overwritten(raw: bytes) -> None:
    check_idx(raw)


@st.composite
def splices(draw: st.DrawFn, good: bytes) -> bytes:
    """``good`` with a slice deleted, or with bytes inserted, at chosen positions."""
    start = draw(st.integers(0, len(good)))
    if draw(st.booleans()):
        return good[:start] + good[draw(st.integers(start, len(good))) :]
    return good[:start] + draw(st.binary(min_size=1, max_size=64)) + good[start:]


@fuzz(300)
@given(st.one_of(splices(GOOD_IMAGES), splices(GOOD_LABELS)))
def test_idx_slices_deleted_or_inserted(raw: bytes) -> None:
    check_idx(raw)


# ======================================================================================
# The gzip layer of the downloader: download.Payload and ensure_files on a folder
# ======================================================================================


def pinned(payload: bytes, name: str = "labels-idx1-ubyte") -> MnistFile:
    return MnistFile(name, hashlib.sha256(payload).hexdigest(), len(payload))


PAYLOAD = GOOD_LABELS + bytes(range(256)) * 2  # 540 bytes, IDX-like start (never gzip's magic)
PAYLOAD_FILE = pinned(PAYLOAD)
GOOD_GZ = gzip.compress(PAYLOAD, mtime=0)


def feed(file: MnistFile, stream: bytes, cuts: list[int] = []) -> bytes | MirrorError:  # noqa: B006
    """Feed ``stream`` to a ``Payload`` in the chunks ``cuts`` make; the payload or the one-line failure."""
    out = io.BytesIO()
    payload = Payload(file, out, lambda n: None)
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    try:
        for a, b in itertools.pairwise(bounds):
            payload.feed(stream[a:b])
        data = payload.finish()
    except MirrorError as exc:
        assert_one_line(exc)
        assert exc.reason == str(exc)
        assert out.tell() <= file.size  # nothing beyond the pinned size was ever written
        return exc
    # Only the pinned payload gets through, and it is exactly what was written out.
    assert data == out.getvalue()
    assert len(data) == file.size and hashlib.sha256(data).hexdigest() == file.sha256
    return data


cuts_strategy = st.lists(st.integers(0, 2**16), max_size=8)


@fuzz(400)
@given(
    stream=st.one_of(st.binary(max_size=2048), st.binary(max_size=64).map(lambda b: b"\x1f\x8b" + b)),
    cuts=cuts_strategy,
    size=st.sampled_from([0, 1, 2, 100, len(PAYLOAD)]),
)
def test_gzip_layer_random_streams(stream: bytes, cuts: list[int], size: int) -> None:
    feed(pinned(PAYLOAD[:size]), stream, cuts)
    feed(PAYLOAD_FILE, stream, cuts)


@fuzz(150)
@given(cuts=cuts_strategy, level=st.integers(0, 9), plain=st.booleans())
def test_gzip_layer_valid_stream_in_any_chunks(cuts: list[int], level: int, plain: bool) -> None:
    stream = PAYLOAD if plain else gzip.compress(PAYLOAD, compresslevel=level, mtime=0)
    assert feed(PAYLOAD_FILE, stream, cuts) == PAYLOAD


@fuzz(300)
@given(flips=flips_strategy, cuts=cuts_strategy, where=st.sampled_from(["anywhere", "header", "trailer"]))
def test_gzip_layer_bit_flips(flips: list[tuple[int, int]], cuts: list[int], where: str) -> None:
    if where == "header":
        flips = [(pos % 10, bit) for pos, bit in flips]
    elif where == "trailer":
        flips = [(len(GOOD_GZ) - 8 + pos % 8, bit) for pos, bit in flips]
    feed(PAYLOAD_FILE, flip_bits(GOOD_GZ, flips), cuts)


# (offset, width) of gzip's header fields (RFC 1952) and of its trailer, from the end.
GZIP_FIELDS = {
    "magic": (0, 2),
    "method": (2, 1),
    "flags": (3, 1),
    "mtime": (4, 4),
    "xfl": (8, 1),
    "os": (9, 1),
    "crc32": (-8, 4),
    "isize": (-4, 4),
}


@fuzz(300)
@given(
    edits=st.lists(st.sampled_from(sorted(GZIP_FIELDS)), min_size=1, max_size=3),
    data=st.data(),
    cuts=cuts_strategy,
)
def test_gzip_layer_header_and_trailer_fields(edits: list[str], data: st.DataObject, cuts: list[int]) -> None:
    raw = GOOD_GZ
    for field in edits:
        offset, width = GZIP_FIELDS[field]
        offset %= len(raw)
        value = data.draw(interesting_uints(width, get_uint(raw, offset, width, "little")), label=field)
        raw = put_uint(raw, offset, width, value, "little")
    feed(PAYLOAD_FILE, raw, cuts)


@fuzz(150)
@given(
    splits=st.lists(st.integers(0, len(PAYLOAD)), max_size=4),
    tail=st.one_of(st.just(b""), st.binary(min_size=1, max_size=32), st.sampled_from([b"\0" * 8, GOOD_GZ])),
    cuts=cuts_strategy,
)
def test_gzip_layer_members_and_trailing_bytes(splits: list[int], tail: bytes, cuts: list[int]) -> None:
    bounds = [0, *sorted(splits), len(PAYLOAD)]
    members = b"".join(gzip.compress(PAYLOAD[a:b], mtime=0) for a, b in itertools.pairwise(bounds))
    result = feed(PAYLOAD_FILE, members + tail, cuts)
    if not tail:
        assert result == PAYLOAD  # concatenated members are one valid gzip file
    else:
        assert isinstance(result, MirrorError)


def test_gzip_layer_truncated_at_every_cut_point() -> None:
    for cut in range(len(GOOD_GZ)):
        assert isinstance(feed(PAYLOAD_FILE, GOOD_GZ[:cut]), MirrorError), f"cut at {cut} passed"
        assert isinstance(feed(PAYLOAD_FILE, GOOD_GZ[:cut], [cut // 2]), MirrorError)


def test_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip.compress(bytes(64 * MiB), compresslevel=9, mtime=0)  # ~64 KB that inflate to 64 MiB
    result: list[object] = []
    peak = peak_allocation(lambda: result.append(feed(PAYLOAD_FILE, bomb)))
    assert isinstance(result[0], MirrorError)
    assert "larger than the expected" in str(result[0])
    assert peak < len(bomb) + MiB


def fetch_from_folder(raw: bytes, filename: str, file: MnistFile = PAYLOAD_FILE) -> bytes | DownloadError:
    """``ensure_files`` with ``raw`` as ``filename`` in a fresh local mirror; the payload or the one-line error."""
    with tempfile.TemporaryDirectory() as tmp:
        mirror, cache = Path(tmp, "mirror"), Path(tmp, "cache")
        mirror.mkdir()
        (mirror / filename).write_bytes(raw)
        try:
            [result] = ensure_files([file], cache, mirrors=[str(mirror)], timeout=(1.0, 1.0), retries=0)
        except DownloadError as exc:
            assert_one_line(exc)
            assert not cache.exists()  # nothing partial or unverified is left behind, nor the new folder
            return exc
        assert result.data == PAYLOAD
        assert os.listdir(cache) == [file.name]
        assert (cache / file.name).read_bytes() == PAYLOAD
        return result.data


@fuzz(350)
@given(
    raw=st.one_of(
        st.binary(max_size=1024),
        flips_strategy.map(lambda f: flip_bits(GOOD_GZ, f)),
        splices(GOOD_GZ),
        splices(PAYLOAD),
    ),
    gz_name=st.booleans(),
)
def test_gzip_layer_through_a_local_mirror(raw: bytes, gz_name: bool) -> None:
    fetch_from_folder(raw, PAYLOAD_FILE.name + (".gz" if gz_name else ""))


def test_local_mirror_with_a_gz_truncated_at_every_cut_point() -> None:
    assert fetch_from_folder(GOOD_GZ, PAYLOAD_FILE.name + ".gz") == PAYLOAD
    for cut in range(len(GOOD_GZ)):
        assert isinstance(fetch_from_folder(GOOD_GZ[:cut], PAYLOAD_FILE.name + ".gz"), DownloadError)


# ======================================================================================
# Model files: serialization.load_model
# ======================================================================================


def _model_file(sizes: tuple[int, ...], resume: bool) -> tuple[bytes, Network]:
    net = Network(sizes, seed=5)
    state = None
    if resume:
        state = ResumeState(
            params=[p * 0.5 for p in net.params],
            optimizer={"velocity": [np.full_like(p, 0.25) for p in net.params]},
            rng_state=np.random.default_rng(1).bit_generator.state,
            epochs_completed=3,
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "model.npz")
        save_model(path, net, {"epoch": 2, "validation_correct": 9000}, resume=state)
        return path.read_bytes(), net


GOOD_MODEL, GOOD_NET = _model_file((784, 8, 10), resume=False)  # float32, about 27 KB
SMALL_MODEL, SMALL_NET = _model_file((4, 3, 2), resume=True)  # about 4 KB, every member kind


def zip_fields(raw: bytes) -> list[tuple[int, int]]:
    """(offset, width) of every numeric field of the zip structure and of each member's .npy preamble."""
    fields: list[tuple[int, int]] = []
    eocd = raw.rindex(b"PK\x05\x06")
    fields += [(eocd + o, w) for o, w in ((4, 2), (6, 2), (8, 2), (10, 2), (12, 4), (16, 4), (20, 2))]
    central = get_uint(raw, eocd + 16, 4, "little")
    for _ in range(get_uint(raw, eocd + 10, 2, "little")):
        fields += [(central + o, w) for o, w in ((4, 2), (6, 2), (8, 2), (10, 2), (16, 4), (20, 4), (24, 4))]
        fields += [(central + o, w) for o, w in ((28, 2), (30, 2), (32, 2), (34, 2), (38, 4), (42, 4))]
        local = get_uint(raw, central + 42, 4, "little")
        fields += [(local + o, w) for o, w in ((4, 2), (6, 2), (8, 2), (14, 4), (18, 4), (22, 4), (26, 2), (28, 2))]
        data = local + 30 + get_uint(raw, local + 26, 2, "little") + get_uint(raw, local + 28, 2, "little")
        fields += [(data + 6, 1), (data + 7, 1), (data + 8, 2)]  # .npy version and header length
        central += 46 + sum(get_uint(raw, central + o, 2, "little") for o in (28, 30, 32))
    return fields


def regions(raw: bytes) -> list[tuple[int, int]]:
    """(start, end) of the structural parts of a model file: headers, .npy preambles, directory, metadata."""
    spans = [(offset, offset + width) for offset, width in zip_fields(raw)]
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        for info in archive.infolist():
            local = info.header_offset
            data = local + 30 + get_uint(raw, local + 26, 2, "little") + get_uint(raw, local + 28, 2, "little")
            spans.append((data, data + 128))  # the .npy header dict
            if info.filename == "metadata.npy":
                spans.append((data, data + info.file_size))
    spans.append((0, len(raw)))
    return spans


MODEL_FIELDS = {"mnist": zip_fields(GOOD_MODEL), "small": zip_fields(SMALL_MODEL)}
MODEL_REGIONS = {"mnist": regions(GOOD_MODEL), "small": regions(SMALL_MODEL)}
MODELS = {"mnist": (GOOD_MODEL, GOOD_NET), "small": (SMALL_MODEL, SMALL_NET)}


def check_model(raw: bytes, *, require_mnist: bool = True, net: Network | None = None) -> object:
    """``load_model`` on ``raw`` in a temp file: a model whose weights are exactly ``net``'s, or a one-line error."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "model.npz")
        path.write_bytes(raw)
        return check_model_path(path, require_mnist=require_mnist, net=net)


def check_model_path(path: Path, *, require_mnist: bool = True, net: Network | None = None) -> object:
    try:
        saved = load_model(path, require_mnist=require_mnist)
    except ModelFileError as exc:
        assert_one_line(exc)
        assert str(exc).startswith(f"{path}: ")
        return exc
    params = saved.network.params
    assert all(np.isfinite(p).all() for p in params)
    if net is not None:  # a corrupted file never loads as different weights
        assert saved.network.sizes == net.sizes
        assert all(np.array_equal(a, b) for a, b in zip(params, net.params, strict=True))
    return saved


@fuzz(150)
@given(
    st.one_of(
        st.binary(max_size=2048),
        st.binary(max_size=2048).map(lambda b: b"PK\x03\x04" + b),
        st.binary(max_size=512).map(lambda b: b + GOOD_MODEL[-22:]),  # a real end-of-directory record
    )
)
def test_model_random_bytes(raw: bytes) -> None:
    check_model(raw)
    check_model(raw, require_mnist=False)


@fuzz(300)
@given(model=st.sampled_from(sorted(MODELS)), data=st.data())
def test_model_bit_flips(model: str, data: st.DataObject) -> None:
    raw, net = MODELS[model]
    flips = []
    for _ in range(data.draw(st.integers(1, 6), label="number of flips")):
        start, end = data.draw(st.sampled_from(MODEL_REGIONS[model]), label="region")
        flips.append((data.draw(st.integers(start, min(end, len(raw)) - 1)), data.draw(st.integers(0, 7))))
    check_model(flip_bits(raw, flips), require_mnist=model == "mnist", net=net)


@fuzz(350)
@given(model=st.sampled_from(sorted(MODELS)), data=st.data())
def test_model_zip_and_npy_fields_overwritten_or_swapped(model: str, data: st.DataObject) -> None:
    raw, net = MODELS[model]
    fields = MODEL_FIELDS[model]
    for _ in range(data.draw(st.integers(1, 3), label="number of edits")):
        offset, width = data.draw(st.sampled_from(fields), label="field")
        if data.draw(st.booleans(), label="swap"):
            other = data.draw(st.sampled_from([f for f in fields if f[1] == width]), label="other field")
            a, b = get_uint(raw, offset, width, "little"), get_uint(raw, other[0], width, "little")
            raw = put_uint(put_uint(raw, offset, width, b, "little"), other[0], width, a, "little")
        else:
            value = data.draw(interesting_uints(width, get_uint(raw, offset, width, "little")), label="value")
            raw = put_uint(raw, offset, width, value, "little")
    check_model(raw, require_mnist=model == "mnist", net=net)


def model_members(raw: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def build_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def npy_preamble(header: bytes, version: int = 1) -> bytes:
    """A .npy magic, version and header length in front of ``header`` (padded as NumPy pads it)."""
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    length = struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + length + header


_shape_dim = st.one_of(st.sampled_from([0, 1, 3, 8, 10, 784]), st.integers(0, 2**63 - 1), st.integers(-5, 5))
_npy_values = {
    "descr": st.one_of(
        st.sampled_from(["<f4", ">f4", "<f8", ">f8", "|u1", "|O", "<i8", "<U3", "|V8", "f4", "<f2", "<c8", "S0"]),
        st.text(max_size=8),
    ),
    "fortran_order": st.sampled_from([False, True, None, 0, 1, "False"]),
    "shape": st.one_of(
        st.lists(_shape_dim, max_size=4).map(tuple),
        st.sampled_from([(), (1,), (-1,), (2**63,), (784, 8), (8, 784), (8,), (10,), (3, 2), (4, 3)]),
        st.integers(0, 10),
        st.text(max_size=4),
    ),
}


@st.composite
def npy_header_rewrites(draw: st.DrawFn) -> tuple[str, bytes]:
    """A model with one member's .npy header edited (CRCs valid); the model and the new file."""
    model = draw(st.sampled_from(sorted(MODELS)))
    members = model_members(MODELS[model][0])
    name = draw(st.sampled_from(sorted(members)))
    content = members[name]
    data = content[10 + get_uint(content, 8, 2, "little") :]
    choice = draw(st.sampled_from(["fields", "fields", "fields", "text", "version"]))
    if choice == "fields":  # change some of descr, fortran_order and shape, keep the rest
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(io.BytesIO(content[8:]))
        header: dict[str, Any] = {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": fortran_order,
            "shape": shape,
        }
        for key in draw(st.lists(st.sampled_from(sorted(_npy_values)), min_size=1, max_size=3, unique=True)):
            header[key] = draw(_npy_values[key])
        text = repr(header).encode("latin-1", "replace")
        members[name] = npy_preamble(text, draw(st.sampled_from([1, 1, 2]))) + data
    elif choice == "text":
        members[name] = npy_preamble(draw(st.binary(max_size=200))) + data
    else:
        members[name] = b"\x93NUMPY" + bytes([draw(st.integers(0, 255)), draw(st.integers(0, 255))]) + content[8:]
    if draw(st.booleans()):  # and cut or pad the data behind it
        end = draw(st.integers(0, len(members[name]) + 16))
        members[name] = members[name][:end] + bytes(max(0, end - len(members[name])))
    return model, build_zip(members)


@fuzz(200)
@given(npy_header_rewrites())
def test_model_npy_headers_rewritten(case: tuple[str, bytes]) -> None:
    model, raw = case
    check_model(raw, require_mnist=model == "mnist")


_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8)
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)
_size = st.one_of(st.integers(-2, 12), st.sampled_from([784, 100_000, 100_001, 2**63]))
_activation_name = st.sampled_from(["sigmoid", "relu", "tanh", "softmax", "nope"])
_layer_description = st.one_of(
    st.fixed_dictionaries(
        {
            "kind": st.one_of(st.sampled_from(["dense", "dense", "dense", "conv2d", ""]), _json),
            "size": st.one_of(_size, st.sampled_from([True, 8.0, "8"]), _json),
            "activation": st.one_of(_activation_name, _json),
        },
        optional={"weights": _json},
    ),
    _json,
)
_metadata_values = {
    "format": st.one_of(st.just("mnist_nn-model"), _json),
    "format_version": st.one_of(st.sampled_from([0, 1, 2, 3, True, 1.0, 2.0, "1", "2", 2**64]), _json),
    "input_size": st.one_of(_size, st.sampled_from([4, True, 784.0, "784"]), _json),
    "layers": st.one_of(
        st.lists(_layer_description, max_size=4),
        st.lists(  # well-formed dense layers: only the sizes and activations are hostile
            st.builds(lambda n, a: {"kind": "dense", "size": n, "activation": a}, _size, _activation_name),
            min_size=1,
            max_size=4,
        ),
        _json,
    ),
    "sizes": st.one_of(st.lists(_size, max_size=5), _json),
    "dtype": st.one_of(st.sampled_from(["float32", "float64", "float16", "int8", "object", ""]), _json),
    "activation": st.one_of(_activation_name, _json),
    "cost": st.one_of(st.sampled_from(["quadratic", "cross_entropy", "nope"]), _json),
    "preprocess": st.one_of(st.sampled_from(["", "deskew", "nope"]), _json),
    "resume": st.one_of(
        st.fixed_dictionaries(
            {"rng_state": st.one_of(_json, st.just({"bit_generator": "PCG64"})), "epochs_completed": _json},
            optional={"optimizer": st.one_of(st.lists(st.text(max_size=5), max_size=3), _json)},
        ),
        _json,
    ),
}


@st.composite
def metadata_rewrites(draw: st.DrawFn) -> tuple[str, bytes]:
    """A model with its metadata JSON edited key by key, or replaced by raw bytes; the model and the file."""
    model = draw(st.sampled_from(sorted(MODELS)))
    members = model_members(MODELS[model][0])
    content = members["metadata.npy"]
    length = 10 + get_uint(content, 8, 2, "little")
    if draw(st.integers(0, 4)) == 0:
        text = draw(
            st.one_of(
                st.binary(max_size=300),
                st.sampled_from([b"[" * 100_000, b"NaN", b'{"format": Infinity}', b'"\\ud800"', b"\xff\xfe{}"]),
            )
        )
    else:
        metadata = json.loads(content[length:])
        for key in draw(st.lists(st.sampled_from(sorted(_metadata_values)), min_size=1, max_size=3, unique=True)):
            if draw(st.integers(0, 5)) == 0:
                metadata.pop(key, None)
            else:
                metadata[key] = draw(_metadata_values[key])
        text = json.dumps(metadata).encode()
    header = repr({"descr": "|u1", "fortran_order": False, "shape": (len(text),)}).encode()
    members["metadata.npy"] = npy_preamble(header) + text
    return model, build_zip(members)


@fuzz(250)
@given(metadata_rewrites())
def test_model_metadata_rewritten(case: tuple[str, bytes]) -> None:
    model, raw = case
    check_model(raw, require_mnist=model == "mnist")
    check_model(raw, require_mnist=False)


def with_sizes(model: str, sizes: list[int], dtype: str) -> bytes:
    """A good model file whose metadata claims other dense layers and ``dtype`` (the arrays unchanged).

    ``sizes`` are the input size, then each layer's: the metadata's ``input_size``, ``layers`` and
    ``sizes`` all say so, consistently, as a hostile writer would make them.
    """
    members = model_members(MODELS[model][0])
    content = members["metadata.npy"]
    metadata = json.loads(content[10 + get_uint(content, 8, 2, "little") :])
    layers = [{"kind": "dense", "size": n, "activation": "sigmoid"} for n in sizes[1:]]
    metadata.update(input_size=sizes[0], layers=layers, sizes=sizes, dtype=dtype)
    text = json.dumps(metadata).encode()
    header = repr({"descr": "|u1", "fortran_order": False, "shape": (len(text),)}).encode()
    members["metadata.npy"] = npy_preamble(header) + text
    return build_zip(members)


def assert_small_peak(raw: bytes) -> None:
    """Loading ``raw`` fails or succeeds as ``check_model`` demands, allocating less than the file + 1 MiB."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "model.npz")
        path.write_bytes(raw)
        check_model_path(path, require_mnist=False)  # also warms up lazy imports and caches
        assert peak_allocation(lambda: load_model(path, require_mnist=False)) < len(raw) + MiB


@pytest.mark.parametrize(
    "sizes",
    [[784, 100_000, 10], [784, 8, 100_000], [100_000, 1999, 1], [784, 100_000, 100_000], [784] * 3],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_model_hostile_sizes_are_refused_without_allocating(sizes: list[int], dtype: str) -> None:
    raw = with_sizes("mnist", sizes, dtype)
    assert isinstance(check_model(raw, require_mnist=False), ModelFileError)
    assert_small_peak(raw)


@fuzz(100)
@given(
    sizes=st.lists(st.one_of(st.integers(1, 100_000), st.sampled_from([784, 10, 100_000])), min_size=2, max_size=4),
    dtype=st.sampled_from(["float32", "float64"]),
    resume=st.booleans(),
)
def test_model_sizes_never_drive_allocation(sizes: list[int], dtype: str, resume: bool) -> None:
    assert_small_peak(with_sizes("small" if resume else "mnist", sizes, dtype))


@fuzz(100)
@given(model=st.sampled_from(sorted(MODELS)), data=st.data())
def test_model_slices_deleted_or_inserted(model: str, data: st.DataObject) -> None:
    raw, net = MODELS[model]
    check_model(data.draw(splices(raw)), require_mnist=model == "mnist", net=net)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_model_truncated_at_every_cut_point(tmp_path: Path, model: str) -> None:
    raw, net = MODELS[model]
    path = tmp_path / "model.npz"
    path.write_bytes(raw)
    assert isinstance(check_model_path(path, require_mnist=model == "mnist", net=net), object)
    for cut in range(len(raw) - 1, -1, -1):  # shrink one file in place: no rewrite per cut
        os.truncate(path, cut)
        outcome = check_model_path(path, require_mnist=model == "mnist")
        assert isinstance(outcome, ModelFileError), f"cut at {cut} of {len(raw)} loaded"


def test_model_with_compressed_members_is_refused_without_inflating() -> None:
    members = model_members(GOOD_MODEL)
    members["layer0_w.npy"] = members["layer0_w.npy"][:128] + bytes(64 * MiB)  # 64 MiB of weights, deflates to ~64 KB
    raw = build_zip(members, zipfile.ZIP_DEFLATED)
    assert isinstance(check_model(raw), ModelFileError)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "model.npz")
        path.write_bytes(raw)
        assert peak_allocation(lambda: load_model(path)) < len(raw) + MiB


def test_model_inputs_round_trip() -> None:
    """The unmutated files load, so the mutations above start from valid data."""
    assert not isinstance(check_model(GOOD_MODEL, net=GOOD_NET), ModelFileError)
    assert not isinstance(check_model(SMALL_MODEL, require_mnist=False, net=SMALL_NET), ModelFileError)
    assert isinstance(check_idx(GOOD_IMAGES)["parse_images"], np.ndarray)
    assert isinstance(check_idx(GOOD_LABELS)["parse_labels"], np.ndarray)
    assert feed(PAYLOAD_FILE, GOOD_GZ) == PAYLOAD
    assert zlib.crc32(PAYLOAD) == get_uint(GOOD_GZ, len(GOOD_GZ) - 8, 4, "little")


# ======================================================================================
# Pictures for predict: images.load_image and images.load_digit (skipped without the module)
# ======================================================================================


def _import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


image_files = _import("mnist_nn.images")
needs_images = pytest.mark.skipif(image_files is None, reason="mnist_nn/images.py does not exist yet")
needs_pillow = pytest.mark.skipif(_import("PIL.Image") is None, reason="Pillow is not installed")


def _digit_pixels() -> np.ndarray:
    """A (28, 28) uint8 picture of a light bar and stroke on black."""
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[6:9, 6:22] = 255
    for row in range(9, 24):
        pixels[row, 21 - row // 2 : 24 - row // 2] = 200
    return pixels


def _npy_file(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


GOOD_NPY = {
    "uint8 (28, 28)": _npy_file(_digit_pixels()),
    "float32 (784,)": _npy_file((_digit_pixels() / 255).astype(np.float32).reshape(784)),
}


def _picture(format: str, mode: str) -> bytes:
    from PIL import Image

    if mode == "I;16":
        image = Image.fromarray(_digit_pixels().astype(np.uint16) * 257)
    else:
        image = Image.fromarray(_digit_pixels()).convert(mode)
    out = io.BytesIO()
    image.save(out, format=format)
    return out.getvalue()


GOOD_PICTURES: dict[str, tuple[str, bytes]] = {}
if image_files is not None and _import("PIL.Image") is not None:
    GOOD_PICTURES = {
        "png L": (".png", _picture("PNG", "L")),
        "png RGBA": (".png", _picture("PNG", "RGBA")),
        "png I;16": (".png", _picture("PNG", "I;16")),
        "png P": (".png", _picture("PNG", "P")),
        "gif": (".gif", _picture("GIF", "L")),
        "bmp": (".bmp", _picture("BMP", "L")),
        "tiff": (".tiff", _picture("TIFF", "L")),
        "jpeg": (".jpg", _picture("JPEG", "L")),
    }


def check_picture(raw: bytes, suffix: str) -> object:
    """``load_image`` and ``load_digit`` on ``raw`` as ``picture{suffix}``: a valid image or a one-line ImageError."""
    assert image_files is not None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, f"picture{suffix}")
        path.write_bytes(raw)
        try:
            image = image_files.load_image(path)
        except image_files.ImageError as exc:
            assert_one_line(exc)
            assert str(exc).startswith(f"{path}: ")
            return exc
        assert image.ndim == 2 and image.size > 0 and image.dtype == np.float64
        assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0
        try:
            digit = image_files.load_digit(path)
        except image_files.ImageError as exc:
            assert_one_line(exc)
            assert str(exc).startswith(f"{path}: ")
            return exc
        assert digit.shape == (784,) and digit.dtype == np.float32
        assert np.isfinite(digit).all() and digit.min() >= 0.0 and digit.max() <= 1.0
        return digit


@needs_images
def test_picture_inputs_load() -> None:
    """The unmutated pictures and arrays load, so the mutations below start from valid files."""
    for raw in GOOD_NPY.values():
        assert isinstance(check_picture(raw, ".npy"), np.ndarray)
    for suffix, raw in GOOD_PICTURES.values():
        assert isinstance(check_picture(raw, suffix), np.ndarray)


@needs_images
@fuzz(150)
@given(
    raw=st.one_of(
        st.binary(max_size=1024),
        st.binary(max_size=256).map(lambda b: b"\x93NUMPY" + b),
        st.binary(max_size=256).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
    ),
    suffix=st.sampled_from([".npy", ".png", ".jpg", ".gif", ".bin"]),
)
def test_picture_random_bytes(raw: bytes, suffix: str) -> None:
    check_picture(raw, suffix)


@needs_images
@needs_pillow
@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")  # Pillow warns about damaged TIFF tags
@fuzz(250)
@given(picture=st.sampled_from(sorted(GOOD_PICTURES) or ["none"]), flips=flips_strategy, in_header=st.booleans())
def test_picture_bit_flips(picture: str, flips: list[tuple[int, int]], in_header: bool) -> None:
    suffix, raw = GOOD_PICTURES[picture]
    if in_header:
        flips = [(pos % 64, bit) for pos, bit in flips]
    check_picture(flip_bits(raw, flips), suffix)


# (offset, width) of the PNG IHDR chunk's fields; its CRC-32 follows at 29.
PNG_IHDR_FIELDS = {"width": (16, 4), "height": (20, 4), "depth": (24, 1), "color": (25, 1), "filter": (27, 1)}


@needs_images
@needs_pillow
@fuzz(150)
@given(
    picture=st.sampled_from(sorted(p for p in GOOD_PICTURES if p.startswith("png")) or ["none"]),
    edits=st.lists(st.sampled_from(sorted(PNG_IHDR_FIELDS)), min_size=1, max_size=3),
    fix_crc=st.booleans(),
    data=st.data(),
)
def test_picture_png_header_fields(picture: str, edits: list[str], fix_crc: bool, data: st.DataObject) -> None:
    raw = GOOD_PICTURES[picture][1]
    for field in edits:
        offset, width = PNG_IHDR_FIELDS[field]
        raw = put_uint(
            raw, offset, width, data.draw(interesting_uints(width, get_uint(raw, offset, width, "big"))), "big"
        )
    if fix_crc:  # so Pillow gets past the checksum to the fields themselves
        raw = put_uint(raw, 29, 4, zlib.crc32(raw[12:29]), "big")
    check_picture(raw, ".png")


@needs_images
@needs_pillow
def test_picture_truncated_at_every_cut_point() -> None:
    assert image_files is not None
    for picture in ("png L", "png RGBA", "gif", "bmp", "jpeg"):
        suffix, raw = GOOD_PICTURES[picture]
        whole = check_picture(raw, suffix)
        assert isinstance(whole, np.ndarray)
        for cut in range(len(raw)):
            # Only a cut behind all the pixel data (a missing end marker) may load, and then as the whole picture.
            outcome = check_picture(raw[:cut], suffix)
            if isinstance(outcome, np.ndarray):
                assert np.array_equal(outcome, whole), f"{picture} cut at {cut} of {len(raw)} loads as another picture"


@needs_images
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # np.memmap sizing a huge header
@fuzz(150)
@given(npy=st.sampled_from(sorted(GOOD_NPY)), data=st.data())
def test_picture_npy_headers_rewritten(npy: str, data: st.DataObject) -> None:
    content = GOOD_NPY[npy]
    body = content[10 + get_uint(content, 8, 2, "little") :]
    shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(io.BytesIO(content[8:]))
    header: dict[str, Any] = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": fortran_order,
        "shape": shape,
    }
    for key in data.draw(st.lists(st.sampled_from(sorted(_npy_values)), min_size=1, max_size=3, unique=True)):
        header[key] = data.draw(
            st.one_of(_npy_values[key], st.sampled_from([(28, 28), (784,), (28, 2**40), (2**62, 28)]))
            if key == "shape"
            else _npy_values[key]
        )
    raw = npy_preamble(repr(header).encode("latin-1", "replace"), data.draw(st.sampled_from([1, 2]))) + body
    if data.draw(st.booleans()):  # and cut or pad the data
        end = data.draw(st.integers(0, len(raw) + 64))
        raw = raw[:end] + bytes(max(0, end - len(raw)))
    check_picture(raw, ".npy")


@needs_images
@fuzz(100)
@given(npy=st.sampled_from(sorted(GOOD_NPY)), flips=flips_strategy, in_header=st.booleans())
def test_picture_npy_bit_flips(npy: str, flips: list[tuple[int, int]], in_header: bool) -> None:
    raw = GOOD_NPY[npy]
    if in_header:
        flips = [(pos % 128, bit) for pos, bit in flips]
    check_picture(flip_bits(raw, flips), ".npy")


@needs_images
def test_picture_npy_truncated_at_every_cut_point() -> None:
    assert image_files is not None
    for raw in GOOD_NPY.values():
        for cut in range(len(raw)):
            assert isinstance(check_picture(raw[:cut], ".npy"), image_files.ImageError), f"cut at {cut}"


# Headers the fuzzers above found to escape load_image as other exceptions (tokenize.TokenError,
# OverflowError from np.load's memory map); kept as fixed cases.
HOSTILE_NPY_HEADERS = {
    "unclosed dict": b"{'descr': '<f4', 'fortran_order': False, 'shape': (784,), |",
    "negative dims": b"{'descr': '|u1', 'fortran_order': False, 'shape': (-5, 505317, -3, -5)}",
    "dim of 2**63": b"{'descr': '<f4', 'fortran_order': True, 'shape': (9223372036854775808,)}",
    "huge dims": b"{'descr': '|u1', 'fortran_order': False, 'shape': (2**40, 2**40)}",
}


@needs_images
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("name", list(HOSTILE_NPY_HEADERS))
@pytest.mark.parametrize("version", [1, 2])
def test_picture_hostile_npy_headers(name: str, version: int) -> None:
    assert isinstance(check_picture(npy_preamble(HOSTILE_NPY_HEADERS[name], version) + bytes(784), ".npy"), Exception)
