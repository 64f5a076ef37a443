"""PyTorch as a yardstick: its CPU training epoch for a convolutional shape, timed in an interpreter that has it.

PyTorch is never a dependency of this project. ``measure_pytorch`` runs
``mnist_nn/bench/yardstick.py`` (which imports nothing from this package)
with the interpreter it is given, one that can import ``torch``, on the
same network, mini-batch and number of threads as the project's timing (the
BLAS library's threads), and
returns its epochs as a ``TrainingSpeed`` row beside the project's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from mnist_nn.bench.machine import blas_threads
from mnist_nn.bench.timings import Timing, TrainingShape, TrainingSpeed
from mnist_nn.errors import BenchmarkError
from mnist_nn.text import one_line

YARDSTICK = Path(__file__).with_name("yardstick.py")
PYTORCH_TIMEOUT = 3600.0  # seconds a yardstick run may take before it counts as failed


def default_interpreter() -> str | None:
    """This interpreter when it can import ``torch``, else None (no PyTorch timings unless one is named)."""
    return sys.executable if importlib.util.find_spec("torch") is not None else None


def pytorch_threads() -> int:
    """The threads PyTorch gets: as many as the BLAS library here runs with, else the CPUs this process may use."""
    threads = blas_threads()
    if threads is not None:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def measure_pytorch(
    interpreter: str, shape: TrainingShape, train_size: int, repeats: int, threads: int | None = None
) -> TrainingSpeed:
    """Epochs 2..repeats+1 of PyTorch training ``shape`` (layer specs) on ``train_size`` random images.

    Raises:
        BenchmarkError: the shape has no layer specs, or the yardstick failed, timed out or said nothing readable.
    """
    if not shape.layers:
        raise BenchmarkError(f"PyTorch times networks given by layer specs, not sizes {list(shape.sizes)}")
    command = [
        interpreter,
        str(YARDSTICK),
        "--layers",
        *shape.layers,
        "--batch-size",
        str(shape.batch_size),
        "--images",
        str(train_size),
        "--epochs",
        str(repeats + 1),
        "--threads",
        str(threads if threads is not None else pytorch_threads()),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PYTORCH_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchmarkError(one_line(f"PyTorch's timing with {interpreter} failed: {exc}")) from None
    lines = done.stdout.strip().splitlines()
    try:
        if done.returncode != 0 or not lines:
            raise ValueError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no output")
        result = json.loads(lines[-1])
        seconds = tuple(float(s) for s in result["seconds"])
        if len(seconds) != repeats + 1 or int(result["images"]) != train_size:
            raise ValueError(f"expected {repeats + 1} epochs of {train_size} images, got {lines[-1]}")
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchmarkError(one_line(f"PyTorch's timing with {interpreter} failed: {exc}")) from None
    return TrainingSpeed("pytorch", shape, Timing(train_size, seconds[1:]), version=str(result.get("torch", "")))
