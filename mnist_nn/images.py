"""A user's picture as an MNIST input, and MNIST digits as text.

This module owns reading image files (``load_image``, with the bound on the
work of decoding them, ``check_decoding_work``), turning any grayscale
picture of one digit into a (784,) MNIST-style input (``to_mnist``, and
``load_digit`` for both at once), photos included (``photo_ink``), and
drawing a digit as text art (``render_digit``) or writing it as a PNG
(``save_digit_png``). Pillow, for reading and writing pictures, and SciPy, for
the photo steps, are the optional ``images`` extra (``pip install
'mnist-nn[images]'``), imported when needed; ``.npy`` files and clean pictures
work with NumPy alone.

``to_mnist`` repeats the recipe by which MNIST itself was made from NIST's
scans (LeCun, Cortes and Burges): "the images were size normalized to fit in a
20x20 pixel box while preserving their aspect ratio [...] the resulting images
contain grey levels as a result of the anti-aliasing technique used by the
normalization algorithm. The images were centered in a 28x28 image by
computing the center of mass of the pixels, and translating the image so as to
position this point at the center of the 28x28 field." In steps:

1. Polarity. MNIST digits are light (1) on a dark (0) background; a scan or
   drawing is usually dark ink on light paper. When the median of the outer
   ring of pixels is above 0.5 the image is inverted.
2. Contrast. The background level (that median, after any inversion) is
   subtracted and the darkest ink stretched to 1, so gray paper and pencil
   strokes look like MNIST's black background and white strokes.
3. Crop to the bounding box of the ink, the pixels above ``INK_THRESHOLD``
   (0.1), which ignores faint noise. No ink at all is an error.
4. Scale the box so its longer side becomes 20 pixels (``DIGIT_BOX``), keeping
   the aspect ratio. Each output pixel averages the input over its footprint
   (the input treated as constant over each pixel), so shrinking is exact area
   averaging and edges get MNIST's gray, anti-aliased levels; when the digit is
   smaller than 20 pixels the footprint is one input pixel wide, which is
   bilinear interpolation. This is two small matrix products, so it needs no
   Pillow.
5. Center. The scaled digit is put in a black 28x28 field, moved by whole
   pixels so that its center of mass lands on pixel (14, 14). Coordinates are
   (row, column) pixel indices, pixel i centered at i, so 13.5 is the middle
   of the grid; 14 is what MNIST's own files use: over the 10,000 test digits
   the center of mass lies between 13.5 and 14.5 in both coordinates, mean
   14.0. Parts that would fall outside the field are clipped.

An image that is already an MNIST digit comes out in the same place with the
same values, apart from the faintest pixels outside its box of ink.

A phone photo breaks step 2's premise that the frame's edge is the paper: a
lighting gradient or the table past the page edge passes the ink threshold,
the crop becomes the whole frame and the digit a speck in a grey haze. So a
picture with a long run of ink around its outer ring (``looks_clean``) first
goes through ``photo_ink``: the paper's background is estimated (a grey
opening) and removed, the ink threshold comes from the picture (Otsu's
method), and of the connected regions of strokes only the digit's are kept
(the largest away from the frame's edge, and the sizeable ones near it, so a
5 written in two strokes stays whole); specks, shadows and page edges are
dropped. Steps 3-5 follow on what is left. Clean pictures, among them the
drawings of ``mnist-nn serve``, never take this path and cost no more.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import stat
import struct
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mnist_nn.config import IMAGE_PIXELS, IMAGE_SIDE
from mnist_nn.errors import ImageError
from mnist_nn.files import atomic_write
from mnist_nn.text import MESSAGE_LIMIT, first_line, one_line

if TYPE_CHECKING:
    from PIL.Image import Image as PillowImage

DIGIT_BOX = 20  # the longer side of the digit after scaling, as in MNIST
FIELD_CENTER = IMAGE_SIDE // 2  # 14: the pixel (row and column index) the center of mass goes to
INK_THRESHOLD = 0.1  # pixels above this (after polarity and contrast) count as ink for the crop
BORDER_LIGHT = 0.5  # invert when the median of the outer ring of pixels is above this
RING_INK_RUN = 0.15  # a picture with a longer run of ink around its outer ring (a fraction of it) is a photo
RING_FAINT = (0.05, 0.5)  # ink levels (of the peak) of paper under uneven light: neither paper nor stroke
RING_WINDOW = 15  # ring pixels averaged for the faint-ink test
RING_FAINT_FRACTION = 0.1  # a picture with more of its ring at those levels is a photo
PHOTO_SIDE = 400  # photos are prepared at most this many pixels on the longer side
PHOTO_MIN_OPENING = 7  # the smallest side of the square that removes strokes from the background
PHOTO_NOISE_SPREADS = 5.0  # strokes rise at least this many robust standard deviations above the paper
PHOTO_FLOOR_SPREADS = 2.0  # the ink level subtracted around the strokes, in the same units
PHOTO_EDGE_PIXELS = 2  # pixels around the strokes kept as their anti-aliased edge
PHOTO_MIN_DIGIT = 0.05  # the digit's largest region spans at least this fraction of the longer side
PHOTO_JOIN_SIZE = 0.1  # a region joins the digit when at least this fraction of its largest region
PHOTO_JOIN_REACH = 0.5  # ... and within this fraction of that region's size from its box
MAX_IMAGE_SIDE = 4096  # larger pictures are refused: scale them down first
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE  # about 16.8 million
# A progressive JPEG is decoded scan by scan, each scan visiting every 8x8 block of the components it
# codes, whatever the scale of decoding: these bound the work before anything is decoded.
MAX_JPEG_SCANS = 200  # libjpeg writes 6 progressive scans in grayscale, 10 in color
# 8x8 blocks visited over all scans: libjpeg's progressive scans of the largest picture Pillow opens
# (89.5 million pixels) visit 11 million in color, 34 million in CMYK; about 1.5 s of CPU.
MAX_JPEG_SCAN_BLOCKS = 40_000_000
MAX_JPEG_MARKERS = 1000  # markers up to the end of the picture; photos have a few dozen
# Pillow reads a PNG's chunks one by one in Python. Encoders write pixel data in chunks of 8 KiB or more:
PNG_CHUNK_ALLOWANCE = 1024  # chunks any PNG may have, and one more per KiB of its raw pixel data
MAX_PNG_INFLATED_CHUNKS = 64  # iCCP, zTXt and compressed iTXt chunks, each inflated up to 1 MB by Pillow
RAMP = " .:-=+*#%@"  # render_digit's characters, from background (0) to full ink (1)
PILLOW_INSTALL = "pip install 'mnist-nn[images]'"
PILLOW_HINT = f"reading PNG/JPEG images needs Pillow: {PILLOW_INSTALL}"
_NPY_SUFFIX = ".npy"
_NPY_MAGIC = b"\x93NUMPY"
_NPY_SHAPES = ((IMAGE_SIDE, IMAGE_SIDE), (IMAGE_PIXELS,))
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # Pillow modes of 16-bit grayscale files
# The picture formats read, by Pillow's names: those whose header gives the size of the picture
# decoded, so it is checked first. Others are refused: an ICO's directory, for one, may say 16x16
# and hold a 9400x9400 PNG that only decoding would reveal. (Pillow's JPEG reader also opens the
# MPO pictures of many phones.)
ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
_ACCEPTED_NAMES = "PNG, JPEG, GIF, BMP, TIFF, WebP, PGM/PPM"
# Files users try that are documents, not pictures, by their first bytes.
_OTHER_DOCUMENTS = {b"%PDF-": "a PDF document", b"%!PS-": "a PostScript document", b"<?xml": "an XML file (an SVG?)"}
_READ_CHUNK = 1 << 16  # bytes read at a time while looking for markers and chunks
_JPEG_START = b"\xff\xd8\xff"  # SOI and the next marker's 0xFF: how Pillow recognizes a JPEG (or an MPO)
# A marker is 0xFF and a code other than 0 (a 0xFF byte of a scan's data), 0xFF (fill) or a restart
# (0xD0-0xD7, inside a scan's data); libjpeg skips any other bytes found between markers.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xff\xd0-\xd7]")
_JPEG_SOI, _JPEG_EOI, _JPEG_SOS, _JPEG_TEM = 0xD8, 0xD9, 0xDA, 0x01
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0-SOF15: not DHT, JPG, DAC
_JPEG_ADVICE = "re-save it as a baseline JPEG or PNG"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples per pixel of each PNG color type
_PNG_INFLATED = (b"iCCP", b"zTXt", b"iTXt")
# Python's warning filters belong to the process: one thread at a time may change them.
_WARNINGS_LOCK = threading.Lock()
_FILE_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


# --- reading files ---------------------------------------------------------------------


def load_image(path: Path) -> npt.NDArray[np.float64]:
    """Read an image file as a 2-D grayscale array in [0, 1] (0 = black), any size.

    ``.npy`` files must hold a (28, 28) or (784,) array of real numbers:
    integers in 0-255 (scaled by 1/255) or finite floats in [0, 1]. They are
    read without Pillow and without unpickling anything (object arrays are
    refused). Any other file is decoded by Pillow: the EXIF orientation of
    photos is applied, color is converted to luminance, a transparent
    background is composited over white paper, and 16-bit grayscale is scaled
    by 1/65535. Only ``ACCEPTED_FORMATS`` are read, formats whose header gives
    the decoded size; pictures over ``MAX_IMAGE_SIDE`` pixels on a side (or
    ``MAX_IMAGE_PIXELS``, or Pillow's lower ``Image.MAX_IMAGE_PIXELS``) are
    refused before decoding, except JPEGs, which are decoded at 1/2, 1/4 or
    1/8 scale when that fits. JPEGs and PNGs whose decoding would take far
    longer than their size suggests (thousands of progressive scans, floods of
    chunks) are refused from their markers first (``check_decoding_work``).
    Anything but a regular file (a FIFO, a device) is refused before it is
    opened, so nothing can block on it. What the libraries warn or print while
    decoding (Pillow's warnings about damaged metadata, libtiff's errors) never
    reaches stderr: a picture that cannot be read is refused with the first of
    it in the message, and for a picture that decodes it is dropped.

    Args:
        path: the file to read.

    Returns:
        (height, width) float64 in [0, 1]; a (784,) ``.npy`` array comes back as (28, 28).

    Raises:
        ImageError: the file is missing, unreadable or not a regular file, is not an image
            in an accepted format, is too large or too slow to decode, holds bad values, or
            needs Pillow and Pillow is not installed. The message names the file on one line.
    """
    path = Path(path)
    if path.suffix.lower() == _NPY_SUFFIX:
        return _load_npy(path)
    return _load_with_pillow(path)


def _name(path: Path) -> str:
    """The file's name for a one-line message: line breaks in it escaped."""
    return one_line(str(path))


def _not_regular(path: Path, mode: int) -> ImageError:
    """The error for a path that is a folder, a FIFO, a device or a socket."""
    if stat.S_ISDIR(mode):
        return ImageError(f"{_name(path)}: is a folder, expected an image file")
    kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
    return ImageError(f"{_name(path)}: is {kind}, expected an image file")


def _open_regular(path: Path) -> IO[bytes]:
    """Open ``path`` for reading if it is a regular file; ``ImageError`` otherwise.

    The type is checked before opening, and again on the opened file (opened
    without blocking, so that a FIFO swapped in between cannot hang the read).
    """
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise ImageError(f"{_name(path)}: no such file") from None
    except OSError as e:
        raise ImageError(f"{_name(path)}: cannot read the file ({e.strerror or first_line(e)})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_regular(path, mode)
    return os.fdopen(fd, "rb")


def _load_npy(path: Path) -> npt.NDArray[np.float64]:
    """Read and check a (28, 28) or (784,) NumPy image without unpickling anything.

    The header is parsed and its shape and type checked before any data is
    read, so a header declaring a huge array costs nothing; then exactly the
    784 values are read from the file already opened.
    """
    name = _name(path)
    with _open_regular(path) as f:
        try:
            if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
                raise ImageError(f"{name}: not a .npy file (it does not start with NumPy's header)")
            shape, dtype, fortran_order = _npy_header(f)
        except ImageError:
            raise
        except OSError as e:
            raise ImageError(f"{name}: cannot read the file ({e.strerror or first_line(e)})") from None
        except Exception as e:  # hostile headers raise ValueError, SyntaxError, TokenError, OverflowError, ...
            raise ImageError(f"{name}: not a readable .npy file ({first_line(e)})") from None
        if dtype.hasobject:
            raise ImageError(f"{name}: holds Python objects, not numbers (refused: no unpickling)")
        if shape not in _NPY_SHAPES:
            raise ImageError(f"{name}: expected an array of shape (28, 28) or (784,), got {shape}")
        kind = dtype.kind
        if kind not in "biuf":
            raise ImageError(f"{name}: expected real numbers, got dtype {dtype}")
        size = IMAGE_PIXELS * dtype.itemsize
        try:
            raw = f.read(size)
        except OSError as e:
            raise ImageError(f"{name}: cannot read the file ({e.strerror or first_line(e)})") from None
    if len(raw) < size:
        raise ImageError(f"{name}: not a readable .npy file (truncated: {len(raw)} of {size} bytes of data)")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    values = array.astype(np.float64).reshape(IMAGE_SIDE, IMAGE_SIDE)
    if kind in "iu":
        if values.min() < 0 or values.max() > 255:
            raise ImageError(
                f"{name}: expected integer pixels in 0-255, got values from {values.min():g} to {values.max():g}"
            )
        values /= 255.0
    elif kind == "f":
        if not np.isfinite(values).all():
            raise ImageError(f"{name}: holds NaN or infinite values")
        if values.min() < 0.0 or values.max() > 1.0:
            raise ImageError(
                f"{name}: expected float pixels in [0, 1], got values from {values.min():g} to {values.max():g}"
            )
    return values


def _npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any], bool]:
    """The shape, dtype and Fortran order of a .npy header, read just after the magic string."""
    version = tuple(f.read(2))
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return tuple(shape), np.dtype(dtype), bool(fortran_order)


