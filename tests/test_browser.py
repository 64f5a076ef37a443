"""The drawing page of ``mnist-nn serve`` in a real headless browser.

Debian's Chromium (``apt-get install chromium``, /usr/bin/chromium, or the path
in ``$MNIST_NN_CHROMIUM``) is driven by Playwright (the ``playwright`` package
from PyPI; its own browser download, ``playwright install``, is never used).
The browser gets a fresh profile and no network beyond the test server on
127.0.0.1. The tests draw with the mouse and with a finger, wait for the
debounced answer, and check it against the answer the same model gives through
the API for the very drawing the page sent. Without Chromium or Playwright the
tests are skipped, except under ``CI=true``, where that is a failure.

``MNIST_NN_SCREENSHOT=docs/serve.png pytest tests/test_browser.py`` also
writes the screenshot to that path, which is how the README's picture is made.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import requests

from mnist_nn.cli import train_main
from mnist_nn.data import MnistData, load_mnist
from mnist_nn.data.datasets import FASHION_MNIST
from mnist_nn.models import SavedModel, load_model
from tests.conftest import real_mirror
from tests.test_serve import TIMEOUT, running_server, train_one_epoch

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Request, ViewportSize

CHROMIUM = Path(os.environ.get("MNIST_NN_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT_ENV = "MNIST_NN_SCREENSHOT"
DESKTOP: ViewportSize = {"width": 800, "height": 560}
PHONE: ViewportSize = {"width": 390, "height": 844}
WAIT_MS = 10_000

# Reads what the page shows: the digit, each bar's probability, the 28x28 image and the canvas.
READ_PAGE = """() => {
  const gray = (canvas) => {
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    return Array.from({ length: data.length / 4 }, (_, i) => data[4 * i]);
  };
  const pad = document.getElementById("pad");
  return {
    state: document.body.dataset.state,
    answers: Number(document.body.dataset.answers ?? 0),
    prediction: document.getElementById("prediction").textContent,
    probabilities: [...document.querySelectorAll("#bars li")].map((li) => li.dataset.probability ?? null),
    top: [...document.querySelectorAll("#bars li.top")].map((li) => Number(li.dataset.digit)),
    seen: gray(document.getElementById("seen")),
    canvas: { width: pad.width, height: pad.height, pixels: gray(pad) },
    model: document.getElementById("model").textContent,
    status: document.getElementById("status").textContent,
  };
}"""


def _require_browser() -> None:
    """Skip (fail under CI=true) unless Playwright and Chromium are installed."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install playwright; no 'playwright install' needed)")
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium, or set MNIST_NN_CHROMIUM)")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {message}")
        pytest.skip(message)


@contextlib.contextmanager
def launched_chromium(profile: Path, **options: Any) -> Iterator[BrowserContext]:
    """Debian's Chromium, headless, with a fresh profile in ``profile``; a desktop viewport unless ``options`` say."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    settings: dict[str, Any] = {"viewport": DESKTOP, "device_scale_factor": 1, **options}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, **settings
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Chromium with a fresh profile, able to take touch input."""
    with launched_chromium(tmp_path_factory.mktemp("chromium-profile"), has_touch=True) as browser:
        yield browser


@pytest.fixture(scope="module")
def url(mnist_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The page of a network trained for one epoch on real MNIST."""
    model: SavedModel = train_one_epoch(mnist_cache, tmp_path_factory.mktemp("model") / "mnist-784-30-10.npz")
    with running_server(model) as base:
        yield base


class PageUnderTest:
    """A page opened on the server, recording its console errors and the drawings it sent."""

    def __init__(self, page: Page, url: str, address: str | None = None) -> None:
        self.page = page
        self.url = url
        self.errors: list[str] = []
        self.sent: list[str] = []
        self.answers = 0  # answers shown so far (<body data-answers>)
        page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("request", self._record)
        page.goto(address or url + "/")  # another address: the page exported by mnist-nn export --html
        # Locators, not wait_for_function: the page's CSP forbids the eval that the latter uses.
        page.locator("body[data-state=empty]").wait_for(timeout=WAIT_MS)
        page.locator("#model", has_text="test accuracy").wait_for(timeout=WAIT_MS)

    def _record(self, request: Request) -> None:
        if request.url.endswith("/api/predict") and request.post_data is not None:
            self.sent.append(request.post_data)

    def box(self) -> dict[str, float]:
        box = self.page.locator("#pad").bounding_box()
        assert box is not None
        return {"x": box["x"], "y": box["y"], "width": box["width"], "height": box["height"]}

    def stroke(self, points: list[tuple[float, float]]) -> None:
        """Draw one stroke with the mouse through points given as fractions of the canvas."""
        box, mouse = self.box(), self.page.mouse
        xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
        mouse.move(*xy[0])
        mouse.down()
        for x, y in xy[1:]:
            mouse.move(x, y)
        mouse.up()

    def touch_stroke(self, points: list[tuple[float, float]]) -> None:
        """Draw one stroke with a finger (Chromium's touch input, through the DevTools protocol)."""
        box = self.box()
        cdp = self.page.context.new_cdp_session(self.page)
        xy = [{"x": box["x"] + fx * box["width"], "y": box["y"] + fy * box["height"]} for fx, fy in points]
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [xy[0]]})
        for point in xy[1:]:
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        cdp.detach()

    def wait(self, state: str) -> dict[str, Any]:
        """Wait for ``<body data-state>``; for "ready", also for an answer newer than the last one waited for."""
        self.page.locator(f"body[data-state={state}]").wait_for(timeout=WAIT_MS)
        if state == "ready":
            deadline = time.monotonic() + WAIT_MS / 1000
            while int(self.page.evaluate("document.body.dataset.answers ?? 0")) <= self.answers:
                assert time.monotonic() < deadline, "no new answer"
                self.page.wait_for_timeout(20)
            self.page.locator("body[data-state=ready]").wait_for(timeout=WAIT_MS)
        shown: dict[str, Any] = self.page.evaluate(READ_PAGE)
        self.answers = int(shown["answers"])
        return shown


