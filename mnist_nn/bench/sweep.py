"""Sweeps: configurations times seeds, each run an independent task, each result kept as it finishes.

A sweep is a list of configurations (``SweepPoint``: the values swept and the
whole ``TrainConfig``; a grid is their cross product) times a list of seeds.
Each (configuration, seed) run is one ``RunTask``, deterministic by its seed,
handed to an executor (``mnist_nn.bench.executors``: this process, local
processes or a Dask cluster). ``ResultsDir`` keeps each finished run as its
own JSON file, written atomically as soon as it arrives and named by a hash
of its configuration and its seed, so an interrupted sweep loses at most the
runs in flight, and running it again reads the finished runs back instead of
training them. ``run_sweep`` returns a ``SweepReport``: per configuration the
spread of test accuracy, validation accuracy and time per run, and the
configurations ranked by validation accuracy (never by test).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy.typing as npt

from mnist_nn._version import __version__
from mnist_nn.bench.accuracy import AccuracyReport, SeedResult, ensemble_count
from mnist_nn.bench.common import DataSource, Stats
from mnist_nn.bench.executors import (
    Executor,
    InProcess,
    LocalProcesses,
    RunTask,
    TaskFailure,
    canonical_json,
    configuration_key,
    run_key,
)
from mnist_nn.bench.machine import environment_info
from mnist_nn.config import TRAIN_SIZE, TrainConfig
from mnist_nn.errors import BenchmarkError
from mnist_nn.files import atomic_write

RESULT_FORMAT = "mnist_nn-run-result"
RESULT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class SweepPoint:
    """One configuration of a sweep: the values swept to reach it (``{"eta": 0.1}``) and the whole of it."""

    values: dict[str, Any]  # flag name (as on the command line, without --) -> value; {} without a grid
    config: TrainConfig  # its seed is replaced by each of the sweep's seeds


class StoredResultError(Exception):
    """A file of the results folder that cannot be used; the message says why (internal to the sweep)."""


class ResultsDir:
    """The folder of finished runs: one JSON file per (configuration, seed), never pickle.

    A file is ``run-<16 hex>-seed<S>.json``, the hex digits a SHA-256 of the
    canonical JSON of the configuration (seed left out) and training size. It
    holds that configuration, seed included, the training size and the
    result; reading it back checks all three against the run asked for.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, task: RunTask) -> Path:
        """Where ``task``'s result is kept."""
        return self.folder / f"run-{run_key(task)}.json"

    def load(self, task: RunTask) -> SeedResult | None:
        """The stored result of ``task``, or None when there is none.

        Raises:
            StoredResultError: the file is unreadable, not a run's result, or of another run.
        """
        path = self.path(task)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise StoredResultError(f"{path}: cannot be read ({exc})") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StoredResultError(f"{path}: not JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != RESULT_FORMAT:
            raise StoredResultError(f"{path}: not a run result (no format {RESULT_FORMAT!r})")
        if doc.get("format_version") != RESULT_FORMAT_VERSION:
            version = doc.get("format_version")
            raise StoredResultError(f"{path}: format version {version!r}, not {RESULT_FORMAT_VERSION}")
        expected = json.loads(canonical_json(_identity(task)))
        stored = {key: doc.get(key) for key in expected}
        if stored != expected:
            raise StoredResultError(f"{path}: holds another configuration than the run it is named after")
        try:
            result = SeedResult.from_dict(doc.get("result"))
        except ValueError as exc:
            raise StoredResultError(f"{path}: {exc}") from None
        if result.seed != task.config.seed:
            raise StoredResultError(f"{path}: holds seed {result.seed}, not {task.config.seed}")
        if task.tta and result.test_correct_tta is None:
            raise StoredResultError(f"{path}: holds no counts with test-time augmentation")
        return result

    def save(self, task: RunTask, result: SeedResult) -> Path:
        """Write ``task``'s result atomically (a temporary file, then a rename); returns its path.

        Raises:
            OSError: it cannot be written; any earlier file is left as it was.
        """
        path = self.path(task)
        doc = {
            "format": RESULT_FORMAT,
            "format_version": RESULT_FORMAT_VERSION,
            **_identity(task),
            "result": result.to_dict(),
            "mnist_nn": __version__,
        }
        text = json.dumps(doc, indent=2, allow_nan=False) + "\n"

        def write(f: IO[bytes]) -> None:
            f.write(text.encode("utf-8"))

        atomic_write(path, write)
        return path


def _identity(task: RunTask) -> dict[str, Any]:
    """What a run's result depends on: its configuration, seed included, its training size and its data set.

    MNIST, the default, is left out, so that the names of MNIST's results do not depend on it.
    """
    dataset = {"dataset": task.source.dataset} if task.source.dataset != "mnist" else {}
    tta = {"tta": True} if task.tta else {}
    return {"config": task.config.to_dict(), "train_size": task.train_size, **dataset, **tta}


@dataclass(frozen=True)
class PointReport:
    """One configuration's runs: the finished ones (seed order), the failed ones and how many were stored."""

    point: SweepPoint
    runs: list[SeedResult]
    failures: list[dict[str, Any]]  # {"seed", "reason"}
    from_results: int  # runs read back from the results folder
    ensemble_correct: int | None = None
    ensemble_tta_correct: int | None = None  # with test-time augmentation, when asked

    @property
    def test_accuracy(self) -> Stats | None:
        """Test accuracy of the served weights over the finished runs (None if none finished)."""
        return Stats.of([r.test_accuracy for r in self.runs]) if self.runs else None

    @property
    def validation_accuracy(self) -> Stats | None:
        """Validation accuracy of the served epochs over the finished runs."""
        return Stats.of([r.validation_accuracy for r in self.runs]) if self.runs else None

    @property
    def seconds(self) -> Stats | None:
        """Seconds per finished run."""
        return Stats.of([r.seconds for r in self.runs]) if self.runs else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        config = self.point.config.to_dict()
        del config["seed"]

        def stats(s: Stats | None) -> dict[str, Any] | None:
            return None if s is None else {"mean": s.mean, "std": s.std, "min": s.min, "max": s.max}

        return {
            "values": self.point.values,
            "config": config,
            "runs": [r.to_dict() for r in self.runs],
            "failures": self.failures,
            "from_results": self.from_results,
            "summary": {
                "runs": len(self.runs),
                "failed": len(self.failures),
                "test_accuracy": stats(self.test_accuracy),
                "validation_accuracy": stats(self.validation_accuracy),
                "seconds": stats(self.seconds),
            },
        }


@dataclass(frozen=True)
class SweepReport:
    """Every configuration's runs, in the order given, and their ranking by validation accuracy."""

    preset: str | None
    grid: dict[str, list[Any]]  # swept flag -> its values, in order; {} without a grid
    points: list[PointReport]
    seeds: list[int]
    train_size: int
    executor: str
    results: str | None  # the results folder
    environment: dict[str, Any] = field(default_factory=dict)
    dataset: str = "mnist"

    @property
    def ranking(self) -> list[int]:
        """Indexes of the configurations with a finished run, best mean validation accuracy first."""
        finished = [i for i, p in enumerate(self.points) if p.runs]
        return sorted(finished, key=lambda i: -self._validation_mean(i))

    def _validation_mean(self, i: int) -> float:
        stats = self.points[i].validation_accuracy
        assert stats is not None
        return stats.mean

    @property
    def counts(self) -> dict[str, int]:
        """Runs finished, read back from the results folder, trained now and failed."""
        finished = sum(len(p.runs) for p in self.points)
        stored = sum(p.from_results for p in self.points)
        failed = sum(len(p.failures) for p in self.points)
        return {"runs": finished, "from_results": stored, "trained": finished - stored, "failed": failed}

    def accuracy_report(self, jobs: int) -> AccuracyReport:
        """The first configuration's runs as an ``AccuracyReport`` (a sweep without a grid).

        Raises:
            BenchmarkError: none of its runs finished.
        """
        point = self.points[0]
        if not point.runs:
            reasons = "; ".join(f"seed {f['seed']}: {f['reason']}" for f in point.failures)
            raise BenchmarkError(f"every run failed: {reasons}")
        return AccuracyReport(
            preset=self.preset,
            config=replace(point.point.config, seed=point.runs[0].seed),
            train_size=self.train_size,
            jobs=jobs,
            runs=point.runs,
            environment=self.environment,
            ensemble_correct=point.ensemble_correct,
            ensemble_tta_correct=point.ensemble_tta_correct,
            executor=self.executor,
            results=self.results,
            from_results=point.from_results,
            failures=point.failures,
            dataset=self.dataset,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``action`` "sweep", the grid, every configuration and the ranking."""
        ranking = self.ranking
        points = []
        for i, p in enumerate(self.points):
            d = p.to_dict()
            d["rank"] = ranking.index(i) + 1 if i in ranking else None
            points.append(d)
        return {
            "action": "sweep",
            "preset": self.preset,
            "grid": self.grid,
            "seeds": self.seeds,
            "train_size": self.train_size,
            "dataset": self.dataset,
            "executor": self.executor,
            "results": self.results,
            "configurations": points,
            "ranking": [i + 1 for i in ranking],  # 1-based positions in configurations, best first
            "summary": self.counts,
            "environment": self.environment,
        }


RunDone = Callable[[RunTask, SeedResult | TaskFailure, bool], None]  # (task, outcome, read from results)
Warn = Callable[[str], None]


def run_sweep(
    points: Sequence[SweepPoint],
    seeds: Sequence[int],
    executor: Executor,
    *,
    source: DataSource | None = None,
    train_size: int = TRAIN_SIZE,
    results: ResultsDir | None = None,
    preset: str | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    ensemble: bool = False,
    tta: bool = False,
    on_run: RunDone | None = None,
    on_epoch: Callable[[], None] | None = None,
    warn: Warn | None = None,
) -> SweepReport:
    """Run every configuration with every seed, keeping each result as it arrives.

    Runs already in ``results`` are read back, not trained; a stored file
    that cannot be used (corrupt, or of another run) is reported through
    ``warn`` and its run trained again. A run that fails is reported and the
    others go on.

    Args:
        points: the configurations (their seeds are replaced).
        seeds: one run per seed and configuration.
        executor: where the runs go.
        source: where the runs' processes load the data set (None fields: their defaults).
        train_size, results: train on the first this many training images; the folder keeping finished runs.
        preset, grid: for the report.
        ensemble: keep each run's test probabilities and count their average's correct answers
            per configuration (loads the test labels here; not with ``results``).
        tta: also count each run's validation and test answers with test-time augmentation (and its
            ensemble's, with ``ensemble``).
        on_run: called as each run finishes or is read back.
        on_epoch: called after each epoch, if the executor tells epochs.
        warn: called with one line for each stored file that cannot be used.

    Raises:
        ValueError: no configurations or seeds, or ``ensemble`` with ``results``.
        BenchmarkError: the executor failed as a whole (a dead worker pool, no scheduler).
        OSError: a result could not be written to ``results``.
    """
    if not points or not seeds:
        raise ValueError(f"expected configurations and seeds, got {len(points)} and {len(seeds)}")
    if ensemble and results is not None:
        raise ValueError("an ensemble needs every run's output probabilities, which the results folder does not keep")
    source = source if source is not None else DataSource()
    tasks = [
        RunTask(replace(p.config, seed=seed), train_size, source, keep_probabilities=ensemble, tta=tta)
        for p in points
        for seed in seeds
    ]
    outcomes: list[SeedResult | TaskFailure | None] = [None] * len(tasks)
    stored = [False] * len(tasks)
    if results is not None:
        for i, task in enumerate(tasks):
            outcomes[i] = _read_back(results, task, warn)
            stored[i] = outcomes[i] is not None
            if on_run is not None and isinstance(result := outcomes[i], SeedResult):
                on_run(task, result, True)
    todo = [i for i, done in enumerate(stored) if not done]
    with contextlib.closing(executor.run([tasks[i] for i in todo], on_epoch)) as finished:
        for j, outcome in finished:
            i = todo[j]
            if results is not None and isinstance(outcome, SeedResult):
                results.save(tasks[i], outcome)
            outcomes[i] = outcome
            if on_run is not None:
                on_run(tasks[i], outcome, False)
    reports = []
    labels = source.load(points[0].config.dtype).test.labels if ensemble else None
    for k, point in enumerate(points):
        mine = range(k * len(seeds), (k + 1) * len(seeds))
        runs = [o for i in mine if isinstance(o := outcomes[i], SeedResult)]
        failures = [
            {"seed": tasks[i].config.seed, "reason": o.reason}
            for i in mine
            if isinstance(o := outcomes[i], TaskFailure)
        ]
        whole = labels is not None and runs and not failures
        ensembles = _ensemble_counts(runs, labels, tta) if whole and labels is not None else (None, None)
        reports.append(PointReport(point, runs, failures, sum(stored[i] for i in mine), *ensembles))
    return SweepReport(
        preset=preset,
        grid={name: list(values) for name, values in (grid or {}).items()},
        points=reports,
        seeds=list(seeds),
        train_size=train_size,
        executor=executor.description,
        results=str(results.folder) if results is not None else None,
        environment=environment_info(),
        dataset=source.dataset,
    )


def _read_back(results: ResultsDir, task: RunTask, warn: Warn | None) -> SeedResult | None:
    """``task``'s stored result, or None: there is none, or it cannot be used (said through ``warn``)."""
    try:
        return results.load(task)
    except StoredResultError as exc:
        if warn is not None:
            warn(f"{exc}; running it again")
        return None


def _ensemble_counts(runs: Sequence[SeedResult], labels: npt.ArrayLike, tta: bool) -> tuple[int | None, int | None]:
    """The test images the runs' averaged probabilities get right, and with test-time augmentation when ``tta``."""
    with_tta = ensemble_count([r.test_probabilities_tta for r in runs], labels) if tta else None
    return ensemble_count([r.test_probabilities for r in runs], labels), with_tta


def local_executor(jobs: int) -> Executor:
    """This process for one job, else ``jobs`` local worker processes."""
    if jobs < 1:
        raise ValueError(f"expected jobs >= 1, got {jobs}")
    return InProcess() if jobs == 1 else LocalProcesses(jobs)


def accuracy_benchmark(
    config: TrainConfig,
    seeds: Sequence[int],
    *,
    source: DataSource | None = None,
    train_size: int = TRAIN_SIZE,
    jobs: int = 1,
    preset: str | None = None,
    on_epochs: Callable[[int], None] | None = None,
    ensemble: bool = False,
    tta: bool = False,
) -> AccuracyReport:
    """Train ``config`` once per seed and report every run's counts and their spread.

    With ``jobs`` 1 the runs go one after another in this process, with
    one BLAS thread. Otherwise up to ``jobs`` worker processes run them,
    each with one BLAS thread, so that the jobs share the cores rather than
    fight over them; forked workers share the data loaded here, spawned ones
    load it themselves (see ``executors.start_method``). The counts do
    not depend on ``jobs``: a seed gives the same weights in any process.

    Args:
        config: the configuration; its seed is replaced by each of ``seeds``.
        seeds: one run per seed.
        source: where to load MNIST from.
        train_size: train on the first this many of the 50,000 training images.
        jobs: worker processes (1: none).
        preset: the name of the preset ``config`` came from, for the report.
        on_epochs: progress, called with the number of epochs just finished
            (after each epoch with one job, after each run with several).
        ensemble: also count the test images that the average of the runs'
            output probabilities (their served weights') gets right.
        tta: also count each run's (and the ensemble's) answers with test-time augmentation.

    Returns:
        The ``AccuracyReport``, runs in the order of ``seeds``.

    Raises:
        ValueError: no seeds, jobs < 1 or train_size out of range.
        BenchmarkError: a run failed (the data could not be loaded, training diverged) or a worker died.
    """
    if not seeds:
        raise ValueError("expected at least one seed, got none")
    if not 1 <= train_size <= TRAIN_SIZE:
        raise ValueError(f"expected a training size between 1 and {TRAIN_SIZE}, got {train_size}")
    executor = local_executor(jobs)
    tick = (lambda: on_epochs(1)) if on_epochs is not None and executor.reports_epochs else None

    def on_run(task: RunTask, outcome: SeedResult | TaskFailure, from_results: bool) -> None:
        if on_epochs is not None and not executor.reports_epochs:
            on_epochs(task.config.epochs)

    report = run_sweep(
        [SweepPoint({}, config)],
        seeds,
        executor,
        source=source,
        train_size=train_size,
        preset=preset,
        ensemble=ensemble,
        tta=tta,
        on_run=on_run,
        on_epoch=tick,
    )
    point = report.points[0]
    if point.failures:
        raise BenchmarkError("; ".join(f"seed {f['seed']}: {f['reason']}" for f in point.failures))
    return report.accuracy_report(jobs)


__all__ = [
    "PointReport",
    "ResultsDir",
    "SweepPoint",
    "SweepReport",
    "accuracy_benchmark",
    "configuration_key",
    "local_executor",
    "run_sweep",
]
