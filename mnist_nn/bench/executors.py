"""Where the runs of a sweep execute: this process, local worker processes, or a Dask cluster.

A run is a ``RunTask``: one configuration with its seed, the training size
and where MNIST comes from. Wherever it lands, ``execute_task`` runs it: it
limits BLAS to one thread, loads MNIST through the verified download cache of
the machine it runs on (the arrays never travel with the task) and trains.
An executor takes a list of tasks and yields each one's outcome as it
finishes, in any order, as ``(index, outcome)``: a ``SeedResult``, or a
``TaskFailure`` saying why that run failed (a cache that failed
verification, a diverged run) while the other runs go on.

``InProcess`` (one run after another here, one BLAS thread, or with
``all_cores`` every core), ``LocalProcesses``
(``--jobs J``: J worker processes, one BLAS thread each) and
``DaskScheduler`` (``--scheduler ADDRESS``: the workers of a running Dask
distributed scheduler) share that one interface, so the sweep does not care
which runs it. Dask is an optional extra: ``distributed`` is imported only by
``DaskScheduler.run``, and a worker that dies mid-run has its task rerun
elsewhere by Dask itself.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import multiprocessing
import socket
import sys
import threading
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mnist_nn.bench.accuracy import SeedResult, train_seed
from mnist_nn.bench.common import DataSource
from mnist_nn.bench.machine import (
    can_limit_blas_threads,
    limit_blas_threads,
    one_blas_thread,
    single_blas_thread_env,
)
from mnist_nn.config import TrainConfig, config_from_dict
from mnist_nn.data import MnistData
from mnist_nn.errors import BenchmarkError, MnistNNError

DISTRIBUTED_INSTALL = "pip install 'mnist-nn[distributed]'"
DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds to reach a scheduler
DEFAULT_WORKER_WAIT = 300.0  # seconds a sweep waits while no worker is connected to its scheduler
DEFAULT_RETRIES = 2  # reruns of a task whose worker died (or that raised) before Dask gives up on it
_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class RunTask:
    """One (configuration, seed) run: all a worker needs, and small (the data is loaded where it runs)."""

    config: TrainConfig  # seed included
    train_size: int  # train on the first this many training images
    source: DataSource  # where the worker finds MNIST (None fields: the worker's own defaults)
    keep_probabilities: bool = False  # return the test output probabilities (for an ensemble)
    tta: bool = False  # also count with test-time augmentation


def canonical_json(obj: Any) -> str:
    """The one JSON text of ``obj``: sorted keys, no spaces (what keys are hashed from)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def configuration_key(config: TrainConfig, train_size: int, dataset: str = "mnist") -> str:
    """16 hex digits of the SHA-256 of a configuration (its seed left out), training size and data set.

    MNIST, the default, is left out of what is hashed, so MNIST's keys do not depend on it.
    """
    settings = config.to_dict()
    del settings["seed"]
    named = {"dataset": dataset} if dataset != "mnist" else {}
    text = canonical_json({"config": settings, "train_size": train_size, **named})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def run_key(task: RunTask) -> str:
    """A stable name of one run, from its configuration, training size, data set and seed: '<16 hex>-seed<S>'.

    A run also tested with test-time augmentation ends in '-tta'.
    """
    key = f"{configuration_key(task.config, task.train_size, task.source.dataset)}-seed{task.config.seed}"
    return f"{key}-tta" if task.tta else key


@dataclass(frozen=True)
class TaskFailure:
    """Why a run failed, in one line; the sweep reports it and goes on."""

    reason: str


Outcome = SeedResult | TaskFailure
EpochDone = Callable[[], None]
Outcomes = Generator[tuple[int, Outcome], None, None]  # (index into the tasks, its outcome), as each finishes


class Executor(Protocol):
    """Runs tasks somewhere and yields ``(index into tasks, outcome)`` as each finishes."""

    @property
    def description(self) -> str:
        """Where the runs go, for the report: "1 job", "2 jobs", "Dask scheduler tcp://..."."""

    @property
    def reports_epochs(self) -> bool:
        """Whether ``on_epoch`` is called after every epoch (else the sweep counts whole runs)."""

    def run(self, tasks: Sequence[RunTask], on_epoch: EpochDone | None = None) -> Outcomes:
        """Start the tasks and yield each one's outcome as it finishes."""


