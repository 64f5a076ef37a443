"""``benchmark.py accuracy``: every training flag, grids, seeds, where the runs go and the results folder.

The training flags come from ``train_mnist.py``'s own definition
(``add_training_args``); ``--grid NAME=V1,V2 ...`` sweeps any of them, each
value read by that same definition. ``accuracy_plan`` checks everything once,
up front, and builds the configurations (``SweepPoint``) and the executor
(``--jobs`` or ``--scheduler``); ``run_plan`` runs the sweep
(``mnist_nn.bench.sweep``) with a progress bar; ``format_sweep`` prints a
grid's tables, configurations ranked by validation accuracy. Flags of
``train_mnist.py`` that make no sense in a benchmark are refused with their
reason.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from tqdm import tqdm

from mnist_nn.bench import (
    DEFAULT_CONNECT_TIMEOUT,
    QUICK_TRAIN_SIZE,
    DaskScheduler,
    DataSource,
    Executor,
    InProcess,
    ResultsDir,
    RunTask,
    SeedResult,
    SweepPoint,
    SweepReport,
    TaskFailure,
    local_executor,
    run_sweep,
)
from mnist_nn.cli.base import UsageError, check_output, dataset_classes, flag_message
from mnist_nn.cli.tables import markdown_table, plural, seeds_text, std_text
from mnist_nn.cli.train import add_training_args, config_from_args
from mnist_nn.config import PRESET_DATASETS, PRESETS, TRAIN_SIZE, TrainConfig
from mnist_nn.data.datasets import MNIST
from mnist_nn.errors import ConfigError

DEFAULT_PRESET = "nielsen-ch1"
DEFAULT_SEEDS = 5
QUICK_SEEDS = 2
QUICK_EPOCHS = 2
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")

# train_mnist.py's flags that a benchmark refuses, and why.
REFUSED_FLAGS = {
    "--seed": "is not a benchmark flag: give the seeds with --seeds N or --seed-list SEED ...",
    "--save": "is not a benchmark flag: a benchmark keeps each run's result (--results DIR), not its model",
    "--save-last": "is not a benchmark flag: each run's test count is of its best validation epoch's weights",
    "--checkpoint-every": "is not a benchmark flag: --results DIR keeps every finished run instead",
    "--resume": "is not a benchmark flag: rerunning with the same --results DIR skips the finished runs",
    "--plot": "is not a benchmark flag: draw the --json report with 'mnist-nn plot REPORT.json'",
}


class _Refused(argparse.Action):
    """A train_mnist.py flag refused in one line with its reason (exit 2)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        parser.error(f"{option} {REFUSED_FLAGS.get(option or '', 'is not a benchmark flag')}")


def add_accuracy_args(parser: argparse.ArgumentParser) -> None:
    """The accuracy action's own flags, after the training flags (``add_training_args``, without --seed)."""
    add_training_args(parser, seed=False)
    for flag in REFUSED_FLAGS:
        parser.add_argument(flag, action=_Refused)
    runs = parser.add_argument_group("seeds and sweeps")
    seeds = runs.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help=f"train each configuration with seeds 1..N (default: {DEFAULT_SEEDS}; --quick: {QUICK_SEEDS})",
    )
    seeds.add_argument("--seed-list", type=int, nargs="+", metavar="SEED", help="train with exactly these seeds")
    runs.add_argument(
        "--grid",
        nargs="+",
        metavar="NAME=V1,V2",
        help="sweep training flags: the cross product of the values given, e.g. --grid eta=0.05,0.1 l2=0,25 "
        "'layers=dense800 dense10,dense1024 dense10' (NAME as the flag, without --; values separated by "
        "commas, or by semicolons when a value holds commas, as --augment specs do; on/off for --nesterov and "
        "--expand). Configurations are ranked by validation accuracy, never by test",
    )
    runs.add_argument(
        "--train-size",
        type=int,
        metavar="N",
        help=f"train on the first N training images (default: all {TRAIN_SIZE}; --quick: {QUICK_TRAIN_SIZE})",
    )
    runs.add_argument(
        "--results",
        type=Path,
        metavar="DIR",
        help="keep each finished run in DIR as its own JSON file, written as soon as it finishes; the same "
        "command again reads those back instead of training them, so an interrupted sweep loses at most the "
        "runs in flight",
    )
    runs.add_argument(
        "--ensemble",
        action="store_true",
        help="also test the ensemble of the runs: the average of their output probabilities "
        "(each run's served weights), reported beside their mean (one configuration, local runs, no --results)",
    )
    runs.add_argument(
        "--tta",
        action="store_true",
        help="also count each run's validation and test answers with test-time augmentation, each image's "
        "probabilities averaged over it and its 4 one-pixel shifts (and the mirror image of each for a "
        "configuration that mirrors, --augment flip=), and with --ensemble the ensemble's too; kept in "
        "--results under names of their own",
    )
    where = parser.add_argument_group("where the runs go")
    where.add_argument(
        "--jobs",
        type=int,
        metavar="J",
        help="runs at once, each in its own process with one BLAS thread (default: 1, in this process)",
    )
    where.add_argument(
        "--all-cores",
        action="store_true",
        help="one run at a time in this process on every core it may use, as train_mnist.py runs it (a "
        "convolutional network steps on both cores of a two-core machine): times as a user sees them, and "
        "counts a few images apart from the one-thread runs of --jobs, as between two BLAS thread counts",
    )
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on the workers of a running Dask distributed scheduler, e.g. tcp://10.0.0.5:8786 (needs "
        "pip install 'mnist-nn[distributed]' here and on the workers); each worker loads MNIST from its own "
        "cache (--data-dir and --mirror, when given, name places on the workers)",
    )
    where.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to try to reach the --scheduler (default: {DEFAULT_CONNECT_TIMEOUT:g})",
    )


