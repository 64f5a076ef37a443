"""Your own data set in MNIST's format: ``--dataset idx:DIR``.

The folder holds MNIST's four files under MNIST's names
(``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), each plain or
gzip-compressed (``.gz`` after the name), of 28x28 images and labels 0-9:
KMNIST, EMNIST's digits and QMNIST are published this way. There is no
pinned digest for them, so they are checked for structure only (the IDX
parser's checks, image and label counts agreeing, every label a class) and
read from the folder itself, never copied into the cache; the SHA-256 of
each payload is recorded with a model trained on them. ``classes.txt``
beside them names the ten classes, one per line; without it they are 0-9.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mnist_nn.config import NUM_CLASSES
from mnist_nn.data.download import MNIST_FILES
from mnist_nn.data.idx import parse_images, parse_labels
from mnist_nn.errors import DataFormatError
from mnist_nn.text import describe_os_error, one_line

IDX_PREFIX = "idx:"  # a data set named idx:DIR is the folder DIR
MAX_FILE_BYTES = 1 << 30  # a file, decompressed, may hold at most this many bytes (1 GiB)
MAX_CLASS_NAME = 40  # characters of a class name in classes.txt
_GZIP_WBITS = 16 + zlib.MAX_WBITS


@dataclass(frozen=True)
class FolderData:
    """The four files of a folder, parsed and checked, with their class names and digests."""

    name: str  # "idx:" and the folder's absolute path
    train: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]
    test: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]
    classes: tuple[str, ...]
    digests: dict[str, str]


def is_folder(name: str) -> bool:
    """True for a data set name of the form ``idx:DIR``."""
    return name.startswith(IDX_PREFIX)


def read_folder(name: str) -> FolderData:
    """The data set ``idx:DIR``: its four files read from DIR, parsed and checked.

    Raises:
        DataFormatError: a missing, unreadable, oversized or malformed file, counts that disagree,
            a label that is no class, or a ``classes.txt`` without one name per class (one line each).
    """
    folder = Path(name[len(IDX_PREFIX) :]).expanduser()
    where = f"{IDX_PREFIX}{one_line(str(folder))}"
    if not folder.is_dir():
        raise DataFormatError(f"{where}: no such folder (--dataset idx:DIR reads MNIST's four files from DIR)")
    payloads = {file.name: _payload(folder, file.name, where) for file in MNIST_FILES}
    classes = _classes(folder / "classes.txt", where)
    train = _pair(payloads, "train", where)
    test = _pair(payloads, "t10k", where)
    digests = {file: hashlib.sha256(data).hexdigest() for file, data in payloads.items()}
    return FolderData(f"{IDX_PREFIX}{folder.resolve()}", train, test, classes, digests)


def _payload(folder: Path, name: str, where: str) -> bytes:
    """The decompressed bytes of ``name`` or ``name.gz`` in ``folder``, at most ``MAX_FILE_BYTES``."""
    candidates = [folder / name, folder / f"{name}.gz"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DataFormatError(f"{where}: {name} (or {name}.gz) is missing")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise DataFormatError(f"{where}: cannot read {path.name}: {describe_os_error(exc)}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise DataFormatError(f"{where}: {path.name} is larger than {MAX_FILE_BYTES:,} bytes")
    if raw[:2] != b"\x1f\x8b":
        return raw
    inflate = zlib.decompressobj(_GZIP_WBITS)
    try:
        data = inflate.decompress(raw, MAX_FILE_BYTES + 1)
    except zlib.error as exc:
        raise DataFormatError(f"{where}: {path.name} is not valid gzip ({exc})") from None
    if len(data) > MAX_FILE_BYTES or inflate.unconsumed_tail:
        raise DataFormatError(f"{where}: {path.name} inflates to more than {MAX_FILE_BYTES:,} bytes")
    if not inflate.eof:
        raise DataFormatError(f"{where}: {path.name} is a truncated gzip file")
    return data


def _classes(path: Path, where: str) -> tuple[str, ...]:
    """The class names in ``classes.txt`` (one per line, ten lines), or the digits without the file."""
    if not path.is_file():
        return tuple(str(k) for k in range(NUM_CLASSES))
    try:
        with path.open("rb") as f:
            raw = f.read(NUM_CLASSES * (4 * MAX_CLASS_NAME + 2) + 1)
    except OSError as exc:
        raise DataFormatError(f"{where}: cannot read classes.txt: {describe_os_error(exc)}") from None
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataFormatError(f"{where}: classes.txt is not UTF-8 text") from None
    names = [line.strip() for line in lines if line.strip()]
    if len(names) != NUM_CLASSES:
        raise DataFormatError(
            f"{where}: classes.txt: expected {NUM_CLASSES} lines, one name per class (labels 0-9), got {len(names)}"
        )
    long = [n for n in names if len(n) > MAX_CLASS_NAME]
    if long:
        raise DataFormatError(f"{where}: classes.txt: a name longer than {MAX_CLASS_NAME} characters")
    return tuple(one_line(n) for n in names)


def _pair(payloads: dict[str, bytes], prefix: str, where: str) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """The images and labels of ``prefix`` ("train" or "t10k"), their counts agreeing (labels 0-9: the parser's)."""
    images_name, labels_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    images = parse_images(payloads[images_name], f"{where}: {images_name}")
    labels = parse_labels(payloads[labels_name], f"{where}: {labels_name}")
    if images.shape[0] != labels.shape[0]:
        raise DataFormatError(
            f"{where}: {images_name} holds {images.shape[0]} images but {labels_name} {labels.shape[0]} labels"
        )
    if images.shape[0] < 2 or (prefix == "train" and images.shape[0] < 12):
        raise DataFormatError(f"{where}: {images_name} holds {images.shape[0]} images, too few to split")
    return images, labels