def _load_with_pillow(path: Path) -> npt.NDArray[np.float64]:
    """Decode a picture with Pillow into grayscale in [0, 1], refusing huge ones and unaccepted formats.

    The warnings raised meanwhile (Pillow's about damaged metadata, say) are
    collected, not printed: a picture that cannot be read is refused in one
    line that quotes the first of them; a picture that decodes is used, and
    they are dropped.
    """
    name = _name(path)
    file = _open_regular(path)
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:
        file.close()
        raise ImageError(f"{name}: {PILLOW_HINT}") from None
    printed: list[str] = []  # lines libtiff printed while decoding
    with file, _collected_warnings() as caught:
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse those too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            check_decoding_work(file, name=name)
            file.seek(0)
            # Only the accepted formats are even tried, so no other plugin parses the file.
            with Image.open(file, formats=ACCEPTED_FORMATS) as image:
                limit = _pixel_limit(Image.MAX_IMAGE_PIXELS)
                if image.format in ("JPEG", "MPO"):
                    _decode_large_jpeg_smaller(image, limit)
                width, height = image.size
                if _too_large(width, height, limit):
                    raise ImageError(
                        f"{name}: image of {width}x{height} pixels is too large "
                        f"(limit {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} and {limit:,} pixels); scale it down first"
                    )
                # libtiff, which decodes compressed TIFFs, prints its errors on stderr itself.
                with _captured_stderr(printed) if image.format == "TIFF" else contextlib.nullcontext():
                    image.load()
                if image.size != (width, height):  # cannot happen with the accepted formats; never trust it
                    raise ImageError(f"{name}: decoded to {image.size}, not the {width}x{height} its header says")
                return _grayscale(ImageOps.exif_transpose(image))
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(f"{name}: refused as a possible decompression bomb ({first_line(e)})") from None
        except UnidentifiedImageError:
            file.seek(0)
            kind = _OTHER_DOCUMENTS.get(file.read(8)[:5], "")
            if kind:
                raise ImageError(f"{name}: {kind}, not a picture: export the digit as PNG or JPEG") from None
            raise ImageError(
                f"{name}: not a readable image (not {_ACCEPTED_NAMES}; other formats, such as ICO, are refused "
                f"because their size cannot be checked before decoding{_heard(printed, caught)}); "
                "export it as PNG or JPEG"
            ) from None
        except MemoryError:
            raise ImageError(f"{name}: too large to decode in memory") from None
        except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError, struct.error) as e:
            # Damaged files raise any of these while decoding.
            raise ImageError(f"{name}: not a readable image ({first_line(e)}{_heard(printed, caught)})") from None


