"""Hostile pictures: TIFFs that make Pillow and libtiff complain, JPEGs and PNGs that take seconds to minutes to decode.

Pillow reports damaged metadata with ``warnings.warn`` and libtiff prints its
errors itself, both on stderr, several lines around ``predict``'s one-line
error. A progressive JPEG is decoded scan by scan over the whole picture: a
9400x9400 header (decoded at a quarter in draft mode) with thousands of scans
of a few bytes each fits in 1 MiB and costs minutes of CPU; Pillow reads a
PNG's chunks one by one in Python, and inflates each color profile. The
pictures are built here with Pillow and damaged by hand; the bombs are refused
from their markers and chunk headers, without decoding, so each test takes well
under a second.
"""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from mnist_nn.cli.predict import predict_main
from mnist_nn.errors import ImageError
from mnist_nn.images import (
    MAX_JPEG_SCAN_BLOCKS,
    MAX_JPEG_SCANS,
    MAX_PNG_INFLATED_CHUNKS,
    PNG_CHUNK_ALLOWANCE,
    check_decoding_work,
    load_digit,
    load_image,
)

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[1]
SIDE = 28  # the side of the TIFFs, in pixels
DECODE_FREE_SECONDS = 2.0  # refusing a bomb reads its markers only; decoding it takes far longer


@pytest.fixture(autouse=True)
def pillow() -> None:
    """Skip every test here when Pillow (the ``images`` extra) is missing."""
    pytest.importorskip("PIL")


# --- a TIFF that makes Pillow warn ---------------------------------------------------------

SHORT, LONG, ASCII = 3, 4, 2  # TIFF field types
# A PlanarConfiguration of two values (Pillow: "Metadata Warning, tag 284 had too many entries") and a
# Software tag whose data would lie past the end of the file (Pillow: "Truncated File Read"): every
# Pillow from 9.3 on warns about both, and still decodes the picture; Pillow parses the header more
# than once. (Longer tags past the end make Pillow 9.3 refuse the file outright.)
HOSTILE_TAGS = [(284, SHORT, 2, 1), (305, ASCII, 64, 10**6)]
FIRST_WARNING = "Truncated File Read"  # the Software tag comes later in the file, but is read first


def _tiff(cut: int = 0, deflate: bool = False) -> bytes:
    """A 28x28 8-bit grayscale TIFF of a dark bar on white with ``HOSTILE_TAGS``, its last ``cut`` bytes removed.

    Pillow decodes an uncompressed TIFF itself, a deflated one with libtiff,
    which reads the tags again and prints its own complaints on stderr.
    """
    bar = bytearray(b"\xff" * SIDE * SIDE)
    for row in range(6, 22):
        bar[row * SIDE + 12 : row * SIDE + 16] = bytes(4)
    pixels = zlib.compress(bar) if deflate else bytes(bar)
    entries = [
        (256, SHORT, 1, SIDE),  # ImageWidth
        (257, SHORT, 1, SIDE),  # ImageLength
        (258, SHORT, 1, 8),  # BitsPerSample
        (259, SHORT, 1, 8 if deflate else 1),  # Compression: deflate or none
        (262, SHORT, 1, 1),  # PhotometricInterpretation: black is zero
        (273, LONG, 1, 0),  # StripOffsets: set below, just after the IFD
        (277, SHORT, 1, 1),  # SamplesPerPixel
        (278, SHORT, 1, SIDE),  # RowsPerStrip
        (279, LONG, 1, len(pixels)),  # StripByteCounts
        *HOSTILE_TAGS,
    ]
    entries.sort()
    strip = 8 + 2 + 12 * len(entries) + 4  # header, entry count, entries, next IFD
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = strip if tag == 273 else value
        packed = struct.pack("<HH", value, 0) if kind == SHORT and count == 1 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    data = b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + pixels
    return data[: len(data) - cut]


def _pillow_warnings(data: bytes) -> list[str]:
    """The warnings Pillow gives when it opens and decodes ``data`` (an exception while decoding is ignored)."""
    from PIL import Image

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
        except OSError:
            pass
    return [str(w.message) for w in caught]


def test_the_hostile_tiff_makes_pillow_warn() -> None:
    for data in (_tiff(), _tiff(cut=100)):
        said = _pillow_warnings(data)
        assert said[0] == FIRST_WARNING and any(w.startswith("Metadata Warning, tag 284") for w in said), said


