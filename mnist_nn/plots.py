"""Figures as PNG files: training curves, confusion matrices, mistakes, benchmark spreads and sweeps.

matplotlib is an optional dependency (the ``plot`` extra: ``pip install
'mnist-nn[plot]'``). It is imported only when a figure is drawn, and every
function raises ``PlotError`` with one line saying how to install it when it
is missing; importing this module never needs it. ``require_matplotlib()``
checks up front, e.g. before a long training run that ends with a plot.

Figures are ``matplotlib.figure.Figure`` objects on the non-interactive Agg
canvas, never pyplot's: no global figure registry, no GUI backend, nothing
left open after a call. Each is rendered to PNG bytes in memory and written
with ``mnist_nn.files.atomic_write``, so a reader never sees a half-written
image. Sizes are exact (no ``bbox_inches="tight"``) at ``DPI`` dots per inch:

    training curves     1000 x 450 px   (CURVES_SIZE)
    confusion matrix     700 x 600 px   (CONFUSION_SIZE)
    mistakes            150 x 170 px per image, min(columns, n) across,
                        plus 40 px for a title (MISTAKE_CELL, TITLE_HEIGHT)
    benchmark            800 x 500 px for up to 6 reports, 120 px wider
                        for each one more (BENCHMARK_SIZE, BENCHMARK_SLOT)
    sweep                800 x 500 px (SWEEP_SIZE)

Inputs are checked where they enter: empty or malformed ones raise
ValueError with a one-line message.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeGuard

import numpy as np
import numpy.typing as npt

from mnist_nn.config import IMAGE_PIXELS, IMAGE_SIDE, dense_sizes
from mnist_nn.data.datasets import DIGITS
from mnist_nn.errors import ModelFileError, PlotError
from mnist_nn.files import PathLike, atomic_write
from mnist_nn.metrics import Mistake, evaluate_network, format_count
from mnist_nn.models import load_model
from mnist_nn.nn.layers import Conv2D
from mnist_nn.text import short
from mnist_nn.train.history import History

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100  # dots per inch of every PNG: sizes below are in inches, so pixels = 100 x inches
CURVES_SIZE = (10.0, 4.5)  # 1000 x 450 px: validation accuracy and training cost side by side
CONFUSION_SIZE = (7.0, 6.0)  # 700 x 600 px: the matrix and its colour bar
MISTAKE_CELL = (1.5, 1.7)  # 150 x 170 px per image: wide enough for "true 7 / pred 2 (0.98)"
TITLE_HEIGHT = 0.4  # 40 px added above the mistakes grid when it has a title
BENCHMARK_SIZE = (8.0, 5.0)  # 800 x 500 px, room for BENCHMARK_SLOTS configurations
BENCHMARK_SLOTS = 6
BENCHMARK_SLOT = 1.2  # 120 px more for each configuration beyond BENCHMARK_SLOTS

MISSING_MATPLOTLIB = "plots need matplotlib: pip install 'mnist-nn[plot]'"


# --- matplotlib ----------------------------------------------------------------------


def require_matplotlib() -> None:
    """Import matplotlib now, so that a command can refuse before it trains rather than after.

    Raises:
        PlotError: matplotlib is not installed (the one line says how to install it).
    """
    try:
        # The package first: a test (or a user) may block it with sys.modules["matplotlib"] = None
        # while submodules imported earlier are still cached.
        importlib.import_module("matplotlib")
        importlib.import_module("matplotlib.backends.backend_agg")
    except ImportError:
        raise PlotError(MISSING_MATPLOTLIB) from None


def _new_figure(width: float, height: float) -> Figure:
    """A width x height inch figure on its own Agg canvas (no pyplot), laid out by constrained layout."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(_whole_pixels(width), _whole_pixels(height)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _whole_pixels(inches: float) -> float:
    """``inches`` moved to a whole number of pixels and a quarter more, so every matplotlib renders that number.

    3 x 1.7 inches is 509.99999999999994 px in floating point: matplotlib 3.8 truncates that
    to 509, newer releases round it to 510. n + 1/4 pixels is n either way.
    """
    return (round(inches * DPI) + 0.25) / DPI


def _save(fig: Figure, path: PathLike) -> Path:
    """Render ``fig`` to PNG bytes, write them to ``path`` atomically and release the figure."""
    path = Path(path)
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
    finally:
        fig.clear()  # breaks the figure's reference cycles now rather than at the next collection
    data = buffer.getvalue()

    def write(f: IO[bytes]) -> None:
        f.write(data)

    atomic_write(path, write)
    return path