# --- the plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccuracyPlan:
    """Everything the accuracy action will do, checked."""

    preset: str | None  # the preset, unless the grid sweeps it
    points: list[SweepPoint]
    grid: dict[str, list[Any]]
    seeds: list[int]
    train_size: int
    executor: Executor
    jobs: int
    results: ResultsDir | None


class _ValueParser(argparse.ArgumentParser):
    """The training flags alone, raising instead of exiting: reads the values of --grid."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _given(value: Any, default: Any) -> Any:
    return value if value is not None else default


def accuracy_plan(args: argparse.Namespace) -> AccuracyPlan:
    """Check the accuracy flags once, up front, and build the configurations and the executor.

    ``TrainConfig`` checks the training values itself; a bad one is told in
    its flag's words, and with the grid values that led to it.

    Raises:
        UsageError: anything that cannot work, in one line.
    """
    quick = args.quick
    train_size = _given(args.train_size, QUICK_TRAIN_SIZE if quick else TRAIN_SIZE)
    if args.seed_list is not None:
        seeds = list(args.seed_list)
    else:
        seeds = list(range(1, _given(args.seeds, QUICK_SEEDS if quick else DEFAULT_SEEDS) + 1))
    if not seeds:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    if any(s < 0 for s in seeds):
        raise UsageError(f"seeds must be non-negative, got {' '.join(map(str, seeds))}")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seed-list has repeated seeds: {' '.join(map(str, seeds))}")
    if not 1 <= train_size <= TRAIN_SIZE:
        raise UsageError(f"--train-size must be between 1 and {TRAIN_SIZE}, got {train_size}")
    grid = _parse_grid(args)
    # The networks end with one output per class: only a folder (idx:DIR) may have other than ten.
    dataset = getattr(args, "dataset", None) or MNIST.name
    classes = len(dataset_classes(dataset))
    points = [
        _point(args, dict(zip(grid, combo, strict=True)), train_size, classes, dataset) for combo in _product(grid)
    ]
    seen: dict[TrainConfig, SweepPoint] = {}
    for point in points:
        if point.config in seen:
            raise UsageError(
                f"--grid gives one configuration twice: {_values_text(seen[point.config].values)} "
                f"and {_values_text(point.values)}"
            )
        seen[point.config] = point
    executor, jobs = _executor(args)
    results = None
    if args.results is not None:
        if args.results.exists() and not args.results.is_dir():
            raise UsageError(f"--results {args.results} is a file; give a folder (it is created if missing)")
        check_output(args.results / "run-check.json")
        results = ResultsDir(args.results)
    if args.ensemble and (len(points) > 1 or results is not None or args.scheduler is not None):
        raise UsageError(
            "--ensemble needs every run's output probabilities here: one configuration, without "
            "--grid, --results or --scheduler"
        )
    preset = None if "preset" in grid else (args.preset or DEFAULT_PRESET)
    values = {name: [v for v, _ in pairs] for name, pairs in grid.items()}
    return AccuracyPlan(preset, points, values, seeds, train_size, executor, jobs, results)


def _executor(args: argparse.Namespace) -> tuple[Executor, int]:
    """--jobs (local processes) or --scheduler (a Dask cluster), and the jobs figure for the report."""
    if args.all_cores:
        if args.jobs is not None or args.scheduler is not None:
            raise UsageError("--all-cores runs one seed at a time in this process: leave out --jobs and --scheduler")
        return InProcess(all_cores=True), 1
    if args.scheduler is not None:
        if args.jobs is not None:
            raise UsageError(
                "--jobs and --scheduler both given: runs go to local processes or to a Dask cluster, not both"
            )
        address = args.scheduler.strip()
        if not address or any(c.isspace() for c in address):
            raise UsageError(f"--scheduler expects an address such as tcp://10.0.0.5:8786, got {args.scheduler!r}")
        if not args.connect_timeout > 0:
            raise UsageError(f"--connect-timeout must be a number of seconds > 0, got {args.connect_timeout}")
        return DaskScheduler(address, connect_timeout=args.connect_timeout), 0
    jobs = _given(args.jobs, 1)
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    return local_executor(jobs), jobs


def _parse_grid(args: argparse.Namespace) -> dict[str, list[tuple[Any, Any]]]:
    """--grid as {flag name: [(value for the report, value for the namespace), ...]}, every value parsed
    by the training flags' own definition."""
    if not args.grid:
        return {}
    values = _ValueParser(prog="--grid", add_help=False)
    actions = {
        a.option_strings[0][2:]: a for a in add_training_args(values, seed=False)._group_actions if a.option_strings
    }
    grid: dict[str, list[tuple[Any, Any]]] = {}
    for item in args.grid:
        name, equals, text = item.partition("=")
        name = name.strip().lstrip("-").replace("_", "-")
        if not equals or not name:
            raise UsageError(f"--grid expects NAME=V1,V2,..., got {item!r}")
        action = actions.get(name)
        if action is None:
            raise UsageError(f"--grid {name}: not a training flag; sweep one of {', '.join(sorted(actions))}")
        if name in grid:
            raise UsageError(f"--grid {name} given twice; list all its values once: {name}=V1,V2,...")
        if getattr(args, action.dest, None) is not None:
            raise UsageError(f"--{name} is both given and swept by --grid; give one")
        others = {"hidden": "layers", "layers": "hidden"}
        other = others.get(name)
        if other is not None and (other in grid or getattr(args, other, None) is not None):
            raise UsageError(f"--grid {name} and --{other} both set the layers; give one")
        texts = [v.strip() for v in text.split(";" if ";" in text else ",")]
        if any(not v for v in texts):
            raise UsageError(f"--grid {name}: an empty value in {text!r}")
        if len(set(texts)) != len(texts):
            raise UsageError(f"--grid {name}: a value given twice in {text!r}")
        grid[name] = [_grid_value(values, action, name, v) for v in texts]
    return grid


