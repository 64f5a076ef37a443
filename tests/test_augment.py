"""Augmentation: shapes and dtypes, in-place writes, determinism, geometry of each distortion, labels kept, specs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mnist_nn.data import MnistData
from mnist_nn.nn.transforms import deskew_images
from mnist_nn.train.augment import AugmentConfig, augment_images, elastic_rms, parse_augment

NONE = AugmentConfig(shift=0, rotate=0, scale=0, shear=0, elastic_alpha=0)
STEPS = np.arange(28)


def _random_images(m: int, dtype: type = np.float32, seed: int = 0) -> np.ndarray:
    """m images of sparse random strokes in [0, 1] (mostly background, like digits)."""
    rng = np.random.default_rng(seed)
    images = rng.random((m, 784))
    images[images < 0.7] = 0.0
    return images.astype(dtype)


def _blob(cx: float, cy: float, sigma: float = 1.5) -> np.ndarray:
    """A (784,) Gaussian spot centred at column cx, row cy."""
    return np.exp(-((STEPS[None, :] - cx) ** 2 + (STEPS[:, None] - cy) ** 2) / (2 * sigma**2)).reshape(784)


def _mirrored(images: np.ndarray) -> np.ndarray:
    """Each (784,) row mirrored left-right as a 28x28 image: column x -> 27 - x."""
    return images.reshape(-1, 28, 28)[:, :, ::-1].reshape(-1, 784)


def _center_of_mass(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column and row of each image's center of mass, and its mass, all (m,)."""
    grids = images.reshape(-1, 28, 28).astype(np.float64)
    mass = grids.sum(axis=(1, 2))
    return grids.sum(axis=1) @ STEPS / mass, grids.sum(axis=2) @ STEPS / mass, mass


# --- arrays in and out ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", [AugmentConfig(), AugmentConfig(shear=15, elastic_alpha=34)], ids=["affine", "all"])
def test_shape_dtype_range_and_the_input_is_only_read(dtype: type, config: AugmentConfig) -> None:
    images = _random_images(300, dtype)
    before = images.copy()
    images.flags.writeable = False  # any write to the input would raise
    result = augment_images(images, np.random.default_rng(0), config, chunk=128)
    assert result.shape == (300, 784) and result.dtype == dtype
    assert result.min() >= 0.0 and result.max() <= 1.0
    np.testing.assert_array_equal(images, before)
    assert not np.array_equal(result, images)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_identity_config_is_an_exact_copy_and_draws_nothing(dtype: type) -> None:
    images = _random_images(50, dtype)
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    result = augment_images(images, rng, NONE)
    assert result is not images and NONE.is_identity
    np.testing.assert_array_equal(result, images)
    assert rng.bit_generator.state == state
    same = augment_images(images, rng, NONE, out=images)
    assert same is images


def test_a_tiny_shift_leaves_images_unchanged_so_the_sampling_grid_is_aligned() -> None:
    images = _random_images(40, np.float64)
    result = augment_images(images, np.random.default_rng(2), AugmentConfig(shift=1e-9, rotate=0, scale=0))
    np.testing.assert_allclose(result, images, atol=1e-8)


def test_writes_into_a_strided_view_and_leaves_the_extra_column_alone() -> None:
    images = _random_images(100)
    expected = augment_images(images, np.random.default_rng(3), AugmentConfig(), chunk=32)
    buffer = np.full((100, 785), 7.0, dtype=np.float32)
    buffer[:, :784] = images
    view = buffer[:, :784]
    result = augment_images(view, np.random.default_rng(3), AugmentConfig(), out=view, chunk=32)
    assert result is view
    np.testing.assert_array_equal(buffer[:, :784], expected)
    np.testing.assert_array_equal(buffer[:, 784], 7.0)


