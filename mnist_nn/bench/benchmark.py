"""Benchmarks: test accuracy over seeds, and how fast training and inference run.

Two measurements, each returning a report dataclass with a ``to_dict()`` for JSON;
nothing here prints or reads argv (``mnist_nn.cli.benchmark`` does):

- ``accuracy_benchmark`` trains one configuration once per seed, in parallel
  worker processes if asked, and reports every seed's validation and test
  counts and the spread of test accuracy. The test count is that of the
  served weights (the best validation epoch's, see ``Run.served``).
- ``speed_benchmark`` times whole training epochs of ``mnist_nn.train.loop.sgd``
  beside the per-example reference ``mnist_nn.nn.reference.sgd_reference``, and
  also inference, a large matrix product (the BLAS ceiling the training
  step is compared with), a warm-cache data load and the peak memory of a
  full training run in a subprocess.

Timings take the minimum over repeats (the least disturbed by other work on
the machine) and also report the median.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from mnist_nn._version import __version__
from mnist_nn.config import IMAGE_PIXELS, NUM_CLASSES, TRAIN_SIZE, TrainConfig, project_root
from mnist_nn.data import MnistData, load_mnist
from mnist_nn.data.download import ensure_mnist
from mnist_nn.errors import BenchmarkError
from mnist_nn.nn.network import Network
from mnist_nn.nn.reference import sgd_reference
from mnist_nn.train.loop import Run, fit, sgd

# Variables that the common BLAS builds read when they load: set to 1 in the
# environment of worker processes, before numpy is imported there.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

QUICK_TRAIN_SIZE = 5_000  # training images of a --quick run: the first 5,000
SPEED_ETA = TrainConfig().eta  # the speed runs need some learning rate; it does not change the cost of a step


@dataclass(frozen=True)
class DataSource:
    """Where MNIST comes from, as ``load_mnist`` takes it (picklable, for worker processes)."""

    data_dir: Path | None = None
    mirror: str | None = None

    def load(self, dtype: str = "float32") -> MnistData:
        """``load_mnist`` from this source."""
        return load_mnist(self.data_dir, mirror=self.mirror, dtype=dtype)


@dataclass(frozen=True)
class Stats:
    """Mean, sample standard deviation (None for fewer than 2 values), minimum and maximum."""

    mean: float
    std: float | None
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        """The statistics of at least one value."""
        if not values:
            raise ValueError("expected at least one value, got none")
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(mean=statistics.fmean(values), std=std, min=min(values), max=max(values))


# --- the machine --------------------------------------------------------------------------


def _threadpoolctl() -> ModuleType | None:
    """threadpoolctl if installed: it is optional, so it is imported by name, untyped."""
    try:
        return importlib.import_module("threadpoolctl")
    except ImportError:
        return None


def blas_info() -> list[dict[str, Any]]:
    """The BLAS libraries NumPy uses, with version, core type and thread count when known.

    With threadpoolctl installed these are its ``threadpool_info()`` entries
    (``internal_api``, ``version``, ``architecture`` (the core type the
    library chose at run time), ``num_threads``, ``threading_layer``,
    ``filepath``); without it, NumPy's build configuration, which knows the
    library and its build options but not the threads it runs with.
    """
    tpc = _threadpoolctl()
    if tpc is not None:
        return [dict(entry) for entry in tpc.threadpool_info() if entry.get("user_api") == "blas"]
    try:
        config: Any = np.show_config(mode="dicts")
        blas = dict(config["Build Dependencies"]["blas"])
    except (TypeError, KeyError, ValueError):  # NumPy older than 1.25 has no "dicts" mode
        return []
    return [
        {
            "internal_api": blas.get("name"),
            "version": blas.get("version"),
            "architecture": None,
            "num_threads": None,
            "configuration": blas.get("openblas configuration"),
            "source": "numpy.show_config (install threadpoolctl for the run-time core type and threads)",
        }
    ]


def blas_threads() -> int | None:
    """Threads the first BLAS library runs with, if threadpoolctl can tell."""
    for entry in blas_info():
        threads = entry.get("num_threads")
        if isinstance(threads, int):
            return threads
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_info() -> dict[str, Any]:
    """What the timings depend on: versions, CPUs, the BLAS and the variables that steer it."""
    affinity = getattr(os, "sched_getaffinity", None)
    watched = {*BLAS_THREAD_VARIABLES}
    return {
        "mnist_nn": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(affinity(0)) if affinity is not None else os.cpu_count(),
        "blas": blas_info(),
        "variables": {k: v for k, v in sorted(os.environ.items()) if k.startswith("OPENBLAS_") or k in watched},
    }


# --- accuracy over seeds ----------------------------------------------------------------------


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

    @property
    def test_accuracy(self) -> float:
        """test_correct / test_total, in [0, 1]."""
        return self.test_correct / self.test_total

    @property
    def validation_accuracy(self) -> float:
        """validation_correct / validation_total, in [0, 1]."""
        return self.validation_correct / self.validation_total

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, accuracies included."""
        d = asdict(self)
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
            },
            "environment": self.environment,
        }