def _predict_in_a_process(model: Path, path: Path) -> subprocess.CompletedProcess[str]:
    """``mnist-nn predict MODEL PATH`` in a process: its stderr is what a user sees, with Python's default filters."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run(
        [sys.executable, "-m", "mnist_nn", "predict", str(model), str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def test_a_tiff_that_warns_and_fails_is_one_line_on_stderr(model: Path, tmp_path: Path) -> None:
    path = tmp_path / "hostile.tif"
    path.write_bytes(_tiff(cut=100))

    result = _predict_in_a_process(model, path)

    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    # How many bytes are left over and how often Pillow parses the header depend on its version.
    assert re.fullmatch(
        re.escape(f"mnist-nn predict: error: {path}: not a readable image (image file is truncated (")
        + r"\d+ bytes not processed\); first of \d+ warnings: "
        + re.escape(FIRST_WARNING)
        + r".*\)",
        line,
    )
    assert result.stdout == ""


def test_what_libtiff_prints_is_part_of_the_one_line(model: Path, tmp_path: Path) -> None:
    path = tmp_path / "hostile-deflate.tif"
    path.write_bytes(_tiff(deflate=True))

    result = _predict_in_a_process(model, path)

    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"mnist-nn predict: error: {path}: not a readable image (")
    assert re.search(r"; libtiff: .*PlanarConfiguration", line)  # "TIFFFetchNormalTag: Incorrect count for ..."
    assert f"warnings: {FIRST_WARNING}" in line and line.endswith(")")


def test_a_tiff_that_warns_and_decodes_is_classified_without_a_word_on_stderr(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hostile.tif"
    path.write_bytes(_tiff())

    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        code = predict_main([str(model), str(path)])

    captured = capsys.readouterr()
    assert code == 0
    assert captured.err == ""
    assert [str(w.message) for w in escaped] == []
    assert f"{path}: " in captured.out


def test_warnings_stay_collected_when_threads_decode_at_once(tmp_path: Path) -> None:
    # The server decodes in one thread per request; the warning filters are the process's own.
    path = tmp_path / "hostile.tif"
    path.write_bytes(_tiff())
    filters, show = list(warnings.filters), warnings.showwarning
    errors: list[BaseException] = []

    def decode() -> None:
        try:
            for _ in range(20):
                load_digit(path)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=decode) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert warnings.showwarning is show
    assert warnings.filters == filters


# --- JPEGs whose scans take minutes ------------------------------------------------------------


def _progressive_jpeg(side: int, extra_scans: int, mode: str = "L", header_side: int | None = None) -> bytes:
    """A progressive JPEG of a bar, its last scan repeated ``extra_scans`` times, its header's size ``header_side``.

    The repeated scans are valid (libjpeg decodes each again over the whole
    picture); a larger header size leaves the scans short of data, which
    libjpeg fills with zeros.
    """
    from PIL import Image, ImageDraw

    image = Image.new(mode, (side, side), "white")
    ImageDraw.Draw(image).line([(side // 2, side // 8), (side // 2, side * 7 // 8)], fill="black", width=side // 8)
    out = io.BytesIO()
    image.save(out, "JPEG", progressive=True)
    data = out.getvalue()
    # In a JPEG, 0xFF before a byte other than 0 or a restart code is always a marker, never data.
    last_scan = data.rindex(b"\xff\xc4")  # the last scan's Huffman table, header and data, up to EOI
    hostile = bytearray(data[:-2] + data[last_scan:-2] * extra_scans + data[-2:])
    if header_side is not None:
        frame = hostile.index(b"\xff\xc2")  # SOF2: marker, length, precision, height, width
        hostile[frame + 5 : frame + 9] = struct.pack(">HH", header_side, header_side)
    assert hostile.count(b"\xff\xda") == data.count(b"\xff\xda") + extra_scans
    return bytes(hostile)


def test_a_jpeg_of_thousands_of_scans_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scans.jpg"
    path.write_bytes(_progressive_jpeg(64, 6000))

    with pytest.raises(ImageError) as error:
        load_image(path)

    assert str(error.value) == (
        f"{path}: a JPEG of more than {MAX_JPEG_SCANS} scans (photos have about 10) would take too long "
        "to decode; re-save it as a baseline JPEG or PNG"
    )


def test_a_large_jpeg_of_many_scans_is_refused_before_decoding(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The bomb: 9400x9400, decoded at a quarter; each scan visits 1.4 million 8x8 blocks.
    path = tmp_path / "bomb.jpg"
    path.write_bytes(_progressive_jpeg(64, 150, header_side=9400))

    start = time.perf_counter()
    code = predict_main([str(model), str(path)])
    elapsed = time.perf_counter() - start

    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"mnist-nn predict: error: {path}: a 9400x9400 JPEG whose scans decode more than "
        f"{MAX_JPEG_SCAN_BLOCKS:,} blocks of 8x8 pixels would take too long to decode; "
        "re-save it as a baseline JPEG or PNG, or scale it down"
    ]
    assert elapsed < DECODE_FREE_SECONDS


def test_progressive_jpegs_load(tmp_path: Path) -> None:
    path = tmp_path / "progressive.jpg"
    path.write_bytes(_progressive_jpeg(200, 0))

    digit = load_digit(path)

    assert digit.shape == (784,) and digit.max() == pytest.approx(1.0)


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK"])
def test_the_largest_progressive_photos_pass_the_check(mode: str) -> None:
    # Pillow opens at most 2 * 89.5 million pixels (and the loader refuses above 89.5 million): a
    # 9400x9400 header with libjpeg's scans (6 in grayscale, 10 in color) is the largest real case.
    check_decoding_work(_progressive_jpeg(64, 0, mode=mode, header_side=9400))


def test_the_check_reads_bytes_and_files_and_lets_other_formats_pass(tmp_path: Path) -> None:
    bomb = _progressive_jpeg(64, 6000)
    for source in (bomb, io.BytesIO(bomb)):
        with pytest.raises(ImageError, match=f"^drawing: a JPEG of more than {MAX_JPEG_SCANS} scans"):
            check_decoding_work(source, name="drawing")
    check_decoding_work(b"\x89PNG\r\n\x1a\n")
    check_decoding_work(b"")


# --- PNGs of many chunks -----------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    """A PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(side: int, extra: bytes = b"", idat_size: int = 1 << 20) -> bytes:
    """A grayscale PNG of light noise and a dark bar, ``extra`` chunks before its IDAT chunks of ``idat_size`` bytes."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(200, 256, size=(side, side), dtype=np.uint8)
    pixels[side // 8 : side * 7 // 8, side // 2 - side // 16 : side // 2 + side // 16] = 0
    compressed = zlib.compress(b"".join(b"\x00" + row.tobytes() for row in pixels))
    idat = b"".join(_chunk(b"IDAT", compressed[i : i + idat_size]) for i in range(0, len(compressed), idat_size))
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + extra + idat + _chunk(b"IEND", b"")


def test_a_png_of_many_chunks_is_refused(tmp_path: Path) -> None:
    # Pillow reads chunks one by one in Python: the server's 5 MiB of them take about a second.
    path = tmp_path / "chunks.png"
    path.write_bytes(_png(64, _chunk(b"abCd", b"") * 10_000))  # an unknown ancillary chunk, skipped by Pillow

    with pytest.raises(ImageError) as error:
        load_image(path)

    limit = PNG_CHUNK_ALLOWANCE + 64 * 65 // 1024  # 64 rows of a filter byte and 64 pixels
    assert str(error.value) == (
        f"{path}: a PNG of more than {limit:,} chunks would take too long to read for its size; "
        "re-save it (image editors write a few large chunks)"
    )


def test_a_png_of_many_color_profiles_is_refused(tmp_path: Path) -> None:
    # Pillow inflates every iCCP chunk, up to 1 MB each: 5 MiB of them take seconds.
    profile = _chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(bytes(1_000_000), 9))
    path = tmp_path / "profiles.png"
    path.write_bytes(_png(64, profile * (MAX_PNG_INFLATED_CHUNKS + 1)))

    with pytest.raises(ImageError, match=r"more than 64 compressed iCCP, zTXt or iTXt chunks .* without its metadata"):
        load_image(path)


def test_pngs_in_small_chunks_with_metadata_load(tmp_path: Path) -> None:
    # Encoders write chunks of 8 KiB or more; 1 KiB chunks and a few compressed texts are well within the limits.
    texts = b"".join(_chunk(b"zTXt", b"note%d\x00\x00" % i + zlib.compress(b"a digit")) for i in range(8))
    path = tmp_path / "small-chunks.png"
    path.write_bytes(_png(512, texts, idat_size=1024))

    digit = load_digit(path)

    assert digit.shape == (784,) and digit.max() == pytest.approx(1.0)
