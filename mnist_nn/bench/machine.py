"""The machine the benchmarks run on: CPU, the BLAS library, its core type and threads.

``environment_info`` is what every report records beside its figures;
``single_blas_thread_env`` and ``limit_blas_threads`` keep parallel workers
from fighting over the cores. threadpoolctl (the ``bench`` extra) is optional:
without it the BLAS is known from NumPy's build configuration, without its
threads.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
from collections.abc import Iterator
from typing import Any

import numpy as np

from mnist_nn._version import __version__
from mnist_nn.config import TRAIN_SIZE
from mnist_nn.train import prefetch
from mnist_nn.train.split import threadpoolctl_module

# Variables that the common BLAS builds read when they load: set to 1 in the
# environment of worker processes, before numpy is imported there.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def blas_info() -> list[dict[str, Any]]:
    """The BLAS libraries NumPy uses, with version, core type and thread count when known.

    With threadpoolctl installed these are its ``threadpool_info()`` entries
    (``internal_api``, ``version``, ``architecture`` (the core type the
    library chose at run time), ``num_threads``, ``threading_layer``,
    ``filepath``); without it, NumPy's build configuration, which knows the
    library and its build options but not the threads it runs with.
    """
    tpc = threadpoolctl_module()
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
    """What the timings depend on: the day (UTC), versions, CPUs, the BLAS and the variables that steer it."""
    affinity = getattr(os, "sched_getaffinity", None)
    watched = {*BLAS_THREAD_VARIABLES}
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
        "mnist_nn": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(affinity(0)) if affinity is not None else os.cpu_count(),
        "blas": blas_info(),
        "variables": {k: v for k, v in sorted(os.environ.items()) if k.startswith("OPENBLAS_") or k in watched},
        "helper": helper_info(),
    }


def helper_info() -> dict[str, bool]:
    """What the main job's helper process does here (``mnist_nn.train.prefetch``): gather, and count too."""
    gathers, counts = prefetch.plan(TRAIN_SIZE)
    return {"gathers": gathers, "counts": counts}


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


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """One BLAS thread in this process while the block runs (a no-op without threadpoolctl).

    At Nielsen's mini-batch of 10 a second OpenBLAS thread slows the small
    products down rather than up, so a benchmark's runs in this process use
    one, as its worker processes do.
    """
    tpc = threadpoolctl_module()
    if tpc is None:
        yield
        return
    with tpc.threadpool_limits(limits=1):
        yield


def can_limit_blas_threads() -> bool:
    """Whether ``limit_blas_threads`` works in a running process (threadpoolctl is installed)."""
    return threadpoolctl_module() is not None


def limit_blas_threads() -> None:
    """Limit this process to one BLAS thread, in case the environment variables came too late.

    A no-op without threadpoolctl. The limit stays in force for the rest of
    the process: the limiter is never exited.
    """
    tpc = threadpoolctl_module()
    if tpc is not None:
        tpc.threadpool_limits(limits=1)