EpochsDone = Callable[[int], None]  # called with how many more epochs have finished


def train_seed(
    config: TrainConfig,
    data: MnistData,
    train_size: int = TRAIN_SIZE,
    on_epoch: Callable[[], None] | None = None,
) -> SeedResult:
    """Train ``config`` on the first ``train_size`` training images and count what it gets right.

    Args:
        config: the run's configuration, seed included.
        data: MNIST, ideally loaded in ``config.dtype`` (as ``train_mnist.py`` does).
        train_size: how many of the training images to train on.
        on_epoch: called after every epoch.

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
    best, last = run.history.best(), run.history.epochs[-1]
    assert best is not None and best.validation_correct is not None and best.validation_total is not None
    assert last.validation_correct is not None
    return SeedResult(
        seed=config.seed,
        served_epoch=best.epoch,
        validation_correct=best.validation_correct,
        test_correct=run.served_network().count_correct(*data.test),
        last_epoch=last.epoch,
        last_validation_correct=last.validation_correct,
        last_test_correct=run.network.count_correct(*data.test),
        validation_total=best.validation_total,
        test_total=len(data.test),
        seconds=seconds,
        blas_threads=blas_threads(),
    )


@dataclass(frozen=True)
class _SeedTask:
    """What a worker process needs for one run: it loads the data itself rather than unpickling 200 MB."""

    config: TrainConfig
    source: DataSource
    train_size: int


def _init_worker() -> None:
    """Limit this worker to one BLAS thread, in case the environment variables came too late."""
    tpc = _threadpoolctl()
    if tpc is not None:
        tpc.threadpool_limits(limits=1)  # stays in force: the limiter is never exited


def _run_task(task: _SeedTask) -> SeedResult:
    """One seed's run in a worker process."""
    return train_seed(task.config, task.source.load(task.config.dtype), task.train_size)


