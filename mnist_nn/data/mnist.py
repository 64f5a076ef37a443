"""MNIST as arrays: Nielsen's 50,000 / 10,000 / 10,000 split and his loaders.

``load_mnist`` is the array API the package uses: it makes sure the four files
are in the cache (downloading and verifying them if needed, see
``mnist_nn.data.download``), parses them and returns a ``MnistData`` with three
``Split``\\ s. ``load_data``, ``load_data_wrapper`` and ``vectorized_result``
give the same data in the shapes of Michael Nielsen's ``mnist_loader``.

The split is Nielsen's, with no shuffling: ``train`` is the first 50,000
images of the 60,000-image training file, ``validation`` its last 10,000, and
``test`` the 10,000-image t10k file. Images are rows of 784 pixels scaled to
[0, 1]; labels are integers 0-9 in every split. ``load_mnist(dtype="uint8")``
keeps the files' pixels 0-255 instead (views of the file data, no copy), for
callers that scale them where they are used, with ``scale_pixels`` (the one
place pixels are divided by 255): the training loop scales its shuffled
rows a chunk at a time as it gathers them, so no full-size float copy is
made.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from mnist_nn.config import (
    IMAGE_PIXELS,
    NUM_CLASSES,
    TEST_SIZE,
    TRAIN_SIZE,
    VALIDATION_SIZE,
)
from mnist_nn.data.datasets import MNIST, Dataset, ensure_dataset
from mnist_nn.data.datasets import dataset as get_dataset
from mnist_nn.data.download import FetchResult
from mnist_nn.data.folder import FolderData, is_folder, read_folder
from mnist_nn.data.idx import parse_images, parse_labels
from mnist_nn.errors import DataFormatError
from mnist_nn.files import PathLike
from mnist_nn.text import one_line


class Split(NamedTuple):
    """One split: ``images`` (n, 784) float in [0, 1] (or uint8 pixels 0-255) and ``labels`` (n,) int64 classes
    (0-9 for MNIST, 0 to K - 1 for a folder of K classes)."""

    images: npt.NDArray[Any]
    labels: npt.NDArray[np.int64]

    def __len__(self) -> int:  # the number of examples, not the tuple's length
        return int(self.labels.shape[0])


class MnistData(NamedTuple):
    """The three splits of a data set, the SHA-256 digests of its files, its name and its class names."""

    train: Split
    validation: Split
    test: Split
    digests: dict[str, str]
    dataset: str = MNIST.name
    classes: tuple[str, ...] = MNIST.classes


def scale_pixels(pixels: npt.NDArray[np.uint8], out: npt.NDArray[np.floating[Any]]) -> None:
    """Pixels 0-255 to [0, 1], written into ``out`` (a float array of pixels' shape, or a view of one) in one pass.

    p / 255 correctly rounded to ``out``'s dtype, divided in that dtype
    (the pixels are cast in chunks that stay in cache: no full-size
    temporary). For float32 this equals dividing in float64 and rounding
    to float32 for each of the 256 values (the tests check all of them), at
    2.5 times the speed.
    """
    np.divide(pixels, out.dtype.type(255.0), out=out, dtype=out.dtype, casting="unsafe")


def as_floats(images: npt.NDArray[Any], dtype: npt.DTypeLike = np.float32) -> npt.NDArray[np.floating[Any]]:
    """``images`` as floats in [0, 1]: uint8 pixels scaled into a new ``dtype`` array, floats as they are."""
    if images.dtype != np.uint8:
        return images
    out = np.empty(images.shape, dtype=dtype)
    scale_pixels(images, out)
    return out


def _pair(
    images_file: FetchResult, labels_file: FetchResult, expected: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    images = parse_images(images_file.data, images_file.name)
    labels = parse_labels(labels_file.data, labels_file.name)
    if images.shape[0] != labels.shape[0]:
        raise DataFormatError(
            f"{images_file.name} holds {images.shape[0]} images but {labels_file.name} holds {labels.shape[0]} labels"
        )
    if images.shape[0] != expected:
        raise DataFormatError(f"{images_file.name}: expected {expected} images, got {images.shape[0]}")
    return images, labels


def load_mnist(
    data_dir: PathLike | None = None,
    *,
    mirror: str | None = None,
    dtype: npt.DTypeLike = np.float32,
    quiet: bool = True,
    deadline: float | None = None,
    dataset: str | Dataset = MNIST.name,
) -> MnistData:
    """Load MNIST (or another data set in its format) in Nielsen's split, downloading and verifying it first.

    Args:
        data_dir: the cache folder (default ``config.default_data_dir()``: ``$MNIST_NN_DATA``, a checkout's
            ``data/`` or the per-user cache); a data set other than MNIST is cached in its own subfolder.
        mirror: a mirror to try first (URL or local folder); the data set's variable otherwise
            (``$MNIST_NN_MIRROR`` for MNIST, ``$MNIST_NN_FASHION_MNIST_MIRROR`` for Fashion-MNIST).
        dtype: float32 (default) or float64 for the images; uint8 keeps the files' pixels 0-255
            (views of the file data, no copy: see ``scale_pixels``).
        quiet: hide download progress bars.
        deadline: seconds each mirror gets for each file (else ``$MNIST_NN_DOWNLOAD_DEADLINE``
            or ``download.DEFAULT_DEADLINE``).
        dataset: ``"mnist"``, ``"fashion-mnist"`` (see ``mnist_nn.data.datasets``), a ``Dataset``, or
            ``"idx:DIR"``: MNIST's four files in the folder DIR (``mnist_nn.data.folder``), checked for
            structure only and split as MNIST (the training file's last sixth validates).

    Returns:
        ``MnistData`` with ``train`` (50,000), ``validation`` (10,000) and ``test``
        (10,000) splits: images (n, 784) of ``dtype`` in [0, 1] (0-255 for uint8), labels (n,) int64.

    Raises:
        DownloadError: a file could not be fetched and verified.
        DataDirError: the cache folder cannot be created or written.
        DataFormatError: a verified file does not parse as MNIST (a wrong pinned file).
        ValueError: an unknown data set or dtype.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.uint8)):
        raise ValueError(f"expected dtype float32, float64 or uint8, got {dtype}")
    if isinstance(dataset, str) and is_folder(dataset):
        return _from_folder(dataset, dtype)
    data = dataset if isinstance(dataset, Dataset) else get_dataset(dataset)
    fetched = {f.name: f for f in ensure_dataset(data, data_dir, mirror=mirror, quiet=quiet, deadline=deadline)}
    train_images, train_labels = _pair(
        fetched["train-images-idx3-ubyte"],
        fetched["train-labels-idx1-ubyte"],
        TRAIN_SIZE + VALIDATION_SIZE,
    )
    test_images, test_labels = _pair(fetched["t10k-images-idx3-ubyte"], fetched["t10k-labels-idx1-ubyte"], TEST_SIZE)
    digests = {f.name: f.sha256 for f in data.files}
    return _split((train_images, train_labels), (test_images, test_labels), VALIDATION_SIZE, dtype, digests, data)


