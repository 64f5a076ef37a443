"""The documentation site: built strictly by MkDocs, served on 127.0.0.1 and opened in headless Chromium.

The build fails on any broken link, missing page or missing reference
(``mkdocs build --strict``, as CI runs it). The home page, opened in Debian's
Chromium like the drawing page (``tests/test_browser.py``), has the project's
title, the navigation in the order a learner meets it, a search box, copy
buttons on its code blocks, and no console error; the API reference lists
what ``mnist_nn`` exports. ``MNIST_NN_SITE_SCREENSHOT=docs/site.png pytest
tests/test_docs_site.py`` writes the home page's screenshot to that path,
which is how ``docs/site.png`` is made.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_browser import WAIT_MS, launched_chromium

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT_ENV = "MNIST_NN_SITE_SCREENSHOT"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built with --strict into a temporary folder."""
    pytest.importorskip("mkdocs", reason="the site needs the docs extra: pip install -e '.[docs]'")
    folder = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The built site on an HTTP server on 127.0.0.1, in a thread."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No request lines on stderr."""


def test_the_api_reference_lists_what_the_package_exports(site: Path) -> None:
    import mnist_nn

    page = (site / "api" / "index.html").read_text()
    for name in ("Network", "Dense", "Conv2D", "MaxPool2D", "Dropout", "fit", "load_model", "save_model"):
        assert f'id="mnist_nn.{name}"' in page, name
    assert 'id="mnist_nn.TrainConfig"' in page
    documented = {name for name in mnist_nn.__all__ if f'id="mnist_nn.{name}"' in page}
    assert documented >= set(mnist_nn.__all__) - {"PRESETS", "__version__"}


def test_the_home_page_opens_in_chromium_with_its_navigation_and_search(
    served: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    errors: list[str] = []
    with launched_chromium(
        tmp_path_factory.mktemp("chromium-profile"), viewport={"width": 1280, "height": 800}
    ) as browser:
        page = browser.new_page()
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(served + "/")
        page.locator("h1", has_text="mnist_nn").wait_for(timeout=WAIT_MS)
        navigation = " ".join(page.locator("nav.md-nav--primary").first.inner_text().split())
        order = ["Getting started", "Tutorial: the book", "Chapter 1", "User guide", "Results", "API reference"]
        places = [navigation.find(title) for title in order]
        assert -1 not in places and places == sorted(places), navigation
        assert page.locator("input.md-search__input").count() == 1
        copy = page.locator(":is(button.md-clipboard, button.md-code__button)")  # by Material's version
        copy.first.wait_for(state="attached", timeout=WAIT_MS)
        shot = os.environ.get(SCREENSHOT_ENV)
        if shot:
            page.screenshot(path=shot)
    assert errors == []