@functools.lru_cache(maxsize=1)
def _load(source: DataSource, dtype: str) -> MnistData:
    """MNIST for this process's tasks, loaded (and verified) once per source and dtype."""
    return source.load(dtype)


def _execute(task: RunTask, on_epoch: EpochDone | None = None) -> Outcome:
    """Load the data and train; a package error (a failed verification, a diverged run) is a failure."""
    try:
        data = _load(task.source, task.config.dtype)
        return train_seed(
            task.config, data, task.train_size, on_epoch, keep_probabilities=task.keep_probabilities, tta=task.tta
        )
    except MnistNNError as exc:
        return TaskFailure(f"{exc} (on {socket.gethostname()})")


def execute_task(task: RunTask) -> Outcome:
    """Run one task in a worker process with one BLAS thread (set here, so it holds on any worker)."""
    limit_blas_threads()
    return _execute(task)


def task_to_json(task: RunTask) -> str:
    """A task as JSON text: what a Dask worker is sent (no pickled objects of the project's)."""
    source = task.source
    return canonical_json(
        {
            "config": task.config.to_dict(),
            "train_size": task.train_size,
            "data_dir": None if source.data_dir is None else str(source.data_dir),
            "mirror": source.mirror,
            "dataset": source.dataset,
            **({"tta": True} if task.tta else {}),
        }
    )


def task_from_json(text: str) -> RunTask:
    """The inverse of ``task_to_json``; ValueError naming what is wrong."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or set(doc) - {"tta"} != {"config", "train_size", "data_dir", "mirror", "dataset"}:
        raise ValueError("expected a task object with config, train_size, data_dir, mirror, dataset and maybe tta")
    tta = doc.get("tta", False)
    if not isinstance(tta, bool):
        raise ValueError(f"expected tta as true or false, got {tta!r}")
    train_size, data_dir, mirror, dataset = doc["train_size"], doc["data_dir"], doc["mirror"], doc["dataset"]
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"expected dataset as a data set's name, got {dataset!r}")
    if not isinstance(train_size, int) or isinstance(train_size, bool) or train_size < 1:
        raise ValueError(f"expected train_size as an integer >= 1, got {train_size!r}")
    if not all(v is None or isinstance(v, str) for v in (data_dir, mirror)):
        raise ValueError(f"expected data_dir and mirror as text or null, got {data_dir!r} and {mirror!r}")
    source = DataSource(None if data_dir is None else Path(data_dir), mirror, dataset)
    return RunTask(config_from_dict(doc["config"]), train_size, source, tta=tta)


def outcome_to_json(outcome: Outcome) -> str:
    """A run's outcome as JSON text: what a Dask worker sends back."""
    if isinstance(outcome, TaskFailure):
        return canonical_json({"failure": outcome.reason})
    return canonical_json({"result": outcome.to_dict()})


def outcome_from_json(text: str) -> Outcome:
    """The inverse of ``outcome_to_json``; ValueError naming what is wrong."""
    doc = json.loads(text)
    if isinstance(doc, dict) and set(doc) == {"failure"} and isinstance(doc["failure"], str):
        return TaskFailure(doc["failure"])
    if isinstance(doc, dict) and set(doc) == {"result"}:
        return SeedResult.from_dict(doc["result"])
    raise ValueError("expected a run's outcome object with a result or a failure")


def execute_task_json(text: str) -> str:
    """``execute_task`` on JSON text, returning JSON text: what Dask workers run.

    Only text crosses the network in the project's own messages, so the
    client reads each result with ``json``, never with pickle. (Dask's own
    protocol still pickles the function reference and any error a worker
    raises: keep the scheduler on a network you trust.)
    """
    return outcome_to_json(execute_task(task_from_json(text)))