def _split(
    train: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]],
    test: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]],
    validation_size: int,
    dtype: np.dtype[Any],
    digests: dict[str, str],
    data: Dataset | FolderData,
) -> MnistData:
    """Nielsen's split: the training file's last ``validation_size`` images validate, the rest train."""
    (train_images, train_labels), (test_images, test_labels) = train, test
    cut = train_images.shape[0] - validation_size
    pixels = dtype == np.dtype(np.uint8)
    full = train_images if pixels else as_floats(train_images, dtype)  # both training splits are views of one array
    full_labels = train_labels.astype(np.int64)
    return MnistData(
        train=Split(full[:cut], full_labels[:cut]),
        validation=Split(full[cut:], full_labels[cut:]),
        test=Split(test_images if pixels else as_floats(test_images, dtype), test_labels.astype(np.int64)),
        digests=digests,
        dataset=data.name,
        classes=data.classes,
    )


_TOLD_UNVERIFIED: set[str] = set()  # the folders this process has said it checks for structure only


def _from_folder(name: str, dtype: np.dtype[Any]) -> MnistData:
    """The data set ``idx:DIR``, split as MNIST: the training file's last sixth validates (10,000 of 60,000)."""
    folder = read_folder(name)
    if folder.name not in _TOLD_UNVERIFIED:
        _TOLD_UNVERIFIED.add(folder.name)
        print(f"{one_line(folder.name)}: no pinned digests; the files are checked for structure only", file=sys.stderr)
    validation = folder.train[0].shape[0] // 6
    return _split(folder.train, folder.test, validation, dtype, folder.digests, folder)


ArrayPair = tuple[npt.NDArray[np.floating[Any]], npt.NDArray[np.int64]]


def load_data(
    data_dir: PathLike | None = None, *, mirror: str | None = None, quiet: bool = True, dataset: str = MNIST.name
) -> tuple[ArrayPair, ArrayPair, ArrayPair]:
    """Nielsen's ``load_data``: ``(training_data, validation_data, test_data)``.

    Each is a pair ``(images, labels)``: images (n, 784) float32 in [0, 1] and
    labels (n,) int64, with n = 50,000, 10,000 and 10,000; ``dataset`` as ``load_mnist``'s.
    """
    data = load_mnist(data_dir, mirror=mirror, quiet=quiet, dataset=dataset)
    return (
        (data.train.images, data.train.labels),
        (data.validation.images, data.validation.labels),
        (data.test.images, data.test.labels),
    )


def vectorized_result(j: int, classes: int = NUM_CLASSES) -> npt.NDArray[np.float64]:
    """A (classes, 1) one-hot column with 1.0 in row ``j``, as Nielsen's training targets (10 rows for MNIST)."""
    if not 0 <= j < classes:
        what = "a digit" if classes == NUM_CLASSES else "a class"
        raise ValueError(f"expected {what} 0-{classes - 1}, got {j}")
    e = np.zeros((classes, 1))
    e[j] = 1.0
    return e


WrappedTraining = list[tuple[npt.NDArray[np.floating[Any]], npt.NDArray[np.float64]]]
WrappedEval = list[tuple[npt.NDArray[np.floating[Any]], int]]


def load_data_wrapper(
    data_dir: PathLike | None = None, *, mirror: str | None = None, quiet: bool = True, dataset: str = MNIST.name
) -> tuple[WrappedTraining, WrappedEval, WrappedEval]:
    """Nielsen's ``load_data_wrapper``: lists of ``(x, y)`` tuples.

    ``x`` is a (784, 1) column (a view, no copy). For training ``y`` is the
    (10, 1) one-hot ``vectorized_result`` ((K, 1) for a folder of K classes); for validation and test it
    is the integer label. ``load_data_wrapper(dataset="fashion-mnist")`` gives Fashion-MNIST.
    """
    data = load_mnist(data_dir, mirror=mirror, quiet=quiet, dataset=dataset)
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = data.train, data.validation, data.test
    k = len(data.classes)
    training = [(x.reshape(IMAGE_PIXELS, 1), vectorized_result(int(y), k)) for x, y in zip(tr_x, tr_y, strict=True)]
    validation = [(x.reshape(IMAGE_PIXELS, 1), int(y)) for x, y in zip(va_x, va_y, strict=True)]
    test = [(x.reshape(IMAGE_PIXELS, 1), int(y)) for x, y in zip(te_x, te_y, strict=True)]
    return training, validation, test
