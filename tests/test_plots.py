"""The figures: each is a PNG of the documented size; bad inputs and a missing matplotlib raise one line.

Sizes are read from the PNG's IHDR chunk, so the tests need nothing beyond
matplotlib itself; they are skipped without it, except those that check
what happens when it is missing.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from mnist_nn.bench import AccuracyReport, SeedResult
from mnist_nn.cli.benchmark import benchmark_main
from mnist_nn.config import TrainConfig
from mnist_nn.data import MnistData
from mnist_nn.errors import ModelFileError, PlotError
from mnist_nn.metrics import Mistake
from mnist_nn.models import save_model
from mnist_nn.nn.network import Network
from mnist_nn.plots import (
    MISSING_MATPLOTLIB,
    load_benchmark_report,
    plot_benchmark,
    plot_confusion_matrix,
    plot_mistakes,
    plot_model,
    plot_training_curves,
    require_matplotlib,
)
from mnist_nn.train import EpochRecord, History, Run, fit

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="matplotlib is not installed (the 'plot' extra)"
)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header: the signature, then the IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def assert_png(path: Path, size: tuple[int, int]) -> None:
    """A non-empty PNG of ``size`` pixels, written without leftover temporary files."""
    assert path.is_file() and path.stat().st_size > 1000
    assert png_size(path) == size
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "a temporary file was left behind"


def history(epochs: int = 6) -> History:
    """A short run that improves, with one epoch's cost missing."""
    return History(
        [
            EpochRecord(
                epoch=e,
                validation_correct=9000 + 100 * e - (50 if e == epochs else 0),
                validation_total=10_000,
                train_cost=None if e == 3 else 0.1 / e,
                seconds=1.5,
                eta=3.0,
            )
            for e in range(1, epochs + 1)
        ]
    )


def confusion() -> list[list[int]]:
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 12, size=(10, 10)) + np.diag(rng.integers(900, 1100, size=10))
    return [[int(v) for v in row] for row in matrix]


def mistakes(n: int, images: int = 40) -> list[Mistake]:
    return [
        Mistake(index=(7 * i) % images, label=i % 10, predicted=(i + 3) % 10, confidence=0.99 - i / 100)
        for i in range(n)
    ]


def accuracy_report(preset: str, accuracies: list[float], sizes: tuple[int, ...] = (784, 30, 10)) -> dict[str, Any]:
    """A document exactly as ``benchmark.py accuracy --json`` writes it, through JSON and back."""
    runs = [
        SeedResult(
            seed=seed,
            served_epoch=2,
            validation_correct=round(a * 10_000),
            test_correct=round(a * 10_000),
            last_epoch=2,
            last_validation_correct=round(a * 10_000) - 3,
            last_test_correct=round(a * 10_000) - 5,
            validation_total=10_000,
            test_total=10_000,
            seconds=1.0,
            blas_threads=1,
        )
        for seed, a in enumerate(accuracies, 1)
    ]
    report = AccuracyReport(
        preset=preset,
        config=TrainConfig(layers=tuple(f"dense{n}" for n in sizes[1:]), epochs=2),
        train_size=5_000,
        jobs=1,
        runs=runs,
        environment={},
    )
    record: dict[str, Any] = json.loads(json.dumps({**report.to_dict(), "version": "0.1.0"}))
    return record


# --- sizes -----------------------------------------------------------------------------