@contextlib.contextmanager
def single_blas_thread_env() -> Iterator[None]:
    """Set the BLAS thread variables to 1 in this process's environment, restoring them afterwards.

    Processes started inside inherit the setting, and BLAS libraries read it
    when they load, which in a spawned worker is when it imports numpy.
    """
    saved = {name: os.environ.get(name) for name in BLAS_THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(BLAS_THREAD_VARIABLES, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def accuracy_benchmark(
    config: TrainConfig,
    seeds: Sequence[int],
    *,
    source: DataSource | None = None,
    train_size: int = TRAIN_SIZE,
    jobs: int = 1,
    preset: str | None = None,
    on_epochs: EpochsDone | None = None,
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
    if workers == 1:
        data = source.load(config.dtype)
        tick = (lambda: on_epochs(1)) if on_epochs is not None else None
        runs = [train_seed(c, data, train_size, tick) for c in configs]
    else:
        runs = _run_in_workers([_SeedTask(c, source, train_size) for c in configs], workers, on_epochs)
    return AccuracyReport(
        preset=preset,
        config=configs[0],
        train_size=train_size,
        jobs=jobs,
        runs=runs,
        environment=environment_info(),
    )


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
                max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
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


# --- speed ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingShape:
    """A network's layer sizes, mini-batch size and dtype: what the cost of a training step depends on."""

    sizes: tuple[int, ...]
    batch_size: int
    dtype: str = "float32"

    @property
    def weights(self) -> int:
        """P, the number of weights (biases not counted)."""
        return sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True))

    @property
    def label(self) -> str:
        """'[784, 30, 10] @ 10 float32'."""
        return f"[{', '.join(map(str, self.sizes))}] @ {self.batch_size} {self.dtype}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"sizes": list(self.sizes), "batch_size": self.batch_size, "dtype": self.dtype}


_NIELSEN = TrainConfig()
REFERENCE_SIZES = _NIELSEN.sizes  # the per-example reference is timed on Nielsen's chapter-1 network
REFERENCE_BATCH_SIZE = _NIELSEN.batch_size

DEFAULT_SHAPES: tuple[TrainingShape, ...] = (
    TrainingShape((IMAGE_PIXELS, 30, NUM_CLASSES), 10, "float32"),
    TrainingShape((IMAGE_PIXELS, 30, NUM_CLASSES), 10, "float64"),
    TrainingShape((IMAGE_PIXELS, 100, NUM_CLASSES), 100, "float32"),
    TrainingShape((IMAGE_PIXELS, 800, NUM_CLASSES), 128, "float32"),
)


@dataclass(frozen=True)
class SpeedPlan:
    """What ``speed_benchmark`` measures, and how much of it."""

    shapes: tuple[TrainingShape, ...] = DEFAULT_SHAPES
    repeats: int = 3  # timed epochs per shape (after one untimed) and repeats of everything else
    train_size: int = TRAIN_SIZE  # training images per vectorized epoch
    reference_dtypes: tuple[str, ...] = ("float64", "float32")
    reference_size: int = 2_000  # images per reference epoch; the rate is scaled to 50,000; 0 skips it
    gemm_size: int = 2_048  # n of the n x n @ n x n product; 0 skips it
    gemm_dtypes: tuple[str, ...] = ("float32", "float64")
    memory_epochs: int | None = None  # epochs of the memory run (None: the trainer's default); 0 skips it

    @classmethod
    def quick(cls) -> SpeedPlan:
        """A smoke run of a few seconds: every measurement, each tiny."""
        return cls(
            shapes=DEFAULT_SHAPES[:2],
            repeats=1,
            train_size=QUICK_TRAIN_SIZE,
            reference_size=200,
            gemm_size=256,
            memory_epochs=1,
        )

    def validate(self) -> None:
        """Raise ValueError for any value out of range."""
        if self.repeats < 1:
            raise ValueError(f"expected repeats >= 1, got {self.repeats}")
        if not 1 <= self.train_size <= TRAIN_SIZE:
            raise ValueError(f"expected a training size between 1 and {TRAIN_SIZE}, got {self.train_size}")
        if not 0 <= self.reference_size <= TRAIN_SIZE:
            raise ValueError(f"expected a reference size between 0 and {TRAIN_SIZE}, got {self.reference_size}")
        if self.reference_size and self.reference_size < REFERENCE_BATCH_SIZE:
            raise ValueError(
                f"expected a reference size of at least one mini-batch ({REFERENCE_BATCH_SIZE}), "
                f"got {self.reference_size}"
            )
        if self.gemm_size < 0:
            raise ValueError(f"expected a matrix size >= 0, got {self.gemm_size}")
        if self.memory_epochs is not None and self.memory_epochs < 0:
            raise ValueError(f"expected memory epochs >= 0, got {self.memory_epochs}")
        for shape in self.shapes:
            if shape.batch_size > self.train_size:
                raise ValueError(
                    f"batch size {shape.batch_size} of {shape.label} exceeds the training size {self.train_size}"
                )

    def inference_shapes(self) -> list[tuple[tuple[int, ...], str]]:
        """The distinct (sizes, dtype) pairs of ``shapes``, in order."""
        return list(dict.fromkeys((s.sizes, s.dtype) for s in self.shapes))

    def steps(self) -> int:
        """How many measurements ``speed_benchmark`` makes (for a progress bar)."""
        return (
            1  # data load
            + (len(self.gemm_dtypes) if self.gemm_size else 0)
            + len(self.shapes)
            + (len(self.reference_dtypes) if self.reference_size else 0)
            + len(self.inference_shapes())
            + (1 if self.memory_epochs != 0 else 0)
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["shapes"] = [s.to_dict() for s in self.shapes]
        d["reference_dtypes"] = list(self.reference_dtypes)
        d["gemm_dtypes"] = list(self.gemm_dtypes)
        return d


def _rate(items: float, seconds: float) -> float:
    return items / max(seconds, 1e-12)  # perf_counter never gives 0 for real work, but JSON forbids inf


@dataclass(frozen=True)
class Timing:
    """Repeated timings of one measurement of ``items`` units (examples, images, runs) each."""

    items: int
    seconds: tuple[float, ...]

    @property
    def best(self) -> float:
        """The shortest time: the least disturbed by other work on the machine."""
        return min(self.seconds)

    @property
    def median(self) -> float:
        """The median time."""
        return statistics.median(self.seconds)

    @property
    def best_rate(self) -> float:
        """Items per second in the best repeat."""
        return _rate(self.items, self.best)

    @property
    def median_rate(self) -> float:
        """Items per second at the median time."""
        return _rate(self.items, self.median)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "items": self.items,
            "seconds": list(self.seconds),
            "best_seconds": self.best,
            "median_seconds": self.median,
            "best_per_second": self.best_rate,
            "median_per_second": self.median_rate,
        }


@dataclass(frozen=True)
class TrainingSpeed:
    """Timed training epochs of one shape by one implementation.

    ``timing.items`` is the examples per timed epoch; seconds per epoch are
    scaled to a 50,000-example epoch. ``gflops`` counts about 6 * m * P flops
    per step of m examples (2 m P each for the forward pass, BP2 and BP4),
    so 6 * P per example, at the best rate. ``gemm_fraction`` divides it by
    the large matrix product's GFLOP/s in the same dtype; ``speedup`` is the
    best rate over the reference's for the same shape (None where there is none).
    """

    implementation: str  # "vectorized" or "reference"
    shape: TrainingShape
    timing: Timing
    gemm_fraction: float | None = None
    speedup: float | None = None

    @property
    def gflops(self) -> float:
        """Achieved GFLOP/s at the best rate."""
        return 6.0 * self.shape.weights * self.timing.best_rate / 1e9

    def epoch_seconds(self, median: bool = False) -> float:
        """Seconds per 50,000-example epoch at the best (or median) rate."""
        return TRAIN_SIZE / (self.timing.median_rate if median else self.timing.best_rate)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "implementation": self.implementation,
            **self.shape.to_dict(),
            "weights": self.shape.weights,
            "examples_per_second_best": self.timing.best_rate,
            "examples_per_second_median": self.timing.median_rate,
            "epoch_seconds_best": self.epoch_seconds(),
            "epoch_seconds_median": self.epoch_seconds(median=True),
            "gflops": self.gflops,
            "gemm_fraction": self.gemm_fraction,
            "speedup": self.speedup,
            "timing": self.timing.to_dict(),
        }


