"""The single-file page of ``mnist-nn export --html`` in a real headless browser, beside ``mnist-nn serve``.

The page opens from disk (file://) with every other request refused, and classifies a drawing; the same strokes
drawn on serve's page (a real server on 127.0.0.1) and on the exported page give the same canvas, the same 28x28
input, the same answer and probabilities within 1e-4, for a dense and a convolutional model with batch norm, and
a picture shown to a Fashion-MNIST model too; the page's forward pass gives NumPy's probabilities within 1e-5 for
200 real test images, for every kind of layer, activation, output and input transform; its preparation of
pictures gives ``images.to_mnist``'s and ``to_fashion_mnist``'s inputs, photographs included. Bad input to the
command is refused in one line. The browser is Debian's Chromium through Playwright, as in test_browser.py
(skipped without them, except under CI=true).

The trained models see 500 real images for one epoch: their accuracy does not matter, their agreement does.
The strokes are not mirror-symmetric: a digit whose center of mass falls exactly half-way between two pixels is
placed by the last bits of NumPy's sums, which depend on the BLAS library (docs/export.md says so).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from mnist_nn import AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, MaxPool2D, Network
from mnist_nn.cli import main
from mnist_nn.config import PRESETS, TrainConfig
from mnist_nn.data import MnistData
from mnist_nn.data.datasets import FASHION_MNIST
from mnist_nn.errors import ExportError
from mnist_nn.export_html import check_page_exportable, export_html, page_html
from mnist_nn.images import to_fashion_mnist, to_mnist
from mnist_nn.models import load_model, save_model
from mnist_nn.nn.layers import LAYER_KINDS
from mnist_nn.nn.specs import layer_from_spec
from mnist_nn.nn.transforms import TRANSFORMS
from mnist_nn.train import Run, fit
from tests.photos import mnist_photo, photograph, stroke_digit
from tests.test_browser import (
    READ_PAGE,
    WAIT_MS,
    PageUnderTest,
    launched_chromium,
)
from tests.test_serve import running_server

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Route

TRAIN = 500  # real images each model trains on, for one epoch
SAME_ANSWER = 1e-4  # serve's probabilities against the page's, for the same strokes
SAME_NUMBERS = 1e-5  # NumPy's probabilities against the page's, for the same inputs
DIGITS = [str(d) for d in range(10)]

MODELS: dict[str, dict[str, Any]] = {
    "dense": {"layers": ("dense30", "dense10"), "eta": 3.0},
    "conv-bn": {
        "layers": ("conv6x5", "bn", "pool2", "dense10"),
        "activation": "relu",
        "cost": "log-likelihood",
        "init": "he",
        "eta": 0.05,
    },
}


# Strokes as fractions of the canvas, none of them mirror-symmetric.
def seven() -> list[list[tuple[float, float]]]:
    """A "7": a bar and a slanted stem."""
    return [[(0.28, 0.22), (0.5, 0.2), (0.74, 0.23), (0.6, 0.5), (0.46, 0.83)]]


def slanted_one() -> list[list[tuple[float, float]]]:
    """A "1" leaning right, with a flag."""
    return [[(0.4, 0.3), (0.56, 0.15), (0.5, 0.5), (0.44, 0.85)]]


def three() -> list[list[tuple[float, float]]]:
    """A "3" in two strokes."""
    return [
        [(0.32, 0.22), (0.5, 0.14), (0.66, 0.22), (0.64, 0.38), (0.47, 0.47)],
        [(0.47, 0.47), (0.67, 0.58), (0.66, 0.76), (0.48, 0.86), (0.3, 0.8)],
    ]


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Chromium with a fresh profile, as test_browser.py starts it."""
    with launched_chromium(tmp_path_factory.mktemp("chromium-profile")) as browser:
        yield browser


