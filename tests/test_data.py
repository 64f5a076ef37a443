"""The IDX parser, the split and Nielsen's loaders, on synthetic files and on real MNIST."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnist_nn.data import (
    MnistData,
    as_floats,
    load_data,
    load_data_wrapper,
    load_mnist,
    parse_idx,
    parse_images,
    parse_labels,
    vectorized_result,
)
from mnist_nn.data.download import MNIST_FILES
from mnist_nn.errors import DataFormatError
from tests.conftest import idx_bytes

IMAGES = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28).astype(np.uint8)
LABELS = np.array([5, 0, 9], dtype=np.uint8)


def test_parses_valid_image_and_label_files() -> None:
    images = parse_images(idx_bytes(IMAGES))
    assert images.shape == (3, 784) and images.dtype == np.uint8
    assert np.array_equal(images, IMAGES.reshape(3, 784))
    labels = parse_labels(idx_bytes(LABELS))
    assert labels.tolist() == [5, 0, 9]
    empty = parse_labels(idx_bytes(np.zeros(0, dtype=np.uint8)))
    assert empty.shape == (0,)


def _with_byte(raw: bytes, index: int, value: int) -> bytes:
    return raw[:index] + bytes([value]) + raw[index + 1 :]


GOOD_IMAGES = idx_bytes(IMAGES)
GOOD_LABELS = idx_bytes(LABELS)


@pytest.mark.parametrize(
    ("raw", "parser", "message"),
    [
        (b"", parse_images, "shorter than the 4-byte magic"),
        (b"\x00\x00\x08", parse_images, "shorter than the 4-byte magic"),
        (_with_byte(GOOD_IMAGES, 0, 1), parse_images, "not an IDX file"),
        (GOOD_LABELS, parse_images, "magic number is 2049, expected 2051"),
        (GOOD_IMAGES, parse_labels, "magic number is 2051, expected 2049"),
        (_with_byte(GOOD_LABELS, 2, 0x0D), parse_labels, "magic number is 3329"),
        (GOOD_IMAGES[:10], parse_images, "truncated IDX header"),
        (GOOD_IMAGES[:-1], parse_images, "truncated IDX file"),
        (GOOD_IMAGES[:16], parse_images, "truncated IDX file"),
        (GOOD_IMAGES + b"\x00", parse_images, "1 trailing bytes"),
        (GOOD_LABELS + b"xyz", parse_labels, "3 trailing bytes"),
        (
            idx_bytes(np.zeros((2, 27, 28), np.uint8)),
            parse_images,
            r"shape \(n, 28, 28\), got \(2, 27, 28\)",
        ),
        (idx_bytes(np.array([1, 10], np.uint8)), parse_labels, "label 10 found"),
        # A header claiming 2^31 images is refused from the byte count, before any allocation.
        (_with_byte(GOOD_IMAGES, 4, 0x80), parse_images, "truncated IDX file"),
    ],
)
def test_malformed_files_raise_one_line_errors_naming_the_file(raw: bytes, parser, message: str) -> None:
    with pytest.raises(DataFormatError, match=message) as info:
        parser(raw, "some-file")
    assert str(info.value).startswith("some-file: ")
    assert "\n" not in str(info.value)


def test_non_ubyte_types_and_zero_dimensions_are_refused() -> None:
    with pytest.raises(DataFormatError, match="element type is float"):
        parse_idx(b"\x00\x00\x0d\x01" + (1).to_bytes(4, "big") + b"\x00" * 4, "f")
    with pytest.raises(DataFormatError, match="0 dimensions"):
        parse_idx(b"\x00\x00\x08\x00", "f")


def test_vectorized_result() -> None:
    e = vectorized_result(3)
    assert e.shape == (10, 1) and e[3, 0] == 1.0 and e.sum() == 1.0
    with pytest.raises(ValueError, match="digit 0-9"):
        vectorized_result(10)


@pytest.mark.real_data
def test_real_mnist_matches_the_published_facts(mnist: MnistData) -> None:
    for split, n in ((mnist.train, 50_000), (mnist.validation, 10_000), (mnist.test, 10_000)):
        assert split.images.shape == (n, 784)
        assert split.images.dtype == np.float32
        assert split.labels.shape == (n,) and split.labels.dtype == np.int64
        assert float(split.images.min()) == 0.0 and float(split.images.max()) == 1.0
    assert mnist.train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    counts = np.bincount(np.concatenate([mnist.train.labels, mnist.validation.labels]), minlength=10)
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert mnist.digests == {f.name: f.sha256 for f in MNIST_FILES}


@pytest.mark.real_data
def test_real_mnist_nielsen_loaders_and_float64(mnist_cache: Path) -> None:
    (tr_x, _tr_y), (va_x, _va_y), (te_x, _te_y) = load_data(mnist_cache)
    assert (tr_x.shape, va_x.shape, te_x.shape) == ((50_000, 784), (10_000, 784), (10_000, 784))
    training, validation, test = load_data_wrapper(mnist_cache)
    assert (len(training), len(validation), len(test)) == (50_000, 10_000, 10_000)
    x, y = training[0]
    assert x.shape == (784, 1) and y.shape == (10, 1) and int(np.argmax(y)) == 5
    x, label = test[0]
    assert x.shape == (784, 1) and label == 7 and isinstance(label, int)
    assert np.array_equal(validation[0][0].ravel(), va_x[0])
    wide = load_mnist(mnist_cache, dtype=np.float64)
    assert wide.train.images.dtype == np.float64
    np.testing.assert_allclose(wide.train.images[:100], tr_x[:100], atol=1e-7)
    pixels = load_mnist(mnist_cache, dtype="uint8")  # the files' own bytes, for callers that scale them in place
    assert pixels.train.images.dtype == np.uint8 and pixels.test.images.dtype == np.uint8
    assert np.array_equal(as_floats(pixels.train.images), tr_x) and np.array_equal(as_floats(pixels.test.images), te_x)


def test_bad_dtype_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="float32, float64 or uint8"):
        load_mnist(tmp_path, dtype=np.int8)