@dataclass(frozen=True)
class InferenceSpeed:
    """Timed ``count_correct`` over the test images by a network of some sizes and dtype."""

    sizes: tuple[int, ...]
    dtype: str
    timing: Timing  # items: test images

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "sizes": list(self.sizes),
            "dtype": self.dtype,
            "images_per_second_best": self.timing.best_rate,
            "timing": self.timing.to_dict(),
        }


@dataclass(frozen=True)
class GemmSpeed:
    """Timed n x n @ n x n products: 2 n^3 flops each."""

    n: int
    dtype: str
    timing: Timing  # items: products

    @property
    def gflops(self) -> float:
        """GFLOP/s of the best repeat."""
        return 2.0 * self.n**3 * self.timing.best_rate / 1e9

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"n": self.n, "dtype": self.dtype, "gflops": self.gflops, "timing": self.timing.to_dict()}


@dataclass(frozen=True)
class MemoryRun:
    """Peak resident memory and wall time of a training run in a subprocess."""

    command: list[str]
    epochs: int | None  # None: the trainer's default
    peak_rss_mib: float
    launcher_peak_rss_mib: float  # this process's own peak when it started the run: a floor of peak_rss_mib
    seconds: float
    test_line: str  # the trainer's "Test: ..." line
    eval_peak_rss_mib: float  # peak of evaluating the saved model in another subprocess
    eval_seconds: float

    @property
    def exact(self) -> bool:
        """Whether peak_rss_mib is the run's own peak, not possibly the launcher's (see ``measure_peak_memory``)."""
        return self.peak_rss_mib > self.launcher_peak_rss_mib

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**asdict(self), "exact": self.exact}


