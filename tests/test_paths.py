"""Where data and models go: a checkout keeps its ``data/`` and ``models/``, an installed tool one per-user cache.

The rules are tested on ``mnist_nn.config`` with the package's location
moved (``_PACKAGE_DIR``) and the environment set; one subprocess test runs
the package installed as a wheel installs it (the package folder alone in a
``site-packages``-like folder, no ``pyproject.toml`` beside it) from two
working directories and finds one cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_nn import config
from mnist_nn.cli import download_main, train_main
from mnist_nn.config import DATA_ENV, MIRROR_ENV, default_data_dir, default_models_dir, project_root
from mnist_nn.data.download import MNIST_FILES, ensure_files
from mnist_nn.errors import DownloadError

from .conftest import real_mirror

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mnist_nn"
# ``mnist-nn ARGS`` as its console script runs it, first printing where the package was imported from.
RUN_INSTALLED = (
    "import mnist_nn; from mnist_nn.cli.main import main; print(mnist_nn.__file__); raise SystemExit(main())"
)


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The package as if installed in ``site-packages`` (no pyproject.toml beside it), with HOME in tmp_path."""
    site = tmp_path / "site-packages"
    (site / "mnist_nn").mkdir(parents=True)
    monkeypatch.setattr(config, "_PACKAGE_DIR", site / "mnist_nn")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in (DATA_ENV, "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    return home


def test_a_checkout_keeps_its_data_and_models_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/elsewhere")  # a checkout does not use the per-user cache
    assert project_root() == ROOT
    assert default_data_dir() == ROOT / "data"
    assert default_models_dir() == ROOT / "models"


def test_an_installed_tool_uses_one_per_user_cache(installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert project_root() is None
    for cwd in (installed, installed.parent):  # wherever it runs
        monkeypatch.chdir(cwd)
        assert default_data_dir() == installed / ".cache" / "mnist-nn"
        assert default_models_dir() == installed / ".local" / "share" / "mnist-nn" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg/cache")
    monkeypatch.setenv("XDG_DATA_HOME", "/xdg/data")
    assert default_data_dir() == Path("/xdg/cache/mnist-nn")
    assert default_models_dir() == Path("/xdg/data/mnist-nn/models")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG rule: relative values are ignored
    assert default_data_dir() == installed / ".cache" / "mnist-nn"
    monkeypatch.setenv(DATA_ENV, "~/mnist")  # $MNIST_NN_DATA comes first, for both
    assert default_data_dir() == installed / "mnist"


def test_other_platforms_use_their_conventions(installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert default_data_dir() == installed / "Library" / "Caches" / "mnist-nn"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(installed / "AppData" / "Local"))
    assert default_data_dir() == installed / "AppData" / "Local" / "mnist-nn" / "Cache"
    assert default_models_dir() == installed / "AppData" / "Local" / "mnist-nn" / "models"


def test_help_names_the_default_folders(
    installed: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # argparse would wrap the paths
    for main in (download_main, train_main):
        with pytest.raises(SystemExit):
            main(["--help"])
    text = capsys.readouterr().out
    assert "project's data/" not in text
    assert f"$MNIST_NN_DATA, else the per-user cache {installed / '.cache' / 'mnist-nn'}" in text
    models = installed / ".local" / "share" / "mnist-nn" / "models"
    assert f"without PATH, {models / 'mnist-SIZES-seedSEED.npz'}" in text


def test_a_failed_first_download_leaves_no_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    empty_mirror = tmp_path / "mirror"  # the only mirror: offline, and at once
    empty_mirror.mkdir()
    cache = tmp_path / "new" / "deeper" / "cache"
    with pytest.raises(DownloadError):
        ensure_files(MNIST_FILES, cache, mirrors=[str(empty_mirror)])
    assert list(tmp_path.iterdir()) == [empty_mirror]  # new/deeper/cache all gone
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(DownloadError):
        ensure_files(MNIST_FILES, existing, mirrors=[str(empty_mirror)])
    assert existing.is_dir()  # a folder the user had is kept


def test_download_says_where_the_files_are(
    mnist_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert download_main(["--data-dir", str(mnist_cache)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"MNIST is in {mnist_cache}"
    monkeypatch.setenv(DATA_ENV, str(mnist_cache))
    assert download_main([]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"MNIST is in {mnist_cache} ($MNIST_NN_DATA)"


def test_installed_tool_downloads_once_per_user_from_any_folder(tmp_path: Path) -> None:
    mirror = real_mirror()
    site = tmp_path / "site-packages"
    shutil.copytree(PACKAGE, site / "mnist_nn", ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in (DATA_ENV, "XDG_CACHE_HOME", "XDG_DATA_HOME")}
    # The children run in other folders: a relative mirror (../shared/mnist) must not change meaning.
    mirror = mirror if "://" in mirror else os.path.abspath(mirror)
    env.update(HOME=str(home), PYTHONPATH=str(site), MNIST_NN_MIRROR=mirror)
    outputs = []
    for folder in (tmp_path / "one", tmp_path / "two"):
        folder.mkdir()
        result = subprocess.run(
            [sys.executable, "-c", RUN_INSTALLED, "download"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(str(site)), result.stdout  # the copy ran, not the checkout
        assert not (folder / "data").exists()
        outputs.append(result.stdout.splitlines())
    cache = home / ".cache" / "mnist-nn"
    assert sorted(p.name for p in cache.iterdir()) == sorted(f.name for f in MNIST_FILES)
    assert all(f"({cache / f.name})" in " ".join(outputs[0]) for f in MNIST_FILES)
    assert all("downloaded from" in line for line in outputs[0][1:5])
    assert all("already present and verified" in line for line in outputs[1][1:5])
    assert outputs[1][-1] == f"MNIST is in {cache} (the per-user cache, shared wherever mnist-nn runs; " + (
        "--data-dir or $MNIST_NN_DATA moves it)"
    )
