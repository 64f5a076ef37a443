"""The IDX file format of MNIST: a strict parser that checks before it allocates.

An IDX file is a big-endian header (two zero bytes, a type byte, the number of
dimensions, then one 32-bit size per dimension) followed by the data. MNIST uses
unsigned bytes: images with magic 2051 (3 dimensions), labels with magic 2049
(1 dimension). Every check compares the header against the byte count first, so
a hostile header cannot make NumPy allocate.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mnist_nn.config import IMAGE_PIXELS, IMAGE_SIDE, NUM_CLASSES
from mnist_nn.errors import DataFormatError
from mnist_nn.text import first_line

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_IDX_UBYTE = 0x08
_IDX_TYPE_NAMES = {
    0x08: "ubyte",
    0x09: "byte",
    0x0B: "short",
    0x0C: "int",
    0x0D: "float",
    0x0E: "double",
}


def parse_idx(raw: bytes, name: str = "IDX data", magic: int | None = None) -> npt.NDArray[np.uint8]:
    """Parse an uncompressed IDX file of unsigned bytes.

    The header is checked against the byte count before anything is allocated,
    so a header that claims more data than the file holds costs nothing.

    Args:
        raw: the whole file's bytes.
        name: how error messages name the file.
        magic: the magic number to require (2051 images, 2049 labels), or None.

    Returns:
        A read-only uint8 array of the declared shape, viewing ``raw``.

    Raises:
        DataFormatError: bad magic, unsupported type, truncated or trailing bytes.
    """
    if len(raw) < 4:
        raise DataFormatError(f"{name}: not an IDX file: {len(raw)} bytes, shorter than the 4-byte magic number")
    if raw[0] != 0 or raw[1] != 0:
        raise DataFormatError(
            f"{name}: not an IDX file: magic number starts with {raw[0]:#04x} {raw[1]:#04x}, expected 0x00 0x00"
        )
    type_code, ndim = raw[2], raw[3]
    found_magic = int.from_bytes(raw[:4], "big")
    if magic is not None and found_magic != magic:
        raise DataFormatError(f"{name}: IDX magic number is {found_magic}, expected {magic}")
    if type_code != _IDX_UBYTE:
        kind = _IDX_TYPE_NAMES.get(type_code, f"unknown type code {type_code:#04x}")
        raise DataFormatError(f"{name}: IDX element type is {kind}, expected ubyte (0x08)")
    if ndim == 0:
        raise DataFormatError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"{name}: truncated IDX header: {len(raw)} bytes, expected at least {header}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=object))
    if len(raw) < expected:
        raise DataFormatError(
            f"{name}: truncated IDX file: header declares shape {dims} ({expected} bytes), file has {len(raw)}"
        )
    if len(raw) > expected:
        raise DataFormatError(f"{name}: {len(raw) - expected} trailing bytes after the IDX data of shape {dims}")
    try:
        return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    except ValueError as exc:  # more dimensions than NumPy allows, or e.g. (0, 2**32 - 1, 2**32 - 1)
        reason = first_line(exc)
        raise DataFormatError(f"{name}: IDX header declares shape {dims}, which NumPy cannot hold ({reason})") from None


def parse_images(raw: bytes, name: str = "images") -> npt.NDArray[np.uint8]:
    """Parse an IDX image file into a (n, 784) uint8 array, checking 28x28 images."""
    images = parse_idx(raw, name, IDX_IMAGES_MAGIC)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataFormatError(f"{name}: expected images of shape (n, {IMAGE_SIDE}, {IMAGE_SIDE}), got {images.shape}")
    return images.reshape(images.shape[0], IMAGE_PIXELS)


def parse_labels(raw: bytes, name: str = "labels", *, digits: bool = True) -> npt.NDArray[np.uint8]:
    """Parse an IDX label file into a (n,) uint8 array: digits 0-9, or any byte with ``digits=False``
    (a folder's labels, checked against its own classes by ``mnist_nn.data.folder``)."""
    labels = parse_idx(raw, name, IDX_LABELS_MAGIC)
    if labels.ndim != 1:
        raise DataFormatError(f"{name}: expected labels of shape (n,), got {labels.shape}")
    if digits and labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DataFormatError(f"{name}: label {int(labels.max())} found, expected digits 0-9")
    return labels
