"""Both cores in one step: a mini-batch's two halves go forward and back at once, one in a second thread.

On two cores OpenBLAS's own two threads speed up a convolutional network's
products, but the copies, activations and pools between them run on one
core, and its spinning worker slows them down. Two threads that each step
on half of the mini-batch, with BLAS on one thread, keep both cores busy
through every call: NumPy and BLAS release the GIL for the work itself.
``docs/performance.md`` ("Both cores in one step") has the figures.

What each half computes is what the whole step computes for its rows: the
same forward pass, BP1 with the batch's -eta/m, and BP2 on its rows.
The halves' gradients are then added, and the update applied once, so the
only change is the order of the sums over the mini-batch: the weights
agree with the one-thread step's within float32 rounding
(``tests/test_split.py`` says by how much). Dropout masks are the same bit for bit: each half's draw is
its rows of the whole batch's draw, made from the run's generator in the
same order (``_Draws``). A batch norm's statistics and gradients span the
whole mini-batch: each half's batch norm adds the other's sums into its
own at a barrier (``_Exchange``), and only the first half updates the
running averages.

Used when it can help and cannot change a run's meaning (``wanted``): the
network has a convolution, the mini-batch has at least
``MIN_ROWS`` rows, the process may use two CPUs, BLAS runs more than one
thread (a caller that limited it to one wants one core), and threadpoolctl
(the ``fast`` extra) is there to hold BLAS to one thread while the halves run
(``one_thread_blas``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, Literal

import numpy as np

from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.batchnorm import BatchNormStep
from mnist_nn.nn.layers import Conv2D
from mnist_nn.nn.network import Network
from mnist_nn.train.optimizers import SGD
from mnist_nn.train.step import Step

MIN_ROWS = 8  # smaller mini-batches step in one thread: halves of 3 rows gain less than the handover costs


def threadpoolctl_module() -> ModuleType | None:
    """threadpoolctl if installed (the ``fast`` and ``bench`` extras), imported by name: it is optional and untyped."""
    try:
        return importlib.import_module("threadpoolctl")
    except ImportError:
        return None


def _blas_threads() -> int:
    """The threads of the first BLAS library NumPy loaded, as threadpoolctl reads them (1 without it)."""
    tpc = threadpoolctl_module()
    if tpc is None:
        return 1
    infos = [info for info in tpc.threadpool_info() if info.get("user_api") == "blas"]
    return int(infos[0]["num_threads"]) if infos else 1


def wanted(network: Network, m: int) -> bool:
    """Whether ``network``'s steps on m rows split across two threads (see the module docstring)."""
    if m < MIN_ROWS:
        return False
    if not any(isinstance(layer, Conv2D) for layer in network.layers):
        return False
    if len(os.sched_getaffinity(0)) < 2 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) < 2:
        return False
    return _blas_threads() >= 2


@contextlib.contextmanager
def one_thread_blas(active: bool) -> Iterator[None]:
    """BLAS on one thread while the block runs, if ``active``; otherwise nothing changes."""
    tpc = threadpoolctl_module() if active else None
    if tpc is None:
        yield
        return
    with tpc.threadpool_limits(limits=1, user_api="blas"):
        yield


class _Draws:
    """The run's generator, drawn for whole mini-batches and handed out to the halves by rows.

    Each half draws its masks in the same order as the whole step would (layer
    by layer, forward); the first half to ask for draw k makes it, for all m
    rows, in a buffer laid out like the whole step's mask (C or Fortran order),
    so every value lands where the one-thread step puts it.
    """

    def __init__(self, rng: np.random.Generator, m: int) -> None:
        self.rng, self.m = rng, m
        self.lock = threading.Lock()
        self.buffers: list[FloatArray] = []
        self.made = 0  # draws made in this step

    def restart(self) -> None:
        """A new step: its draws are still to be made."""
        self.made = 0

    def take(self, k: int, rows: slice, out: FloatArray) -> None:
        """out = rows ``rows`` of the step's draw k, made now if neither half has asked for it yet."""
        with self.lock:
            if k == self.made:
                if k == len(self.buffers):
                    order: Literal["C", "F"] = "F" if out.flags.f_contiguous and not out.flags.c_contiguous else "C"
                    self.buffers.append(np.empty((self.m, *out.shape[1:]), out.dtype, order=order))
                self.rng.random(dtype=out.dtype, out=self.buffers[k])
                self.made += 1
        np.copyto(out, self.buffers[k][rows])


class _HalfRng:
    """What one half's layers draw from: a generator's ``random(dtype=, out=)``, served by ``_Draws``."""

    def __init__(self, draws: _Draws, rows: slice) -> None:
        self.draws, self.rows = draws, rows
        self.k = 0

    def random(self, *, dtype: Any, out: FloatArray) -> None:
        """out = this half's rows of the step's next draw."""
        self.draws.take(self.k, self.rows, out)
        self.k += 1


class _Worker:
    """A daemon thread that runs one call at a time, handed over with ``start`` and collected with ``join``."""

    def __init__(self) -> None:
        self.ready = threading.Semaphore(0)
        self.done = threading.Semaphore(0)
        self.call: Callable[[], object] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, name="mnist_nn-split-step", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            self.ready.acquire()
            call = self.call
            if call is None:
                return
            try:
                call()
            except BaseException as error:  # handed to the caller by ``join``
                self.error = error
            self.done.release()

    def start(self, call: Callable[[], object]) -> None:
        """Run ``call`` in the thread."""
        self.call = call
        self.ready.release()

    def join(self) -> None:
        """Wait for the call; re-raise what it raised."""
        self.done.acquire()
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def close(self) -> None:
        """End the thread (after the call in progress, if any); again, nothing."""
        if not self.thread.is_alive():
            return
        self.call = None
        self.ready.release()
        self.thread.join()


