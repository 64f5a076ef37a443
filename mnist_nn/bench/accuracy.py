"""Test accuracy over seeds: one configuration trained once per seed, in worker processes if asked.

``accuracy_benchmark`` reports every seed's validation and test counts and
the spread of test accuracy (``AccuracyReport``, with a ``to_dict()`` for
JSON), and, when asked, the ensemble of the seeds' networks (their averaged
output probabilities). The test count is that of the served weights (the best validation
epoch's, see ``Run.served``). ``train_seed`` is the one place this module
calls the training API.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from mnist_nn.bench.common import DataSource, Stats
from mnist_nn.bench.machine import blas_threads, environment_info, limit_blas_threads, single_blas_thread_env
from mnist_nn.config import TRAIN_SIZE, TrainConfig
from mnist_nn.data import MnistData
from mnist_nn.errors import BenchmarkError
from mnist_nn.train import Run, fit


@dataclass(frozen=True)
class SeedResult:
    """One seed's run: the served (best validation epoch) weights' counts and the last epoch's."""

    seed: int
    served_epoch: int
    validation_correct: int  # of the served epoch
    test_correct: int  # of the served weights
    last_epoch: int
    last_validation_correct: int
    last_test_correct: int
    validation_total: int
    test_total: int
    seconds: float  # building the network and training it, validation counts included
    blas_threads: int | None  # what the process that ran it used, when known
    # The served weights' output probabilities on the test set, kept for an ensemble.
    test_probabilities: npt.NDArray[np.float32] | None = field(default=None, repr=False, compare=False)

    @property
    def test_accuracy(self) -> float:
        """test_correct / test_total, in [0, 1]."""
        return self.test_correct / self.test_total

    @property
    def validation_accuracy(self) -> float:
        """validation_correct / validation_total, in [0, 1]."""
        return self.validation_correct / self.validation_total

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, accuracies included (the probabilities left out)."""
        d = asdict(self)
        del d["test_probabilities"]
        d["test_accuracy"] = self.test_accuracy
        d["validation_accuracy"] = self.validation_accuracy
        return d


@dataclass(frozen=True)
class AccuracyReport:
    """Every seed's run of one configuration and the spread of their accuracies."""

    preset: str | None
    config: TrainConfig  # its seed is that of the first run; each run replaces it
    train_size: int
    jobs: int
    runs: list[SeedResult]
    environment: dict[str, Any]
    ensemble_correct: int | None = None  # the runs' averaged output probabilities, when asked

    @property
    def ensemble_accuracy(self) -> float | None:
        """ensemble_correct over the test images, when an ensemble was asked for."""
        if self.ensemble_correct is None:
            return None
        return self.ensemble_correct / self.runs[0].test_total

    @property
    def test_accuracy(self) -> Stats:
        """Test accuracy of the served weights over the runs."""
        return Stats.of([r.test_accuracy for r in self.runs])

    @property
    def validation_accuracy(self) -> Stats:
        """Validation accuracy of the served epoch over the runs."""
        return Stats.of([r.validation_accuracy for r in self.runs])

    @property
    def seconds(self) -> Stats:
        """Seconds per run."""
        return Stats.of([r.seconds for r in self.runs])

    @property
    def seeds(self) -> list[int]:
        """The seeds, in the order of ``runs``."""
        return [r.seed for r in self.runs]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        config = self.config.to_dict()
        del config["seed"]  # each run has its own
        return {
            "action": "accuracy",
            "preset": self.preset,
            "config": config,
            "seeds": self.seeds,
            "train_size": self.train_size,
            "jobs": self.jobs,
            "runs": [r.to_dict() for r in self.runs],
            "summary": {
                "runs": len(self.runs),
                "test_accuracy": asdict(self.test_accuracy),
                "validation_accuracy": asdict(self.validation_accuracy),
                "seconds": asdict(self.seconds),
                "ensemble": None
                if self.ensemble_correct is None
                else {
                    "networks": len(self.runs),
                    "test_correct": self.ensemble_correct,
                    "test_accuracy": self.ensemble_accuracy,
                },
            },
            "environment": self.environment,
        }


EpochsDone = Callable[[int], None]  # called with how many more epochs have finished


def train_seed(
    config: TrainConfig,
    data: MnistData,
    train_size: int = TRAIN_SIZE,
    on_epoch: Callable[[], None] | None = None,
    keep_probabilities: bool = False,
) -> SeedResult:
    """Train ``config`` on the first ``train_size`` training images and count what it gets right.

    Args:
        config: the run's configuration, seed included.
        data: MNIST, ideally loaded in ``config.dtype`` (as ``train_mnist.py`` does).
        train_size: how many of the training images to train on.
        on_epoch: called after every epoch.
        keep_probabilities: keep the served weights' test output probabilities (for an ensemble).

    Returns:
        The served and last epochs' validation and test counts.
    """
    start = time.perf_counter()
    run = Run.start(config)
    fit(
        run,
        data.train.images[:train_size],
        data.train.labels[:train_size],
        validation=(data.validation.images, data.validation.labels),
        monitor_cost=False,
        on_epoch=(lambda record, run: on_epoch()) if on_epoch is not None else None,
    )
    seconds = time.perf_counter() - start
    served = run.served_network()
    best, last = run.history.best(), run.history.epochs[-1]
    assert best is not None and best.validation_correct is not None and best.validation_total is not None
    assert last.validation_correct is not None
    return SeedResult(
        seed=config.seed,
        served_epoch=best.epoch,
        validation_correct=best.validation_correct,
        test_correct=served.count_correct(*data.test),
        last_epoch=last.epoch,
        last_validation_correct=last.validation_correct,
        last_test_correct=run.network.count_correct(*data.test),
        validation_total=best.validation_total,
        test_total=len(data.test),
        seconds=seconds,
        blas_threads=blas_threads(),
        test_probabilities=served.probabilities(data.test.images).astype(np.float32) if keep_probabilities else None,
    )


