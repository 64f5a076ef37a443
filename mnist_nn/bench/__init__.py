"""Benchmarks: the machine, accuracy over seeds, training speed and memory.

One module per concept: ``machine`` (CPU, BLAS library, core type and
threads), ``common`` (the data source and statistics they share),
``accuracy`` (a configuration over seeds), ``timings`` (each timed
measurement), ``memory`` (peak memory of subprocess runs) and ``speed`` (the
plan, run and report of the speed benchmark). Nothing here prints or reads
argv: ``mnist_nn.cli.benchmark`` does. The public names are re-exported here.
"""

from __future__ import annotations

from mnist_nn.bench.accuracy import AccuracyReport, SeedResult, accuracy_benchmark, train_seed
from mnist_nn.bench.common import QUICK_TRAIN_SIZE, DataSource, Stats
from mnist_nn.bench.machine import BLAS_THREAD_VARIABLES, blas_info, environment_info, single_blas_thread_env
from mnist_nn.bench.memory import MemoryRun, measure_peak_memory
from mnist_nn.bench.speed import DEFAULT_SHAPES, GEMM_CEILING, SpeedPlan, SpeedReport, speed_benchmark
from mnist_nn.bench.timings import REFERENCE_BATCH_SIZE, REFERENCE_SIZES, Timing, TrainingShape, TrainingSpeed

__all__ = [
    "BLAS_THREAD_VARIABLES",
    "DEFAULT_SHAPES",
    "GEMM_CEILING",
    "QUICK_TRAIN_SIZE",
    "REFERENCE_BATCH_SIZE",
    "REFERENCE_SIZES",
    "AccuracyReport",
    "DataSource",
    "MemoryRun",
    "SeedResult",
    "SpeedPlan",
    "SpeedReport",
    "Stats",
    "Timing",
    "TrainingShape",
    "TrainingSpeed",
    "accuracy_benchmark",
    "blas_info",
    "environment_info",
    "measure_peak_memory",
    "single_blas_thread_env",
    "speed_benchmark",
    "train_seed",
]