def test_in_place_and_overlapping_out_give_the_same_result() -> None:
    images = _random_images(64)
    expected = augment_images(images, np.random.default_rng(4), AugmentConfig(elastic_alpha=20), chunk=16)
    in_place = images.copy()
    augment_images(in_place, np.random.default_rng(4), AugmentConfig(elastic_alpha=20), out=in_place, chunk=16)
    np.testing.assert_array_equal(in_place, expected)
    # out shifted one column against the input within the same buffer: the input is copied first
    buffer = np.zeros((64, 785), dtype=np.float32)
    buffer[:, :784] = images
    augment_images(buffer[:, :784], np.random.default_rng(4), AugmentConfig(elastic_alpha=20), buffer[:, 1:], 16)
    np.testing.assert_array_equal(buffer[:, 1:], expected)


def test_chunks_of_any_size_and_no_images_work() -> None:
    images = _random_images(7)
    whole = augment_images(images, np.random.default_rng(5), AugmentConfig())
    pieces = augment_images(images, np.random.default_rng(5), AugmentConfig(), chunk=3)
    np.testing.assert_allclose(pieces, whole, atol=1e-6)  # without elastic the draws do not depend on chunk
    empty = augment_images(np.zeros((0, 784), np.float32), np.random.default_rng(5), AugmentConfig())
    assert empty.shape == (0, 784)


