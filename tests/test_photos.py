"""Photographed digits: which pictures take the photo steps, what those keep, and ``predict --show``.

The photos are made by ``tests.photos``: strokes or MNIST test digits, dark on
grey paper, under a lighting gradient, with a page edge and a darker table,
blur and noise. A prepared photo is compared with the same digit drawn clean
(``to_mnist`` of the ink alone), by correlation and by the box of its ink.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from mnist_nn.cli import main
from mnist_nn.data import MnistData
from mnist_nn.errors import ImageError
from mnist_nn.images import load_digit, looks_clean, photo_ink, to_mnist
from mnist_nn.models import load_model, save_model
from mnist_nn.nn import Network
from tests.photos import STROKES, mnist_photo, photograph, save_jpeg, stroke_digit

pytest.importorskip("PIL")
pytest.importorskip("scipy")


def _correlation(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _box(digit: npt.NDArray[np.float32]) -> tuple[int, int]:
    """(height, width) of a prepared digit's pixels above 0.1."""
    ink = digit.reshape(28, 28) > 0.1
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def test_clean_pictures_keep_the_clean_recipe() -> None:
    rng = np.random.default_rng(0)
    seven = 1.0 - stroke_digit(7, rng)  # dark on white, as drawn
    assert looks_clean(seven)
    touching = np.ones((280, 280))
    touching[0:200, 130:150] = 0.0  # a "1" drawn from the canvas's top edge
    assert looks_clean(touching)
    corner = np.zeros((20, 20))
    corner[:4, :4] = 1.0  # a blob in a corner: a short run of the ring
    assert looks_clean(corner)
    assert not looks_clean(photograph(stroke_digit(7, rng), rng))
    assert not looks_clean(photograph(stroke_digit(7, rng), rng, page_edge=False))  # the gradient alone


@pytest.mark.parametrize("digit", sorted(STROKES))
def test_photographed_strokes_come_out_as_the_clean_drawing(digit: int) -> None:
    rng = np.random.default_rng(100 + digit)
    for n in range(3):
        ink = stroke_digit(digit, rng, height=int(rng.integers(100, 180)))
        clean = to_mnist(ink)
        prepared = to_mnist(photograph(ink, rng, page_edge=n > 0, max_turn=0.0))
        assert _correlation(prepared, clean) > 0.75, (digit, n)
        (height, width), (clean_height, clean_width) = _box(prepared), _box(clean)
        assert abs(height - clean_height) <= 2 and abs(width - clean_width) <= 2, (digit, n)


def test_a_five_in_two_strokes_keeps_its_bar_and_specks_are_dropped() -> None:
    rng = np.random.default_rng(5)
    ink = stroke_digit(5, rng)
    photo = photograph(ink, rng, max_turn=0.0)
    marked = photo.copy()
    for row, col in ((30, 60), (300, 60), (250, 420), (60, 400)):  # specks of dirt around the digit
        marked[row : row + 4, col : col + 4] *= 0.3
    prepared, spotted = to_mnist(photo), to_mnist(marked)
    assert _correlation(prepared, to_mnist(ink)) > 0.9
    np.testing.assert_allclose(spotted, prepared, atol=0.01)  # only the noise's estimate moves
    # The bar of the 5 (its own stroke, not touching the rest) is there: ink across the top rows.
    image = prepared.reshape(28, 28)
    top = int(np.flatnonzero(image.max(axis=1) > 0.5)[0])
    assert (image[top : top + 2] > 0.5).any(axis=0).sum() >= 8


def test_photo_ink_drops_the_page_edge_and_the_table() -> None:
    rng = np.random.default_rng(7)
    ink = stroke_digit(3, rng)
    photo = photograph(ink, rng, max_turn=0.0)
    found = photo_ink(photo) > 0.1
    assert found.shape == (180, 240)  # 480x360 photos are prepared at half size (PHOTO_SIDE)
    photo = photo.reshape(180, 2, 240, 2).mean(axis=(1, 3))
    assert not found[0].any() and not found[-1].any() and not found[:, 0].any() and not found[:, -1].any()
    dark = photo < 0.5 * np.median(photo)  # the strokes and the table
    assert found.sum() < 0.6 * dark.sum()


def test_a_blank_photographed_page_is_empty() -> None:
    rng = np.random.default_rng(1)
    with pytest.raises(ImageError, match="empty"):
        to_mnist(photograph(np.zeros((40, 40)), rng), name="page.jpg")


def test_without_scipy_photos_take_the_clean_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    photo = photograph(stroke_digit(1, rng), rng)
    with_scipy = to_mnist(photo)
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.ndimage", None)
    without = to_mnist(photo)
    assert without.shape == (784,) and not np.array_equal(without, with_scipy)


# --- mnist-nn predict ------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.npz"
    save_model(path, Network([784, 10], seed=1), {})
    return path


def test_predict_show_and_save_prepared(random_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    paths = [
        save_jpeg(photograph(stroke_digit(d, rng), rng), folder / "digit.jpg")
        for d, folder in ((2, first), (6, second))
    ]
    out = tmp_path / "prepared" / "new"
    assert main(["predict", str(random_model), *map(str, paths), "--show", "--save-prepared", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Probabilities: ")
    for n, path in enumerate(paths):
        block = lines[1 + n * 30 : 1 + (n + 1) * 30]  # the answer, the probabilities, 28 lines of art
        assert block[0].startswith(f"{path}: ")
        art = block[2:]
        assert len(art) == 28 and all(len(line) == 56 for line in art)
        assert art[0].strip() == "" and sum(line.strip() != "" for line in art) >= 18  # 20 rows of digit
    from PIL import Image

    for name, path in (("digit.png", paths[0]), ("digit-2.png", paths[1])):
        with Image.open(out / name) as saved:
            assert saved.size == (28, 28) and saved.mode == "L"
            levels = np.asarray(saved)
        np.testing.assert_array_equal(levels, np.rint(load_digit(path).reshape(28, 28) * 255))


def test_predict_prints_only_the_error_for_a_bad_file(
    random_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.png"
    assert main(["predict", str(random_model), str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [f"mnist-nn predict: error: {missing}: no such file"]
    a_file = tmp_path / "taken"
    a_file.write_text("")
    assert main(["predict", str(random_model), str(missing), "--save-prepared", str(a_file / "sub")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1 and "cannot write into" in captured.err


# --- a trained model on photographed MNIST test digits ------------------------------------


@pytest.mark.real_data
def test_photographed_mnist_digits_are_read_as_well_as_clean_ones(
    mnist_cache: Path, mnist: MnistData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "m.npz"
    assert main(["train", "--data-dir", str(mnist_cache), "--epochs", "2", "--quiet", "--save", str(model)]) == 0
    network = load_model(model).network
    rng = np.random.default_rng(15)
    chosen = rng.choice(len(mnist.test.labels), size=40, replace=False)
    paths = [
        save_jpeg(mnist_photo(mnist.test.images[i], rng), tmp_path / f"photo{n}.jpg") for n, i in enumerate(chosen)
    ]
    out = tmp_path / "p.json"
    assert main(["predict", str(model), *map(str, paths), "--json", str(out)]) == 0
    capsys.readouterr()
    on_photos = np.array([r["prediction"] for r in json.loads(out.read_text())])
    on_clean = network.predict(mnist.test.images[chosen])
    labels = mnist.test.labels[chosen]
    assert (on_photos == labels).sum() >= (on_clean == labels).sum() - 3  # about as right as the scans
    assert (on_photos == on_clean).mean() >= 0.85