@dataclass(frozen=True)
class InProcess:
    """The runs one after another in this process, with one BLAS thread (as in the worker processes).

    With ``all_cores`` BLAS keeps its threads, and a convolutional network
    steps on both cores (``mnist_nn.train.split``), as ``train_mnist.py`` runs
    it: its counts then differ from the one-thread runs' by a few images.
    """

    all_cores: bool = False
    reports_epochs: bool = True

    @property
    def description(self) -> str:
        """How the report names this executor."""
        return "1 job on every core" if self.all_cores else "1 job"

    def run(self, tasks: Sequence[RunTask], on_epoch: EpochDone | None = None) -> Outcomes:
        """Yield each task's outcome in order."""
        for i, task in enumerate(tasks):
            with contextlib.nullcontext() if self.all_cores else one_blas_thread():
                outcome = _execute(task, on_epoch)
            yield i, outcome


def start_method() -> str:
    """How ``LocalProcesses`` starts its workers here: "fork" where that is safe, else "spawn".

    A forked worker starts at once with this process's imports and its loaded
    MNIST, where a spawned one spends about a second importing NumPy and the
    package and loading the data again. Forking is safe only on Linux (macOS
    frameworks are not fork-safe), while this process runs no other thread (a
    lock held by one would stay held in the child), and with threadpoolctl to
    bring the inherited BLAS down to one thread.
    """
    if sys.platform != "linux" or threading.active_count() != 1 or not can_limit_blas_threads():
        return "spawn"
    return "fork"


def _start_worker() -> None:
    """In a new worker process: one BLAS thread, and progress bars with a lock of this process's own.

    tqdm's default lock includes a ``multiprocessing`` lock shared with the
    parent; a forked worker would wait forever on it if the parent took it
    and never gave it back (an exception between its two locks).
    """
    limit_blas_threads()
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def _preload(tasks: Sequence[RunTask]) -> None:
    """Load the tasks' MNIST here before forking, when they all use the same (else each worker loads its own)."""
    wanted = {(task.source, task.config.dtype) for task in tasks}
    if len(wanted) == 1:
        source, dtype = next(iter(wanted))
        with contextlib.suppress(MnistNNError):  # each worker tries again and reports it as its task's failure
            _load(source, dtype)


@dataclass(frozen=True)
class LocalProcesses:
    """Up to ``jobs`` worker processes on this machine, one BLAS thread each (see ``start_method``)."""

    jobs: int
    reports_epochs: bool = False

    @property
    def description(self) -> str:
        """ "2 jobs"."""
        return f"{self.jobs} jobs"

    def run(self, tasks: Sequence[RunTask], on_epoch: EpochDone | None = None) -> Outcomes:
        """Yield outcomes as the workers finish them.

        Raises:
            BenchmarkError: a worker process died.
        """
        if not tasks:
            return
        # Forked workers inherit the data loaded here, and this process's BLAS with its thread
        # count, which the initializer brings down to one. Spawned ones import numpy afresh and
        # read the variables set here; they are started as tasks are submitted, so every
        # submission happens while the variables are set. Forked ones all start at the first
        # submission, before the pool starts its own threads.
        method = start_method()
        if method == "fork":
            _preload(tasks)
            method = start_method()  # a download while preloading may have started a thread (tqdm's monitor)
        executor: ProcessPoolExecutor | None = None
        try:
            with single_blas_thread_env():
                executor = ProcessPoolExecutor(
                    max_workers=min(self.jobs, len(tasks)),
                    mp_context=multiprocessing.get_context(method),
                    initializer=_start_worker,
                )
                futures: dict[Future[Outcome], int] = {executor.submit(execute_task, t): i for i, t in enumerate(tasks)}
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BrokenProcessPool as exc:
            raise BenchmarkError(f"a worker process died before finishing its run ({exc}); try fewer jobs") from None
        finally:
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)


def import_distributed() -> Any:
    """Dask's ``distributed`` package (untyped), or BenchmarkError saying what to install."""
    try:
        return importlib.import_module("distributed")
    except ImportError as exc:
        raise BenchmarkError(
            f"a Dask scheduler needs Dask's 'distributed' package, which cannot be imported ({exc}): "
            f"{DISTRIBUTED_INSTALL}"
        ) from None


