"""The mnist-nn command end to end: every subcommand through the real entry point, errors included."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_nn import __version__
from mnist_nn.cli import SUBCOMMANDS, main
from mnist_nn.data import MnistData


@pytest.fixture(scope="module")
def model(mnist_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.npz"
    assert main(["train", "--data-dir", str(mnist_cache), "--epochs", "2", "--quiet", "--save", str(path)]) == 0
    return path


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_version_and_help_through_python_dash_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mnist_nn", "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == f"mnist-nn {__version__}"
    result = subprocess.run(
        [sys.executable, "-m", "mnist_nn", "--help"], capture_output=True, text=True, check=True, timeout=60
    )
    for name in SUBCOMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_explains_its_options(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: mnist-nn {name}")
    assert out.count("--") >= 2


def test_unknown_command_and_no_command_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fly"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown command 'fly'" in err[0]
    assert main([]) == 2


def test_download_and_train_and_evaluate(mnist_cache: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["download", "--data-dir", str(mnist_cache)]) == 0
    assert main(["evaluate", str(model), "--data-dir", str(mnist_cache)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("Throughput:")
    assert main(["evaluate", str(model), "--mistakes", "-1"]) == 2


def _mnist_png(image: np.ndarray, path: Path, size: int = 140) -> Path:
    """A test digit as a user would have it: dark ink on white paper, enlarged."""
    ink = (255 - image.reshape(28, 28) * 255).astype(np.uint8)
    Image.fromarray(ink).resize((size, size), Image.Resampling.BILINEAR).save(path)
    return path


def test_predict_reads_clean_mnist_digits_back(
    model: Path, mnist: MnistData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnist_nn.models import load_model

    network = load_model(model).network
    predicted = network.predict(mnist.test.images[:40])
    chosen = [i for i in range(40) if predicted[i] == mnist.test.labels[i]][:5]
    paths = [_mnist_png(mnist.test.images[i], tmp_path / f"digit{i}.png") for i in chosen]
    out_json = tmp_path / "p.json"
    assert main(["predict", str(model), *map(str, paths), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "Probabilities: normalized sigmoid outputs"
    results = json.loads(out_json.read_text())
    assert [r["file"] for r in results] == [str(p) for p in paths]
    for r, i in zip(results, chosen, strict=True):
        assert r["prediction"] == mnist.test.labels[i]
        assert len(r["probabilities"]) == 10 and abs(sum(r["probabilities"]) - 1) < 1e-6
        assert f"{r['file']}: {r['prediction']} (" in out


def test_predict_on_a_drawn_digit_and_on_bad_files(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drawn = tmp_path / "one.png"
    canvas = Image.new("L", (120, 200), 255)
    ImageDraw.Draw(canvas).line([(70, 20), (64, 180)], fill=0, width=14)  # a "1", off center
    canvas.save(drawn)
    empty = tmp_path / "empty.png"
    Image.new("L", (50, 50), 255).save(empty)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert main(["predict", str(model), str(drawn), str(empty), str(text)]) == 2
    captured = capsys.readouterr()
    assert f"{drawn}: " in captured.out
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2
    assert str(empty) in errors[0] and "empty" in errors[0]
    assert str(text) in errors[1] and "not a readable image" in errors[1]
    assert main(["predict", str(tmp_path / "missing.npz"), str(drawn)]) == 2


def test_show_digits_predictions_and_mistakes(
    mnist_cache: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", "--count", "3", "--data-dir", str(mnist_cache)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "test #0: label 7" and len(out) == 3 * 29
    assert main(["show", "--mistakes", str(model), "--count", "2", "--data-dir", str(mnist_cache)]) == 0
    heads = [line for line in capsys.readouterr().out.splitlines() if line.startswith("test #")]
    assert len(heads) == 2 and all(line.endswith("<- wrong") for line in heads)
    assert main(["show", "--index", "10000", "--data-dir", str(mnist_cache)]) == 2


def test_show_mistakes_shows_a_page_and_says_how_many(
    mnist_cache: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnist_nn.data import load_mnist
    from mnist_nn.models import load_model

    test = load_mnist(mnist_cache).test
    wrong = np.flatnonzero(load_model(model).network.predict(test.images) != test.labels)
    assert len(wrong) > 10
    assert main(["show", "--mistakes", str(model), "--data-dir", str(mnist_cache)]) == 0
    out = capsys.readouterr().out.splitlines()
    heads = [line for line in out if line.startswith("test #")]
    assert heads[0].startswith(f"test #{wrong[0]}:") and len(heads) == 10
    assert out[-1] == (
        f"Shown: 10 of the {len(wrong):,} mistakes in test (10,000 examples); "
        f"--index {wrong[10]} shows the next ones, --count N more at a time."
    )
    start = int(wrong[-3])
    assert main(["show", "--mistakes", str(model), "--index", str(start), "--data-dir", str(mnist_cache)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"Shown: all 3 mistakes in test from #{start} on ({10_000 - start:,} examples)."
    assert main(["show", "--count", "0"]) == 2


def test_plot_from_a_model_and_from_a_benchmark(
    mnist_cache: Path, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plots"
    assert main(["plot", str(model), "--out", str(out), "--data-dir", str(mnist_cache)]) == 0
    assert _png_size(out / "curves.png") == (1000, 450)
    assert _png_size(out / "confusion.png") == (700, 600)
    assert (out / "mistakes.png").stat().st_size > 10_000
    bench = tmp_path / "b.json"
    assert (
        main(
            [
                "benchmark",
                "accuracy",
                "--quick",
                "--epochs",
                "1",
                "--data-dir",
                str(mnist_cache),
                "--json",
                str(bench),
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["plot", str(bench), "--out", str(out)]) == 0
    assert _png_size(out / "benchmark.png") == (800, 500)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    capsys.readouterr()
    assert main(["plot", str(bad), "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_train_writes_curves_with_plot(mnist_cache: Path, tmp_path: Path) -> None:
    assert (
        main(
            [
                "train",
                "--data-dir",
                str(mnist_cache),
                "--epochs",
                "1",
                "--hidden",
                "10",
                "--quiet",
                "--plot",
                str(tmp_path / "p"),
            ]
        )
        == 0
    )
    assert _png_size(tmp_path / "p" / "curves.png") == (1000, 450)
