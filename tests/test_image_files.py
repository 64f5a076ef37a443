"""What ``predict`` will not read: special files, pictures it cannot size before decoding, and names that break lines.

A FIFO given as an image would block the reader until someone writes to it;
an ICO's directory may declare 16x16 and hold a 9400x9400 PNG that only
decoding reveals; a file name holding a line break would split the one-line
error. Each test bounds its wait, so the old code fails here instead of hanging.
"""

from __future__ import annotations

import os
import struct
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from mnist_nn.cli.predict import predict_main
from mnist_nn.errors import ImageError
from mnist_nn.images import load_image

pytestmark = pytest.mark.reliability

WAIT = 5.0  # seconds a read may take before it counts as blocked


@pytest.fixture
def pillow() -> None:
    """Skip a test that reads pictures when Pillow (the ``images`` extra) is missing."""
    pytest.importorskip("PIL")


def _bar(path: Path) -> Path:
    """Save a (28, 28) uint8 .npy digit (a bar of ink) at ``path``."""
    image = np.zeros((28, 28), dtype=np.uint8)
    image[6:22, 12:16] = 255
    with path.open("wb") as f:
        np.save(f, image)
    return path


def _load_within(path: Path) -> BaseException | None:
    """``load_image(path)`` in a thread: the exception it raised (None if none); fails if it blocks."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            load_image(path)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=run, daemon=True)
    reader.start()
    reader.join(WAIT)
    if reader.is_alive():
        # Unblock the reader (a writer that opens and closes the FIFO gives it end-of-file).
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(WAIT)
        pytest.fail(f"reading {path.name} blocked for {WAIT} s")
    return outcome[0]


# --- special files -----------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("name", ["digit.png", "digit.npy", "digit"])
def test_a_fifo_is_refused_without_blocking(tmp_path: Path, name: str) -> None:
    fifo = tmp_path / name
    os.mkfifo(fifo)

    error = _load_within(fifo)

    assert isinstance(error, ImageError)
    assert str(error) == f"{fifo}: is a FIFO (named pipe), expected an image file"


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("suffix", [".png", ".npy"])
def test_a_device_is_refused_before_it_is_read(tmp_path: Path, suffix: str) -> None:
    # /dev/zero never ends: a reader that opened it would read zeros until memory runs out.
    link = tmp_path / f"zero{suffix}"
    link.symlink_to("/dev/zero")

    error = _load_within(link)

    assert isinstance(error, ImageError) and "is a character device, expected an image file" in str(error)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_predict_reports_a_fifo_in_one_line_and_goes_on(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    digit = _bar(tmp_path / "bar.npy")
    codes: list[int] = []
    worker = threading.Thread(target=lambda: codes.append(predict_main([str(model), str(fifo), str(digit)])))
    worker.daemon = True
    worker.start()
    worker.join(WAIT * 2)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(WAIT)
        pytest.fail("predict blocked on a FIFO")

    captured = capsys.readouterr()
    assert codes == [2]
    assert captured.err.strip().splitlines() == [
        f"mnist-nn predict: error: {fifo}: is a FIFO (named pipe), expected an image file"
    ]
    assert f"{digit}: " in captured.out  # the other image was classified


# --- pictures that cannot be sized before decoding ---------------------------------------------


def _png(width: int, height: int) -> bytes:
    """A black grayscale PNG of width x height, built row by row (never the whole picture in memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then black pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _ico_holding(png: bytes, declared: int = 16) -> bytes:
    """An ICO whose one directory entry declares ``declared`` x ``declared`` and holds ``png``."""
    directory = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", declared, declared, 0, 0, 1, 32, len(png), 6 + 16)
    return directory + entry + png


@pytest.mark.parametrize("name", ["icon.ico", "icon.png"])
def test_an_ico_hiding_a_huge_png_is_refused_before_decoding(pillow: None, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(_ico_holding(_png(5000, 5000)))  # 25 MB decoded; the probe had 9400x9400

    with pytest.raises(ImageError) as error:
        load_image(path)

    message = str(error.value)
    assert message.startswith(f"{path}: not a readable image (not PNG, JPEG, GIF, BMP, TIFF, WebP, PGM/PPM")
    assert "such as ICO, are refused because their size cannot be checked before decoding" in message


def test_an_honest_small_ico_is_refused_too(pillow: None, tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "small.ico"
    Image.new("L", (16, 16), 255).save(path)

    with pytest.raises(ImageError, match="such as ICO, are refused"):
        load_image(path)


# --- names with line breaks --------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="Windows file names cannot hold line breaks")
def test_names_with_line_breaks_stay_on_one_line(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _bar(tmp_path / "good\nname.npy")
    missing = tmp_path / "missing\r\nname.png"
    bad = tmp_path / "bad\nname.npy"
    bad.write_bytes(b"not numpy")

    code = predict_main([str(model), str(good), str(missing), str(bad)])

    captured = capsys.readouterr()
    assert code == 2
    errors = captured.err.strip().splitlines()
    assert errors == [
        f"mnist-nn predict: error: {tmp_path}/missing\\r\\nname.png: no such file",
        f"mnist-nn predict: error: {tmp_path}/bad\\nname.npy: not a .npy file (it does not start with NumPy's header)",
    ]
    results = [line for line in captured.out.splitlines() if line.startswith(str(tmp_path))]
    assert len(results) == 1 and results[0].startswith(f"{tmp_path}/good\\nname.npy: ")


@pytest.mark.skipif(sys.platform == "win32", reason="Windows file names cannot hold control characters")
def test_terminal_control_characters_in_names_are_shown_not_obeyed(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # ESC [2J clears the screen, ESC ] 0;...BEL sets the window title; \x9b is the C1 form of ESC [.
    hostile = "esc-\x1b[2J\x1b]0;pwned\x07-\x9b31m-\x7f"
    good = _bar(tmp_path / f"{hostile}.npy")
    missing = tmp_path / f"{hostile}.png"

    code = predict_main([str(model), str(good), str(missing), "--json", str(tmp_path / f"{hostile}.json")])

    captured = capsys.readouterr()
    shown = "esc-\\x1b[2J\\x1b]0;pwned\\x07-\\x9b31m-\\x7f"
    assert code == 2
    assert captured.err.strip().splitlines() == [f"mnist-nn predict: error: {tmp_path}/{shown}.png: no such file"]
    assert f"{tmp_path}/{shown}.npy: " in captured.out
    for stream in (captured.out, captured.err):
        assert not any(c in stream for c in "\x1b\x07\x9b\x7f"), stream


def test_a_pdf_or_another_document_is_told_to_be_exported_as_a_picture(tmp_path: Path) -> None:
    pdf = tmp_path / "scan.pdf"
    pdf.write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n")
    with pytest.raises(ImageError, match=r"scan\.pdf: a PDF document, not a picture: export the digit as PNG or JPEG"):
        load_image(pdf)
    other = tmp_path / "digit.xyz"
    other.write_bytes(b"\x00\x01 not any format at all" * 10)
    with pytest.raises(ImageError, match=r"before decoding\); export it as PNG or JPEG$"):
        load_image(other)
