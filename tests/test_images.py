"""Reading pictures, MNIST's preprocessing recipe and text art, on drawn digits and real MNIST.

The drawn digits are made here with Pillow's ImageDraw; tests that need
Pillow skip without it, and the .npy and array tests run either way.
Coordinates are (row, column) pixel indices, pixel i centered at i, so a
center of mass at (14, 14) is what MNIST's own files have (see images.py).
"""

from __future__ import annotations

import pickle
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from mnist_nn.data import MnistData
from mnist_nn.errors import ImageError, MnistNNError
from mnist_nn.images import (
    DIGIT_BOX,
    PILLOW_HINT,
    RAMP,
    _border,
    _footprint_weights,
    _paste_centered,
    load_digit,
    load_image,
    looks_clean,
    render_digit,
    to_mnist,
)

CANVAS = (200, 120)  # width, height of the drawn pictures
# A "7": a bar and a slanted stroke, well off center (to the upper left).
SEVEN_STROKES = [((20, 15), (90, 15)), ((90, 15), (45, 100))]
STROKE_WIDTH = 12


@pytest.fixture
def pillow() -> None:
    """Skip a test that draws pictures when Pillow (the ``images`` extra) is missing."""
    pytest.importorskip("PIL")


def _draw_seven(mode: str = "L", paper: Any = 255, ink: Any = 0) -> Any:
    """A Pillow image of a thick "7" drawn with ``ink`` on ``paper``."""
    from PIL import Image, ImageDraw

    image = Image.new(mode, CANVAS, paper)
    draw = ImageDraw.Draw(image)
    for start, end in SEVEN_STROKES:
        draw.line([start, end], fill=ink, width=STROKE_WIDTH)
    return image


def _bounding_box(digit: npt.NDArray[Any], threshold: float = 0.0) -> tuple[int, int]:
    """(height, width) of the pixels above ``threshold`` of a (784,) digit."""
    ink = digit.reshape(28, 28) > threshold
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def _center_of_mass(digit: npt.NDArray[Any]) -> tuple[float, float]:
    image = digit.reshape(28, 28).astype(np.float64)
    mass = image.sum()
    index = np.arange(28)
    return float(image.sum(axis=1) @ index / mass), float(image.sum(axis=0) @ index / mass)