@dataclass(frozen=True)
class SpeedReport:
    """Everything ``speed_benchmark`` measured."""

    plan: SpeedPlan
    environment: dict[str, Any]
    load: Timing
    gemm: list[GemmSpeed]
    training: list[TrainingSpeed]
    inference: list[InferenceSpeed]
    memory: MemoryRun | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "action": "speed",
            "plan": self.plan.to_dict(),
            "environment": self.environment,
            "load_seconds": self.load.to_dict(),
            "gemm": [g.to_dict() for g in self.gemm],
            "training": [t.to_dict() for t in self.training],
            "inference": [i.to_dict() for i in self.inference],
            "memory": self.memory.to_dict() if self.memory is not None else None,
        }


def _time(call: Callable[[], object], repeats: int) -> tuple[float, ...]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return tuple(times)


def measure_load(source: DataSource, repeats: int) -> Timing:
    """Seconds of ``load_mnist`` from a warm cache (call it once before, so the cache is warm)."""
    return Timing(1, _time(source.load, repeats))


def measure_gemm(n: int, dtype: str, repeats: int) -> GemmSpeed:
    """Time ``a @ b`` for random n x n matrices, after one untimed product."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype)
    np.matmul(a, b, out=out)  # the first call pays for BLAS's thread start-up and page faults
    return GemmSpeed(n, dtype, Timing(1, _time(lambda: np.matmul(a, b, out=out), repeats)))


def measure_training(shape: TrainingShape, data: MnistData, train_size: int, repeats: int) -> TrainingSpeed:
    """Epochs 2..repeats+1 of one ``sgd`` call on the first ``train_size`` training images.

    The first epoch is left out because it pays for first touches of
    memory; the per-epoch seconds come from the ``History`` (shuffle and
    steps only: no cost monitoring, no validation).
    """
    network = Network(shape.sizes, seed=0, dtype=shape.dtype)
    history = sgd(
        network,
        data.train.images[:train_size],
        data.train.labels[:train_size],
        epochs=repeats + 1,
        batch_size=shape.batch_size,
        eta=SPEED_ETA,
        rng=np.random.default_rng(0),
        monitor_cost=False,
    )
    return TrainingSpeed("vectorized", shape, Timing(train_size, tuple(r.seconds for r in history.epochs[1:])))


def measure_reference(dtype: str, data: MnistData, size: int, repeats: int) -> TrainingSpeed:
    """Epochs 2..repeats+1 of ``sgd_reference`` on Nielsen's network, over the first ``size`` images.

    The images are cast to ``dtype`` up front, so the reference is timed on
    its arithmetic, not on casts the vectorized code does not do either.
    """
    shape = TrainingShape(REFERENCE_SIZES, REFERENCE_BATCH_SIZE, dtype)
    network = Network(shape.sizes, seed=0, dtype=dtype)
    images = data.train.images[:size].astype(dtype)
    labels = data.train.labels[:size]
    rng = np.random.default_rng(0)

    def epoch() -> None:
        sgd_reference(network, images, labels, epochs=1, batch_size=shape.batch_size, eta=SPEED_ETA, rng=rng)

    seconds = _time(epoch, repeats + 1)[1:]  # the first left out, as for the vectorized code
    return TrainingSpeed("reference", shape, Timing(size, seconds))


def measure_inference(sizes: tuple[int, ...], dtype: str, data: MnistData, repeats: int) -> InferenceSpeed:
    """Time ``count_correct`` on the test images, after one untimed call."""
    network = Network(sizes, seed=0, dtype=dtype)
    images = data.test.images.astype(dtype)  # cast once: the forward pass is what is timed
    labels = data.test.labels
    network.count_correct(images, labels)
    return InferenceSpeed(
        sizes, dtype, Timing(len(labels), _time(lambda: network.count_correct(images, labels), repeats))
    )


def trainer_command(source: DataSource, epochs: int | None = None) -> list[str]:
    """The command line of a quiet training run: ``scripts/train_mnist.py`` from a checkout.

    Where the package is installed without its scripts, the same entry point
    through ``python -c``.
    """
    script = project_root() / "scripts" / "train_mnist.py"
    if script.is_file():
        command = [sys.executable, str(script)]
    else:
        command = [sys.executable, "-c", "from mnist_nn.cli import train_main; raise SystemExit(train_main())"]
    command.append("--quiet")
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    if source.data_dir is not None:
        command += ["--data-dir", str(source.data_dir)]
    if source.mirror is not None:
        command += ["--mirror", source.mirror]
    return command


def _max_rss_mib(usage: Any) -> float:
    # ru_maxrss is in kibibytes on Linux and in bytes on macOS.
    return float(usage.ru_maxrss) / (2**20 if sys.platform == "darwin" else 2**10)


def measure_peak_memory(source: DataSource, epochs: int | None = None) -> MemoryRun:
    """Run the trainer in a subprocess and read its peak resident set size.

    The peak comes from ``os.wait4`` on that one child, not from
    ``getrusage(RUSAGE_CHILDREN)``, which is the largest of all children
    ever waited for (earlier worker processes included). Linux counts in a
    child's peak the launching process's peak at the time it started the
    child (a process keeps its high-water mark across ``exec``), so call
    this while this process is small: the result is exact only when it
    exceeds ``launcher_peak_rss_mib``.

    Raises:
        BenchmarkError: the run failed, or this platform cannot measure it.
    """
    wait4 = getattr(os, "wait4", None)
    try:
        import resource
    except ImportError:
        wait4 = None
    if wait4 is None:
        raise BenchmarkError("measuring peak memory needs os.wait4 and the resource module (Linux or macOS)")
    with tempfile.TemporaryDirectory(prefix="mnist-nn-memory-") as folder:
        model = Path(folder) / "model.npz"
        command = [*trainer_command(source, epochs), "--save", str(model)]
        launcher = _max_rss_mib(resource.getrusage(resource.RUSAGE_SELF))
        peak, seconds, lines = _run_child(command, wait4, "the training run")
        eval_peak, eval_seconds, _ = _run_child(_evaluator_command(source, model), wait4, "the evaluation")
    test_lines = [line for line in lines if line.startswith("Test:")]
    return MemoryRun(
        command=command,
        epochs=epochs,
        peak_rss_mib=peak,
        launcher_peak_rss_mib=launcher,
        seconds=seconds,
        test_line=test_lines[-1] if test_lines else "",
        eval_peak_rss_mib=eval_peak,
        eval_seconds=eval_seconds,
    )


def _evaluator_command(source: DataSource, model: Path) -> list[str]:
    """``scripts/evaluate.py MODEL --quiet`` with the data source, or its entry point."""
    script = project_root() / "scripts" / "evaluate.py"
    if script.is_file():
        command = [sys.executable, str(script)]
    else:
        command = [sys.executable, "-c", "from mnist_nn.cli import evaluate_main; raise SystemExit(evaluate_main())"]
    command += [str(model), "--quiet"]
    if source.data_dir is not None:
        command += ["--data-dir", str(source.data_dir)]
    if source.mirror is not None:
        command += ["--mirror", source.mirror]
    return command


def _run_child(command: list[str], wait4: Callable[..., Any], what: str) -> tuple[float, float, list[str]]:
    """Run ``command``; its own peak RSS in MiB (see ``measure_peak_memory``), seconds and output lines."""
    start = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        output = proc.stdout.read()
        _, status, usage = wait4(proc.pid, 0)
        # Reaped here, so tell Popen, or its wait() would find no child.
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    lines = output.strip().splitlines()
    if proc.returncode != 0:
        last = lines[-1] if lines else "no output"
        raise BenchmarkError(f"{what} exited with code {proc.returncode}: {last}")
    return _max_rss_mib(usage), seconds, lines


StepCallback = Callable[[int, int, str], None]  # (measurements done, total, what comes next)


def speed_benchmark(
    plan: SpeedPlan | None = None, *, source: DataSource | None = None, on_step: StepCallback | None = None
) -> SpeedReport:
    """Measure everything in ``plan``; see the module docstring.

    Args:
        plan: what to measure (default: ``SpeedPlan()``).
        source: where to load MNIST from.
        on_step: progress, called before each measurement and once at the end.

    Returns:
        The ``SpeedReport``.

    Raises:
        ValueError: the plan has values out of range.
        DownloadError, DataFormatError: the data could not be loaded.
        BenchmarkError: the memory run failed.
    """
    plan = plan if plan is not None else SpeedPlan()
    plan.validate()
    source = source if source is not None else DataSource()
    total = plan.steps()
    done = 0

    def step(label: str) -> None:
        nonlocal done
        if on_step is not None:
            on_step(done, total, label)
        done += 1

    memory = None
    if plan.memory_epochs != 0:
        # First, while this process is small: a child's peak counts its launcher's (see measure_peak_memory).
        # The files are fetched and verified first so the run times training, not a download.
        step("peak memory of a training run")
        ensure_mnist(source.data_dir, mirror=source.mirror)
        memory = measure_peak_memory(source, plan.memory_epochs)
    step("data load")
    data = source.load()  # untimed: it also warms the cache
    load = measure_load(source, plan.repeats)
    gemm = []
    if plan.gemm_size:
        for dtype in plan.gemm_dtypes:
            step(f"GEMM {plan.gemm_size} {dtype}")
            gemm.append(measure_gemm(plan.gemm_size, dtype, plan.repeats))
    vectorized = []
    for shape in plan.shapes:
        step(f"training {shape.label}")
        vectorized.append(measure_training(shape, data, plan.train_size, plan.repeats))
    reference = []
    if plan.reference_size:
        for dtype in plan.reference_dtypes:
            step(f"reference {dtype}")
            reference.append(measure_reference(dtype, data, plan.reference_size, plan.repeats))
    inference = []
    for sizes, dtype in plan.inference_shapes():
        step(f"inference {list(sizes)} {dtype}")
        inference.append(measure_inference(sizes, dtype, data, plan.repeats))
    if on_step is not None:
        on_step(total, total, "done")

    gemm_gflops = {g.dtype: g.gflops for g in gemm}
    reference_rate = {r.shape: r.timing.best_rate for r in reference}

    def compare(t: TrainingSpeed) -> TrainingSpeed:
        ceiling = gemm_gflops.get(t.shape.dtype)
        ref = reference_rate.get(t.shape) if t.implementation == "vectorized" else None
        return TrainingSpeed(
            t.implementation,
            t.shape,
            t.timing,
            gemm_fraction=t.gflops / ceiling if ceiling else None,
            speedup=t.timing.best_rate / ref if ref else None,
        )

    return SpeedReport(
        plan=plan,
        environment=environment_info(),
        load=load,
        gemm=gemm,
        training=[compare(t) for t in vectorized + reference],
        inference=inference,
        memory=memory,
    )