# --- checking inputs -----------------------------------------------------------------


def _is_int(value: Any) -> TypeGuard[int]:
    """An integer that is not a bool (NumPy integers included)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _is_real(value: Any) -> TypeGuard[float]:
    """A finite real number that is not a bool (NumPy scalars included)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_) and math.isfinite(float(value))


def _is_list(value: Any) -> TypeGuard[Sequence[Any]]:
    """A sequence of items, not a string."""
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


# --- training curves -----------------------------------------------------------------


@dataclass(frozen=True)
class _Curves:
    """A history as plot coordinates: epochs, validation accuracy in percent and cost, None where missing."""

    epochs: list[int]
    accuracy: list[float | None]
    cost: list[float | None]

    def best(self) -> int | None:
        """Index of the earliest epoch with the highest validation accuracy (``History.best``'s choice)."""
        scored = [(a, -i) for i, a in enumerate(self.accuracy) if a is not None]
        return -max(scored)[1] if scored else None


def _curves(history: Sequence[Mapping[str, Any]] | History) -> _Curves:
    """Read ``History.to_list()``-style records, checking each."""
    records: Any = history.to_list() if isinstance(history, History) else history
    if not _is_list(records):
        raise ValueError(f"expected a History or a list of epoch records, got {type(history).__name__}")
    if not records:
        raise ValueError("no epochs to plot: the history is empty")
    epochs: list[int] = []
    accuracy: list[float | None] = []
    cost: list[float | None] = []
    for i, r in enumerate(records, 1):
        bad = f"malformed history record {i}:"
        if not isinstance(r, Mapping):
            raise ValueError(f"{bad} expected a mapping, got {type(r).__name__}")
        epoch = r.get("epoch")
        if not _is_int(epoch) or epoch < 0:
            raise ValueError(f"{bad} expected a non-negative integer 'epoch', got {short(epoch)}")
        if epochs and epoch <= epochs[-1]:
            raise ValueError(f"{bad} epoch {epoch} after epoch {epochs[-1]}; expected increasing epochs")
        correct, total = r.get("validation_correct"), r.get("validation_total")
        fraction = r.get("validation_accuracy")
        if correct is not None or total is not None:
            if not (_is_int(correct) and _is_int(total) and 0 <= correct <= total and total > 0):
                raise ValueError(
                    f"{bad} expected 0 <= validation_correct <= validation_total, "
                    f"got {short(correct)} and {short(total)}"
                )
            accuracy.append(100.0 * correct / total)
        elif fraction is not None:
            if not _is_real(fraction) or not 0.0 <= fraction <= 1.0:
                raise ValueError(f"{bad} expected a validation_accuracy in [0, 1], got {short(fraction)}")
            accuracy.append(100.0 * float(fraction))
        else:
            accuracy.append(None)
        train_cost = r.get("train_cost")
        if train_cost is not None and not _is_real(train_cost):
            raise ValueError(f"{bad} expected a finite train_cost or None, got {short(train_cost)}")
        cost.append(float(train_cost) if train_cost is not None else None)
        epochs.append(int(epoch))
    if all(a is None for a in accuracy) and all(c is None for c in cost):
        raise ValueError("nothing to plot: the history has neither validation counts nor training costs")
    return _Curves(epochs, accuracy, cost)


