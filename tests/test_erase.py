"""Random erasing: each erased image differs from its input in one rectangle of noise, drawn as documented."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mnist_nn.train.augment import AugmentConfig, augment_images
from mnist_nn.train.erase import AREA, ASPECT, erase_rectangles

NONE = AugmentConfig(shift=0, rotate=0, scale=0)


def _rectangle(changed: np.ndarray) -> tuple[int, int, int, int]:
    """Top, left, height and width of the bounding box of a (28, 28) mask."""
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_erase_one_puts_one_rectangle_of_noise_of_the_documented_size_in_every_image(dtype: type) -> None:
    images: np.ndarray = np.full((3000, 784), -1.0, dtype=dtype)  # outside [0, 1], so every erased pixel shows
    erase_rectangles(images, np.random.default_rng(0), 1.0)
    assert images.dtype == dtype
    areas, aspects = [], []
    for image in images.reshape(-1, 28, 28):
        changed = image >= 0
        top, left, height, width = _rectangle(changed)
        assert changed.sum() == height * width  # a full rectangle, nothing outside it
        assert top + height <= 28 and left + width <= 28
        assert np.all((image[changed] >= 0) & (image[changed] < 1))
        areas.append(height * width / 784)
        aspects.append(height / width)
    area, aspect = np.array(areas), np.array(aspects)
    assert area.min() >= 0.01 and area.max() <= 0.45  # U(0.02, 0.4) up to rounding and clipping
    assert abs(np.median(area) - np.mean(AREA)) < 0.02
    assert np.mean(aspect > 1) == pytest.approx(0.5, abs=0.05)  # log-uniform about 1
    assert aspect.min() >= ASPECT[0] / 2 and aspect.max() <= ASPECT[1] * 2
    noise = images[images >= 0]
    assert abs(noise.mean() - 0.5) < 0.01 and abs(noise.std() - np.sqrt(1 / 12)) < 0.01


def test_erase_follows_its_documented_draws_and_probability() -> None:
    images = np.zeros((4000, 784))
    rng = np.random.default_rng(1)
    erase_rectangles(images, rng, 0.25)
    erased = images.any(axis=1)
    replay = np.random.default_rng(1)
    draws = replay.random((4000, 5))
    np.testing.assert_array_equal(erased, draws[:, 0] < 0.25)
    assert 0.23 < erased.mean() < 0.27
    noise = replay.random((int(erased.sum()), 784))
    np.testing.assert_array_equal(images[erased][images[erased] != 0], noise[images[erased] != 0])
    assert rng.bit_generator.state == replay.bit_generator.state


def test_erase_writes_into_a_strided_view_and_leaves_the_rest() -> None:
    buffer = np.full((50, 785), 2.0, dtype=np.float32)
    erase_rectangles(buffer[:, :784], np.random.default_rng(2), 1.0)
    assert np.all(buffer[:, 784] == 2.0)
    assert np.all((buffer[:, :784] < 1).any(axis=1))


def test_augment_images_erases_after_the_distortions_and_zero_draws_nothing() -> None:
    rng_images = np.random.default_rng(3)
    images = rng_images.random((600, 784)).astype(np.float32)
    shift = AugmentConfig(shift=2, rotate=0, scale=0)
    both = augment_images(images, np.random.default_rng(4), dataclasses.replace(shift, erase=1), chunk=600)
    alone = augment_images(images, np.random.default_rng(4), shift, chunk=600)
    differs = both != alone
    assert np.all(differs.any(axis=1))
    for changed in differs.reshape(-1, 28, 28):
        _, _, height, width = _rectangle(changed)
        assert changed.sum() <= height * width  # only inside one rectangle
    off = augment_images(images, np.random.default_rng(4), dataclasses.replace(shift, erase=0), chunk=600)
    np.testing.assert_array_equal(off, alone)
    assert not dataclasses.replace(NONE, erase=0.5).is_identity
    assert AugmentConfig.from_dict({"shift": 1}).erase == 0.0  # files written before erasing: none