def _is_deprecation(warning: warnings.WarningMessage) -> bool:
    """Whether a warning is a deprecation, meant for this package's developers rather than about a picture."""
    return issubclass(warning.category, (DeprecationWarning, PendingDeprecationWarning))


@contextlib.contextmanager
def _collected_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Collect the warnings raised inside rather than print them; deprecations are passed on when it ends.

    Threads take turns (``_WARNINGS_LOCK``), so that each restores the
    warning filters it found.
    """
    with _WARNINGS_LOCK:
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield caught
        finally:
            for warning in filter(_is_deprecation, caught):
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


@contextlib.contextmanager
def _captured_stderr(printed: list[str]) -> Iterator[None]:
    """Send what is written on file descriptor 2 inside to a temporary file, its lines added to ``printed`` at the end.

    C libraries print there directly. Callers hold ``_WARNINGS_LOCK``, so two
    captures never interleave; another thread's writes in the meantime are captured too.
    """
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to keep clean
            yield
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read(_READ_CHUNK).decode("utf-8", "replace")
            printed.extend(line for line in text.splitlines() if line.strip())


def _heard(printed: list[str], caught: list[warnings.WarningMessage]) -> str:
    """What libraries printed and warned, as the end of an error message ("; libtiff: ...; warning: ..."), or ""."""
    heard = [warning for warning in caught if not _is_deprecation(warning)]
    said = f"; libtiff: {one_line(printed[0], MESSAGE_LIMIT)}" if printed else ""
    if not heard:
        return said
    count = "warning" if len(heard) == 1 else f"first of {len(heard)} warnings"
    return f"{said}; {count}: {one_line(str(heard[0].message), MESSAGE_LIMIT)}"


def check_decoding_work(source: bytes | IO[bytes], *, name: str = "image") -> None:
    """Refuse a JPEG or PNG whose decoding would take far longer than its size suggests, decoding nothing.

    ``load_image`` applies it to every picture. Other data passes.

    - JPEG: a progressive JPEG is decoded scan by scan, and each scan visits
      every 8x8 block of the components it codes, whatever the scale the
      picture is decoded at: a 9400x9400 header with thousands of scans of a
      few bytes each fits in 1 MiB and takes minutes. The markers are read up
      to the end of the first picture (EOI); refused are more than
      ``MAX_JPEG_SCANS`` scans, scans that visit more than
      ``MAX_JPEG_SCAN_BLOCKS`` blocks in all (each scan's components' blocks,
      counted from the frame header), or more than ``MAX_JPEG_MARKERS`` markers.
    - PNG: Pillow handles each chunk in Python and inflates every iCCP chunk
      (up to 1 MB each): 5 MB of chunks take seconds. Refused are more chunks
      than ``PNG_CHUNK_ALLOWANCE`` plus one per KiB of the raw pixel data
      (rows of bytes, as the header declares them), or more than
      ``MAX_PNG_INFLATED_CHUNKS`` iCCP, zTXt and compressed iTXt chunks.

    The check reads the file's markers or chunk headers once, in chunks of
    64 KiB, and stops at the first limit passed.

    Args:
        source: the picture's bytes, or a binary file, read from its start (its position is left anywhere).
        name: what to call the picture in the message, e.g. its file name.

    Raises:
        ImageError: a limit is passed; the message says which and how to re-save the picture.
        OSError: the file cannot be read.
    """
    reader = _ChunkReader(io.BytesIO(source) if isinstance(source, bytes) else source)
    start = reader.read(0, len(_PNG_SIGNATURE))
    if start.startswith(_JPEG_START):
        _check_jpeg_work(reader, name)
    elif start == _PNG_SIGNATURE:
        _check_png_work(reader, name)


def _check_jpeg_work(reader: _ChunkReader, name: str) -> None:
    """``check_decoding_work`` for a JPEG: its scans and markers, up to EOI."""
    frame: tuple[int, int, dict[int, int]] | None = None  # width, height, 8x8 blocks of each component
    scans = blocks = markers = 0
    position = 2  # after SOI
    while (found := reader.next_marker(position)) is not None:
        at, code = found
        if code in (_JPEG_SOI, _JPEG_EOI):  # libjpeg stops at either
            return
        markers += 1
        if markers > MAX_JPEG_MARKERS:
            raise ImageError(
                f"{name}: a JPEG of more than {MAX_JPEG_MARKERS:,} markers (photos have a few dozen) "
                f"would take too long to read; {_JPEG_ADVICE}"
            )
        if code == _JPEG_TEM:  # the one marker outside a scan without a length
            position = at + 2
            continue
        length = max(int.from_bytes(reader.read(at + 2, 2), "big"), 2)  # the segment's, counting these 2 bytes
        position = at + 2 + length
        if code in _JPEG_FRAMES and frame is None:
            frame = _jpeg_frame(reader.read(at + 4, length - 2))
        elif code == _JPEG_SOS:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise ImageError(
                    f"{name}: a JPEG of more than {MAX_JPEG_SCANS} scans (photos have about 10) would take "
                    f"too long to decode; {_JPEG_ADVICE}"
                )
            if frame is not None:
                blocks += sum(frame[2].get(c, 0) for c in _jpeg_scan_components(reader.read(at + 4, length - 2)))
                if blocks > MAX_JPEG_SCAN_BLOCKS:
                    raise ImageError(
                        f"{name}: a {frame[0]}x{frame[1]} JPEG whose scans decode more than "
                        f"{MAX_JPEG_SCAN_BLOCKS:,} blocks of 8x8 pixels would take too long to decode; "
                        f"{_JPEG_ADVICE}, or scale it down"
                    )


def _check_png_work(reader: _ChunkReader, name: str) -> None:
    """``check_decoding_work`` for a PNG: its chunks, up to IEND."""
    limit = PNG_CHUNK_ALLOWANCE
    chunks = inflated = 0
    position = len(_PNG_SIGNATURE)
    while len(header := reader.read(position, 8)) == 8:
        length, kind = struct.unpack(">I4s", header)
        chunks += 1
        if kind == b"IHDR" and chunks == 1:
            # Larger pictures are refused once Pillow has read the header: they earn no more chunks.
            raw_bytes = min(_png_raw_bytes(reader.read(position + 8, min(length, 13))), 8 * MAX_IMAGE_PIXELS)
            limit += raw_bytes // 1024
        elif kind in _PNG_INFLATED and (kind != b"iTXt" or _itxt_is_compressed(reader.read(position + 8, 81))):
            inflated += 1
            if inflated > MAX_PNG_INFLATED_CHUNKS:
                raise ImageError(
                    f"{name}: a PNG of more than {MAX_PNG_INFLATED_CHUNKS} compressed iCCP, zTXt or iTXt chunks "
                    "would take too long to read; re-save it without its metadata"
                )
        if chunks > limit:
            raise ImageError(
                f"{name}: a PNG of more than {limit:,} chunks would take too long to read for its size; "
                "re-save it (image editors write a few large chunks)"
            )
        if kind == b"IEND":
            return
        position += 12 + length  # length, type, data, CRC


def _png_raw_bytes(header: bytes) -> int:
    """The bytes of raw pixel rows an IHDR declares (a filter byte each); 0 if it is cut short."""
    if len(header) < 10:
        return 0
    width, height, depth, color = (int(v) for v in struct.unpack(">IIBB", header[:10]))
    return height * (1 + -(-width * _PNG_CHANNELS.get(color, 4) * depth // 8))


def _itxt_is_compressed(start: bytes) -> bool:
    """Whether an iTXt chunk, from the start of its data (keyword, NUL, compression flag), is compressed."""
    end = start.find(b"\x00")
    return 0 <= end < len(start) - 1 and start[end + 1] == 1


def _jpeg_frame(header: bytes) -> tuple[int, int, dict[int, int]] | None:
    """Width, height and each component's 8x8 blocks (whole MCUs) from a SOF segment; None if it is cut short."""
    if len(header) < 6 or len(header) < 6 + 3 * header[5]:
        return None
    height, width = struct.unpack(">HH", header[1:5])
    factors = {
        header[i]: (max(header[i + 1] >> 4, 1), max(header[i + 1] & 15, 1)) for i in range(6, 6 + 3 * header[5], 3)
    }
    h_max = max(h for h, _ in factors.values())
    v_max = max(v for _, v in factors.values())
    mcu_columns, mcu_rows = -(-width // (8 * h_max)), -(-height // (8 * v_max))
    return width, height, {c: mcu_columns * h * mcu_rows * v for c, (h, v) in factors.items()}


def _jpeg_scan_components(header: bytes) -> list[int]:
    """The component ids a SOS segment's scan codes (as many as the segment holds)."""
    count = header[0] if header else 0
    return [header[i] for i in range(1, min(1 + 2 * count, len(header)), 2)]


class _ChunkReader:
    """Reads a binary file at any position, holding one chunk of it."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._start = 0  # the file position of the chunk held
        self._chunk = b""

    def read(self, position: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``position`` (fewer at the end of the file)."""
        if position < self._start or position + size > self._start + len(self._chunk):
            self._file.seek(position)
            self._chunk = self._file.read(max(size, _READ_CHUNK))
            self._start = position
        offset = position - self._start
        return self._chunk[offset : offset + size]

    def next_marker(self, position: int) -> tuple[int, int] | None:
        """The position and code of the first marker at or after ``position``; None at the end of the file."""
        while len(self.read(position, 2)) == 2:
            found = _JPEG_MARKER.search(self._chunk, position - self._start)
            if found is not None:
                return self._start + found.start(), self._chunk[found.start() + 1]
            position = self._start + len(self._chunk) - 1  # a marker may straddle the chunk's end
        return None


def _pixel_limit(pillow_limit: int | None) -> int:
    """The pixel count above which pictures are refused: ours, or Pillow's if lower."""
    return MAX_IMAGE_PIXELS if pillow_limit is None else min(MAX_IMAGE_PIXELS, pillow_limit)


def _too_large(width: int, height: int, pixel_limit: int) -> bool:
    """Whether a picture exceeds ``MAX_IMAGE_SIDE`` on a side or ``pixel_limit`` in all."""
    return width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE or width * height > pixel_limit


def _decode_large_jpeg_smaller(image: PillowImage, pixel_limit: int) -> None:
    """Let a JPEG over the limits decode at 1/2, 1/4 or 1/8 scale, which libjpeg does cheaply.

    Phone cameras take pictures of 48 million pixels and more; a digit needs far fewer.
    """
    width, height = image.size
    if not _too_large(width, height, pixel_limit):
        return
    for scale in (2, 4, 8):
        if not _too_large(-(-width // scale), -(-height // scale), pixel_limit):  # sizes round up
            image.draft(None, (width // scale, height // scale))
            return


def _grayscale(image: PillowImage) -> npt.NDArray[np.float64]:
    """A decoded Pillow image as (height, width) float64 in [0, 1], transparency over white."""
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64) / 65535.0
        return np.clip(values, 0.0, 1.0)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        la = np.asarray(image.convert("RGBA").convert("LA"), dtype=np.float64) / 255.0  # (h, w, 2)
        gray, alpha = la[..., 0], la[..., 1]
        return gray * alpha + (1.0 - alpha)  # over white paper
    return np.asarray(image.convert("L"), dtype=np.float64) / 255.0


# --- preprocessing ---------------------------------------------------------------------


def _check_image(image: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    """The grayscale image as 2-D float64 in [0, 1] (the array itself if it is one: never written to)."""
    array = np.asarray(image)
    if array.shape == (IMAGE_PIXELS,):
        array = array.reshape(IMAGE_SIDE, IMAGE_SIDE)
    if array.ndim != 2 or array.size == 0:
        raise ImageError(f"{name}: expected a 2-D grayscale image or (784,) pixels, got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ImageError(f"{name}: expected real pixel values, got dtype {array.dtype}")
    values = np.asarray(array, dtype=np.float64)  # no copy of a float64 image: only read
    if not np.isfinite(values).all():
        raise ImageError(f"{name}: holds NaN or infinite values")
    if values.min() < 0.0 or values.max() > 1.0:
        raise ImageError(f"{name}: expected pixels in [0, 1], got values from {values.min():g} to {values.max():g}")
    return values


def _border(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The outer ring of pixels, each once."""
    if min(values.shape) <= 2:
        return values.ravel()
    return np.concatenate([values[0], values[-1], values[1:-1, 0], values[1:-1, -1]])


def _footprint_weights(n_in: int, start: float, step: float, n_out: int) -> npt.NDArray[np.float64]:
    """(n_out, n_in) resampling matrix: each output pixel averages its footprint of the input.

    Output pixel i is centered at start + (i + 0.5) step in input coordinates
    (input pixel j covers [j, j + 1)); its footprint is step wide when
    shrinking (area averaging) and 1 wide when enlarging (bilinear). Input
    outside [0, n_in) counts as background 0.
    """
    centers = start + (np.arange(n_out) + 0.5) * step  # (n_out,)
    half = max(step, 1.0) / 2
    edges = np.arange(n_in + 1, dtype=np.float64)  # (n_in + 1,)
    low = np.maximum(centers[:, None] - half, edges[None, :-1])  # (n_out, n_in)
    high = np.minimum(centers[:, None] + half, edges[None, 1:])
    weights: npt.NDArray[np.float64] = np.clip(high - low, 0.0, None) / (2 * half)
    return weights


def _ink(values: npt.NDArray[np.float64], inverted: bool, border_level: float) -> npt.NDArray[np.float64]:
    """Ink above the background, before the contrast stretch: clip(v - border_level, 0), v inverted first if asked."""
    if inverted:
        values = 1.0 - values
    ink: npt.NDArray[np.float64] = np.clip(values - border_level, 0.0, None)
    return ink


def _support(weights: npt.NDArray[np.float64]) -> tuple[int, int]:
    """The input pixels [start, stop) that a (n_out, n_in) resampling matrix reads (its nonzero columns)."""
    used = np.flatnonzero(weights.any(axis=0))
    return int(used[0]), int(used[-1]) + 1


def _paste_centered(digit: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Place ``digit`` in a black 28x28 field with its center of mass at pixel (14, 14), clipping."""
    rows = digit.sum(axis=1)  # (h,): mass of each row
    cols = digit.sum(axis=0)  # (w,): mass of each column
    mass = rows.sum()
    com_row = float(rows @ np.arange(digit.shape[0])) / mass
    com_col = float(cols @ np.arange(digit.shape[1])) / mass
    # Round half up, so the same image always lands the same way.
    top = math.floor(FIELD_CENTER - com_row + 0.5)
    left = math.floor(FIELD_CENTER - com_col + 0.5)
    field = np.zeros((IMAGE_SIDE, IMAGE_SIDE))
    r0, r1 = max(top, 0), min(top + digit.shape[0], IMAGE_SIDE)
    c0, c1 = max(left, 0), min(left + digit.shape[1], IMAGE_SIDE)
    if r0 < r1 and c0 < c1:
        field[r0:r1, c0:c1] = digit[r0 - top : r1 - top, c0 - left : c1 - left]
    return field


def to_mnist(image: npt.NDArray[np.floating[Any]], *, name: str = "image") -> npt.NDArray[np.float32]:
    """Preprocess a grayscale picture of one digit the way MNIST itself was made.

    The steps (see the module docstring): invert dark-on-light pictures,
    stretch the contrast, crop to the ink (pixels above 0.1), scale the longer
    side to 20 pixels with area averaging, and move the center of mass to
    pixel (14, 14) of a black 28x28 field. A picture whose outer ring is not
    background (a a photo's uneven light or a page edge; see ``looks_clean``) first
    has its background removed and everything but the digit's strokes set
    aside (``photo_ink``), when SciPy is installed.

    Args:
        image: (height, width) grayscale in [0, 1], any size, either polarity; a (784,)
            row is read as 28x28.
        name: what to call the image in error messages, e.g. its file name.

    Returns:
        (784,) float32 in [0, 1]: a light digit on a black (0) background.

    Raises:
        ImageError: the array is not a 2-D image in [0, 1], or it holds no ink.
    """
    values = _check_image(image, name)
    border_level = float(np.median(_border(values)))
    inverted = border_level > BORDER_LIGHT
    if inverted:
        border_level = 1.0 - border_level
    # Each pixel's ink is a non-decreasing function of its level (non-increasing when inverted), also
    # in floating point, so a row's most inked pixel is its brightest (darkest) one: the peak and the
    # box of ink come from (h,) and (w,) extremes, and only the pixels the resampling reads are
    # turned into ink. The same operations on fewer pixels: the same values as on the whole image.
    extreme = np.min if inverted else np.max
    row_ink = _ink(extreme(values, axis=1), inverted, border_level)  # (h,)
    col_ink = _ink(extreme(values, axis=0), inverted, border_level)  # (w,)
    peak = float(row_ink.max())
    if peak <= INK_THRESHOLD:
        raise ImageError(f"{name}: the image is empty (no digit found)")
    if not _ring_is_background(values, inverted, border_level, peak) and _have_scipy():
        return _digit_from_ink(photo_ink(values, name=name))
    inked_rows = np.flatnonzero(row_ink / peak > INK_THRESHOLD)
    inked_cols = np.flatnonzero(col_ink / peak > INK_THRESHOLD)
    top, height = int(inked_rows[0]), int(inked_rows[-1] - inked_rows[0] + 1)
    left, width = int(inked_cols[0]), int(inked_cols[-1] - inked_cols[0] + 1)

    row_weights, col_weights = _box_weights(values.shape, top, height, left, width)
    r0, r1 = _support(row_weights)
    c0, c1 = _support(col_weights)
    ink = _ink(values[r0:r1, c0:c1], inverted, border_level)  # the footprints' pixels only
    ink /= peak
    digit = row_weights[:, r0:r1] @ ink @ col_weights[:, c0:c1].T  # (out_height, out_width), at most 20x20

    field = _paste_centered(np.clip(digit, 0.0, 1.0))
    return field.reshape(IMAGE_PIXELS).astype(np.float32)


def _box_weights(
    shape: tuple[int, ...], top: int, height: int, left: int, width: int, box: int = DIGIT_BOX
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The row and column resampling matrices that scale the box of ink to fit box x box, keeping its aspect."""
    step = max(height, width) / box  # input pixels per output pixel, the same on both axes
    out_height = min(box, max(1, round(height / step)))
    out_width = min(box, max(1, round(width / step)))
    # Center the footprints on the box; rounding the shorter side may reach past it by < step / 2.
    row_weights = _footprint_weights(shape[0], top + (height - out_height * step) / 2, step, out_height)
    col_weights = _footprint_weights(shape[1], left + (width - out_width * step) / 2, step, out_width)
    return row_weights, col_weights


def to_fashion_mnist(image: npt.NDArray[np.floating[Any]], *, name: str = "image") -> npt.NDArray[np.float32]:
    """Preprocess a grayscale picture of one garment the way Fashion-MNIST was made from Zalando's photos.

    Xiao, Rasul and Vollgraf trimmed each product photo to the product,
    scaled its longest side to 28 pixels, centered it in a 28x28 field and
    negated it. Here: ``to_mnist``'s polarity step (a light background is
    inverted) and its background level subtracted, without stretching the
    contrast (a white shirt stays dimmer than a black one, as in the data
    set), the crop to the pixels above ``INK_THRESHOLD`` of the strongest,
    the longest side scaled to 28 by area averaging, and the box centered (by
    its middle, not its mass). A Fashion-MNIST image comes back nearly as it was.

    Args:
        image: (height, width) grayscale in [0, 1], any size, either polarity; a (784,) row is read as 28x28.
        name: what to call the image in error messages, e.g. its file name.

    Returns:
        (784,) float32 in [0, 1]: a light garment on a black (0) background.

    Raises:
        ImageError: the array is not a 2-D image in [0, 1], or it holds nothing but background.
    """
    values = _check_image(image, name)
    border_level = float(np.median(_border(values)))
    inverted = border_level > BORDER_LIGHT
    if inverted:
        border_level = 1.0 - border_level
    ink = _ink(values, inverted, border_level)
    peak = float(ink.max())
    if peak <= INK_THRESHOLD:
        raise ImageError(f"{name}: the image is empty (no garment found)")
    inked_rows = np.flatnonzero((ink > INK_THRESHOLD * peak).any(axis=1))
    inked_cols = np.flatnonzero((ink > INK_THRESHOLD * peak).any(axis=0))
    top, height = int(inked_rows[0]), int(inked_rows[-1] - inked_rows[0] + 1)
    left, width = int(inked_cols[0]), int(inked_cols[-1] - inked_cols[0] + 1)
    row_weights, col_weights = _box_weights(ink.shape, top, height, left, width, box=IMAGE_SIDE)
    garment = np.clip(row_weights @ ink @ col_weights.T, 0.0, 1.0)  # its longest side 28
    field = np.zeros((IMAGE_SIDE, IMAGE_SIDE))
    r0, c0 = (IMAGE_SIDE - garment.shape[0]) // 2, (IMAGE_SIDE - garment.shape[1]) // 2
    field[r0 : r0 + garment.shape[0], c0 : c0 + garment.shape[1]] = garment
    return field.reshape(IMAGE_PIXELS).astype(np.float32)


# How each data set's images were made from pictures: a model prepares a user's picture the same way.
PREPARATIONS: dict[str, Callable[..., npt.NDArray[np.float32]]] = {"fashion-mnist": to_fashion_mnist}


def preparation(dataset: str) -> Callable[..., npt.NDArray[np.float32]]:
    """How a picture becomes an input for a model of ``dataset``: ``to_fashion_mnist``, else ``to_mnist``."""
    return PREPARATIONS.get(dataset, to_mnist)


def _digit_from_ink(ink: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """Steps 3-5 on an image of ink already in [0, 1] on 0: crop at 0.1, scale to 20, center the mass."""
    inked_rows = np.flatnonzero((ink > INK_THRESHOLD).any(axis=1))
    inked_cols = np.flatnonzero((ink > INK_THRESHOLD).any(axis=0))
    top, height = int(inked_rows[0]), int(inked_rows[-1] - inked_rows[0] + 1)
    left, width = int(inked_cols[0]), int(inked_cols[-1] - inked_cols[0] + 1)
    row_weights, col_weights = _box_weights(ink.shape, top, height, left, width)
    digit = row_weights @ ink @ col_weights.T  # (out_height, out_width), at most 20x20
    return _paste_centered(np.clip(digit, 0.0, 1.0)).reshape(IMAGE_PIXELS).astype(np.float32)


# --- photographs -----------------------------------------------------------------------


def _have_scipy() -> bool:
    """Whether SciPy (the ``images`` extra), which ``photo_ink`` needs, can be imported."""
    try:
        import scipy.ndimage  # noqa: F401
    except ImportError:
        return False
    return True


def _ring(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The outer ring of pixels in order around the frame (clockwise from the top left), each once."""
    if min(values.shape) <= 2:
        return values.ravel()
    return np.concatenate([values[0, :-1], values[:-1, -1], values[-1, :0:-1], values[:0:-1, 0]])


def _longest_cyclic_run(flags: npt.NDArray[np.bool_]) -> int:
    """The length of the longest run of True in ``flags`` read as a circle."""
    if flags.all():
        return int(flags.size)
    start = int(np.argmin(flags))  # a False: no run is cut by starting there
    rolled = np.concatenate([[False], np.roll(flags, -start), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(rolled))  # starts and ends of the runs, alternately
    return int((edges[1::2] - edges[::2]).max()) if edges.size else 0


def _ring_is_background(values: npt.NDArray[np.float64], inverted: bool, border_level: float, peak: float) -> bool:
    """Whether the outer ring is paper: no long run of ink (``RING_INK_RUN``), little faint ink (``RING_FAINT``)."""
    ring_ink = _ink(_ring(values), inverted, border_level) / peak
    # Averaged along the ring, noise fades and uneven light stays: the faint levels of paper under a gradient.
    window = min(RING_WINDOW, ring_ink.size)
    wrapped = np.concatenate([ring_ink[-(window // 2) :], ring_ink, ring_ink[: window - 1 - window // 2]])
    smooth = np.convolve(wrapped, np.full(window, 1.0 / window), mode="valid")  # (ring size,)
    strong = np.convolve((wrapped > RING_FAINT[1]).astype(np.float64), np.ones(window), mode="valid") > 0
    faint = (smooth > RING_FAINT[0]) & (smooth < RING_FAINT[1]) & ~strong  # not the blur of a stroke's crossing
    long_run = _longest_cyclic_run(ring_ink > INK_THRESHOLD) > RING_INK_RUN * ring_ink.size
    return not long_run and float(faint.mean()) <= RING_FAINT_FRACTION


def looks_clean(image: npt.NDArray[np.floating[Any]]) -> bool:
    """Whether ``to_mnist`` prepares ``image`` as a clean picture, without the photo steps.

    A picture is clean when no stretch of its outer ring longer than 15% of
    the ring (``RING_INK_RUN``) counts as ink by the recipe's own test (above
    a tenth of the darkest ink, measured from the ring's median), and at most
    10% of the ring is faint ink, between 5% and 50% of the darkest
    (``RING_FAINT``), averaged over 15 pixels along the ring. Scans, drawings and MNIST's own digits are clean, also
    when strokes cross the edge; a photo's uneven light, or a page edge with
    the table beyond it, darkens a whole side or shades the ring. (Without SciPy every picture is prepared as clean.)

    Args:
        image: (height, width) grayscale in [0, 1].

    Returns:
        True for a clean picture (or one with no ink at all), False for a photo.
    """
    values = _check_image(image, "image")
    border_level = float(np.median(_border(values)))
    inverted = border_level > BORDER_LIGHT
    if inverted:
        border_level = 1.0 - border_level
    peak = float(_ink(values.min() if inverted else values.max(), inverted, border_level))
    return peak <= INK_THRESHOLD or _ring_is_background(values, inverted, border_level, peak)


def _shrink(values: npt.NDArray[np.float64], side: int) -> npt.NDArray[np.float64]:
    """Average ``values`` over k x k blocks, the least whole k that brings the longer side to ``side`` or less."""
    k = -(-max(values.shape) // side)
    if k <= 1:
        return values
    h, w = values.shape[0] // k * k, values.shape[1] // k * k  # the last partial blocks are dropped
    if h == 0 or w == 0:
        return values
    blocks: npt.NDArray[np.float64] = values[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))
    return blocks


def _otsu(values: npt.NDArray[np.float64], bins: int = 256) -> float:
    """Otsu's threshold: the level that maximizes the between-class variance of ``values``' histogram."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return high
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    centers = (edges[:-1] + edges[1:]) / 2  # (bins,)
    weight = np.cumsum(counts)  # pixels at or below each bin
    mass = np.cumsum(counts * centers)
    total, total_mass = weight[-1], mass[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = mass / weight
        mean_high = (total_mass - mass) / (total - weight)
        between = weight * (total - weight) * (mean_low - mean_high) ** 2
    between = np.nan_to_num(between[:-1], nan=-1.0)
    return float(edges[int(np.argmax(between)) + 1])


def photo_ink(image: npt.NDArray[np.floating[Any]], *, name: str = "image") -> npt.NDArray[np.float64]:
    """The digit's ink in a photo, on black: background, page edges and specks removed.

    In steps, at most ``PHOTO_SIDE`` pixels on the longer side (larger photos are
    block-averaged first, which a 20x20 digit does not miss):

    1. Polarity. The ink is the side of the histogram with the longer tail from
       the median (the paper fills most of a photo): dark ink on light paper is
       inverted, so the ink is light.
    2. Background. A light blur (Gaussian, 1 pixel) calms the noise; a grey
       opening (minimum then maximum over a square of an eighth of the longer
       side) removes the strokes, which are narrower than that, and keeps the
       paper's gradient and large regions such as a table past the page edge.
       The ink is what rises above it.
    3. Threshold. Strokes are the pixels above Otsu's threshold of that ink, or
       above the noise (the median plus 5 times its robust spread), whichever is
       higher.
    4. Components. Of the connected regions of strokes (8-connected), those that
       touch the frame are page edges and shadows unless nothing else is left;
       the largest of the others is the digit (it must span a twentieth of the
       frame: specks alone are an empty page), and regions at least a tenth its
       size within half its size of the digit's box join it (a 4 or a 5 written
       in two strokes, a stroke broken by the threshold); specks and far marks
       do not.
    5. Contrast. The chosen strokes and the 2 pixels around them (their
       anti-aliased edge) keep their ink, the noise level subtracted and scaled
       so that the strokes' 90th percentile is 1 (clipped); all else is 0.

    Args:
        image: (height, width) grayscale in [0, 1], either polarity.
        name: what to call the image in error messages.

    Returns:
        (h, w) float64 in [0, 1]: light ink on 0, (h, w) the photo's size after any block averaging.

    Raises:
        ImageError: not a 2-D image in [0, 1], or no strokes stand out from the paper.
    """
    from scipy import ndimage

    values = _shrink(_check_image(image, name), PHOTO_SIDE)
    median = float(np.median(values))
    low, high = (float(q) for q in np.quantile(values, [0.01, 0.99]))
    if median - low >= high - median:  # the longer tail is dark: dark ink on light paper
        values = 1.0 - values
    smooth = ndimage.gaussian_filter(values, 1.0)
    size = max(PHOTO_MIN_OPENING, max(values.shape) // 8) | 1  # odd, so the square is centered
    background = ndimage.grey_opening(smooth, size=(size, size))
    raised = smooth - background  # >= 0: the opening is never above the image

    level = float(np.median(raised))
    spread = 1.4826 * float(np.median(np.abs(raised - level)))  # a robust standard deviation of the noise
    threshold = max(_otsu(raised), level + PHOTO_NOISE_SPREADS * spread)
    strokes = raised > threshold
    labels, count = ndimage.label(strokes, structure=np.ones((3, 3)))
    if count == 0:
        raise ImageError(f"{name}: the image is empty (no digit found)")
    chosen = _digit_components(labels, count)
    rows, cols = ndimage.find_objects(labels)[chosen[0] - 1]
    if max(rows.stop - rows.start, cols.stop - cols.start) < PHOTO_MIN_DIGIT * max(values.shape):
        raise ImageError(f"{name}: the image is empty (no digit found: only specks stand out from the paper)")

    mask = np.isin(labels, chosen)
    near = ndimage.binary_dilation(mask, structure=np.ones((3, 3)), iterations=PHOTO_EDGE_PIXELS)
    floor = level + PHOTO_FLOOR_SPREADS * spread
    top = float(np.quantile(raised[mask], 0.9))
    if top <= floor:
        raise ImageError(f"{name}: the image is empty (no digit found)")
    ink: npt.NDArray[np.float64] = np.where(near, np.clip((raised - floor) / (top - floor), 0.0, 1.0), 0.0)
    return ink


def _digit_components(labels: npt.NDArray[np.int32], count: int) -> list[int]:
    """The labels of the digit's regions: the largest away from the frame's edge and those near it (step 4)."""
    from scipy import ndimage

    index = np.arange(1, count + 1)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]  # (count,) pixels of each region
    boxes = ndimage.find_objects(labels)  # (row slice, column slice) of each region
    h, w = labels.shape
    touches = np.array(
        [b is None or b[0].start == 0 or b[1].start == 0 or b[0].stop == h or b[1].stop == w for b in boxes]
    )
    inside = ~touches if (~touches).any() else np.ones(count, dtype=bool)
    largest = int(np.argmax(np.where(inside, sizes, -1)))
    top, bottom = boxes[largest][0].start, boxes[largest][0].stop
    left, right = boxes[largest][1].start, boxes[largest][1].stop
    reach = PHOTO_JOIN_REACH * max(bottom - top, right - left)
    chosen = [int(index[largest])]
    for i, box in enumerate(boxes):
        if i == largest or box is None or not inside[i] or sizes[i] < PHOTO_JOIN_SIZE * sizes[largest]:
            continue
        gap_rows = max(box[0].start - bottom, top - box[0].stop, 0)
        gap_cols = max(box[1].start - right, left - box[1].stop, 0)
        if max(gap_rows, gap_cols) <= reach:
            chosen.append(int(index[i]))
    return chosen


def load_digit(path: Path, dataset: str = "mnist") -> npt.NDArray[np.float32]:
    """Read an image file and preprocess it as an input of ``dataset`` (``load_image``, then ``preparation``).

    Args:
        path: a PNG, JPEG or other picture (needs Pillow), or a ``.npy`` array.
        dataset: the data set of the model the input is for (``to_mnist`` for MNIST and most others).

    Returns:
        (784,) float32 in [0, 1], ready for ``Network.feedforward``.

    Raises:
        ImageError: as ``load_image`` and ``to_mnist``, naming the file.
    """
    path = Path(path)
    return preparation(dataset)(load_image(path), name=_name(path))


def save_digit_png(digit: npt.ArrayLike, path: Path) -> None:
    """Write a prepared 28x28 digit as a grayscale PNG, as the network sees it (light on black).

    The levels are ``round(255 v)``; the file is written atomically (its folder
    created if needed), so an earlier file at ``path`` stays whole if writing fails.

    Args:
        digit: (784,) or (28, 28) pixels in [0, 1].
        path: the PNG to write.

    Raises:
        ImageError: Pillow is not installed (the message says how to install it).
        ValueError: a bad shape or non-finite values.
        OSError: the file cannot be written.
    """
    array = np.asarray(digit, dtype=np.float64)
    if array.shape not in _NPY_SHAPES:
        raise ValueError(f"expected an image of shape (784,) or (28, 28), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("expected finite pixel values, got NaN or infinity")
    try:
        from PIL import Image
    except ImportError:
        raise ImageError(f"{_name(Path(path))}: writing PNG images needs Pillow: {PILLOW_INSTALL}") from None
    levels = np.rint(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8).reshape(IMAGE_SIDE, IMAGE_SIDE)
    picture = Image.fromarray(levels)
    atomic_write(Path(path), lambda f: picture.save(f, format="PNG"))


# --- text art --------------------------------------------------------------------------


def render_digit(image: npt.ArrayLike, *, width: int = IMAGE_SIDE) -> str:
    """Draw a 28x28 digit as text: 28 lines, one character per pixel from ``RAMP``.

    Intensity v in [0, 1] picks ``RAMP[min(floor(10 v), 9)]``: a space for the
    background (v < 0.1) up to ``@`` for full ink. Terminal characters are
    about twice as tall as wide, so ``width=56`` (two characters per pixel)
    gives a digit of the right proportions; the default 28 gives one per pixel.
    Every line has exactly ``width`` characters (trailing spaces kept), lines
    are joined by newlines with none at the end.

    Args:
        image: (784,) or (28, 28) pixels in [0, 1] (values rounded just outside are clipped).
        width: characters per line, a positive multiple of 28.

    Returns:
        The picture as one string of 28 lines.

    Raises:
        ValueError: a bad shape, non-finite values, or a width that is not a multiple of 28.
    """
    if width <= 0 or width % IMAGE_SIDE:
        raise ValueError(f"expected a width that is a positive multiple of {IMAGE_SIDE}, got {width}")
    array = np.asarray(image)
    if array.shape not in _NPY_SHAPES:
        raise ValueError(f"expected an image of shape (784,) or (28, 28), got {array.shape}")
    values = array.astype(np.float64).reshape(IMAGE_SIDE, IMAGE_SIDE)
    if not np.isfinite(values).all():
        raise ValueError("expected finite pixel values, got NaN or infinity")
    levels = np.minimum((np.clip(values, 0.0, 1.0) * len(RAMP)).astype(np.int64), len(RAMP) - 1)
    chars = np.array(list(RAMP))[levels]  # (28, 28) one-character strings
    chars = np.repeat(chars, width // IMAGE_SIDE, axis=1)  # (28, width)
    return "\n".join("".join(row) for row in chars)