@pytest.fixture(scope="module")
def trained(mnist: MnistData, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The model file of one of MODELS, trained at its first use, with its test count."""
    folder = tmp_path_factory.mktemp("models")
    files: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in files:
            run = Run.start(TrainConfig(epochs=1, batch_size=10, seed=1, **MODELS[name]))
            fit(run, mnist.train.images[:TRAIN], mnist.train.labels[:TRAIN], helper=False)
            correct = run.network.count_correct(mnist.test.images[:1000], mnist.test.labels[:1000])
            files[name] = folder / f"{name}.npz"
            metadata = {"dataset": "mnist", "classes": DIGITS, "test_correct": correct, "test_total": 1000}
            save_model(files[name], run.network, metadata)
        return files[name]

    return get


class ExportedPage(PageUnderTest):
    """The exported page opened from disk: every request but the page's own file is refused, and recorded."""

    def __init__(self, page: Page, path: Path) -> None:
        self.address = path.as_uri()
        self.requested: list[str] = []
        page.route("**/*", self._only_the_file)
        super().__init__(page, "", self.address)

    def _only_the_file(self, route: Route) -> None:
        self.requested.append(route.request.url)
        if route.request.url == self.address:
            route.continue_()
        else:
            route.abort()


def _exported(model: Path, folder: Path) -> Path:
    """The page of a model file, written by the command."""
    page = folder / f"{model.stem}.html"
    assert main(["export", str(model), "--html", str(page)]) == 0
    return page


# READ_PAGE of test_browser.py with the canvases' gray levels in base64: 78,400 numbers cost Playwright a second.
READ_COMPACTLY = READ_PAGE.replace(
    "return Array.from({ length: data.length / 4 }, (_, i) => data[4 * i]);",
    'let text = "";\n    for (let i = 0; i < data.length; i += 4) text += String.fromCharCode(data[i]);\n'
    "    return btoa(text);",
)
assert READ_COMPACTLY != READ_PAGE


def _answered(tab: PageUnderTest) -> dict[str, Any]:
    """What the page shows once it has a new answer (as ``PageUnderTest.wait("ready")``), canvases in base64."""
    tab.page.locator("body[data-state=ready]").wait_for(timeout=WAIT_MS)
    deadline = time.monotonic() + WAIT_MS / 1000
    while int(tab.page.evaluate("document.body.dataset.answers ?? 0")) <= tab.answers:
        assert time.monotonic() < deadline, "no new answer"
        tab.page.wait_for_timeout(20)
    tab.page.locator("body[data-state=ready]").wait_for(timeout=WAIT_MS)
    shown: dict[str, Any] = tab.page.evaluate(READ_COMPACTLY)
    tab.answers = int(shown["answers"])
    return shown


def _draw(tab: PageUnderTest, strokes: list[list[tuple[float, float]]]) -> dict[str, Any]:
    """Draw the strokes and return what the page shows once it has answered."""
    for stroke in strokes:
        tab.stroke(stroke)
    return _answered(tab)


def _clear(tab: PageUnderTest) -> None:
    tab.page.click("#clear")
    tab.page.locator("body[data-state=empty]").wait_for(timeout=WAIT_MS)


# --- (a) from disk, with no network ---------------------------------------------------------


@pytest.mark.real_data
def test_the_page_opens_from_disk_and_classifies_a_drawing_with_no_network(
    context: BrowserContext, trained: Callable[[str], Path], tmp_path: Path
) -> None:
    page_file = _exported(trained("dense"), tmp_path)
    tab = ExportedPage(context.new_page(), page_file)
    try:
        shown = tab.page.evaluate(READ_COMPACTLY)
        assert re.fullmatch(r"dense\.npz \u00b7 \[784, 30, 10\] \u00b7 test accuracy \d+\.\d\d% \(.*\)", shown["model"])
        shown = _draw(tab, seven())
        assert shown["prediction"] in DIGITS and shown["top"] == [int(shown["prediction"])]
        probabilities = [float(p) for p in shown["probabilities"]]
        assert abs(sum(probabilities) - 1) < 1e-6 and max(probabilities) == probabilities[int(shown["prediction"])]
        assert any(base64.b64decode(shown["seen"])) and shown["status"] == ""
        _clear(tab)
        assert tab.requested == [tab.address]  # nothing but the file itself, not even a favicon
        assert tab.errors == []
    finally:
        tab.page.close()


# --- (b) the same strokes, the same answer ---------------------------------------------------


def _assert_same_answers(served: dict[str, Any], exported: dict[str, Any]) -> None:
    assert exported["canvas"] == served["canvas"]  # the same drawing, pixel for pixel
    assert exported["prediction"] == served["prediction"] and exported["top"] == served["top"]
    np.testing.assert_allclose(
        [float(p) for p in exported["probabilities"]],
        [float(p) for p in served["probabilities"]],
        rtol=0,
        atol=SAME_ANSWER,
    )
    assert exported["seen"] == served["seen"]  # the same 28x28 input
    assert exported["model"] == served["model"] and exported["status"] == served["status"] == ""


@pytest.mark.real_data
@pytest.mark.parametrize("name", list(MODELS))
def test_serve_and_the_page_answer_the_same_strokes_alike(
    name: str, context: BrowserContext, trained: Callable[[str], Path], tmp_path: Path
) -> None:
    model = trained(name)
    drawings = [seven(), slanted_one(), three()]
    served: list[dict[str, Any]] = []
    with running_server(load_model(model)) as url:
        tab = PageUnderTest(context.new_page(), url)
        try:
            for strokes in drawings:
                served.append(_draw(tab, strokes))
                _clear(tab)
            assert tab.errors == []
        finally:
            tab.page.close()
    page = ExportedPage(context.new_page(), _exported(model, tmp_path))
    try:
        for strokes, answer in zip(drawings, served, strict=True):
            _assert_same_answers(answer, _draw(page, strokes))
            _clear(page)
        assert page.requested == [page.address] and page.errors == []
    finally:
        page.page.close()


def test_a_fashion_model_names_a_picture_as_serve_does(context: BrowserContext, tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "fashion.npz"
    network = Network([784, 10], seed=2, cost="log-likelihood", init="scaled")
    save_model(path, network, {"dataset": "fashion-mnist", "classes": list(FASHION_MNIST.classes)})
    # A shoe-like shape in colour, off centre, on white: the page reads its luminance as Pillow does.
    picture = np.full((150, 200, 3), 255, np.uint8)
    picture[70:120, 30:170] = (120, 60, 30)
    picture[40:80, 40:90] = (200, 30, 90)
    Image.fromarray(picture).save(tmp_path / "shoe.png")
    shown = []
    with running_server(load_model(path)) as url:
        tab = PageUnderTest(context.new_page(), url)
        try:
            tab.page.set_input_files("#file", str(tmp_path / "shoe.png"))
            shown.append(_answered(tab))
        finally:
            tab.page.close()
    page = ExportedPage(context.new_page(), _exported(path, tmp_path))
    try:
        assert page.page.locator("h1").text_content() == "Show a picture"
        assert page.page.locator("#bars li span:first-child").all_text_contents() == list(FASHION_MNIST.classes)
        page.page.set_input_files("#file", str(tmp_path / "shoe.png"))
        shown.append(_answered(page))
        _assert_same_answers(*shown)
        assert shown[1]["prediction"] in FASHION_MNIST.classes
        assert page.requested == [page.address] and page.errors == []
    finally:
        page.page.close()


# --- (c) the page's numbers are NumPy's ------------------------------------------------------


def _randomized(network: Network, seed: int = 3) -> Network:
    """Batch norms' statistics and scales away from 0 and 1, so that each matters."""
    rng = np.random.default_rng(seed)
    for layer in network.layers:
        if isinstance(layer, BatchNorm):
            layer.params[0][...] = rng.uniform(0.5, 1.5, layer.params[0].shape)
            layer.params[1][0] = rng.normal(0.0, 0.5, layer.params[1].shape[1])
            layer.params[1][1] = rng.uniform(0.5, 2.0, layer.params[1].shape[1])
    return network


# Untrained networks for every other kind of layer, activation, output, input transform and dtype.
UNTRAINED: dict[str, Callable[[], Network]] = {
    "conv-padding-avgpool-tanh-sigmoid-outputs": lambda: Network(
        [Conv2D(4, 3, padding=1), AvgPool2D(2), Dense(10)], activation="tanh", cost="cross-entropy", init="glorot"
    ),
    "dense-bn-dropout-relu": lambda: _randomized(
        Network([Dropout(0.2), Dense(40), BatchNorm(), Dropout(0.5), Dense(10)], activation="relu", init="he")
    ),
    "conv-padding-maxpool-bn-softmax": lambda: _randomized(
        Network(
            [Conv2D(5, 5, padding=2), MaxPool2D(2), BatchNorm(), Dense(10)],
            activation="relu",
            cost="log-likelihood",
            init="he",
        )
    ),
    "dense-then-conv": lambda: _randomized(
        Network([Dense(100), Conv2D(4, 3), MaxPool2D(2), BatchNorm(), Dense(10)], cost="cross-entropy")
    ),
    "deskew-dense-sigmoid": lambda: Network([784, 30, 10], transform=TRANSFORMS["deskew"]),
    "deskew-conv-float64": lambda: Network(
        [Conv2D(4, 5), MaxPool2D(2), Dense(10)],
        transform=TRANSFORMS["deskew"],
        dtype=np.float64,
        cost="log-likelihood",
        init="he",
        activation="relu",
    ),
}


# Arrays go to the page as base64 (a list of numbers costs Playwright seconds): float32 or float64, little-endian.
FROM_BASE64 = """(text, Kind) => {
  const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  return new Kind(bytes.buffer);
}"""
CLASSIFY = f"""(text) => {{
  const pixels = ({FROM_BASE64})(text, Float32Array);
  const answers = [];
  for (let i = 0; i < pixels.length; i += 784) answers.push(window.mnistNN.classify(pixels.subarray(i, i + 784)));
  return answers;
}}"""
PREPARE = f"""([text, width, height]) => window.mnistNN.prepare(({FROM_BASE64})(text, Float64Array), width, height)"""


def _base64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def _page_probabilities(context: BrowserContext, page_file: Path, images: np.ndarray) -> np.ndarray:
    """The page's window.mnistNN.classify of each image (its 784 pixels as they are)."""
    tab = ExportedPage(context.new_page(), page_file)
    try:
        got = tab.page.evaluate(CLASSIFY, _base64(images, "<f4"))
        assert tab.requested == [tab.address] and tab.errors == []
        return np.array(got)
    finally:
        tab.page.close()


@pytest.mark.real_data
@pytest.mark.parametrize("name", [*MODELS, *UNTRAINED])
def test_the_pages_forward_pass_gives_numpys_probabilities(
    name: str, context: BrowserContext, trained: Callable[[str], Path], mnist: MnistData, tmp_path: Path
) -> None:
    if name in MODELS:
        model = trained(name)
    else:
        model = tmp_path / f"{name}.npz"
        save_model(model, UNTRAINED[name](), {"test_correct": 0, "test_total": 10000})
    images = mnist.test.images[:200]
    want = load_model(model).network.probabilities(images)
    got = _page_probabilities(context, _exported(model, tmp_path), images)
    np.testing.assert_allclose(got, want, rtol=0, atol=SAME_NUMBERS)
    np.testing.assert_array_equal(got.argmax(axis=1), want.argmax(axis=1))


@pytest.mark.real_data
@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_the_page_prepares_pictures_as_the_package_does(
    dataset: str, context: BrowserContext, mnist: MnistData, tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    pictures = [mnist.test.images[i].reshape(28, 28).astype(np.float64) for i in range(2)]
    for digit in (4, 7):
        ink = stroke_digit(digit, rng)
        pictures += [1 - ink, photograph(ink, rng, size=(300, 240))]  # a clean drawing, a photo of it
    pictures.append(mnist_photo(mnist.test.images[2], rng))  # 480x360: block-averaged first
    model = tmp_path / "m.npz"
    save_model(model, Network([784, 10], seed=1), {"dataset": dataset})
    tab = ExportedPage(context.new_page(), _exported(model, tmp_path))
    prepare = to_fashion_mnist if dataset == "fashion-mnist" else to_mnist
    try:
        for picture in pictures:
            height, width = picture.shape
            got = tab.page.evaluate(PREPARE, [_base64(picture, "<f8"), width, height])
            # The same operations in float64: at most a float32 rounding apart, where sums run in another order.
            np.testing.assert_allclose(got, prepare(picture), rtol=0, atol=1e-6)
    finally:
        tab.page.close()


# --- the file -----------------------------------------------------------------------------


def test_the_page_holds_everything_and_allows_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    save_model(path, Network([784, 10], seed=1), {"classes": ["</script><script>alert(1)</script>", *DIGITS[1:]]})
    page = page_html(load_model(path))
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    assert re.findall(r'(?:src|href)="([^"]*)"', page) == ["data:,"]  # the favicon
    assert page.count("<script") == 3 and page.lower().count("</script") == 3  # the class name ends nothing
    (policy,) = re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', page)
    assert policy.startswith("default-src 'none';") and "unsafe" not in policy and "connect-src" not in policy
    assert len(re.findall(r"'sha256-[A-Za-z0-9+/]+={0,2}'", policy)) == 3  # the style and two scripts


def test_a_cnn_preset_page_is_under_5_mb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = PRESETS["cnn"]
    network = Network(
        [layer_from_spec(spec) for spec in config.layers],
        activation=config.activation,
        cost=config.cost,
        init=config.init,
    )
    save_model(tmp_path / "cnn.npz", network)
    assert main(["export", str(tmp_path / "cnn.npz"), "--html", str(tmp_path / "cnn.html")]) == 0
    size = (tmp_path / "cnn.html").stat().st_size
    weights_bytes = 4 * network.num_params
    assert 4 / 3 * weights_bytes < size < 5_000_000
    assert capsys.readouterr().out == (
        f"Wrote {tmp_path / 'cnn.html'}: {size:,} bytes (a single-file page; "
        f"{network.num_params:,} weights, {weights_bytes:,} bytes as float32, in base64)\n"
    )


# --- (d) the command ------------------------------------------------------------------------


def test_export_writes_the_onnx_file_and_the_page_at_once(model: Path, tmp_path: Path) -> None:
    onnx_file, page = tmp_path / "m.onnx", tmp_path / "m.html"
    assert main(["export", str(model), "--onnx", str(onnx_file), "--html", str(page)]) == 0
    assert onnx_file.stat().st_size > 0 and page.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert export_html(load_model(model), tmp_path / "again.html") == page.stat().st_size
    assert (tmp_path / "again.html").read_bytes() == page.read_bytes()  # the same model, the same page


class _Noise(Dropout):
    """A kind of layer the page does not know (registered for one test)."""

    kind = "noise"


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("missing model", ("no such file",)),
        ("not a model", ("not a model file",)),
        ("missing folder", ("--html", "does not exist")),
        ("output is a folder", ("--html", "is a directory")),
        ("output is the model", ("--html", "is the model file itself")),
        ("output is standard output", ("--html -", "not written to standard output")),
        ("one file for both", ("--onnx and --html name the same file",)),
        ("no output", ("--onnx OUT.onnx", "--html OUT.html")),
        ("unknown layer", ("layer 1 (noise) has no single-file page",)),
    ],
)
def test_export_refuses_bad_input_in_one_line(
    case: str,
    words: tuple[str, ...],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model, out = tmp_path / "m.npz", tmp_path / "m.html"
    save_model(model, Network([784, 10], seed=1))
    monkeypatch.setitem(LAYER_KINDS, "noise", _Noise)
    save_model(tmp_path / "noise.npz", Network([_Noise(0.1), Dense(10)]))
    (tmp_path / "notes.npz").write_text("not a model")
    args = {
        "missing model": [str(tmp_path / "missing.npz"), "--html", str(out)],
        "not a model": [str(tmp_path / "notes.npz"), "--html", str(out)],
        "missing folder": [str(model), "--html", str(tmp_path / "no" / "m.html")],
        "output is a folder": [str(model), "--html", str(tmp_path)],
        "output is the model": [str(model), "--html", str(model)],
        "output is standard output": [str(model), "--html", "-"],
        "one file for both": [str(model), "--html", str(out), "--onnx", str(tmp_path / "." / "m.html")],
        "no output": [str(model)],
        "unknown layer": [str(tmp_path / "noise.npz"), "--html", str(out), "--onnx", str(tmp_path / "m.onnx")],
    }[case]
    before = model.read_bytes()
    monkeypatch.chdir(tmp_path)

    assert main(["export", *args]) == 2
    assert not (tmp_path / "-").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for word in words:
        assert word in err[0], err[0]
    assert not out.exists() and not (tmp_path / "m.onnx").exists() and not (tmp_path / "no").exists()
    assert model.read_bytes() == before


def test_a_network_of_other_inputs_has_no_page() -> None:
    # Model files hold 784 inputs (load_model checks); a network built in Python may not.
    with pytest.raises(ExportError, match=r"the page draws 28x28 images \(784 inputs\); this model takes 100 inputs"):
        check_page_exportable(Network([100, 10]))