@dataclass(frozen=True)
class DaskScheduler:
    """The workers of a running Dask distributed scheduler, e.g. ``tcp://10.0.0.5:8786``.

    Each task is submitted under a key derived from the task itself, with
    ``retries``: a task whose worker dies is rerun on another worker by the
    scheduler (and after ``retries`` errors, or when its workers keep dying,
    it is reported failed). Every wait has a deadline: ``connect_timeout``
    to reach the scheduler (and to get it back if the connection drops), and
    ``worker_wait`` while no worker at all is connected.
    """

    address: str
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    worker_wait: float = DEFAULT_WORKER_WAIT
    retries: int = DEFAULT_RETRIES
    reports_epochs: bool = False

    @property
    def description(self) -> str:
        """ "Dask scheduler tcp://..."."""
        return f"Dask scheduler {self.address}"

    def connect(self) -> Any:
        """A ``distributed.Client`` of the scheduler.

        Raises:
            BenchmarkError: distributed is not installed, or the scheduler cannot be reached in time.
        """
        distributed = import_distributed()
        try:
            return distributed.Client(self.address, timeout=self.connect_timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise BenchmarkError(
                f"cannot reach the Dask scheduler at {self.address} within {self.connect_timeout:g} s ({reason}); "
                "is 'dask scheduler' running there, and is the address right?"
            ) from None

    def run(self, tasks: Sequence[RunTask], on_epoch: EpochDone | None = None) -> Outcomes:
        """Submit every task to the scheduler and yield outcomes as the workers finish them.

        Raises:
            BenchmarkError: no scheduler, no workers for ``worker_wait`` seconds, or the scheduler went away.
        """
        if not tasks:
            return
        client = self.connect()
        pending: dict[Any, int] = {}
        try:
            for i, task in enumerate(tasks):
                future = client.submit(execute_task_json, task_to_json(task), key=_task_key(task), retries=self.retries)
                pending[future] = i
            yield from self._collect(client, pending)
        finally:
            try:
                if pending:
                    client.cancel(list(pending))
                client.close(timeout=self.connect_timeout)
            except Exception:  # the scheduler may be gone already; nothing more to tidy
                pass

    def _collect(self, client: Any, pending: dict[Any, int]) -> Outcomes:
        """Poll the futures until all are done, with deadlines on a lost scheduler and on no workers."""
        now = time.monotonic()
        seen_workers, seen_scheduler = now, now
        while pending:
            done = [future for future in pending if future.done()]
            for future in done:
                i = pending.pop(future)
                outcome = _outcome(future)
                future.release()
                yield i, outcome
            if done:
                continue
            now = time.monotonic()
            if client.status == "running":
                seen_scheduler = now
            elif now - seen_scheduler > self.connect_timeout:
                raise BenchmarkError(
                    f"lost the Dask scheduler at {self.address} for more than {self.connect_timeout:g} s "
                    f"with {len(pending)} runs unfinished; runs already finished are kept in --results"
                )
            if _worker_count(client) > 0:
                seen_workers = now
            elif now - seen_workers > self.worker_wait:
                raise BenchmarkError(
                    f"no Dask worker has been connected to {self.address} for {self.worker_wait:g} s; "
                    f"start some with 'dask worker {self.address}'"
                )
            time.sleep(_POLL_SECONDS)


def _task_key(task: RunTask) -> str:
    """A Dask key naming the task by its content, so that resubmitting a task finds the same one."""
    return f"mnist-nn-run-{run_key(task)}"


def _worker_count(client: Any) -> int:
    try:
        return len(client.scheduler_info().get("workers", {}))
    except Exception:  # a client between connections has no fresh information; assume none
        return 0


def _outcome(future: Any) -> Outcome:
    """A finished Dask future's result, or a failure naming what went wrong."""
    status = future.status
    if status == "finished":
        result = future.result()
        if not isinstance(result, str):
            return TaskFailure(f"a worker returned {type(result).__name__}, not a run's result as JSON text")
        try:
            return outcome_from_json(result)
        except ValueError as unreadable:
            return TaskFailure(f"a worker returned an unreadable result ({unreadable})")
    if status == "error":
        exc = future.exception()
        reason = " ".join(str(exc).split())
        return TaskFailure(f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__)
    return TaskFailure(f"the Dask scheduler reports the run {status}")