def _correlation(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _assert_mnist_like(digit: npt.NDArray[Any]) -> None:
    """The output contract: (784,) float32 in [0, 1], a light digit on black, 20-pixel box, centered mass."""
    assert digit.shape == (784,) and digit.dtype == np.float32
    assert digit.min() >= 0.0 and digit.max() <= 1.0
    assert digit.max() > 0.9  # light strokes
    assert (digit == 0).mean() > 0.6  # on a black background
    height, width = _bounding_box(digit)
    assert max(height, width) == DIGIT_BOX and min(height, width) <= DIGIT_BOX
    row, col = _center_of_mass(digit)
    assert abs(row - 14) <= 0.5 and abs(col - 14) <= 0.5


def _one_line_naming(error: pytest.ExceptionInfo[ImageError], path: Path) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


# --- drawn pictures --------------------------------------------------------------------


def test_a_drawn_png_becomes_an_mnist_digit(pillow: None, tmp_path: Path) -> None:
    path = tmp_path / "seven.png"
    _draw_seven().save(path)
    digit = load_digit(path)
    _assert_mnist_like(digit)
    # The 7 is taller than wide: its height becomes 20 and the width keeps the aspect ratio.
    ink = load_image(path) < 0.5
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    aspect = (cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1)
    height, width = _bounding_box(digit)
    assert height == DIGIT_BOX
    assert abs(width - DIGIT_BOX * aspect) <= 1
    # It reads as a 7: a horizontal bar in its top rows, a single stroke in its bottom rows.
    image = digit.reshape(28, 28)
    rows = np.flatnonzero(image.max(axis=1) > 0)
    assert (image[rows[0] + 1] > 0.5).sum() >= 0.8 * width
    assert (image[rows[-1] - 2] > 0.5).sum() <= 5
    # Anti-aliased edges: gray levels between background and stroke, as in MNIST.
    assert ((digit > 0.05) & (digit < 0.95)).sum() >= 10


@pytest.mark.parametrize("variant", ["jpeg", "rgba", "palette-gif", "light-on-dark", "gray-paper", "16-bit"])
def test_other_formats_and_polarities_give_the_same_digit(pillow: None, tmp_path: Path, variant: str) -> None:
    from PIL import Image

    reference_path = tmp_path / "seven.png"
    _draw_seven().save(reference_path)
    reference = load_digit(reference_path)
    if variant == "jpeg":
        path = tmp_path / "seven.jpg"
        _draw_seven("RGB", (255, 255, 255), (0, 0, 0)).save(path, quality=85)
    elif variant == "rgba":
        # Ink on a fully transparent (black!) background: transparency must become white paper.
        path = tmp_path / "seven-rgba.png"
        _draw_seven("RGBA", (0, 0, 0, 0), (0, 0, 0, 255)).save(path)
    elif variant == "palette-gif":
        path = tmp_path / "seven.gif"
        _draw_seven("P", 0, 1).save(path, transparency=0)  # palette entry 0 (black) is transparent
    elif variant == "light-on-dark":
        path = tmp_path / "seven-negative.png"
        _draw_seven("L", 0, 255).save(path)
    elif variant == "gray-paper":
        path = tmp_path / "seven-pencil.png"
        _draw_seven("L", 200, 110).save(path)
    else:
        path = tmp_path / "seven-16.png"
        pixels = np.asarray(_draw_seven(), dtype=np.uint16) * 257  # 0-255 -> 0-65535
        Image.fromarray(pixels).save(path)
        assert load_image(path).max() == 1.0
    digit = load_digit(path)
    _assert_mnist_like(digit)
    assert _correlation(digit, reference) > 0.97
    if variant != "jpeg":
        np.testing.assert_allclose(digit, reference, atol=0.03)


def test_photos_are_turned_upright_by_their_exif_orientation(pillow: None, tmp_path: Path) -> None:
    from PIL import Image

    upright = _draw_seven()
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a sideways camera stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "photo.png"
    stored.save(path, exif=exif)
    assert np.array_equal(load_image(path), np.asarray(upright) / 255.0)


def test_a_jpeg_over_the_size_limit_is_decoded_at_a_smaller_scale(pillow: None, tmp_path: Path) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("L", (6000, 400), 255)  # wider than MAX_IMAGE_SIDE, as a wide phone photo
    ImageDraw.Draw(image).line([(3000, 50), (3000, 350)], fill=0, width=40)
    path = tmp_path / "wide.jpg"
    image.save(path, quality=90)
    assert load_image(path).shape == (200, 3000)  # decoded at 1/2 scale
    _assert_mnist_like(load_digit(path))
    png = tmp_path / "wide.png"
    image.save(png)
    with pytest.raises(ImageError, match="too large"):
        load_image(png)


def test_the_same_digit_anywhere_on_the_canvas_gives_the_same_result() -> None:
    canvas = np.ones((90, 160))
    canvas[10:50, 20:26] = 0.0  # a "1" with a foot
    canvas[44:50, 14:34] = 0.0
    moved = np.roll(canvas, (33, 97), axis=(0, 1))
    np.testing.assert_array_equal(to_mnist(canvas), to_mnist(moved))


def test_small_digits_are_enlarged_and_wide_ones_keep_their_aspect() -> None:
    small = np.zeros((28, 28))
    small[3:8, 20:23] = 1.0  # 5x3 pixels in a corner
    digit = to_mnist(small)
    _assert_mnist_like(digit)
    assert _bounding_box(digit) == (20, 12)
    dash = np.zeros((50, 90))
    dash[20:26, 10:70] = 1.0  # 6x60: a horizontal stroke
    assert _bounding_box(to_mnist(dash)) == (2, 20)


def test_shrinking_averages_areas_into_gray_levels() -> None:
    # A 60x60 checkerboard of single pixels shrinks by 3: every output pixel covers 4 or 5
    # ink pixels of 9, so area averaging gives grays of 4/9 and 5/9, where sampling would alias to 0 and 1.
    image = np.zeros((100, 100))
    image[20:80, 20:80] = np.indices((60, 60)).sum(axis=0) % 2 == 0
    digit = to_mnist(image)
    assert _bounding_box(digit) == (20, 20)
    assert (digit > 0).sum() == 400
    assert np.all((digit == 0) | ((digit > 4 / 9 - 1e-6) & (digit < 5 / 9 + 1e-6)))


def test_faint_noise_does_not_move_the_box() -> None:
    rng = np.random.default_rng(0)
    clean = np.ones((100, 100))
    clean[30:70, 45:52] = 0.0
    clean[30:36, 35:52] = 0.0
    noisy = clean - rng.uniform(0.0, 0.08, size=clean.shape) * (clean == 1.0)
    _assert_mnist_like(to_mnist(noisy))
    assert _correlation(to_mnist(noisy), to_mnist(clean)) > 0.99


def test_a_lopsided_digit_is_clipped_to_the_field() -> None:
    image = np.zeros((20, 20))
    image[:4, :4] = 1.0  # a heavy blob in one corner
    image[19, 19] = 0.5  # and a faint dot in the other: the box is 20x20, the mass near (2, 2)
    digit = to_mnist(image)
    assert digit.shape == (784,) and digit.dtype == np.float32
    assert digit.reshape(28, 28)[12:16, 12:16].min() > 0.9  # the blob sits on the center
    assert digit.sum() < image.sum()  # the dot fell outside the 28x28 field


def _whole_image_recipe(image: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """The module docstring's steps done on every pixel, as to_mnist once did: the reference for its shortcuts."""
    values = np.asarray(image, dtype=np.float64)
    border_level = float(np.median(_border(values)))
    if border_level > 0.5:
        values, border_level = 1.0 - values, 1.0 - border_level
    ink = np.clip(values - border_level, 0.0, None)
    ink /= float(ink.max())
    rows, cols = np.flatnonzero((ink > 0.1).any(axis=1)), np.flatnonzero((ink > 0.1).any(axis=0))
    top, height, left, width = int(rows[0]), int(rows[-1] - rows[0] + 1), int(cols[0]), int(cols[-1] - cols[0] + 1)
    step = max(height, width) / DIGIT_BOX
    out_height, out_width = min(DIGIT_BOX, max(1, round(height / step))), min(DIGIT_BOX, max(1, round(width / step)))
    row_weights = _footprint_weights(values.shape[0], top + (height - out_height * step) / 2, step, out_height)
    col_weights = _footprint_weights(values.shape[1], left + (width - out_width * step) / 2, step, out_width)
    digit = row_weights @ ink @ col_weights.T
    return _paste_centered(np.clip(digit, 0.0, 1.0)).reshape(784).astype(np.float32)


def _test_pictures() -> list[npt.NDArray[np.float64]]:
    """Drawings of many sizes, both polarities, gray paper, faint noise, strokes at the edges, one pixel."""
    rng = np.random.default_rng(14)
    pictures = []
    for _ in range(60):
        height, width = (int(n) for n in rng.integers(1, 300, size=2))
        paper, ink = rng.uniform(0.0, 0.3), rng.uniform(0.6, 1.0)
        picture = paper + rng.uniform(0.0, 0.08, size=(height, width))  # gray paper with faint noise
        for _ in range(int(rng.integers(1, 4))):
            top, left = int(rng.integers(0, height)), int(rng.integers(0, width))
            picture[top : top + int(rng.integers(1, 80)), left : left + int(rng.integers(1, 80))] = ink
        picture = np.clip(picture, 0.0, 1.0)
        pictures.append(1.0 - picture if rng.random() < 0.5 else picture)
    pictures.append(np.pad(np.ones((1, 1)), ((5, 9), (300, 2))))  # one pixel on a wide canvas
    return pictures


def test_to_mnist_reads_only_the_ink_yet_gives_the_whole_image_recipes_digit() -> None:
    pictures = _test_pictures()
    clean = [picture for picture in pictures if looks_clean(picture)]
    assert len(clean) >= 0.8 * len(pictures)  # the others have ink along a whole side: prepared as photos
    for picture in pictures:
        if not looks_clean(picture):
            try:
                digit = to_mnist(picture)
            except ImageError as error:  # rectangles all along the frame: no digit away from its edges
                assert "empty" in str(error)
                continue
            assert digit.shape == (784,) and digit.dtype == np.float32 and 0 <= digit.min() <= digit.max() <= 1
    for picture in clean:
        before = picture.copy()
        # BLAS may sum the resampling's products in another order once the zero weights are cut away:
        # float64 rounding at most, far below float32's (here the results are identical).
        np.testing.assert_allclose(to_mnist(picture), _whole_image_recipe(picture), rtol=0, atol=1e-6)
        assert np.array_equal(picture, before)  # the caller's array is read, never written


@pytest.mark.real_data
def test_enlarged_mnist_digits_give_the_whole_image_recipes_digit(mnist: MnistData) -> None:
    for digit in mnist.test.images[:20]:
        canvas = np.kron(np.rint(digit.reshape(28, 28) * 255), np.ones((10, 10))) / 255  # the page's 280x280
        for picture in (canvas, 1.0 - canvas):
            np.testing.assert_allclose(to_mnist(picture), _whole_image_recipe(picture), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.ones((40, 30)), "the image is empty (no digit found)"),
        (np.full((40, 30), 0.4), "the image is empty (no digit found)"),
        (np.zeros((2, 3, 4)), "expected a 2-D grayscale image"),
        (np.zeros((0, 5)), "expected a 2-D grayscale image"),
        (np.full((5, 5), np.nan), "NaN"),
        (np.full((5, 5), 1.5), "expected pixels in [0, 1]"),
        (np.full((5, 5), "a"), "expected real pixel values"),
    ],
)
def test_to_mnist_refuses_bad_images_naming_them(image: npt.NDArray[Any], message: str) -> None:
    with pytest.raises(ImageError) as error:
        to_mnist(image, name="scan.png")
    assert str(error.value).startswith("scan.png: ") and message in str(error.value)
    assert isinstance(error.value, MnistNNError) and isinstance(error.value, ValueError)