@needs_matplotlib
def test_training_curves_from_a_history_or_its_records(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "curves.png"
    assert plot_training_curves(history(), path, title="a run") == path
    assert_png(path, (1000, 450))
    # The records a model file stores; then records with accuracy only, and one epoch without validation.
    assert_png(plot_training_curves(history().to_list(), tmp_path / "records.png"), (1000, 450))
    records = [{"epoch": 1, "validation_accuracy": 0.9}, {"epoch": 2, "validation_accuracy": 0.92}]
    assert_png(plot_training_curves(records, tmp_path / "no-cost.png"), (1000, 450))
    assert_png(plot_training_curves([{"epoch": 1, "train_cost": 0.3}], tmp_path / "cost-only.png"), (1000, 450))


@needs_matplotlib
def test_an_existing_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "curves.png"
    path.write_bytes(b"old")
    plot_training_curves(history(2), path)
    assert_png(path, (1000, 450))


@needs_matplotlib
def test_confusion_matrix(tmp_path: Path) -> None:
    path = plot_confusion_matrix(confusion(), tmp_path / "confusion.png", title="test: 9512 / 10000")
    assert_png(path, (700, 600))
    as_array = plot_confusion_matrix(np.array(confusion()), tmp_path / "array.png")  # type: ignore[arg-type]
    assert_png(as_array, (700, 600))


@needs_matplotlib
def test_mistakes_grid_is_150_by_170_pixels_per_digit(tmp_path: Path) -> None:
    images = np.random.default_rng(1).random((40, 784), dtype=np.float32)
    assert_png(plot_mistakes(images, mistakes(10), tmp_path / "a.png", columns=4), (4 * 150, 3 * 170))
    assert_png(plot_mistakes(images, mistakes(10), tmp_path / "b.png", columns=4, title="t"), (600, 3 * 170 + 40))
    # Fewer mistakes than columns: one row, only as wide as needed.
    assert_png(plot_mistakes(images, mistakes(3), tmp_path / "c.png"), (3 * 150, 170))
    uint8 = (images * 255).astype(np.uint8)
    assert_png(plot_mistakes(uint8, mistakes(8), tmp_path / "d.png"), (8 * 150, 170))


@needs_matplotlib
def test_confusion_and_mistakes_name_the_classes_when_given(tmp_path: Path) -> None:
    names = [f"class {k}" for k in range(10)]
    assert_png(plot_confusion_matrix(confusion(), tmp_path / "c.png", classes=names), (700, 600))
    with pytest.raises(ValueError, match="expected a name for each of the 10 classes, got 9"):
        plot_confusion_matrix(confusion(), tmp_path / "c9.png", classes=names[:9])
    images = np.random.default_rng(1).random((40, 784), dtype=np.float32)
    assert_png(plot_mistakes(images, mistakes(3), tmp_path / "m.png", classes=names), (3 * 150, 170))
    with pytest.raises(ValueError, match="without a name among the 2 classes"):
        plot_mistakes(images, mistakes(3), tmp_path / "m2.png", classes=names[:2])


@needs_matplotlib
def test_benchmark_from_one_or_several_reports(tmp_path: Path) -> None:
    one = accuracy_report("nielsen-ch1", [0.951, 0.948, 0.953])
    assert_png(plot_benchmark(one, tmp_path / "one.png"), (800, 500))
    single_seed = accuracy_report("best", [0.985], sizes=(784, 1024, 10))
    assert single_seed["summary"]["test_accuracy"]["std"] is None
    several = [one, single_seed, accuracy_report("nielsen-ch3", [0.97, 0.972])]
    assert_png(plot_benchmark(several, tmp_path / "several.png", title="presets"), (800, 500))
    # Beyond six configurations the chart widens by 120 px for each.
    assert_png(plot_benchmark([one] * 8, tmp_path / "eight.png"), (800 + 2 * 120, 500))


@needs_matplotlib
def test_benchmark_report_read_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(accuracy_report("nielsen-ch1", [0.95, 0.96])))
    report = load_benchmark_report(path)
    assert report["action"] == "accuracy"
    assert_png(plot_benchmark(report, tmp_path / "bench.png"), (800, 500))