def _grid_value(values: _ValueParser, action: argparse.Action, name: str, text: str) -> tuple[Any, Any]:
    """One value of a swept flag: (as the report shows it, as the flag's namespace holds it)."""
    if action.nargs == 0:  # --nesterov, --expand
        if text.lower() in _TRUE:
            return True, True
        if text.lower() in _FALSE:
            return False, False
        raise UsageError(f"--grid {name}: expected on or off, got {text!r}")
    words = text.split() if action.nargs in ("+", "*") else [text]
    argv = [f"--{name}", *words] if action.nargs in ("+", "*") else [f"--{name}={text}"]
    try:
        parsed = getattr(values.parse_args(argv), action.dest)
    except UsageError as exc:
        raise UsageError(f"--grid {name}={text}: {exc}") from None
    shown = " ".join(map(str, parsed)) if isinstance(parsed, list) else parsed
    return shown, parsed


def _product(grid: dict[str, list[tuple[Any, Any]]]) -> list[tuple[tuple[Any, Any], ...]]:
    return list(itertools.product(*grid.values()))


def _values_text(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items()) or "(no grid)"


def _point(
    args: argparse.Namespace, combo: dict[str, tuple[Any, Any]], train_size: int, classes: int, dataset: str
) -> SweepPoint:
    """The configuration of one grid point: the command line's flags with the point's values (``classes`` outputs)."""
    namespace = argparse.Namespace(**vars(args))
    for name, (_, parsed) in combo.items():
        setattr(namespace, name.replace("-", "_"), parsed)
    preset_name = namespace.preset or DEFAULT_PRESET
    base = PRESETS[preset_name]
    if args.quick and namespace.epochs is None:
        base = replace(base, epochs=min(base.epochs, QUICK_EPOCHS))
    values = {name: shown for name, (shown, _) in combo.items()}
    where = f"--grid {_values_text(values)}: " if values else ""
    try:
        config = config_from_args(namespace, base, classes=classes, dataset=dataset)
    except ConfigError as exc:
        raise UsageError(where + flag_message(exc)) from None
    except UsageError as exc:
        raise UsageError(f"{where}{exc}") from None
    if not 1 <= config.batch_size <= train_size:
        raise UsageError(
            f"{where}--batch-size must be between 1 and the training size {train_size}, got {config.batch_size}"
        )
    return SweepPoint(values, config)


# --- running ------------------------------------------------------------------------------