def test_an_empty_picture_is_refused(pillow: None, tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "blank.png"
    Image.new("L", CANVAS, 255).save(path)
    with pytest.raises(ImageError) as error:
        load_digit(path)
    assert _one_line_naming(error, path).endswith("the image is empty (no digit found)")


# --- unreadable and hostile files ------------------------------------------------------


def test_a_text_file_named_png_is_not_a_readable_image(pillow: None, tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_text("hello\nworld\n")
    with pytest.raises(ImageError) as error:
        load_image(path)
    assert "not a readable image" in _one_line_naming(error, path)


def test_a_truncated_png_is_not_a_readable_image(pillow: None, tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    _draw_seven().save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageError) as error:
        load_image(path)
    assert "not a readable image" in _one_line_naming(error, path)


@pytest.mark.parametrize("name", ["missing.png", "missing.npy"])
def test_a_missing_file_is_named(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with pytest.raises(ImageError) as error:
        load_digit(path)
    assert _one_line_naming(error, path) == f"{path}: no such file"


def test_a_folder_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as error:
        load_image(tmp_path)
    assert "is a folder" in _one_line_naming(error, tmp_path)


def _png_claiming_size(path: Path, width: int, height: int) -> None:
    """A tiny valid PNG whose header is patched to declare width x height (CRC fixed)."""
    from PIL import Image

    Image.new("L", (8, 8), 255).save(path)
    raw = bytearray(path.read_bytes())
    assert raw[12:16] == b"IHDR"  # signature (8), length (4), type (4), then width and height
    raw[16:20] = width.to_bytes(4, "big")
    raw[20:24] = height.to_bytes(4, "big")
    raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("width", "height", "message"), [(100_000, 100_000, "decompression bomb"), (5000, 5000, "too large")]
)
def test_huge_declared_sizes_are_refused_before_decoding(
    pillow: None, tmp_path: Path, width: int, height: int, message: str
) -> None:
    path = tmp_path / "bomb.png"
    _png_claiming_size(path, width, height)
    with pytest.raises(ImageError) as error:
        load_image(path)
    assert message in _one_line_naming(error, path)


@pytest.mark.parametrize("side", [40, 100])  # Pillow warns above its limit and raises above twice it
def test_pillows_lowered_pixel_limit_is_respected(
    pillow: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: int
) -> None:
    from PIL import Image

    path = tmp_path / "big.png"
    Image.new("L", (side, side), 255).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError) as error:
        load_image(path)
    _one_line_naming(error, path)


def test_without_pillow_pictures_ask_for_the_extra_and_npy_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    png = tmp_path / "seven.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")  # content does not matter: Pillow is never reached
    npy = tmp_path / "seven.npy"
    image = np.zeros((28, 28), dtype=np.uint8)
    image[4:24, 12:16] = 255
    np.save(npy, image)
    monkeypatch.setitem(sys.modules, "PIL", None)  # `import PIL` now raises ImportError
    with pytest.raises(ImageError) as error:
        load_image(png)
    assert _one_line_naming(error, png) == f"{png}: {PILLOW_HINT}"
    assert "pip install 'mnist-nn[images]'" in PILLOW_HINT
    _assert_mnist_like(load_digit(npy))


