"""Peak memory and wall time: training runs and the evaluation of a model, each in a subprocess.

``measure_peak_memory`` runs the main job (and evaluates its model) for
their peak memory; ``measure_main_job`` times the main job at two epoch
counts, so that their difference is the main job's own epoch, start-up and
the final test left out, and the whole default run beside them.

The subprocesses are the package's own commands (``scripts/train_mnist.py``
and ``scripts/evaluate.py`` in a checkout, else ``python -m mnist_nn``),
started as programs: this package never imports ``mnist_nn.cli``. Each
child's peak resident set size comes from ``os.wait4`` (Linux and macOS).
Children run with compiled bytecode, as an installed package has it: where
``PYTHONDONTWRITEBYTECODE`` is set, they get a bytecode cache in a
temporary folder instead (``child_environment``), so that only the first
run compiles the package.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mnist_nn.bench.common import DataSource
from mnist_nn.config import project_root
from mnist_nn.errors import BenchmarkError


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


def _command(script: str, subcommand: str) -> list[str]:
    """``scripts/SCRIPT`` from a checkout; where the package is installed without its scripts, ``-m mnist_nn``."""
    root = project_root()
    path = root / "scripts" / script if root is not None else None
    if path is not None and path.is_file():
        return [sys.executable, str(path)]
    return [sys.executable, "-m", "mnist_nn", subcommand]


def _data_args(source: DataSource) -> list[str]:
    """The data flags of both commands."""
    args = []
    if source.data_dir is not None:
        args += ["--data-dir", str(source.data_dir)]
    if source.mirror is not None:
        args += ["--mirror", source.mirror]
    return args


def trainer_command(source: DataSource, epochs: int | None = None) -> list[str]:
    """The command line of a quiet training run: ``scripts/train_mnist.py`` from a checkout.

    Where the package is installed without its scripts, the same command
    through ``python -m mnist_nn train``.
    """
    epochs_args = ["--epochs", str(epochs)] if epochs is not None else []
    return [*_command("train_mnist.py", "train"), "--quiet", *epochs_args, *_data_args(source)]


def _evaluator_command(source: DataSource, model: Path) -> list[str]:
    """``scripts/evaluate.py MODEL --quiet`` with the data source, or ``python -m mnist_nn evaluate ...``."""
    return [*_command("evaluate.py", "evaluate"), str(model), "--quiet", *_data_args(source)]


@contextmanager
def child_environment() -> Iterator[dict[str, str]]:
    """The environment of the timed children: this one, with a bytecode cache where writing bytecode is off.

    With ``PYTHONDONTWRITEBYTECODE`` set every run would compile the whole
    package again (about 0.15 s here), which no installed package does; the
    children write their bytecode to a temporary folder instead of the
    checkout, removed afterwards.
    """
    env = dict(os.environ)
    if not env.get("PYTHONDONTWRITEBYTECODE"):
        yield env
        return
    with tempfile.TemporaryDirectory(prefix="mnist-nn-bytecode-") as folder:
        env.pop("PYTHONDONTWRITEBYTECODE")
        env["PYTHONPYCACHEPREFIX"] = folder
        yield env


@dataclass(frozen=True)
class MainJobTiming:
    """Wall times of quiet main-job runs of two epoch counts and of the default run, run alternately."""

    command: list[str]  # without --epochs
    epochs: tuple[int, int]
    short_seconds: tuple[float, ...]
    long_seconds: tuple[float, ...]
    default_seconds: tuple[float, ...] = ()  # the whole default run, from the command to its end

    @property
    def default_run_seconds(self) -> float | None:
        """The fastest default run, None if it was not timed."""
        return min(self.default_seconds) if self.default_seconds else None

    @property
    def epoch_seconds(self) -> float:
        """The main job's epoch: (fastest long run - fastest short run) / (the epochs between them)."""
        short, long = self.epochs
        return (min(self.long_seconds) - min(self.short_seconds)) / (long - short)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**asdict(self), "epoch_seconds": self.epoch_seconds}


def measure_main_job(
    source: DataSource,
    epochs: tuple[int, int] = (2, 12),
    repeats: int = 2,
    *,
    default_run: bool = False,
    each_round: Callable[[], object] | None = None,
) -> MainJobTiming:
    """Time ``train_mnist.py --quiet --epochs E`` for both epoch counts, alternately, ``repeats`` times each.

    With ``default_run``, each round also times the trainer's default run
    (no ``--epochs``), from the command to its exit. ``each_round`` is
    called at the start of every round (the speed benchmark times the
    floor there, so that drift on the machine hits both). The first round's
    runs also compile the package's bytecode (see ``child_environment``);
    the fastest of each kind is what counts.

    Raises:
        BenchmarkError: a run failed.
    """
    short, long = epochs
    if not 0 < short < long:
        raise ValueError(f"expected two epoch counts 0 < short < long, got {epochs}")
    counts: tuple[int | None, ...] = (*epochs, None) if default_run else epochs
    times: dict[int | None, list[float]] = {count: [] for count in counts}
    with child_environment() as env:
        for _ in range(repeats):
            if each_round is not None:
                each_round()
            for count in counts:
                command = trainer_command(source, count)
                start = time.perf_counter()
                done = subprocess.run(
                    command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, env=env
                )
                times[count].append(time.perf_counter() - start)
                if done.returncode != 0:
                    lines = done.stdout.strip().splitlines()
                    what = f"the main job of {count} epochs" if count is not None else "the default run"
                    raise BenchmarkError(
                        f"{what} exited with code {done.returncode}: " + (lines[-1] if lines else "no output")
                    )
    return MainJobTiming(
        trainer_command(source), epochs, tuple(times[short]), tuple(times[long]), tuple(times.get(None, ()))
    )


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
        with child_environment() as env:
            peak, seconds, lines = _run_child(command, wait4, "the training run", env)
            eval_peak, eval_seconds, _ = _run_child(_evaluator_command(source, model), wait4, "the evaluation", env)
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


def _run_child(
    command: list[str], wait4: Callable[..., Any], what: str, env: dict[str, str]
) -> tuple[float, float, list[str]]:
    """Run ``command``; its own peak RSS in MiB (see ``measure_peak_memory``), seconds and output lines."""
    start = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
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
