"""A helper process that gathers each epoch's chunks of shuffled rows on the second core, ahead of the steps.

Gathering an epoch's rows in shuffled order and scaling the pixels costs
about a tenth of an epoch of the chapter-1 network, and a thread cannot
take it off the steps: they hold the GIL between their small calls. A
process forked when ``fit`` opens its feed can: ``feeds.Prefetched`` wraps
a feed that gathers (uint8 pixels, or a float buffer) in a ``Prefetcher``.
The parent draws each epoch's permutation and writes it into memory
shared with the helper; the helper gathers chunk after chunk into a ring
of shared buffers, running up to ``slots`` chunks ahead, and the parent
steps on each chunk once it is ready. The helper runs the feed's own
gather function, on the same rows, so the floats and the results are the
same bit for bit; only who computes them changes.

Between epochs the helper can also count part of the validation set: the
parent copies the weights into shared memory, counts its own part while the
helper counts the other, and adds the two (``start_count``, ``finish_count``).

The helper never decides anything: it ignores Ctrl-C (the parent stops it),
is killed by Linux the moment its parent ends (``PR_SET_PDEATHSIG``; it
also polls for its parent), holds none of the parent's file locks
(``mnist_nn.files`` closes them in a forked child), and if it dies the
parent does the rest itself. Two semaphores count the ready and the free buffers; nothing else
is shared but the permutation, the buffers, a copy of the weights, and three
words: stop, the command (gather an epoch or count) and the count.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import multiprocessing
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.synchronize import Semaphore
from typing import Any

import numpy as np

from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.network import IntArray

Gather = Callable[[IntArray, FloatArray], None]  # gather(part of the epoch's order, out): those rows, ready to step on
Count = Callable[[list[FloatArray]], int]  # count(weights): the helper's part of the validation count with them

MIN_ROWS = 10_000  # smaller training sets gather in a few milliseconds an epoch: not worth a process
_POLL_SECONDS = 0.5  # how often a waiting side checks that the other is still alive
_STOP_SECONDS = 2.0  # how long closing waits for the helper to exit before terminating it
_STOP, _COMMAND, _RESULT = range(3)  # the shared words
_GATHER, _COUNT = 1, 2  # commands


def one_blas_thread() -> bool:
    """Whether BLAS runs one thread, as OpenBLAS reads it from the environment when it loads.

    Counting beside the helper pays only then: with more, both processes'
    BLAS threads share two CPUs, and their spin-waits cost more than the
    split saves (an epoch of the chapter-1 network 13% slower, measured).
    """
    for name in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            return value == "1"
    return False


def plan(n: int, helper: bool | None = None) -> tuple[bool, bool]:
    """(gathers, counts): whether a run of ``n`` training rows has a helper, and whether it counts there.

    ``helper`` None chooses (``available``, then ``one_blas_thread``), True
    asks for both, False for neither.
    """
    if helper is not None:
        return helper, helper
    gathers = available(n)
    return gathers, gathers and one_blas_thread()


def available(n: int) -> bool:
    """Whether a helper would help here: Linux (fork), a second CPU for this process, the main thread of a
    process that may have children, and at least ``MIN_ROWS`` training rows.
    """
    if sys.platform != "linux" or n < MIN_ROWS:
        return False
    if len(os.sched_getaffinity(0)) < 2:
        return False
    return threading.current_thread() is threading.main_thread() and not multiprocessing.current_process().daemon


class Prefetcher:
    """Chunks of ``rows`` rows of an ``n``-row epoch, gathered by a helper process into ``slots`` shared buffers.

    Chunk ``c`` of every epoch covers rows ``c * rows`` to ``min((c + 1) * rows, n)``
    of the epoch's order and lands in ``buffers[c % slots]``. Each epoch:
    ``start_epoch(order)``, then for each chunk in turn ``wait(c)``, step on
    it, ``release()``. Between epochs, ``start_count(weights)``, count this
    process's part, then ``finish_count()``. ``close()`` stops the helper.

    Args:
        gather: fills ``out`` (len(rows), width) with the rows; called in the helper (and here if it dies).
        n: rows in an epoch.
        rows: rows per chunk.
        width: columns of a gathered row.
        dtype: the buffers' dtype.
        slots: buffers in the ring; the helper runs up to this many chunks ahead.
        count: the helper's part of a validation count, given the weights (None: it counts nothing).
        params: arrays shaped like the weights ``count`` takes.
    """

    def __init__(
        self,
        gather: Gather,
        n: int,
        rows: int,
        width: int,
        dtype: np.dtype[Any],
        slots: int = 4,
        count: Count | None = None,
        params: Sequence[FloatArray] = (),
    ) -> None:
        if n < 1 or rows < 1 or slots < 1:
            raise ValueError(f"expected at least one row, one row per chunk and one slot, got {n}, {rows}, {slots}")
        self.gather, self.n, self.rows, self.slots, self.count = gather, n, rows, slots, count
        self.chunks = -(-n // rows)
        # One anonymous mapping, shared with the forked helper: the order, the ring, the weights, the words.
        # Each part starts on a cache line.
        sizes = [n * 8, slots * rows * width * dtype.itemsize, *(p.nbytes for p in params), 3 * 8]
        offsets = np.cumsum([0, *(-(-size // 64) * 64 for size in sizes)]).tolist()
        self._memory = mmap.mmap(-1, offsets[-1])
        self._order: IntArray = np.frombuffer(self._memory, np.int64, n)
        self.buffers: list[FloatArray] = list(
            np.frombuffer(self._memory, dtype, slots * rows * width, offsets[1]).reshape(slots, rows, width)
        )
        self._params: list[FloatArray] = [
            np.frombuffer(self._memory, p.dtype, p.size, offset).reshape(p.shape)
            for p, offset in zip(params, offsets[2:-2], strict=True)
        ]
        self._words = np.frombuffer(self._memory, np.int64, 3, offsets[-2])
        context = multiprocessing.get_context("fork")
        self._go: Semaphore = context.Semaphore(0)
        self._ready: Semaphore = context.Semaphore(0)
        self._free: Semaphore = context.Semaphore(slots)
        self._failed = True  # until the helper has started
        self._process = context.Process(target=self._serve, args=(os.getpid(),), name="mnist-nn-gather", daemon=True)
        try:
            with _signals_blocked(), warnings.catch_warnings():
                # The helper runs only NumPy's copies and these semaphores, no lock another thread may hold.
                warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*fork.*")
                self._process.start()
                self._failed = False
        except BaseException:
            self.close()  # a signal held back during the fork arrives here: the helper goes with it
            raise

    def buffer(self, chunk: int) -> FloatArray:
        """Where chunk ``chunk`` is gathered: its rows of the ring's buffer."""
        size = min(self.rows, self.n - chunk * self.rows)
        return self.buffers[chunk % self.slots][:size]

    def start_epoch(self, order: IntArray) -> None:
        """Hand the helper this epoch's order (n,): it starts gathering chunk 0 at once."""
        self._order[:] = order
        if not self._failed:
            self._words[_COMMAND] = _GATHER
            self._go.release()

    def wait(self, chunk: int) -> None:
        """Block until chunk ``chunk`` (the next one, in order) is in its buffer."""
        if not self._ready_or_failed():
            start = chunk * self.rows
            self.gather(self._order[start : start + self.rows], self.buffer(chunk))

    def start_count(self, params: Sequence[FloatArray]) -> bool:
        """Hand the helper these weights to count its part of the validation set; False: it cannot (count it here).

        Only between epochs: every chunk of the last one has been waited for.
        """
        if self._failed or self.count is None:
            return False
        for shared, p in zip(self._params, params, strict=True):
            shared[...] = p
        self._words[_COMMAND] = _COUNT
        self._go.release()
        return True

    def finish_count(self) -> int | None:
        """The helper's count, once it is done; None if it died meanwhile (count its part here)."""
        if not self._ready_or_failed():
            return None
        return int(self._words[_RESULT])

    def _ready_or_failed(self) -> bool:
        """Take one 'ready' from the helper; False if it is dead (from then on this process does everything)."""
        if self._failed:
            return False
        while not self._ready.acquire(timeout=_POLL_SECONDS):
            if not self._process.is_alive():
                self._failed = True
                return False
        return True

    def release(self) -> None:
        """The chunk last waited for has been stepped on: its buffer may take another."""
        if not self._failed:
            self._free.release()

    def close(self) -> None:
        """Stop the helper and wait for it to exit (terminating it after a few seconds)."""
        if self._process.pid is None or self._words[_STOP]:
            return
        self._words[_STOP] = 1
        self._go.release()
        for _ in range(self.slots):
            self._free.release()
        self._process.join(_STOP_SECONDS)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(_STOP_SECONDS)
        self._failed = True

    def _serve(self, parent: int) -> None:
        """The helper: for every epoch, gather each chunk into the next free buffer; count when asked."""
        _die_with_parent()
        if os.getppid() != parent:  # the parent died before the line above could take effect
            return
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the helper
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPPING_SIGNALS)
        while self._acquire(self._go, parent):
            if self._words[_COMMAND] == _COUNT and self.count is not None:
                self._words[_RESULT] = self.count(self._params)
                self._ready.release()
                continue
            for chunk in range(self.chunks):
                if not self._acquire(self._free, parent):
                    return
                start = chunk * self.rows
                self.gather(self._order[start : start + self.rows], self.buffer(chunk))
                self._ready.release()

    def _acquire(self, semaphore: Semaphore, parent: int) -> bool:
        """Take ``semaphore``; False once the parent says stop or is gone."""
        while not semaphore.acquire(timeout=_POLL_SECONDS):
            if os.getppid() != parent:
                return False
        return not self._words[_STOP]


_STOPPING_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when the thread that forked it ends


def _die_with_parent() -> None:
    """Have Linux kill this process (SIGKILL) the moment its parent ends, even by ``kill -9``.

    Without it, the helper would notice within ``_POLL_SECONDS``; meanwhile it
    would hold whatever the parent shared with it. Elsewhere, or if libc
    cannot be loaded, the polling alone remains.
    """
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """SIGINT and SIGTERM held back while the helper is forked: it must not run the parent's handlers."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