@needs_matplotlib
def test_no_figure_outlives_its_call(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    def live_figures() -> int:
        gc.collect()
        return sum(isinstance(o, Figure) for o in gc.get_objects())

    before = live_figures()
    plot_training_curves(history(), tmp_path / "a.png")
    plot_confusion_matrix(confusion(), tmp_path / "b.png")
    plot_benchmark(accuracy_report("nielsen-ch1", [0.95, 0.96]), tmp_path / "c.png")
    assert live_figures() == before
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or pyplot.get_fignums() == []


# --- model files -----------------------------------------------------------------------


def synthetic_split(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, size=n)


@needs_matplotlib
def test_plot_model_without_history_draws_confusion_and_mistakes(tmp_path: Path) -> None:
    model = tmp_path / "random.npz"
    save_model(model, Network((784, 8, 10), seed=0), {})
    images, labels = synthetic_split()
    out = tmp_path / "out"
    paths = plot_model(model, images, labels, out, top=5)
    assert paths == [out / "confusion.png", out / "mistakes.png"]
    assert_png(paths[0], (700, 600))
    assert_png(paths[1], (5 * 150, 170 + 40))
    # top=0: no mistakes figure.
    assert plot_model(model, images, labels, tmp_path / "out0", top=0) == [tmp_path / "out0" / "confusion.png"]


@needs_matplotlib
def test_plot_model_names_the_file_whose_history_is_malformed(tmp_path: Path) -> None:
    model = tmp_path / "bad.npz"
    save_model(model, Network((784, 8, 10), seed=0), {"history": [{"epoch": "one"}]})
    with pytest.raises(ModelFileError) as info:
        plot_model(model, *synthetic_split(), tmp_path / "out")
    message = str(info.value)
    assert message.startswith(f"{model}: cannot plot its history: malformed history record 1") and "\n" not in message


@needs_matplotlib
def test_plot_model_of_an_unreadable_file_is_a_model_file_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such file"):
        plot_model(tmp_path / "missing.npz", *synthetic_split(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- real MNIST ------------------------------------------------------------------------


@needs_matplotlib
@pytest.mark.real_data
def test_plot_model_end_to_end_on_a_model_trained_for_one_epoch(mnist: MnistData, tmp_path: Path) -> None:
    run = Run.start(TrainConfig(layers=("dense20", "dense10"), epochs=1, seed=3))
    validation = (mnist.validation.images[:1000], mnist.validation.labels[:1000])
    fit(run, mnist.train.images[:3000], mnist.train.labels[:3000], validation=validation)
    record = run.history.epochs[-1]
    model = tmp_path / "tiny.npz"
    # The metadata cli._save_run writes, for the fields the plots read.
    save_model(
        model,
        run.served_network(),
        {
            "config": run.config.to_dict(),
            "history": run.history.to_list(),
            "epoch": 1,
            "epochs_completed": 1,
            "served": "best",
            "validation_correct": record.validation_correct,
            "validation_total": record.validation_total,
            "test_correct": None,
            "test_total": len(mnist.test),
            "mnist_sha256": mnist.digests,
        },
    )
    out = tmp_path / "plots" / "tiny"
    paths = plot_model(model, mnist.test.images[:500], mnist.test.labels[:500], out, top=12, split="test")
    assert paths == [out / "curves.png", out / "confusion.png", out / "mistakes.png"]
    assert_png(paths[0], (1000, 450))
    assert_png(paths[1], (700, 600))
    # One epoch on 3,000 images is far from perfect: at least 12 mistakes in 500, 8 to a row, and a title.
    assert_png(paths[2], (8 * 150, 2 * 170 + 40))


@needs_matplotlib
@pytest.mark.real_data
def test_benchmark_plot_of_a_real_quick_accuracy_run(mnist_cache: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "accuracy.json"
    argv = ["accuracy", "--quick", "--epochs", "1", "--quiet", "--data-dir", str(mnist_cache)]
    assert benchmark_main([*argv, "--json", str(report_path)]) == 0
    report = load_benchmark_report(report_path)
    assert len(report["runs"]) == 2
    assert_png(plot_benchmark([report, report], tmp_path / "accuracy.png"), (800, 500))


# --- without matplotlib ----------------------------------------------------------------


def test_the_module_imports_without_matplotlib() -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None; import mnist_nn.plots; "
        "assert [m for m in sys.modules if m.startswith('matplotlib.')] == []"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_every_plot_without_matplotlib_is_one_line_saying_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    images = np.zeros((40, 784))
    calls: list[Callable[[], object]] = [
        require_matplotlib,
        lambda: plot_training_curves(history(), tmp_path / "a.png"),
        lambda: plot_confusion_matrix(confusion(), tmp_path / "b.png"),
        lambda: plot_mistakes(images, mistakes(3), tmp_path / "c.png"),
        lambda: plot_benchmark(accuracy_report("nielsen-ch1", [0.95]), tmp_path / "d.png"),
        # Checked before the model is loaded: the missing file is not what is reported.
        lambda: plot_model(tmp_path / "missing.npz", images, np.zeros(40, dtype=np.int64), tmp_path / "out"),
    ]
    for call in calls:
        with pytest.raises(PlotError) as info:
            call()
        assert str(info.value) == MISSING_MATPLOTLIB == "plots need matplotlib: pip install 'mnist-nn[plot]'"
    assert list(tmp_path.iterdir()) == []


# --- malformed inputs ------------------------------------------------------------------


def _speed_report() -> dict[str, Any]:
    return {"action": "speed", "plan": {}, "training": []}


def _with_summary(**stats: Any) -> dict[str, Any]:
    report = accuracy_report("nielsen-ch1", [0.95, 0.96])
    report["summary"]["test_accuracy"].update(stats)
    return report


IMAGES = np.zeros((40, 784))

MALFORMED: list[tuple[str, Any, str]] = [
    ("empty history", lambda p: plot_training_curves([], p), "no epochs to plot: the history is empty"),
    (
        "not records",
        lambda p: plot_training_curves(cast(Any, "epochs"), p),
        "expected a History or a list of epoch records",
    ),
    (
        "record not a mapping",
        lambda p: plot_training_curves(cast(Any, [3]), p),
        "malformed history record 1: expected a mapping",
    ),
    ("no epoch", lambda p: plot_training_curves([{"train_cost": 1.0}], p), "expected a non-negative integer 'epoch'"),
    (
        "decreasing epochs",
        lambda p: plot_training_curves([{"epoch": 2, "train_cost": 1.0}, {"epoch": 1, "train_cost": 0.5}], p),
        "malformed history record 2: epoch 1 after epoch 2",
    ),
    (
        "count above total",
        lambda p: plot_training_curves([{"epoch": 1, "validation_correct": 11, "validation_total": 10}], p),
        "expected 0 <= validation_correct <= validation_total",
    ),
    (
        "cost not a number",
        lambda p: plot_training_curves([{"epoch": 1, "train_cost": "low"}], p),
        "expected a finite train_cost or None, got 'low'",
    ),
    ("nothing recorded", lambda p: plot_training_curves([{"epoch": 1}], p), "nothing to plot"),
    ("empty confusion", lambda p: plot_confusion_matrix([], p), "expected a non-empty square matrix"),
    ("ragged confusion", lambda p: plot_confusion_matrix([[1, 2], [3]], p), "rows of different lengths"),
    ("non-square confusion", lambda p: plot_confusion_matrix([[1, 2, 3], [4, 5, 6]], p), "got shape (2, 3)"),
    ("negative count", lambda p: plot_confusion_matrix([[1, -1], [0, 2]], p), "non-negative integer counts"),
    (
        "fractional count",
        lambda p: plot_confusion_matrix(cast(Any, [[1.5, 0], [0, 1]]), p),
        "non-negative integer counts",
    ),
    ("text counts", lambda p: plot_confusion_matrix(cast(Any, [["a", "b"], ["c", "d"]]), p), "expected integer counts"),
    ("no mistakes", lambda p: plot_mistakes(IMAGES, [], p), "no mistakes to plot"),
    (
        "square images",
        lambda p: plot_mistakes(np.zeros((5, 28, 28)), mistakes(1, 5), p),
        "expected images of shape (n, 784) of numbers, got (5, 28, 28)",
    ),
    ("index outside", lambda p: plot_mistakes(IMAGES[:5], mistakes(2, 40)[1:], p), "outside the 5 images"),
    ("no columns", lambda p: plot_mistakes(IMAGES, mistakes(2), p, columns=0), "expected columns >= 1, got 0"),
    ("no reports", lambda p: plot_benchmark([], p), "no benchmark reports to plot"),
    (
        "a speed report",
        lambda p: plot_benchmark(_speed_report(), p),
        "report 1: not a benchmark accuracy report (expected action 'accuracy', got 'speed')",
    ),
    (
        "no summary",
        lambda p: plot_benchmark({"action": "accuracy"}, p),
        "report 1: not a benchmark accuracy report (no summary.test_accuracy object)",
    ),
    (
        "the second is bad",
        lambda p: plot_benchmark([_with_summary(), _with_summary(mean=95.5)], p),
        "report 2: not a benchmark accuracy report (summary.test_accuracy.mean should be a number in [0, 1]",
    ),
    ("negative std", lambda p: plot_benchmark(_with_summary(std=-0.1), p), "std should be None or a number >= 0"),
    ("mean outside", lambda p: plot_benchmark(_with_summary(mean=0.5), p), "expected min <= mean <= max"),
]


@needs_matplotlib
@pytest.mark.parametrize(("call", "message"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_inputs_raise_one_line(call: Any, message: str, tmp_path: Path) -> None:
    path = tmp_path / "figure.png"
    with pytest.raises(ValueError) as info:
        call(path)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_load_benchmark_report_names_the_file(tmp_path: Path) -> None:
    not_json = tmp_path / "notes.json"
    not_json.write_text("accuracy: 95%\n")
    with pytest.raises(ValueError, match=r"notes\.json: not a benchmark accuracy report \(not JSON: ") as info:
        load_benchmark_report(not_json)
    assert "\n" not in str(info.value)
    speed = tmp_path / "speed.json"
    speed.write_text(json.dumps(_speed_report()))
    with pytest.raises(ValueError, match=r"speed\.json: not a benchmark accuracy report \(expected action"):
        load_benchmark_report(speed)