# --- .npy files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.arange(784).reshape(28, 28) % 256,  # int64 in 0-255
        (np.arange(784).reshape(28, 28) % 256).astype(np.uint8),
        (np.arange(784) % 256 / 255.0).astype(np.float32),  # (784,) floats
        (np.arange(784) % 256 / 255.0),
    ],
)
def test_npy_files_are_read_without_pillow(tmp_path: Path, array: npt.NDArray[Any]) -> None:
    path = tmp_path / "digit.npy"
    np.save(path, array)
    image = load_image(path)
    assert image.shape == (28, 28) and image.dtype == np.float64
    np.testing.assert_allclose(image.ravel(), np.arange(784) % 256 / 255.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((27, 28)), "expected an array of shape (28, 28) or (784,), got (27, 28)"),
        (np.zeros((1, 28, 28)), "got (1, 28, 28)"),
        (np.zeros(785), "got (785,)"),
        (np.full((28, 28), 300, dtype=np.int16), "expected integer pixels in 0-255"),
        (np.full((28, 28), -1, dtype=np.int8), "expected integer pixels in 0-255"),
        (np.full(784, 1.5), "expected float pixels in [0, 1]"),
        (np.full(784, -0.25, dtype=np.float32), "expected float pixels in [0, 1]"),
        (np.full((28, 28), np.nan), "NaN or infinite"),
        (np.full(784, np.inf), "NaN or infinite"),
        (np.zeros((28, 28), dtype=np.complex128), "expected real numbers"),
        (np.full((28, 28), "a"), "expected real numbers"),
    ],
)
def test_bad_npy_files_are_refused_in_one_line(tmp_path: Path, array: npt.NDArray[Any], message: str) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(ImageError) as error:
        load_digit(path)
    assert message in _one_line_naming(error, path)