def test_same_seed_same_output_different_seed_different_output() -> None:
    images = _random_images(20)
    config = AugmentConfig(elastic_alpha=34)
    a = augment_images(images, np.random.default_rng(6), config)
    b = augment_images(images, np.random.default_rng(6), config)
    c = augment_images(images, np.random.default_rng(7), config)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": np.zeros((5, 28, 28), np.float32)}, r"expected images of shape \(m, 784\), got \(5, 28, 28\)"),
        ({"images": np.zeros((5, 784), np.uint8)}, "expected float32 or float64 images, got uint8"),
        ({"out": np.zeros((5, 784), np.float64)}, "expected out of dtype float32 like images, got float64"),
        ({"out": np.zeros((4, 784), np.float32)}, r"expected out of shape \(5, 784\) like images, got \(4, 784\)"),
        ({"chunk": 0}, "expected chunk to be an integer >= 1, got 0"),
        ({"config": {"shift": 2}}, "expected an AugmentConfig, got dict"),
    ],
)
def test_bad_arguments_raise_naming_expected_and_actual(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "images": np.zeros((5, 784), np.float32),
        "rng": np.random.default_rng(0),
        "config": AugmentConfig(),
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        augment_images(**arguments)  # type: ignore[arg-type]


# --- geometry -------------------------------------------------------------------------------


def test_a_pure_shift_moves_a_single_pixel_by_the_drawn_amount() -> None:
    images = np.zeros((200, 784), dtype=np.float64)
    images[:, 12 * 28 + 15] = 1.0  # row 12, column 15
    result = augment_images(images, np.random.default_rng(8), AugmentConfig(shift=2, rotate=0, scale=0))
    cx, cy, mass = _center_of_mass(result)
    # the documented draws: per image U(-1, 1) x 6, shifts in the last two columns
    drawn = 2 * np.random.default_rng(8).uniform(-1, 1, size=(200, 6))[:, 4:6]
    np.testing.assert_allclose(cx - 15, drawn[:, 0], atol=1e-9)
    np.testing.assert_allclose(cy - 12, drawn[:, 1], atol=1e-9)
    assert np.abs(cx - 15).max() <= 2 and np.abs(cy - 12).max() <= 2
    assert np.abs(cx - 15).max() > 1.5  # the shifts do use the range
    np.testing.assert_allclose(mass, 1.0, atol=1e-9)  # bilinear weights sum to 1


def test_rotation_keeps_a_centered_blob_centered_and_turns_an_offset_one_about_the_center() -> None:
    config = AugmentConfig(shift=0, rotate=30, scale=0)
    centered = np.tile(_blob(13.5, 13.5), (100, 1))
    cx, cy, mass = _center_of_mass(augment_images(centered, np.random.default_rng(9), config))
    assert np.abs(cx - 13.5).max() < 0.02 and np.abs(cy - 13.5).max() < 0.02
    np.testing.assert_allclose(mass, _blob(13.5, 13.5).sum(), rtol=0.01)

    offset = np.tile(_blob(19.5, 13.5), (300, 1))  # 6 pixels right of the center
    cx, cy, mass = _center_of_mass(augment_images(offset, np.random.default_rng(9), config))
    np.testing.assert_allclose(np.hypot(cx - 13.5, cy - 13.5), 6.0, atol=0.02)
    angles = np.degrees(np.arctan2(cy - 13.5, cx - 13.5))
    assert np.abs(angles).max() <= 30.1 and angles.min() < -25 and angles.max() > 25
    np.testing.assert_allclose(mass, _blob(19.5, 13.5).sum(), rtol=0.01)


def test_scaling_changes_the_spread_of_a_blob_within_the_drawn_range() -> None:
    blob = _blob(13.5, 13.5, sigma=3.0)
    result = augment_images(np.tile(blob, (200, 1)), np.random.default_rng(10), AugmentConfig(shift=0, rotate=0))
    grids = result.reshape(-1, 28, 28)
    spread_x = np.sqrt(grids.sum(axis=1) @ (STEPS - 13.5) ** 2 / grids.sum(axis=(1, 2)))
    reference = np.sqrt(blob.reshape(28, 28).sum(axis=0) @ (STEPS - 13.5) ** 2 / blob.sum())
    ratio = spread_x / reference
    assert ratio.min() >= 0.89 and ratio.max() <= 1.11
    assert ratio.min() < 0.93 and ratio.max() > 1.07


def test_elastic_displacements_average_zero_with_the_predicted_size() -> None:
    config = AugmentConfig(shift=0, rotate=0, scale=0, elastic_alpha=34, elastic_sigma=4)
    images = np.tile(_blob(13.5, 13.5), (2000, 1)).astype(np.float32)
    cx, cy, _ = _center_of_mass(augment_images(images, np.random.default_rng(11), config))
    assert abs(float(np.mean(cx - 13.5))) < 0.15 and abs(float(np.mean(cy - 13.5))) < 0.15
    rms = float(np.sqrt(np.mean(np.concatenate([cx - 13.5, cy - 13.5]) ** 2)))
    expected = elastic_rms(config)  # about 1.38 pixels, Simard et al.'s setting
    assert 0.7 * expected < rms < 1.1 * expected, (rms, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flip_one_mirrors_every_image_exactly(dtype: type) -> None:
    images = _random_images(300, dtype)
    config = dataclasses.replace(NONE, flip=1)
    assert not config.is_identity
    result = augment_images(images, np.random.default_rng(13), config, chunk=128)
    assert result.dtype == dtype
    np.testing.assert_array_equal(result, _mirrored(images))  # integer source points: no interpolation error


def test_flip_of_a_half_mirrors_about_half_the_images_as_the_documented_draws_say() -> None:
    images = _random_images(2000, np.float64)
    config = dataclasses.replace(NONE, flip=0.5)
    rng = np.random.default_rng(14)
    result = augment_images(images, rng, config, chunk=700)
    same = np.all(result == images, axis=1)
    mirrored = np.all(result == _mirrored(images), axis=1)
    assert np.all(same ^ mirrored)  # each output is its input or its mirror image, never both (no symmetric images)
    assert 0.45 < mirrored.mean() < 0.55, mirrored.mean()
    # per chunk: the (c, 6) affine draws, then one U(0, 1) per image, mirrored when below flip
    replay = np.random.default_rng(14)
    expected = []
    for c in (700, 700, 600):
        replay.uniform(-1, 1, size=(c, 6))
        expected.append(replay.random(c) < 0.5)
    np.testing.assert_array_equal(mirrored, np.concatenate(expected))
    assert rng.bit_generator.state == replay.bit_generator.state


def test_flip_composes_with_the_affine_map_mirroring_first_about_the_center() -> None:
    images = _random_images(100, np.float64)
    shift = AugmentConfig(shift=2, rotate=0, scale=0)
    # in one chunk the affine draws come first, so both calls shift each image by the same amount
    flipped = augment_images(images, np.random.default_rng(15), dataclasses.replace(shift, flip=1), chunk=100)
    expected = augment_images(_mirrored(images), np.random.default_rng(15), shift, chunk=100)
    np.testing.assert_allclose(flipped, expected, atol=1e-12)
    assert not np.allclose(flipped, _mirrored(images))  # the shift did move them


@pytest.mark.parametrize(
    "config",
    [AugmentConfig(shift=2, rotate=0, scale=0), AugmentConfig(shear=10, elastic_alpha=8)],
    ids=["shift", "affine+elastic"],
)
def test_flip_zero_draws_nothing_more_so_existing_configs_give_the_same_images(config: AugmentConfig) -> None:
    images = _random_images(300)
    explicit = AugmentConfig.from_dict({**config.to_dict(), "flip": 0})
    assert config.flip == 0.0 and explicit == config
    rng_default, rng_explicit = np.random.default_rng(16), np.random.default_rng(16)
    a = augment_images(images, rng_default, config, chunk=128)
    b = augment_images(images, rng_explicit, explicit, chunk=128)
    np.testing.assert_array_equal(a, b)
    # the generator stream is the one without mirroring: per chunk the (c, 6) affine draws, then the
    # elastic noise fields, and no flip decisions (test_a_pure_shift_moves_... pins the pixels to the draws)
    replay = np.random.default_rng(16)
    for c in (128, 128, 44):
        replay.uniform(-1, 1, size=(c, 6))
        if config.elastic_alpha:
            replay.random((2 * c, 28, 28), dtype=np.float32)
    assert rng_default.bit_generator.state == rng_explicit.bit_generator.state == replay.bit_generator.state


# --- labels are kept -----------------------------------------------------------------------


def _centered(images: np.ndarray) -> np.ndarray:
    """Each image rolled by whole pixels so that its center of mass is nearest (13.5, 13.5)."""
    cx, cy, _ = _center_of_mass(images)
    rows = (STEPS - np.rint(13.5 - cy).astype(int)[:, None]) % 28
    cols = (STEPS - np.rint(13.5 - cx).astype(int)[:, None]) % 28
    grids = images.reshape(-1, 28, 28)
    aligned: np.ndarray = grids[np.arange(len(grids))[:, None, None], rows[:, :, None], cols[:, None, :]]
    return aligned.reshape(-1, 784)


@pytest.mark.real_data
def test_augmented_digits_are_still_recognized_by_nearest_class_means(mnist: MnistData) -> None:
    """Nearest class mean on center-of-mass aligned images: clean ~77%; a 2-pixel shift alone
    drops the unaligned classifier below 60%, so alignment is what makes it a fair judge of labels."""
    train = _centered(mnist.train.images)
    means = np.stack([train[mnist.train.labels == k].mean(axis=0) for k in range(10)])
    images, labels = mnist.test.images[:2000], mnist.test.labels[:2000]

    def accuracy(x: np.ndarray) -> float:
        x = _centered(x)
        distances = (means**2).sum(axis=1) - 2 * x @ means.T
        return float(np.mean(distances.argmin(axis=1) == labels))

    clean = accuracy(images)
    assert clean > 0.7
    augmented = accuracy(augment_images(images, np.random.default_rng(12), AugmentConfig()))
    assert augmented > clean - 0.05, (clean, augmented)
    # the check can fail: turning digits upside down destroys much of their labels
    flipped = accuracy(augment_images(images, np.random.default_rng(12), parse_augment("none,rotate=180")))
    assert flipped < clean - 0.3, (clean, flipped)


# --- configuration and specs --------------------------------------------------------------


def test_config_round_trips_through_a_dict_and_defaults_fill_missing_keys() -> None:
    config = AugmentConfig(shift=1, rotate=5, scale=0.2, shear=3, elastic_alpha=34, elastic_sigma=4, flip=0.5)
    d = config.to_dict()
    expected = {"shift": 1.0, "rotate": 5.0, "scale": 0.2, "shear": 3.0, "elastic_alpha": 34.0, "elastic_sigma": 4.0}
    assert d == {**expected, "flip": 0.5, "erase": 0.0}
    assert all(type(v) is float for v in d.values())
    assert AugmentConfig.from_dict(d) == config
    assert AugmentConfig.from_dict({"shift": 3}) == AugmentConfig(shift=3.0)
    assert AugmentConfig.from_dict(expected).flip == 0.0  # a dict written without flip: no mirroring


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shift": -1}, "expected a finite shift >= 0, got -1.0"),
        ({"rotate": float("nan")}, "expected a finite rotate >= 0, got nan"),
        ({"elastic_alpha": float("inf")}, "expected a finite elastic_alpha >= 0, got inf"),
        ({"shift": 15}, "expected shift <= 14 pixels, got 15.0"),
        ({"rotate": 181}, "expected rotate <= 180 degrees, got 181.0"),
        ({"scale": 1}, r"expected scale < 1 \(scale factors must stay positive\), got 1.0"),
        ({"shear": 85}, "expected shear <= 80 degrees, got 85.0"),
        ({"elastic_sigma": 0}, r"expected elastic_sigma in \(0, 28\] pixels, got 0.0"),
        ({"elastic_sigma": 30}, r"expected elastic_sigma in \(0, 28\] pixels, got 30.0"),
        ({"shift": "2"}, "expected a number for shift, got '2' \\(str\\)"),
        ({"scale": True}, r"expected a number for scale, got True \(bool\)"),
        ({"flip": -0.1}, r"expected a finite flip in \[0, 1\] \(a probability\), got -0.1"),
        ({"flip": 1.5}, r"expected flip in \[0, 1\] \(a probability\), got 1.5"),
        ({"flip": float("nan")}, r"expected a finite flip in \[0, 1\] \(a probability\), got nan"),
        ({"flip": True}, r"expected a number for flip, got True \(bool\)"),
    ],
)
def test_config_validation_names_the_field_expected_and_actual(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**kwargs)  # type: ignore[arg-type]