class _Exchange:
    """Sums over both halves' rows for a pair of batch norm steps, each half's sums added into the other's.

    ``half(i)`` is half i's ``BatchNormStep.exchange``: it leaves its
    values (at most ``size`` of them) in a slot, waits at the barrier for
    the other half's, and adds them; a + b and b + a are the same float, so
    both halves hold the same totals. Calls alternate between two pairs of
    slots, so one barrier a call is enough: a half cannot overwrite a slot
    before the other has read it.
    """

    def __init__(self, barrier: threading.Barrier, size: int, dtype: np.dtype[Any]) -> None:
        self.barrier = barrier
        self.slots = np.empty((2, 2, size), dtype)  # [parity, half]
        self.calls = [0, 0]

    def half(self, i: int) -> Callable[[FloatArray], None]:
        """Half i's exchange."""

        def exchange(values: FloatArray) -> None:
            flat = values.reshape(-1)  # a view: the step's sums and gradients are contiguous
            parity = self.calls[i] % 2
            self.calls[i] += 1
            mine, theirs = self.slots[parity, i, : flat.size], self.slots[parity, 1 - i, : flat.size]
            np.copyto(mine, flat)
            self.barrier.wait()
            np.add(flat, theirs, out=flat)

        return exchange


class SplitStep:
    """One SGD step for ``network`` on mini-batches of m rows, its halves in two threads (``Step``'s interface).

    Rows ``[0, m1)`` step in the calling thread and ``[m1, m)`` in a thread of its own,
    m1 = ceil(m / 2), each a ``Step`` of its own with its own buffers; then
    the second half's gradients are added to the first's and the first applies
    the update. ``close`` ends its thread.

    Args:
        network, m, optimizer, dropout, rng: as for ``Step``.
    """

    def __init__(
        self,
        network: Network,
        m: int,
        optimizer: SGD,
        *,
        dropout: float,
        rng: np.random.Generator,
    ) -> None:
        m1 = (m + 1) // 2
        self.rows = (slice(0, m1), slice(m1, m))
        self.draws = _Draws(rng, m)
        self.rngs = (_HalfRng(self.draws, self.rows[0]), _HalfRng(self.draws, self.rows[1]))
        first, second = (
            Step(network, size, optimizer, dropout=dropout, rng=half_rng)  # type: ignore[arg-type]
            for size, half_rng in zip((m1, m - m1), self.rngs, strict=True)
        )
        self.first, self.second = first, second
        self.barrier = threading.Barrier(2)
        self.exchanges: list[_Exchange] = []
        self.sums: list[tuple[FloatArray, FloatArray]] = []
        for s1, s2 in zip(first.steps, second.steps, strict=True):
            if isinstance(s1, BatchNormStep) and isinstance(s2, BatchNormStep):
                # Statistics and gradients over the whole batch: each half adds in the other's sums.
                exchange = _Exchange(self.barrier, s1.grad.size, s1.grad.dtype)
                self.exchanges.append(exchange)
                for half, bn in enumerate((s1, s2)):
                    bn.total, bn.exchange, bn.keeps_running = m * (bn.n // len(bn.delta)), exchange.half(half), not half
            else:
                self.sums += zip(s1.grads, s2.grads, strict=True)
        # Started at the first step: a feed may fork its helper process after planning its steps, and a
        # process should not fork while another of its threads runs.
        self.worker: _Worker | None = None

    def __call__(
        self,
        xb: FloatArray,
        xb_t: FloatArray,
        yb: FloatArray,
        scale: float,
        decay: float,
        kept: FloatArray | None = None,
    ) -> None:
        """As ``Step.__call__``: the halves' gradients at once, then one update from their sum."""
        r1, r2 = self.rows
        self.draws.restart()
        for half_rng in self.rngs:
            half_rng.k = 0
        second = self.second
        kept2 = None if kept is None else kept[r2]
        if self.worker is None:
            self.worker = _Worker()
        self.worker.start(lambda: self._second_half(second, xb[r2], xb_t[:, r2], yb[r2], scale, kept2))
        try:
            self.first.gradients(xb[r1], xb_t[:, r1], yb[r1], scale, None if kept is None else kept[r1])
        except threading.BrokenBarrierError:  # the second half failed: its error is the one to raise
            self._reset()
            self.worker.join()
            raise
        except BaseException:
            self.barrier.abort()  # the second half may be waiting for this one's sums
            with contextlib.suppress(BaseException):
                self.worker.join()
            self._reset()
            raise
        self.worker.join()
        for g1, g2 in self.sums:
            np.add(g1, g2, out=g1)
        self.first.apply(decay)

    def _second_half(
        self, second: Step, xb: FloatArray, xb_t: FloatArray, yb: FloatArray, scale: float, kept: FloatArray | None
    ) -> None:
        """The second half's gradients (in the worker); on an error, release the first half from the barrier."""
        try:
            second.gradients(xb, xb_t, yb, scale, kept)
        except threading.BrokenBarrierError:
            raise
        except BaseException:
            self.barrier.abort()
            raise

    def _reset(self) -> None:
        """After a failed step: the barrier whole again and the exchanges back in step, for the next one."""
        self.barrier.reset()
        for exchange in self.exchanges:
            exchange.calls = [0, 0]

    def close(self) -> None:
        """End the second thread, if it started."""
        if self.worker is not None:
            self.worker.close()
