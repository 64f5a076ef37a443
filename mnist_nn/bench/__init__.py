"""Benchmarks: the machine, accuracy over seeds, training speed and memory.

One module per concept: ``machine`` (CPU, BLAS library, core type and
threads), ``common`` (the data source and statistics they share),
``accuracy`` (one seed's run and a configuration's report), ``sweep``
(configurations times seeds, kept in a results folder), ``executors`` (where
the runs go: this process, local processes or a Dask cluster), ``timings`` (each timed
measurement), ``memory`` (peak memory of subprocess runs) and ``speed`` (the
plan, run and report of the speed benchmark). Nothing here prints or reads
argv: ``mnist_nn.cli.benchmark`` does. The public names are re-exported here.
"""

from __future__ import annotations

from mnist_nn.bench.accuracy import AccuracyReport, SeedResult, train_seed
from mnist_nn.bench.common import QUICK_TRAIN_SIZE, DataSource, Stats
from mnist_nn.bench.executors import (
    DEFAULT_CONNECT_TIMEOUT,
    DISTRIBUTED_INSTALL,
    DaskScheduler,
    Executor,
    InProcess,
    LocalProcesses,
    RunTask,
    TaskFailure,
)
from mnist_nn.bench.machine import BLAS_THREAD_VARIABLES, blas_info, environment_info, single_blas_thread_env
from mnist_nn.bench.memory import MemoryRun, measure_peak_memory
from mnist_nn.bench.speed import DEFAULT_SHAPES, GEMM_CEILING, SpeedPlan, SpeedReport, speed_benchmark
from mnist_nn.bench.sweep import (
    PointReport,
    ResultsDir,
    SweepPoint,
    SweepReport,
    accuracy_benchmark,
    local_executor,
    run_sweep,
)
from mnist_nn.bench.timings import REFERENCE_BATCH_SIZE, REFERENCE_SIZES, Timing, TrainingShape, TrainingSpeed

__all__ = [
    "BLAS_THREAD_VARIABLES",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_SHAPES",
    "DISTRIBUTED_INSTALL",
    "GEMM_CEILING",
    "QUICK_TRAIN_SIZE",
    "REFERENCE_BATCH_SIZE",
    "REFERENCE_SIZES",
    "AccuracyReport",
    "DaskScheduler",
    "DataSource",
    "Executor",
    "InProcess",
    "LocalProcesses",
    "MemoryRun",
    "PointReport",
    "ResultsDir",
    "RunTask",
    "SeedResult",
    "SpeedPlan",
    "SpeedReport",
    "Stats",
    "SweepPoint",
    "SweepReport",
    "TaskFailure",
    "Timing",
    "TrainingShape",
    "TrainingSpeed",
    "accuracy_benchmark",
    "blas_info",
    "environment_info",
    "local_executor",
    "measure_peak_memory",
    "run_sweep",
    "single_blas_thread_env",
    "speed_benchmark",
    "train_seed",
]
