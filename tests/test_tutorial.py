"""The tutorial's pages run as written: every Python block of a page, in order, in one namespace.

A page is run as a reader runs it (or as Jupyter runs it, one cell per
block): top to bottom, in a fresh folder, with MNIST read from the session's
cache. The pictures a page shows are the files its blocks write. With
jupytext installed (the ``docs`` extra), each page also opens as a notebook
whose code cells are those blocks.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from mnist_nn.config import DATA_ENV

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial"
PAGES = sorted(TUTORIAL.glob("chapter-*.md"))


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.M | re.S)


def test_every_chapter_page_is_there() -> None:
    assert [page.stem for page in PAGES] == ["chapter-1", "chapter-2", "chapter-3", "chapter-6"]
    assert all(_python_blocks(page) for page in PAGES)


@pytest.mark.real_data
@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.stem)
def test_a_chapter_page_runs_as_written(
    page: Path, mnist_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.setenv(DATA_ENV, str(mnist_cache))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__tutorial__"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for number, block in enumerate(_python_blocks(page), 1):
            exec(compile(block, f"{page.name}, block {number}", "exec"), namespace)  # the page's own code
    assert printed.getvalue().strip()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)/]+\.png)\)", page.read_text())
    for picture in pictures:
        assert (tmp_path / picture).stat().st_size > 1000, picture  # written by the page's own code
        assert (TUTORIAL / picture).exists(), f"{picture} is not kept beside the page"
    if page.stem == "chapter-1":  # the book's session prints the book's lines
        assert re.match(r"Epoch 0: \d{4} / 10000\n", printed.getvalue())


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.stem)
def test_a_chapter_page_opens_as_a_notebook(page: Path) -> None:
    jupytext = pytest.importorskip("jupytext", reason="jupytext comes with the docs extra")
    notebook = jupytext.reads(page.read_text(), fmt="md")
    code = [cell.source.strip() for cell in notebook.cells if cell.cell_type == "code"]
    python = [source for source in code if not source.startswith("%%bash")]  # shell blocks become %%bash cells
    assert python == [block.strip() for block in _python_blocks(page)]
    assert len(code) == page.read_text().count("```python") + page.read_text().count("```bash")