class _Tripwire:
    """Unpickling this creates the file ``marker``; a safe loader never does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("how", ["object-array", "raw-pickle"])
def test_pickles_are_refused_without_being_unpickled(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.npy"
    if how == "object-array":
        np.save(path, np.array([_Tripwire(marker)], dtype=object), allow_pickle=True)
        expected = "holds Python objects"
    else:
        path.write_bytes(pickle.dumps(_Tripwire(marker)))
        expected = "not a .npy file"
    with pytest.raises(ImageError) as error:
        load_image(path)
    assert expected in _one_line_naming(error, path)
    assert not marker.exists()


def test_npy_headers_declaring_huge_or_missing_data_are_refused(tmp_path: Path) -> None:
    huge = tmp_path / "huge.npy"
    with huge.open("wb") as f:
        header = {"descr": "<f8", "fortran_order": False, "shape": (100_000, 100_000)}
        np.lib.format.write_array_header_1_0(f, header)
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((28, 28)))
    short.write_bytes(short.read_bytes()[:-100])
    for path in (huge, short):
        with pytest.raises(ImageError) as error:
            load_image(path)
        _one_line_naming(error, path)


# --- text art --------------------------------------------------------------------------


@pytest.mark.parametrize("width", [28, 56])
def test_render_digit_has_28_lines_of_the_requested_width(width: int) -> None:
    blank = render_digit(np.zeros(784), width=width)
    assert blank.split("\n") == [" " * width] * 28
    full = render_digit(np.ones((28, 28)), width=width)
    assert full.split("\n") == [RAMP[-1] * width] * 28


def test_render_digit_maps_intensities_to_the_ramp() -> None:
    image = np.zeros((28, 28))
    image[0, :10] = (np.arange(10) + 0.5) / 10  # the middle of each character's interval
    image[1, 0] = 1.0 + 1e-7  # rounding just past 1 is clipped
    lines = render_digit(image, width=56).split("\n")
    assert lines[0][:20] == "".join(c * 2 for c in RAMP)
    assert lines[1][:2] == RAMP[-1] * 2
    assert render_digit(image) == render_digit(image.ravel())


@pytest.mark.parametrize(
    ("image", "width", "message"),
    [
        (np.zeros(784), 30, "multiple of 28"),
        (np.zeros(784), 0, "multiple of 28"),
        (np.zeros((27, 28)), 28, "shape (784,) or (28, 28)"),
        (np.full(784, np.nan), 28, "finite"),
    ],
)
def test_render_digit_refuses_bad_arguments(image: npt.NDArray[Any], width: int, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        render_digit(image, width=width)


# --- real MNIST ------------------------------------------------------------------------


@pytest.mark.real_data
def test_a_real_mnist_digit_renders_recognizably(mnist: MnistData) -> None:
    assert mnist.test.labels[0] == 7
    text = render_digit(mnist.test.images[0])
    lines = text.split("\n")
    assert len(lines) == 28 and all(len(line) == 28 for line in lines)
    inked = sum(c != " " for c in text.replace("\n", ""))
    assert 60 <= inked <= 300
    assert lines[0].strip() == "" and lines[-1].strip() == ""  # MNIST's black margin
    assert sum(RAMP[-1] in line for line in lines) >= 10  # solid strokes


@pytest.mark.real_data
def test_mnist_digits_come_back_essentially_unchanged(mnist: MnistData) -> None:
    digits = mnist.test.images[:100]
    processed = np.stack([to_mnist(digit) for digit in digits])
    correlations = np.array([_correlation(a, b) for a, b in zip(digits, processed, strict=True)])
    assert correlations.mean() > 0.99
    assert np.median(correlations) > 0.999
    # As a photo would show them (dark ink on light paper), they are inverted back.
    inverted = np.stack([to_mnist(1.0 - digit.reshape(28, 28)) for digit in digits[:10]])
    np.testing.assert_allclose(inverted, processed[:10], atol=1e-6)