def one() -> list[tuple[float, float]]:
    """A "1": a vertical stroke down the middle."""
    return [(0.5, 0.15 + 0.7 * i / 20) for i in range(21)]


def zero() -> list[tuple[float, float]]:
    """A "0": an upright ellipse, drawn round once from the top."""
    return [
        (0.5 + 0.22 * math.sin(2 * math.pi * i / 40), 0.5 - 0.33 * math.cos(2 * math.pi * i / 40)) for i in range(41)
    ]


def assert_shows_the_api_answer(tab: PageUnderTest, shown: dict[str, Any]) -> int:
    """The page shows what /api/predict answers for the drawing it sent last, and sent what it shows."""
    body = json.loads(tab.sent[-1])
    raster = body["raster"]
    assert set(body) == {"raster"} and set(raster) == {"width", "height", "levels"}  # the compact form
    levels = list(base64.b64decode(raster["levels"], validate=True))
    sent = {"width": raster["width"], "height": raster["height"], "pixels": levels}
    assert sent == shown["canvas"]  # the page sent its canvas, pixel for pixel
    answer = requests.post(tab.url + "/api/predict", json=body, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    expected = answer.json()
    assert shown["prediction"] == str(expected["prediction"])
    assert shown["top"] == [expected["prediction"]]
    assert [float(p) for p in shown["probabilities"]] == expected["probabilities"]
    seen = [round(255 * v) for row in expected["image"] for v in row]
    assert shown["seen"] == seen  # the enlarged 28x28 image is the network's input
    assert shown["status"] == ""
    return int(expected["prediction"])


def assert_empty(shown: dict[str, Any]) -> None:
    assert shown["state"] == "empty"
    assert set(shown["canvas"]["pixels"]) == {255}  # white paper, no ink
    assert shown["prediction"] == "\u2013"
    assert shown["probabilities"] == [None] * 10 and shown["top"] == []
    assert set(shown["seen"]) == {0}


def test_drawing_shows_the_models_answer_undo_and_clear_reset_it(
    context: BrowserContext, url: str, tmp_path: Path
) -> None:
    tab = PageUnderTest(context.new_page(), url)
    try:
        assert "mnist-784-30-10.npz \u00b7 [784, 30, 10] \u00b7 test accuracy" in tab.page.evaluate(READ_PAGE)["model"]
        assert_empty(tab.page.evaluate(READ_PAGE))

        tab.stroke(one())
        assert assert_shows_the_api_answer(tab, tab.wait("ready")) == 1

        tab.page.click("#undo")  # the only stroke: back to an empty page
        assert_empty(tab.wait("empty"))

        tab.stroke(zero())
        assert assert_shows_the_api_answer(tab, tab.wait("ready")) == 0

        tab.stroke([(0.9, 0.1), (0.95, 0.15)])  # a stray mark, then undo it
        tab.wait("ready")
        tab.page.keyboard.press("Control+z")
        assert assert_shows_the_api_answer(tab, tab.wait("ready")) == 0

        shot = tmp_path / "serve.png"
        tab.page.screenshot(path=str(shot))
        assert shot.stat().st_size < 150_000
        target = os.environ.get(SCREENSHOT_ENV)
        if target:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, target)

        tab.page.click("#clear")
        assert_empty(tab.wait("empty"))
        assert tab.page.is_disabled("#clear") and tab.page.is_disabled("#undo")
        assert tab.errors == []
    finally:
        tab.page.close()