@dataclass(frozen=True)
class _SeedTask:
    """What a worker process needs for one run: it loads the data itself rather than unpickling 200 MB."""

    config: TrainConfig
    source: DataSource
    train_size: int
    ensemble: bool


def _run_task(task: _SeedTask) -> SeedResult:
    """One seed's run in a worker process."""
    data = task.source.load(task.config.dtype)
    return train_seed(task.config, data, task.train_size, keep_probabilities=task.ensemble)


def accuracy_benchmark(
    config: TrainConfig,
    seeds: Sequence[int],
    *,
    source: DataSource | None = None,
    train_size: int = TRAIN_SIZE,
    jobs: int = 1,
    preset: str | None = None,
    on_epochs: EpochsDone | None = None,
    ensemble: bool = False,
) -> AccuracyReport:
    """Train ``config`` once per seed and report every run's counts and their spread.

    With ``jobs`` 1 the runs go one after another in this process, with
    BLAS as it is. Otherwise up to ``jobs`` spawned worker processes run
    them, each with one BLAS thread, so that the jobs share the cores rather
    than fight over them; every worker loads the data itself. The counts do
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

    Returns:
        The ``AccuracyReport``, runs in the order of ``seeds``.

    Raises:
        ValueError: no seeds, jobs < 1 or train_size out of range.
        DownloadError, DataFormatError: the data could not be loaded.
        TrainingError: a run diverged.
        BenchmarkError: a worker process died.
    """
    if not seeds:
        raise ValueError("expected at least one seed, got none")
    if jobs < 1:
        raise ValueError(f"expected jobs >= 1, got {jobs}")
    if not 1 <= train_size <= TRAIN_SIZE:
        raise ValueError(f"expected a training size between 1 and {TRAIN_SIZE}, got {train_size}")
    source = source if source is not None else DataSource()
    configs = [replace(config, seed=seed) for seed in seeds]
    workers = min(jobs, len(configs))
    data: MnistData | None = None
    if workers == 1:
        data = source.load(config.dtype)
        tick = (lambda: on_epochs(1)) if on_epochs is not None else None
        runs = [train_seed(c, data, train_size, tick, keep_probabilities=ensemble) for c in configs]
    else:
        tasks = [_SeedTask(c, source, train_size, ensemble) for c in configs]
        runs = _run_in_workers(tasks, workers, on_epochs)
    ensemble_correct = None
    if ensemble:
        labels = (data if data is not None else source.load(config.dtype)).test.labels
        ensemble_correct = ensemble_count([r.test_probabilities for r in runs], labels)
    return AccuracyReport(
        preset=preset,
        config=configs[0],
        train_size=train_size,
        jobs=jobs,
        runs=runs,
        environment=environment_info(),
        ensemble_correct=ensemble_correct,
    )


def ensemble_count(probabilities: Sequence[npt.NDArray[np.float32] | None], labels: npt.ArrayLike) -> int:
    """How many labels the averaged probabilities' most probable class gets right."""
    if not probabilities or any(p is None for p in probabilities):
        raise ValueError("expected every run's test probabilities for the ensemble")
    mean = np.mean([p for p in probabilities if p is not None], axis=0)
    return int(np.count_nonzero(np.argmax(mean, axis=1) == np.asarray(labels)))


def _run_in_workers(tasks: list[_SeedTask], workers: int, on_epochs: EpochsDone | None) -> list[SeedResult]:
    """Run the tasks in ``workers`` spawned processes with one BLAS thread each; results in task order."""
    # "spawn", not "fork": a forked child would inherit this process's BLAS,
    # already loaded with its thread count; a spawned one imports numpy afresh
    # and reads the variables set here. Workers are started as tasks are
    # submitted, so every submission happens while the variables are set.
    executor: ProcessPoolExecutor | None = None
    try:
        with single_blas_thread_env():
            executor = ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=limit_blas_threads
            )
            futures: dict[Future[SeedResult], int] = {executor.submit(_run_task, t): i for i, t in enumerate(tasks)}
        results: list[SeedResult | None] = [None] * len(tasks)
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if on_epochs is not None:
                on_epochs(tasks[futures[future]].config.epochs)
    except BrokenProcessPool as exc:
        raise BenchmarkError(f"a worker process died before finishing its run ({exc}); try fewer jobs") from None
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]