class _SweepBar(tqdm):  # type: ignore[type-arg]
    """tqdm without its monitor thread, so that ``--jobs`` may still fork its workers (see ``start_method``)."""

    monitor_interval = 0


def run_plan(plan: AccuracyPlan, args: argparse.Namespace, prog: str, progress: bool) -> SweepReport:
    """Run the sweep with a progress bar (on a terminal) and a warning line for each unusable stored file."""
    total = len(plan.seeds) * sum(p.config.epochs for p in plan.points)
    bar = (
        _SweepBar(total=total, unit="epoch", desc="accuracy", leave=False, file=sys.stderr, dynamic_ncols=True)
        if progress
        else None
    )

    def on_epoch() -> None:
        if bar is not None:
            bar.update(1)

    def on_run(task: RunTask, outcome: SeedResult | TaskFailure, stored: bool) -> None:
        if bar is not None and (stored or not plan.executor.reports_epochs):
            bar.update(task.config.epochs)

    def warn(message: str) -> None:
        (bar.write if bar is not None else lambda m: print(m, file=sys.stderr))(f"{prog}: warning: {message}")

    dataset = args.dataset or PRESET_DATASETS.get(plan.preset or "", MNIST.name)
    try:
        return run_sweep(
            plan.points,
            plan.seeds,
            plan.executor,
            source=DataSource(args.data_dir, args.mirror, dataset),
            train_size=plan.train_size,
            results=plan.results,
            preset=plan.preset,
            grid=plan.grid,
            ensemble=args.ensemble,
            tta=args.tta,
            on_run=on_run,
            on_epoch=on_epoch,
            warn=warn,
        )
    finally:
        if bar is not None:
            bar.close()


# --- printing ------------------------------------------------------------------------------


def format_counts(report: SweepReport) -> list[str]:
    """Where the runs came from, and each failed run with its reason."""
    counts = report.counts
    lines = []
    if report.results is not None or counts["failed"]:
        kept = f"{counts['from_results']} read back from {report.results}, " if report.results is not None else ""
        lines.append(
            f"Runs: {counts['runs'] + counts['failed']} ({kept}{counts['trained']} trained now on "
            f"{report.executor}, {counts['failed']} failed)"
        )
    for point in report.points:
        for failure in point.failures:
            where = f"{_values_text(point.point.values)} " if point.point.values else ""
            lines.append(f"Failed: {where}seed {failure['seed']}: {failure['reason']}")
    return lines


def format_sweep(report: SweepReport) -> list[str]:
    """A grid's report: the base, the configurations ranked by validation accuracy, then every run."""
    names = list(report.grid)
    first = report.points[0].point.config
    base = f"preset {report.preset}" if report.preset else "the presets swept"
    grid = " x ".join(f"{name}={', '.join(map(str, values))}" for name, values in report.grid.items())
    runs = len(report.points) * len(report.seeds)
    lines = [
        f"Sweep of {base} ({first.describe()} for the first); grid {grid}: "
        f"{plural(len(report.points), 'configuration')} x {seeds_text(report.seeds)} = {plural(runs, 'run')} "
        f"on {report.executor}; {report.train_size:,} training images",
        "",
        "Configurations ranked by mean validation accuracy (of each run's served epoch, the best on "
        "validation); test accuracy is reported, never used to choose.",
        "",
    ]
    rows = []
    for rank, i in enumerate(report.ranking, 1):
        p = report.points[i]
        v, t, s = p.validation_accuracy, p.test_accuracy, p.seconds
        assert v is not None and t is not None and s is not None
        rows.append(
            [
                str(rank),
                *(str(p.point.values[name]) for name in names),
                f"{len(p.runs)}" + (f" ({len(p.failures)} failed)" if p.failures else ""),
                f"{100 * v.mean:.2f}",
                f"{100 * t.mean:.2f} ± {std_text(t.std, 100)}",
                f"{100 * t.min:.2f}",
                f"{100 * t.max:.2f}",
                f"{s.mean:.2f}",
            ]
        )
    header = ["rank", *names, "runs", "validation %", "test % mean ± sd", "test % min", "test % max", "s/run"]
    lines += markdown_table(header, rows, "r" + "l" * len(names) + "rrrrrr")
    lines += ["", "Every run (counts of the served weights):", ""]
    run_rows = [
        [
            *(str(p.point.values[name]) for name in names),
            str(r.seed),
            str(r.served_epoch),
            str(r.validation_correct),
            str(r.test_correct),
            f"{r.seconds:.2f}",
        ]
        for p in report.points
        for r in p.runs
    ]
    lines += markdown_table(
        [*names, "seed", "served epoch", "validation", "test", "seconds"], run_rows, "l" * len(names) + "rrrrr"
    )
    counts = format_counts(report)
    return [*lines, *([""] if counts else []), *counts]