def test_the_page_fits_a_phone_and_draws_with_a_finger(context: BrowserContext, url: str) -> None:
    page = context.new_page()
    page.set_viewport_size(PHONE)
    tab = PageUnderTest(page, url)
    try:
        layout = page.evaluate(
            """() => ({
              scroll: document.documentElement.scrollWidth,
              width: window.innerWidth,
              pad: document.getElementById("pad").getBoundingClientRect().width,
            })"""
        )
        assert layout["scroll"] <= layout["width"] == PHONE["width"]  # nothing sticks out sideways
        assert layout["pad"] >= 0.8 * PHONE["width"]  # the drawing area takes the width
        tab.touch_stroke(one())
        assert assert_shows_the_api_answer(tab, tab.wait("ready")) == 1
        assert tab.page.evaluate("window.scrollY") == 0  # the finger drew instead of scrolling
        assert tab.errors == []
    finally:
        page.close()


@pytest.fixture(scope="module")
def fashion_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SavedModel, MnistData]]:
    """The page of a network trained for one epoch on real Fashion-MNIST, with the data."""
    mirror = real_mirror(FASHION_MNIST.mirror_env, "../shared/fashion-mnist")
    folder = tmp_path_factory.mktemp("fashion")
    path = folder / "fashion.npz"
    argv = ["--dataset", "fashion-mnist", "--hidden", "30", "--epochs", "1", "--quiet"]
    assert train_main([*argv, "--data-dir", str(folder / "data"), "--mirror", mirror, "--save", str(path)]) == 0
    with running_server(load_model(path)) as base:
        yield base, load_model(path), load_mnist(folder / "data", dataset="fashion-mnist")


def test_a_fashion_model_takes_a_picture_and_names_the_classes(
    context: BrowserContext, fashion_url: tuple[str, SavedModel, MnistData], tmp_path: Path
) -> None:
    from PIL import Image

    url, model, data = fashion_url
    # The first test image, an ankle boot, as a photo: dark on white, five times larger, off centre.
    page = np.full((200, 180), 255, np.uint8)
    page[30:170, 20:160] = np.kron(255 - np.round(255 * data.test.images[0].reshape(28, 28)), np.ones((5, 5)))
    picture = tmp_path / "boot.png"
    Image.fromarray(page).save(picture)
    tab = PageUnderTest(context.new_page(), url)
    try:
        assert tab.page.locator("h1").text_content() == "Show a picture"
        assert tab.page.is_visible("#file")
        labels = tab.page.locator("#bars li span:first-child").all_text_contents()
        assert labels == list(FASHION_MNIST.classes)
        tab.page.set_input_files("#file", str(picture))
        shown = tab.wait("ready")
        body = json.loads(tab.sent[-1])
        assert set(body) == {"png"} and body["png"].startswith("data:image/png;base64,")
        answer = requests.post(url + "/api/predict", json=body, timeout=TIMEOUT)
        assert answer.status_code == 200, answer.text
        expected = answer.json()
        assert shown["prediction"] == FASHION_MNIST.classes[expected["prediction"]]
        assert [float(p) for p in shown["probabilities"]] == expected["probabilities"]
        assert shown["seen"] == [round(255 * v) for row in expected["image"] for v in row]
        # What the network saw is the boot as Fashion-MNIST shows it: light on black, filling the field.
        seen = np.array(expected["image"])
        assert float(np.abs(seen.ravel() - data.test.images[0]).mean()) < 0.1
        assert requests.get(url + "/api/model", timeout=TIMEOUT).json()["classes"] == list(model.classes)
        target = os.environ.get(SCREENSHOT_ENV)
        if target:  # beside the drawing's picture: docs/serve-fashion.png for docs/serve.png
            tab.page.screenshot(path=str(Path(target).with_name(Path(target).stem + "-fashion.png")))
        assert tab.errors == []
    finally:
        tab.page.close()


def test_a_model_of_26_classes_gets_a_bar_for_each(context: BrowserContext, tmp_path: Path) -> None:
    from PIL import Image

    from mnist_nn.models import save_model
    from mnist_nn.nn import Network

    names = [chr(ord("a") + k) for k in range(26)]
    path = tmp_path / "letters.npz"
    save_model(path, Network([784, 26], seed=3, cost="log-likelihood"), {"dataset": "idx:letters", "classes": names})
    picture = tmp_path / "mark.png"
    image = np.full((60, 60), 255, np.uint8)
    image[10:50, 25:35] = 0
    Image.fromarray(image).save(picture)
    with running_server(load_model(path)) as url:
        tab = PageUnderTest(context.new_page(), url)
        try:
            assert tab.page.locator("#bars li span:first-child").all_text_contents() == names
            tab.page.set_input_files("#file", str(picture))
            shown = tab.wait("ready")
            expected = requests.post(url + "/api/predict", json=json.loads(tab.sent[-1]), timeout=TIMEOUT).json()
            assert len(shown["probabilities"]) == 26
            assert [float(p) for p in shown["probabilities"]] == expected["probabilities"]
            assert shown["prediction"] == names[expected["prediction"]]
            assert tab.errors == []
        finally:
            tab.page.close()