def test_from_dict_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown augmentation keys: rotation, zoom; expected some of shift"):
        AugmentConfig.from_dict({"zoom": 1, "rotation": 2, "shift": 1})
    with pytest.raises(ValueError, match=r"expected rotate <= 180 degrees, got 200\.0"):
        AugmentConfig.from_dict({"rotate": 200})
    with pytest.raises(ValueError, match="expected an augmentation mapping, got list"):
        AugmentConfig.from_dict([("shift", 1)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("default", AugmentConfig()),
        ("on", AugmentConfig()),
        (" none ", NONE),
        ("off", NONE),
        ("shift=3", AugmentConfig(shift=3)),
        ("none,shift=2", AugmentConfig(shift=2, rotate=0, scale=0)),
        ("shift=2,rotate=10,scale=0.1,elastic=34:4", AugmentConfig(elastic_alpha=34, elastic_sigma=4)),
        ("elastic=8", AugmentConfig(elastic_alpha=8)),
        ("Rotate = 5 , shear=10, elastic_sigma=6", AugmentConfig(rotate=5, shear=10, elastic_sigma=6)),
        ("elastic=34:4,none,shift=1", AugmentConfig(shift=1, rotate=0, scale=0)),
        ("none,flip=0.5", dataclasses.replace(NONE, flip=0.5)),
        ("flip=1", AugmentConfig(flip=1)),
        ("flip=0.5,none", NONE),
        ("none,erase=0.5", dataclasses.replace(NONE, erase=0.5)),
    ],
)
def test_parse_augment_accepts_specs(spec: str, expected: AugmentConfig) -> None:
    assert parse_augment(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "it is empty"),
        ("shift", "unknown item 'shift'; expected KEY=VALUE, 'default', 'on', 'none' or 'off'"),
        ("shift=abc", "shift expects a number, got 'abc'"),
        (
            "zoom=2",
            "unknown key 'zoom'; expected one of shift, rotate, scale, shear, elastic_alpha, elastic_sigma, flip, "
            "erase",
        ),
        ("shift=1,shift=2", "shift is set twice"),
        ("elastic=34:4,elastic_sigma=3", "elastic_sigma is set twice"),
        ("shift=1,,rotate=2", "empty item between commas"),
        ("elastic=1:2:3", "elastic expects a number, got '2:3'"),
        ("shift=20", "expected shift <= 14 pixels, got 20.0"),
        ("rotate=nan", "expected a finite rotate >= 0, got nan"),
        ("none,flip=2", "expected flip in [0, 1] (a probability), got 2.0"),
        ("flip=1,flip=0", "flip is set twice"),
        ("erase=1.5", "expected erase in [0, 1] (a probability), got 1.5"),
        ("erase=-1", "expected a finite erase in [0, 1] (a probability), got -1.0"),
    ],
)
def test_parse_augment_rejects_bad_specs_with_one_line(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_augment(spec)
    text = str(error.value)
    assert text.startswith(f"bad augmentation spec {spec!r}: ") and message in text and "\n" not in text


@pytest.mark.parametrize(
    ("spec", "normalized"),
    [
        ("none,flip=0.5", "none,flip=0.5"),
        ("default,flip=0.25", "none,shift=2,rotate=10,scale=0.1,flip=0.25"),
        ("none,shift=2", "none,shift=2"),  # flip = 0 is left out, so specs without it read as before
        ("elastic=34:4,flip=1", "none,shift=2,rotate=10,scale=0.1,elastic_alpha=34,elastic_sigma=4,flip=1"),
        ("none,flip=0.5,erase=0.25", "none,flip=0.5,erase=0.25"),
    ],
)
def test_flip_spec_round_trips(spec: str, normalized: str) -> None:
    config = parse_augment(spec)
    assert config.to_spec() == normalized
    assert parse_augment(config.to_spec()) == config
    assert AugmentConfig.from_dict(config.to_dict()) == config
    assert not config.is_identity


def _line_image(slope: float) -> np.ndarray:
    """A thin slanted stroke: column = 13.5 + slope * (row - 13.5), rows 4-23, two pixels wide."""
    img = np.zeros((28, 28))
    for row in range(4, 24):
        col = 13.5 + slope * (row - 13.5)
        lo = int(np.floor(col))
        img[row, lo] = 1 - (col - lo)
        img[row, lo + 1] = col - lo
    return img


def _moments(img: np.ndarray) -> tuple[float, float, float]:
    """Center of mass (row, column) and slant cov(x, y) / var(y)."""
    r = np.arange(28.0)
    total = img.sum()
    my = float(img.sum(axis=1) @ r / total)
    mx = float(img.sum(axis=0) @ r / total)
    var_y = float(img.sum(axis=1) @ (r - my) ** 2 / total)
    cov = float(((r[:, None] - my) * (r[None, :] - mx) * img).sum() / total)
    return my, mx, cov / var_y


@pytest.mark.parametrize("slope", [-0.4, 0.0, 0.3])
def test_deskew_straightens_a_slanted_stroke_and_centers_it(slope: float) -> None:
    img = np.roll(_line_image(slope), (2, -3), axis=(0, 1))  # off center too
    out = deskew_images(img.reshape(1, 784).astype(np.float32))
    assert out.dtype == np.float32 and out.shape == (1, 784)
    my, mx, slant = _moments(out.reshape(28, 28).astype(np.float64))
    assert abs(slant) < 0.03
    assert abs(my - 13.5) < 0.1 and abs(mx - 13.5) < 0.1
    assert abs(out.sum() - img.sum()) / img.sum() < 0.05  # mass is kept


def test_deskew_keeps_blank_images_blank_and_range_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((7, 784)).astype(np.float32)
    images[3] = 0.0
    out = deskew_images(images)
    assert np.array_equal(out[3], np.zeros(784, np.float32))
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.array_equal(out, deskew_images(images.copy()))
    buffer = np.ones((7, 785), np.float32)
    deskew_images(images, out=buffer[:, :784])
    assert np.array_equal(buffer[:, :784], out) and np.all(buffer[:, 784] == 1.0)
