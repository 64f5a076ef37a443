"""Your own data set in MNIST's format: ``--dataset idx:DIR``.

The folder holds MNIST's four files under MNIST's names
(``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), each plain or
gzip-compressed (``.gz`` after the name), of 28x28 images and labels 0 to
K - 1 for K classes, 2 <= K <= 256: KMNIST, EMNIST and QMNIST are published
this way. There is no pinned digest for them, so they are checked for
structure only (the IDX parser's checks, image and label counts agreeing,
every label a class) and read from the folder itself, never copied into the
cache; the SHA-256 of each payload is recorded with a model trained on them.
``classes.txt`` beside them names the classes, one per line, and its lines
say how many there are (EMNIST letters: 26); without it the classes are
numbered, as many as the largest label says and at least ten (0-9 for a
folder of digits).
"""

from __future__ import annotations

import hashlib
import os
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
MIN_CLASSES = 2  # a classifier chooses between two classes at least
MAX_CLASSES = 256  # labels are bytes, 0-255
_CLASSES_BYTES = MAX_CLASSES * (4 * MAX_CLASS_NAME + 2)  # the longest classes.txt: 4-byte characters, CRLF ends
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
            a label that is no class of ``classes.txt``, or a ``classes.txt`` of fewer than 2 or more
            than 256 names (one per line).
    """
    folder, where = _folder(name)
    payloads = {file.name: _payload(folder, file.name, where) for file in MNIST_FILES}
    names = _class_names(folder / "classes.txt", where)
    train = _pair(payloads, "train", where)
    test = _pair(payloads, "t10k", where)
    classes = names if names is not None else _numbered(train[1], test[1])
    for prefix, labels in (("train", train[1]), ("t10k", test[1])):
        _check_labels(labels, f"{prefix}-labels-idx1-ubyte", len(classes), where)
    digests = {file: hashlib.sha256(data).hexdigest() for file, data in payloads.items()}
    return FolderData(f"{IDX_PREFIX}{folder.resolve()}", train, test, classes, digests)


def folder_classes(name: str) -> tuple[str, ...]:
    """The class names of ``idx:DIR``, without reading its images: ``classes.txt``'s, else numbered from its labels.

    What ``read_folder`` will give as ``classes``, for checking a network's outputs before the data is
    loaded; a label that is no class is found by ``read_folder``.

    Raises:
        DataFormatError: no such folder, a malformed ``classes.txt``, or (without it) a missing or malformed
            label file.
    """
    folder, where = _folder(name)
    names = _class_names(folder / "classes.txt", where)
    if names is not None:
        return names
    files = ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")
    return _numbered(*(parse_labels(_payload(folder, f, where), f"{where}: {f}", digits=False) for f in files))


def _folder(name: str) -> tuple[Path, str]:
    """The folder of ``idx:DIR`` and how messages name it; DataFormatError when it is no folder."""
    folder = Path(name[len(IDX_PREFIX) :]).expanduser()
    where = f"{IDX_PREFIX}{one_line(str(folder))}"
    if not folder.is_dir():
        raise DataFormatError(f"{where}: no such folder (--dataset idx:DIR reads MNIST's four files from DIR)")
    return folder, where


def _payload(folder: Path, name: str, where: str) -> bytes:
    """The decompressed bytes of ``name`` or ``name.gz`` in ``folder``, at most ``MAX_FILE_BYTES``."""
    candidates = [folder / name, folder / f"{name}.gz"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DataFormatError(f"{where}: {name} (or {name}.gz) is missing")
    try:
        with path.open("rb") as f:
            # The file's size first, so that a large one is refused before anything is allocated;
            # the read stops there even if the file grows meanwhile.
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise DataFormatError(f"{where}: {path.name} is larger than {MAX_FILE_BYTES:,} bytes")
            raw = f.read(size)
    except OSError as exc:
        raise DataFormatError(f"{where}: cannot read {path.name}: {describe_os_error(exc)}") from None
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


def _class_names(path: Path, where: str) -> tuple[str, ...] | None:
    """The class names in ``classes.txt`` (one per line, 2 to 256 lines), or None without the file."""
    if not path.is_file():
        return None
    try:
        with path.open("rb") as f:
            raw = f.read(_CLASSES_BYTES + 1)  # bounded: a huge file costs no more than the longest valid one
    except OSError as exc:
        raise DataFormatError(f"{where}: cannot read classes.txt: {describe_os_error(exc)}") from None
    if len(raw) > _CLASSES_BYTES:
        raise DataFormatError(
            f"{where}: classes.txt is larger than {_CLASSES_BYTES:,} bytes "
            f"(at most {MAX_CLASSES} names of at most {MAX_CLASS_NAME} characters)"
        )
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataFormatError(f"{where}: classes.txt is not UTF-8 text") from None
    names = [line.strip() for line in lines if line.strip()]
    if not MIN_CLASSES <= len(names) <= MAX_CLASSES:
        raise DataFormatError(
            f"{where}: classes.txt: expected {MIN_CLASSES} to {MAX_CLASSES} lines, one name per class "
            f"(labels 0 to K - 1 for K lines), got {len(names)}"
        )
    long = [n for n in names if len(n) > MAX_CLASS_NAME]
    if long:
        raise DataFormatError(f"{where}: classes.txt: a name longer than {MAX_CLASS_NAME} characters")
    return tuple(one_line(n) for n in names)


def _numbered(*labels: npt.NDArray[np.uint8]) -> tuple[str, ...]:
    """The classes of a folder without ``classes.txt``: "0" to the largest label, at least "0" to "9"."""
    top = max((int(y.max()) for y in labels if y.size), default=0)
    return tuple(str(k) for k in range(max(NUM_CLASSES, top + 1)))


def _check_labels(labels: npt.NDArray[np.uint8], file: str, classes: int, where: str) -> None:
    """DataFormatError when a label of ``file`` is no class of the ``classes`` in ``classes.txt``."""
    if labels.size and int(labels.max()) >= classes:
        raise DataFormatError(
            f"{where}: {file}: label {int(labels.max())} found, but classes.txt names {classes} classes "
            f"(labels 0-{classes - 1})"
        )


def _pair(payloads: dict[str, bytes], prefix: str, where: str) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """The images and labels of ``prefix`` ("train" or "t10k"), their counts agreeing (labels any byte here)."""
    images_name, labels_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    images = parse_images(payloads[images_name], f"{where}: {images_name}")
    labels = parse_labels(payloads[labels_name], f"{where}: {labels_name}", digits=False)
    if images.shape[0] != labels.shape[0]:
        raise DataFormatError(
            f"{where}: {images_name} holds {images.shape[0]} images but {labels_name} {labels.shape[0]} labels"
        )
    if images.shape[0] < 2 or (prefix == "train" and images.shape[0] < 12):
        raise DataFormatError(f"{where}: {images_name} holds {images.shape[0]} images, too few to split")
    return images, labels