def _series(values: Sequence[float | None]) -> npt.NDArray[np.float64]:
    """Values with NaN for None, where matplotlib breaks the line."""
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _empty_panel(ax: Axes, message: str) -> None:
    """A panel that says why it has no data."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_training_curves(history: Sequence[Mapping[str, Any]] | History, path: PathLike, *, title: str = "") -> Path:
    """Validation accuracy and training cost per epoch, side by side, as a 1000 x 450 px PNG.

    The best epoch (the earliest with the highest validation accuracy, the one
    a run serves) is starred and marked by a dashed line in both panels.
    Missing values (None) leave gaps; a panel with no values at all says so.
    A training cost that spans more than a factor of 10 is drawn on a log scale.

    Args:
        history: a ``History``, or its ``to_list()`` records (e.g. a model
            file's ``metadata["history"]``): mappings with an integer
            ``epoch`` (increasing), and ``validation_correct`` and
            ``validation_total`` (or ``validation_accuracy`` in [0, 1]) and
            ``train_cost``, each of which may be None or absent.
        path: the PNG file to write; its folder is created if missing.
        title: a title above both panels ("" for none).

    Returns:
        ``path``.

    Raises:
        ValueError: an empty history, a malformed record, or one with neither
            validation counts nor costs anywhere.
        PlotError: matplotlib is not installed.
        OSError: the file cannot be written.
    """
    return _draw_curves(_curves(history), Path(path), title)


def _draw_curves(curves: _Curves, path: Path, title: str) -> Path:
    """``plot_training_curves`` after the records are read."""
    fig = _new_figure(*CURVES_SIZE)
    from matplotlib.ticker import MaxNLocator

    acc_ax, cost_ax = fig.subplots(1, 2)
    epochs = np.array(curves.epochs)
    best = curves.best()
    # At least half an epoch either side, or one epoch's axis would tick at 0.96, 0.98, ...
    pad = max(0.5, 0.03 * (curves.epochs[-1] - curves.epochs[0]))
    for ax in (acc_ax, cost_ax):
        ax.set_xlabel("epoch")
        ax.set_xlim(curves.epochs[0] - pad, curves.epochs[-1] + pad)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
    if best is not None:
        best_epoch, best_accuracy = curves.epochs[best], curves.accuracy[best]
        acc_ax.plot(epochs, _series(curves.accuracy), marker="o", markersize=3, color="C0")
        acc_ax.plot(
            [best_epoch],
            [best_accuracy],
            marker="*",
            markersize=14,
            linestyle="none",
            color="C3",
            label=f"best: epoch {best_epoch}, {best_accuracy:.2f}%",
            clip_on=False,  # a best epoch at the edge keeps its whole star
        )
        acc_ax.set_ylabel("validation accuracy (%)")
        acc_ax.legend(loc="lower right")
        for ax in (acc_ax, cost_ax):
            ax.axvline(best_epoch, color="C3", linestyle="--", linewidth=1, alpha=0.6)
    else:
        _empty_panel(acc_ax, "no validation data")
    acc_ax.set_title("validation accuracy")
    costs = [c for c in curves.cost if c is not None]
    if costs:
        cost_ax.plot(epochs, _series(curves.cost), marker="o", markersize=3, color="C1")
        cost_ax.set_ylabel("training cost")
        if min(costs) > 0 and max(costs) > 10 * min(costs):
            cost_ax.set_yscale("log")
    else:
        _empty_panel(cost_ax, "training cost not recorded")
    cost_ax.set_title("training cost (mean over the epoch)")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# --- confusion matrix ----------------------------------------------------------------


def _confusion_array(confusion: Sequence[Sequence[int]]) -> npt.NDArray[np.int64]:
    """The counts as a checked (n, n) int64 array."""
    try:
        matrix = np.asarray(confusion)
    except ValueError:  # ragged rows; numpy's message spans several lines
        raise ValueError("expected a square matrix of counts, got rows of different lengths") from None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"expected a non-empty square matrix of counts, got shape {matrix.shape}")
    if matrix.dtype.kind not in "iuf":
        raise ValueError(f"expected integer counts, got values of type {matrix.dtype}")
    if not np.isfinite(matrix).all() or (matrix < 0).any() or (matrix != np.round(matrix)).any():
        raise ValueError("expected non-negative integer counts in the confusion matrix")
    return matrix.astype(np.int64)


def plot_confusion_matrix(
    confusion: Sequence[Sequence[int]], path: PathLike, *, title: str = "", classes: Sequence[str] | None = None
) -> Path:
    """A heat map of the confusion matrix with the count in each cell, as a 700 x 600 px PNG.

    Rows are the true digit and columns the predicted one, as in
    ``Evaluation.confusion``. A cell's colour is its share of the row (the
    true digit's images) on a square-root scale, so that a 1% confusion is
    still visible beside a 98% diagonal.

    Args:
        confusion: (n, n) non-negative integer counts, n = 10 for MNIST.
        path: the PNG file to write; its folder is created if missing.
        title: a title above the matrix ("" for none).
        classes: the name of each class, as the ticks' labels (None: the digits, numbered).

    Returns:
        ``path``.

    Raises:
        ValueError: not a non-empty square matrix of non-negative integers, or a name for each class missing.
        PlotError: matplotlib is not installed.
        OSError: the file cannot be written.
    """
    matrix = _confusion_array(confusion)
    n = matrix.shape[0]
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    fig = _new_figure(*CONFUSION_SIZE)
    from matplotlib.colors import PowerNorm

    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", norm=norm)
    fontsize = max(4.0, min(9.0, 90.0 / n))
    for true in range(n):
        for predicted in range(n):
            count = int(matrix[true, predicted])
            shade = float(norm(share[true, predicted]))
            color = "white" if shade > 0.6 else ("0.6" if count == 0 else "black")
            ax.text(predicted, true, str(count), ha="center", va="center", fontsize=fontsize, color=color)
    ticks = range(n) if n <= 20 else range(0, n, max(1, n // 10))
    ax.set_xticks(list(ticks))
    ax.set_yticks(list(ticks))
    what = "digit"
    if classes is not None:
        if len(classes) != n:
            raise ValueError(f"expected a name for each of the {n} classes, got {len(classes)}")
        what = "class"
        ax.set_xticklabels([classes[k] for k in ticks], rotation=45, ha="right", fontsize=fontsize)
        ax.set_yticklabels([classes[k] for k in ticks], fontsize=fontsize)
    ax.set_xlabel(f"predicted {what}")
    ax.set_ylabel(f"true {what}")
    fig.colorbar(image, ax=ax, label=f"share of the true {what}'s images")
    if title:
        ax.set_title(title)
    return _save(fig, path)


# --- mistakes --------------------------------------------------------------------------


def plot_mistakes(
    images: npt.ArrayLike,
    mistakes: Sequence[Mistake],
    path: PathLike,
    *,
    columns: int = 8,
    title: str = "",
    classes: Sequence[str] | None = None,
) -> Path:
    """A grid of misclassified digits, each captioned "true 7 / pred 2 (0.98)" (with ``classes``, by name).

    The image is 150 x 170 px per digit, ``min(columns, len(mistakes))``
    digits across and as many rows as needed, plus 40 px for a title.

    Args:
        images: (n, 784) pixels of the split the mistakes index into, in
            [0, 1] (or 0..255), e.g. ``data.test.images``.
        mistakes: the mistakes to show, in order, e.g. ``Evaluation.mistakes``;
            each ``index`` is a row of ``images``.
        path: the PNG file to write; its folder is created if missing.
        columns: digits per row, at least 1.
        title: a title above the grid ("" for none).
        classes: the name of each class for the captions (None: the digits).

    Returns:
        ``path``.

    Raises:
        ValueError: no mistakes, images of the wrong shape, an index outside
            the images, a label without a name, or columns < 1.
        PlotError: matplotlib is not installed.
        OSError: the file cannot be written.
    """
    pixels = np.asarray(images)
    if pixels.ndim != 2 or pixels.shape[1] != IMAGE_PIXELS or pixels.dtype.kind not in "iuf":
        raise ValueError(f"expected images of shape (n, {IMAGE_PIXELS}) of numbers, got {pixels.shape} {pixels.dtype}")
    if not _is_int(columns) or columns < 1:
        raise ValueError(f"expected columns >= 1, got {short(columns)}")
    if not mistakes:
        raise ValueError("no mistakes to plot")
    for i, m in enumerate(mistakes, 1):
        if not isinstance(m, Mistake):
            raise ValueError(f"expected Mistake records, got {type(m).__name__} as mistake {i}")
        if not 0 <= m.index < pixels.shape[0]:
            raise ValueError(f"mistake {i} has index {m.index}, outside the {pixels.shape[0]} images")
        if classes is not None and not (0 <= m.label < len(classes) and 0 <= m.predicted < len(classes)):
            raise ValueError(f"mistake {i} has a label or prediction without a name among the {len(classes)} classes")
    top = 255.0 if pixels.dtype.kind in "iu" or float(np.nanmax(pixels)) > 1.0 else 1.0
    across = min(columns, len(mistakes))
    rows = math.ceil(len(mistakes) / across)
    cell_width, cell_height = MISTAKE_CELL
    fig = _new_figure(across * cell_width, rows * cell_height + (TITLE_HEIGHT if title else 0.0))
    axes = fig.subplots(rows, across, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, m in zip(axes.flat, mistakes, strict=False):
        digit = pixels[m.index].reshape(IMAGE_SIDE, IMAGE_SIDE)
        ax.imshow(digit, cmap="gray_r", vmin=0.0, vmax=top, interpolation="nearest")
        if classes is None:
            ax.set_title(f"true {m.label} / pred {m.predicted} ({m.confidence:.2f})", fontsize=8)
        else:
            ax.set_title(f"{classes[m.label]}\n/ {classes[m.predicted]} ({m.confidence:.2f})", fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# --- benchmark -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spread:
    """One accuracy report's test accuracies, as fractions in [0, 1]."""

    label: str
    mean: float
    std: float | None
    low: float
    high: float
    runs: list[float]  # each seed's, when the report lists its runs


def _fraction(value: Any, what: str, bad: str) -> float:
    """A finite number in [0, 1], or ValueError."""
    if not _is_real(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{bad} ({what} should be a number in [0, 1], got {short(value)})")
    return float(value)


def _spread(report: Any, where: str) -> _Spread:
    """The test-accuracy spread of one ``AccuracyReport.to_dict()`` document."""
    bad = f"{where}: not a benchmark accuracy report"
    if not isinstance(report, Mapping):
        raise ValueError(f"{bad} (expected a JSON object, got {type(report).__name__})")
    action = report.get("action")
    if action != "accuracy":
        raise ValueError(f"{bad} (expected action 'accuracy', got {short(action)})")
    summary = report.get("summary")
    stats = summary.get("test_accuracy") if isinstance(summary, Mapping) else None
    if not isinstance(stats, Mapping):
        raise ValueError(f"{bad} (no summary.test_accuracy object)")
    mean = _fraction(stats.get("mean"), "summary.test_accuracy.mean", bad)
    low = _fraction(stats.get("min"), "summary.test_accuracy.min", bad)
    high = _fraction(stats.get("max"), "summary.test_accuracy.max", bad)
    std = stats.get("std")
    if std is not None and (not _is_real(std) or std < 0):
        raise ValueError(f"{bad} (summary.test_accuracy.std should be None or a number >= 0, got {short(std)})")
    if not low - 1e-12 <= mean <= high + 1e-12:
        raise ValueError(f"{bad} (expected min <= mean <= max, got {low}, {mean}, {high})")
    runs: list[float] = []
    listed = report.get("runs", [])
    if not _is_list(listed):
        raise ValueError(f"{bad} (runs should be a list, got {type(listed).__name__})")
    for i, run in enumerate(listed, 1):
        value = run.get("test_accuracy") if isinstance(run, Mapping) else None
        runs.append(_fraction(value, f"runs[{i}].test_accuracy", bad))
    return _Spread(_label(report), mean, float(std) if std is not None else None, low, high, runs)


def _label(report: Mapping[str, Any]) -> str:
    """Three short lines naming a report's configuration: preset, sizes, epochs and training images."""
    preset = report.get("preset")
    config = report.get("config")
    config = config if isinstance(config, Mapping) else {}
    sizes, layers = config.get("sizes"), config.get("layers")  # reports of earlier versions hold sizes
    if not _is_list(sizes) and isinstance(layers, list) and layers and all(isinstance(s, str) for s in layers):
        inputs = config.get("inputs", IMAGE_PIXELS)
        sizes = dense_sizes(tuple(layers), inputs if _is_int(inputs) else IMAGE_PIXELS) or layers
    lines = [str(preset) if preset else "custom"]
    if _is_list(sizes):
        lines.append("-".join(str(n) for n in sizes))
    details = []
    if _is_int(config.get("epochs")):
        details.append(f"{config['epochs']} ep")
    if _is_int(report.get("train_size")):
        details.append(f"{report['train_size']:,} img")
    if details:
        lines.append(", ".join(details))
    return "\n".join(lines)


def load_benchmark_report(path: PathLike) -> dict[str, Any]:
    """Read a JSON file written by ``benchmark.py accuracy --json`` and check it can be plotted.

    Raises:
        ValueError: not JSON, or not an accuracy report ("{path}: not a benchmark accuracy report (...)").
        OSError: the file cannot be read.
    """
    report = _read_json(Path(path), "accuracy")
    _spread(report, str(path))
    assert isinstance(report, dict)  # _spread accepted it: a JSON object
    return report


def _read_json(path: Path, kind: str) -> Any:
    """A report file's JSON, or ValueError ("{path}: not a benchmark {kind} report (not JSON: ...)")."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a benchmark {kind} report (not JSON: {exc})") from None


def plot_benchmark(report: Mapping[str, Any] | Sequence[Mapping[str, Any]], path: PathLike, *, title: str = "") -> Path:
    """Test accuracy over seeds of one or several configurations, as a PNG point chart.

    For each report: the mean (a dot, labelled), an error bar of one sample
    standard deviation (none for a single seed), the minimum and maximum
    (red dashes) and each seed's accuracy (faint dots). The image is 800 x
    500 px for up to 6 reports and 120 px wider for each one more.

    Args:
        report: one document as ``benchmark.py accuracy --json`` writes it
            (``AccuracyReport.to_dict()``; read one with ``load_benchmark_report``),
            or a list of them, drawn left to right.
        path: the PNG file to write; its folder is created if missing.
        title: a title above the chart ("" for the default).

    Returns:
        ``path``.

    Raises:
        ValueError: no reports, or one that is not an accuracy report
            ("report 2: not a benchmark accuracy report (...)").
        PlotError: matplotlib is not installed.
        OSError: the file cannot be written.
    """
    reports: Any = [report] if isinstance(report, Mapping) else report
    if not _is_list(reports):
        raise ValueError(f"expected a benchmark report or a list of them, got {type(report).__name__}")
    if not reports:
        raise ValueError("no benchmark reports to plot")
    spreads = [_spread(r, f"report {i}") for i, r in enumerate(reports, 1)]
    labels = [s.label for s in spreads]
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            labels[i] = f"{label}\n#{i + 1}"
    width, height = BENCHMARK_SIZE
    fig = _new_figure(width + BENCHMARK_SLOT * max(0, len(spreads) - BENCHMARK_SLOTS), height)
    ax = fig.add_subplot()
    for i, s in enumerate(spreads):
        first = i == 0
        if s.runs:
            offsets = np.linspace(-0.15, 0.15, len(s.runs)) if len(s.runs) > 1 else np.zeros(1)
            ax.scatter(
                i + offsets,
                [100.0 * r for r in s.runs],
                s=14,
                color="C0",
                alpha=0.35,
                zorder=2,
                label="each seed" if first else None,
            )
        ax.scatter(
            [i, i],
            [100.0 * s.low, 100.0 * s.high],
            marker="_",
            s=400,
            linewidths=2,
            color="C3",
            zorder=3,
            label="min / max" if first else None,
        )
        ax.errorbar(
            [i],
            [100.0 * s.mean],
            yerr=[100.0 * s.std] if s.std is not None else None,
            fmt="o",
            markersize=8,
            capsize=4,
            color="C0",
            zorder=4,
            label="mean ± sd" if first else None,
        )
        spread = f" ± {100.0 * s.std:.2f}" if s.std is not None else ""
        ax.annotate(
            f"{100.0 * s.mean:.2f}%{spread}\nn={len(s.runs) or '?'}",
            (i, 100.0 * s.mean),
            xytext=(14, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.set_xticks(range(len(spreads)), labels, fontsize=8)
    ax.set_xlim(-0.6, len(spreads) - 0.1)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title or "Test accuracy over seeds (served weights)")
    return _save(fig, path)


# --- sweep ------------------------------------------------------------------------------


SWEEP_SIZE = (8.0, 5.0)  # 800 x 500 px


@dataclass(frozen=True)
class _SweepLine:
    """One line of a sweep figure: the configurations that differ only in the swept value."""

    label: str
    x: list[Any]
    test: list[tuple[float, float]]  # (mean, sd) of test accuracy, fractions
    validation: list[float]  # mean validation accuracy, fractions


def _sweep_points(report: Any, where: str) -> tuple[dict[str, list[Any]], list[Mapping[str, Any]]]:
    """The grid and the configurations of a sweep report (``benchmark.py accuracy --grid ... --json``)."""
    bad = f"{where}: not a benchmark sweep report"
    if not isinstance(report, Mapping) or report.get("action") != "sweep":
        action = report.get("action") if isinstance(report, Mapping) else type(report).__name__
        raise ValueError(f"{bad} (expected action 'sweep', got {short(action)})")
    grid = report.get("grid")
    if not isinstance(grid, Mapping) or not grid or not all(_is_list(v) and v for v in grid.values()):
        raise ValueError(f"{bad} (grid should map each swept flag to its values)")
    points = report.get("configurations")
    if not _is_list(points) or not points:
        raise ValueError(f"{bad} (no configurations)")
    for i, point in enumerate(points, 1):
        values = point.get("values") if isinstance(point, Mapping) else None
        summary = point.get("summary") if isinstance(point, Mapping) else None
        if not isinstance(values, Mapping) or set(values) != set(grid) or not isinstance(summary, Mapping):
            raise ValueError(f"{bad} (configurations[{i}] should have the grid's values and a summary)")
        for name in ("test_accuracy", "validation_accuracy"):
            stats = summary.get(name)
            if stats is None:
                continue  # every run of it failed
            if not isinstance(stats, Mapping):
                raise ValueError(f"{bad} (configurations[{i}].summary.{name} should be an object or null)")
            _fraction(stats.get("mean"), f"configurations[{i}].summary.{name}.mean", bad)
    return {str(k): list(v) for k, v in grid.items()}, list(points)


def load_sweep_report(path: PathLike) -> dict[str, Any]:
    """Read a JSON file written by ``benchmark.py accuracy --grid ... --json`` and check it can be plotted.

    Raises:
        ValueError: not JSON, or not a sweep report.
        OSError: the file cannot be read.
    """
    report = _read_json(Path(path), "sweep")
    _sweep_points(report, str(path))
    assert isinstance(report, dict)  # _sweep_points accepted it: a JSON object
    return report


def _sweep_lines(grid: dict[str, list[Any]], points: list[Mapping[str, Any]], x_name: str) -> list[_SweepLine]:
    """Group the configurations by the values of the flags other than ``x_name``, in grid order."""
    others = [name for name in grid if name != x_name]
    lines: dict[tuple[str, ...], _SweepLine] = {}
    for point in points:
        values = point["values"]
        key = tuple(str(values[name]) for name in others)
        label = ", ".join(f"{name}={values[name]}" for name in others) or "all runs"
        line = lines.setdefault(key, _SweepLine(label, [], [], []))
        summary = point["summary"]
        test, validation = summary.get("test_accuracy"), summary.get("validation_accuracy")
        if test is None or validation is None:
            continue
        std = test.get("std")
        line.x.append(values[x_name])
        line.test.append((float(test["mean"]), float(std) if _is_real(std) else 0.0))
        line.validation.append(float(validation["mean"]))
    return list(lines.values())


def plot_sweep(report: Mapping[str, Any], path: PathLike, *, x: str | None = None, title: str = "") -> Path:
    """Accuracy against one swept value, a line per combination of the other swept values, as a PNG.

    Each point is a configuration: its mean test accuracy over the seeds with
    an error bar of one sample standard deviation (solid), and its mean
    validation accuracy (dotted, same colour), the one configurations are
    chosen by. Configurations whose runs all failed are left out. 800 x 500 px.

    Args:
        report: a document as ``benchmark.py accuracy --grid ... --json`` writes it
            (``SweepReport.to_dict()``; read one with ``load_sweep_report``).
        path: the PNG file to write; its folder is created if missing.
        x: the swept flag along the x axis (default: the first numeric one, else the first).
        title: a title above the chart ("" for the default).

    Returns:
        ``path``.

    Raises:
        ValueError: not a sweep report, or ``x`` is not one of its swept flags.
        PlotError: matplotlib is not installed.
        OSError: the file cannot be written.
    """
    grid, points = _sweep_points(report, "report")
    numeric = [name for name, values in grid.items() if all(_is_real(v) for v in values)]
    x_name = x if x is not None else (numeric[0] if numeric else next(iter(grid)))
    if x_name not in grid:
        raise ValueError(f"expected x among the swept flags {', '.join(grid)}, got {x_name!r}")
    categories = [str(v) for v in grid[x_name]]
    lines = _sweep_lines(grid, points, x_name)
    fig = _new_figure(*SWEEP_SIZE)
    ax = fig.add_subplot()
    for k, line in enumerate(lines):
        if not line.x:
            continue
        xs = [float(v) for v in line.x] if x_name in numeric else [categories.index(str(v)) for v in line.x]
        color = f"C{k % 10}"
        ax.errorbar(
            xs,
            [100.0 * m for m, _ in line.test],
            yerr=[100.0 * s for _, s in line.test],
            fmt="o-",
            capsize=4,
            color=color,
            label=line.label,
        )
        validation = [100.0 * v for v in line.validation]
        ax.plot(xs, validation, "s:", color=color, alpha=0.6, label="validation (dotted)" if k == 0 else None)
    values = [float(v) for v in grid[x_name]] if x_name in numeric else []
    if values and min(values) > 0 and max(values) / min(values) >= 20:
        ax.set_xscale("log")
    if x_name not in numeric:
        ax.set_xticks(range(len(categories)), categories, fontsize=8)
    ax.set_xlabel(f"--{x_name}")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, fontsize=7, frameon=False)
    seeds = report.get("seeds")
    n = f" over {len(seeds)} seeds" if _is_list(seeds) else ""
    fig.suptitle(title or f"Accuracy against --{x_name}{n} (test: mean ± sd; validation: mean)")
    return _save(fig, path)


# --- a model file ----------------------------------------------------------------------


FILTER_CELL = 0.8  # 80 px per kernel in the filters picture


def plot_filters(conv: Conv2D, path: PathLike, *, title: str = "") -> Path:
    """The learned kernels of a convolution's first input channel, one small grey image each.

    Each kernel is drawn on its own scale, symmetric about 0 (dark negative,
    light positive), so its pattern shows whatever its magnitude.

    Raises:
        PlotError: matplotlib is not installed.
        OSError: the file cannot be written.
    """
    kernels = conv.file_arrays(conv.params)["w"][:, :, 0, :].astype(np.float64)  # (K, K, F)
    count = kernels.shape[-1]
    columns = min(count, 10)
    rows = -(-count // columns)
    fig = _new_figure(columns * FILTER_CELL, rows * FILTER_CELL + (TITLE_HEIGHT if title else 0.0))
    axes = fig.subplots(rows, columns, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < count:
            kernel = kernels[..., k]
            limit = float(np.abs(kernel).max()) or 1.0
            ax.imshow(kernel, cmap="gray", vmin=-limit, vmax=limit, interpolation="nearest")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_model(
    model_path: Path,
    images: npt.ArrayLike,
    labels: npt.ArrayLike,
    out_dir: Path,
    *,
    top: int = 24,
    split: str = "",
) -> list[Path]:
    """Load a model file, evaluate it on a split and draw its three figures into ``out_dir``.

    Writes ``curves.png`` (``plot_training_curves`` of the file's
    ``metadata["history"]``), ``confusion.png`` (``plot_confusion_matrix``),
    ``mistakes.png`` (``plot_mistakes`` of the ``top`` most confident
    mistakes) and, for a network whose first layer is a convolution,
    ``filters.png`` (``plot_filters``). A file without a history gets no curves, and a split without
    mistakes (or ``top`` 0) no mistakes figure; files from earlier calls are
    never deleted.

    Args:
        model_path: a model file written by ``save_model``.
        images: (n, 784) pixels of the split to evaluate on, in [0, 1].
        labels: (n,) their digits.
        out_dir: the folder to write into; created if missing.
        top: how many mistakes to show, 0 or more.
        split: the split's name for the titles, e.g. "test" ("" to leave it out).

    Returns:
        The paths written, in the order curves, confusion, mistakes, filters.

    Raises:
        ModelFileError: the model file is unreadable or its history malformed.
        ValueError: images or labels of the wrong shape, or top < 0.
        PlotError: matplotlib is not installed (checked before anything is loaded).
        OSError: a file cannot be written.
    """
    if not _is_int(top) or top < 0:
        raise ValueError(f"expected top >= 0, got {short(top)}")
    require_matplotlib()
    saved = load_model(model_path)
    evaluation = evaluate_network(saved.network, images, labels, top=top)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = Path(model_path).name
    on = f" on {split}" if split else ""
    named = saved.classes if saved.classes != DIGITS else None
    written = []
    history = saved.metadata.get("history")
    if history:
        try:
            curves = _curves(history)
        except ValueError as exc:
            raise ModelFileError(f"{model_path}: cannot plot its history: {exc}") from None
        written.append(_draw_curves(curves, out_dir / "curves.png", f"{name}: training"))
    written.append(
        plot_confusion_matrix(
            evaluation.confusion,
            out_dir / "confusion.png",
            title=f"{name}{on}: {format_count(evaluation.correct, evaluation.total)}",
            classes=named,
        )
    )
    if evaluation.mistakes:
        count = len(evaluation.mistakes)
        written.append(
            plot_mistakes(
                np.asarray(images),
                evaluation.mistakes,
                out_dir / "mistakes.png",
                title=f"{name}{on}: the {count} most confident mistake{'s' if count > 1 else ''}",
                classes=named,
            )
        )
    first = saved.network.layers[0]
    if isinstance(first, Conv2D):
        title = f"{name}: the {first.filters} kernels of the first convolution"
        written.append(plot_filters(first, out_dir / "filters.png", title=title))
    return written
