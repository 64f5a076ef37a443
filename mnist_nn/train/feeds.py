"""Feeds: where an epoch's mini-batches come from, a chunk of rows at a time, ready to step on.

``fit`` (``mnist_nn.train.loop``) draws each epoch's order and asks the
run's feed for that epoch's chunks: a few hundred rows of the order each,
cut into mini-batches that are views made once per run, each a ``Batch``
(its step, the rows as the first layer takes them, their transpose, their
one-hot targets, and their rows of the buffer where BP1 keeps the epoch's
running cost). A feed is one way of getting the rows there:

- ``WholeEpochFeed``: augmentation, input dropout and the expanded set
  change the whole epoch at once, so each epoch is shuffled (and distorted,
  and dropped out) into one full-size buffer first; its chunks are views of it.
- ``PixelFeed``: uint8 training pixels stay the caller's (no copy, a quarter
  of the memory of floats); each chunk's rows are taken as uint8 beside a
  column of 255s and scaled there by the loader's ``scale_pixels``, the
  same floats, bit for bit, as a float buffer would hold.
- ``ArrayFeed``: float images (or pixels through an input transform) go
  once, at the start, into one buffer of the network's dtype with the first
  layer's column of ones; each chunk's rows are taken from it by ``np.take``.

The last two gather each chunk into one small buffer that stays in cache,
just before its steps. ``Prefetched`` wraps either: a helper process
(``mnist_nn.train.prefetch``) runs the feed's own ``gather`` a few chunks
ahead of the steps, into shared buffers, so the rows, and the results, are
the same. ``training_set`` checks the training data, ``open_feed`` picks the
run's feed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from mnist_nn.config import TrainConfig
from mnist_nn.data import as_floats, scale_pixels
from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.network import IntArray, Network
from mnist_nn.train import prefetch, split
from mnist_nn.train.augment import AugmentConfig, augment_images, parse_augment
from mnist_nn.train.expand import expand_shifts
from mnist_nn.train.prefetch import Count, Prefetcher
from mnist_nn.train.run import Run
from mnist_nn.train.split import SplitStep
from mnist_nn.train.step import Step

Stepper = Step | SplitStep  # a mini-batch's step: in one thread, or its halves in two

_SHUFFLE_CHUNK = 2048  # rows gathered at a time when a whole epoch is shuffled; small enough to stay in cache
_GATHER_ROWS = 500  # rows per chunk: ~100 progress reports a 50,000-image epoch

# A mini-batch ready to step on: its step, x (m, n_in [+ 1]), x.T, one-hot y (m, n_out), kept rows (m, n_out) or None.
Batch = tuple[Stepper, FloatArray, FloatArray, FloatArray, FloatArray | None]


def check_pixels(network: Network, pixels: npt.NDArray[np.uint8], what: str) -> None:
    """ValueError unless ``pixels`` is a batch (n, n_in) of the network's inputs."""
    if pixels.ndim != 2 or pixels.shape[1] != network.input_size:
        raise ValueError(f"expected {what} of shape (n, {network.input_size}), got {pixels.shape}")


def prepared_images(network: Network, images: npt.ArrayLike, what: str = "images") -> FloatArray:
    """Images as the first layer sees them, in the network's dtype: uint8 pixels scaled, then the input transform."""
    pixels = np.asarray(images)
    if pixels.dtype == np.uint8:
        check_pixels(network, pixels, what)
        return network.prepare(as_floats(pixels, network.dtype))
    return network.prepare(network.check_images(pixels, what))


def _training_buffer(network: Network, images: npt.ArrayLike, extra: int) -> FloatArray:
    """(n, n_in + extra) in the network's dtype: the training images, then ``extra`` (0 or 1) columns of ones.

    For float images, and pixels that go through an input transform; other
    uint8 pixels stay as they are (see ``_training_pixels``).
    """
    buffer: FloatArray = _widened(prepared_images(network, images), network.dtype, extra)
    return buffer


def _training_pixels(network: Network, images: npt.ArrayLike) -> npt.NDArray[np.uint8] | None:
    """The training pixels (n, n_in) as they are, checked; None for floats.

    Pixels of a network with an input transform are None too: the transform
    works on floats. No copy is made: each chunk of an epoch is gathered
    from them (see ``_gather_scaled``).
    """
    pixels = np.asarray(images)
    if pixels.dtype != np.uint8 or network.transform is not None:
        return None
    check_pixels(network, pixels, "images")
    return pixels


def _widened(x: FloatArray, dtype: np.dtype[Any], extra: int) -> FloatArray:
    """A new (n, n_in + extra) array of ``dtype``: ``x``, then ``extra`` (0 or 1) columns of ones."""
    n, n_in = x.shape
    wide = np.empty((n, n_in + extra), dtype)
    wide[:, :n_in] = x
    if extra:
        wide[:, n_in] = 1.0
    return wide


def _shuffle_into(
    x: FloatArray,
    order: IntArray,
    x_shuf: FloatArray,
    staging: FloatArray,
    rng: np.random.Generator,
    augment: AugmentConfig | None,
    input_dropout: float,
) -> None:
    """x_shuf[:, :n_in] = x[order], distorted and dropped out as asked, through a small staging buffer.

    Every example is used once per epoch, so dropping input pixels here, for
    the whole epoch at once, is the same as drawing a mask at every step.

    Gathering straight into x_shuf's strided columns would make np.take
    allocate a full-size copy; a staging buffer that stays in cache does
    not. mode="clip" skips the bounds check that would also make np.take
    allocate.
    """
    n = x.shape[0]
    for k in range(0, n, staging.shape[0]):
        idx = order[k : k + staging.shape[0]]
        chunk = staging[: idx.shape[0]]
        np.take(x, idx, axis=0, out=chunk, mode="clip")
        target = x_shuf[k : k + idx.shape[0], : x.shape[1]]
        if augment is not None:
            augment_images(chunk, rng, augment, out=target)
        else:
            target[...] = chunk
        if input_dropout:
            keep = 1.0 - input_dropout
            rng.random(dtype=chunk.dtype, out=chunk)
            np.less(chunk, keep, out=chunk)
            np.multiply(chunk, 1.0 / keep, out=chunk)
            np.multiply(target, chunk, out=target)


def _gather_scaled(
    pixels: npt.NDArray[np.uint8],
    rows: IntArray,
    taken: npt.NDArray[np.uint8],
    staged: npt.NDArray[np.uint8],
    out: FloatArray,
) -> None:
    """out = pixels[rows] scaled (the float buffer's rows, bit for bit), then its columns of ones.

    The rows are taken as uint8 into ``taken`` (len(rows), n_in), copied
    into the first n_in columns of ``staged``, whose columns past n_in hold
    255s (a 255 scales to exactly 1.0, the first layer's column of ones),
    and the whole of ``staged`` is scaled into ``out`` in one contiguous
    pass, a third faster than scaling into ``out``'s strided first columns.
    Without extra columns ``taken`` is ``staged`` itself.
    """
    np.take(pixels, rows, axis=0, out=taken, mode="clip")
    if taken is not staged:
        staged[:, : taken.shape[1]] = taken
    scale_pixels(staged, out)


@dataclass(frozen=True, eq=False)
class TrainingSet:
    """The checked training set as ``open_feed`` takes it: its rows, their ``labels`` (n,), how they are distorted.

    The rows are ``pixels``, the caller's uint8 pixels (n, n_in) kept as they
    are, or else ``floats`` in the network's dtype: (n, n_in + 1) with the
    first layer's column of ones when it takes one, but (n, n_in) for a whole
    epoch feed, which adds that column itself. The expanded set has five rows
    per image.
    """

    pixels: npt.NDArray[np.uint8] | None
    floats: FloatArray | None
    labels: IntArray
    augment: AugmentConfig | None
    whole_epoch: bool  # augmentation, input dropout or the expanded set: a WholeEpochFeed


def training_set(network: Network, config: TrainConfig, images: npt.ArrayLike, labels: npt.ArrayLike) -> TrainingSet:
    """The training images and labels, checked against ``network`` and ``config`` and prepared for a feed.

    Raises:
        ValueError: an augmentation spec that names nothing, data that does not fit the network, or a
            batch larger than the data.
    """
    augment: AugmentConfig | None = parse_augment(config.augment) if config.augment else None
    whole_epoch = augment is not None or bool(config.input_dropout) or config.expand
    pixels = None if whole_epoch else _training_pixels(network, images)
    floats: FloatArray | None = None
    if pixels is None:
        extra = 1 if network.layers[0].ones_column else 0
        floats = prepared_images(network, images) if whole_epoch else _training_buffer(network, images, extra)
    source = pixels if pixels is not None else floats
    assert source is not None
    y = network.check_labels(labels, source.shape[0])
    if config.expand and floats is not None:
        floats, y = expand_shifts(floats, y)
    n = y.shape[0]
    if config.batch_size > n:
        raise ValueError(f"expected a batch size between 1 and {n} (the training set), got {config.batch_size}")
    return TrainingSet(pixels, floats, y, augment, whole_epoch)


@dataclass(frozen=True, eq=False)
class Chunk:
    """Rows start:stop of an epoch's order, in ``rows`` once gathered, and their mini-batches (views made once)."""

    start: int
    stop: int
    rows: FloatArray
    batches: list[Batch]


@dataclass(frozen=True, eq=False)
class Batching:
    """How every epoch of a run is cut, and what it steps towards: shared by the run's feed and any it wraps.

    Mini-batches of ``size`` rows, stepped on by ``full`` (a smaller last one
    by ``tail``, which is ``full`` when there is none), in chunks of ``rows``
    rows (whole mini-batches). ``labels`` are the one-hot targets (n, n_out)
    in the training set's order, ``targets`` the same in the epoch's order,
    and ``kept`` (None when the cost is not monitored) what BP1 keeps for the
    epoch's running cost, in the epoch's order too.
    """

    size: int
    rows: int
    full: Stepper
    tail: Stepper
    labels: FloatArray
    targets: FloatArray
    kept: FloatArray | None

    @property
    def steps(self) -> int:
        """Mini-batches an epoch."""
        return -(-int(self.labels.shape[0]) // self.size)

    def factors(self, rates: float | FloatArray, l2: float) -> list[tuple[float, float]]:
        """Each of the epoch's steps' (-eta/m, L2's decay 1 - eta lambda / n), in order.

        ``rates`` is the epoch's learning rate, or one per step.
        """
        n, size = self.labels.shape[0], self.size
        sizes = [size] * (self.steps - 1) + [n % size or size]
        if isinstance(rates, float):
            full, tail = (-rates / size, 1.0 - rates * l2 / n), (-rates / sizes[-1], 1.0 - rates * l2 / n)
            return [full] * (self.steps - 1) + [tail]
        return [(-r / m, 1.0 - r * l2 / n) for r, m in zip(rates.tolist(), sizes, strict=True)]

    def chunks(self, source: Callable[[int, int, int], FloatArray]) -> list[Chunk]:
        """The epoch's chunks, their rows ``source(index, start, stop)``, and the views of their mini-batches."""
        n, size, kept = self.labels.shape[0], self.size, self.kept
        chunks: list[Chunk] = []
        for start in range(0, n, self.rows):
            stop = min(start + self.rows, n)
            rows = source(len(chunks), start, stop)
            batches: list[Batch] = []
            for k in range(start, stop, size):
                xb = rows[k - start : k - start + size]
                step = self.full if xb.shape[0] == size else self.tail
                batches.append(
                    (step, xb, xb.T, self.targets[k : k + size], kept[k : k + size] if kept is not None else None)
                )
            chunks.append(Chunk(start, stop, rows, batches))
        return chunks


class Feed:
    """An epoch's mini-batches, a chunk of rows at a time, in the order each epoch is given.

    ``epoch(order)`` readies an epoch (the targets in its order, and whatever
    the feed does up front) and returns its chunks, each ready to step on when
    iteration reaches it and good until the next one is asked for. A feed is a
    context manager: leaving it stops anything it started. Subclasses say
    where the rows come from (``_start``, ``_chunks``).
    """

    def __init__(self, batching: Batching) -> None:
        self.batching = batching
        self.n = batching.labels.shape[0]

    @property
    def helper(self) -> Prefetcher | None:
        """The helper process gathering the chunks, which can count part of the validation set (None: none)."""
        return None

    def epoch(self, order: IntArray) -> Iterator[Chunk]:
        """The chunks of the epoch in ``order`` (n,), a permutation of the training rows."""
        self._start(order)
        np.take(self.batching.labels, order, axis=0, out=self.batching.targets, mode="clip")
        return self._chunks(order)

    def factors(self, rates: float | FloatArray, l2: float) -> list[tuple[float, float]]:
        """Each step's -eta/m and L2's decay, in order (``Batching.factors``)."""
        return self.batching.factors(rates, l2)

    def close(self) -> None:
        """Stop whatever the feed started: the steps' threads, if they split."""
        self.batching.full.close()
        self.batching.tail.close()

    def stepping(self) -> contextlib.AbstractContextManager[None]:
        """Where an epoch's steps run: BLAS on one thread while steps split across two (``split``)."""
        return split.one_thread_blas(isinstance(self.batching.full, SplitStep))

    def __enter__(self) -> Feed:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _start(self, order: IntArray) -> None:
        """What the epoch needs before its first chunk (nothing, here)."""

    def _chunks(self, order: IntArray) -> Iterator[Chunk]:
        """Each chunk of the epoch, its rows in place."""
        raise NotImplementedError


class WholeEpochFeed(Feed):
    """Each epoch shuffled, distorted and dropped out at once into one full-size buffer; the chunks are views of it.

    Args:
        x: (n, n_in) the training images as the first layer sees them, without a column of ones.
        batching: the run's batching.
        extra: 1 if the first layer takes a column of ones, else 0.
        dtype: the network's.
        rng: draws the distortions and the dropped pixels.
        augment: the distortions (None: none).
        input_dropout: the probability of dropping each pixel.
    """

    def __init__(
        self,
        x: FloatArray,
        batching: Batching,
        *,
        extra: int,
        dtype: np.dtype[Any],
        rng: np.random.Generator,
        augment: AugmentConfig | None,
        input_dropout: float,
    ) -> None:
        super().__init__(batching)
        self.x, self.rng, self.augment, self.input_dropout = x, rng, augment, input_dropout
        # Touched now (np.ones, not np.empty), so no epoch pays for fresh memory;
        # the last column is the first layer's ones, and stays 1.
        self.x_shuf = np.ones((self.n, x.shape[1] + extra), dtype)
        self.staging = np.empty((min(_SHUFFLE_CHUNK, self.n), x.shape[1]), dtype)
        self._views = batching.chunks(lambda index, start, stop: self.x_shuf[start:stop])

    def _start(self, order: IntArray) -> None:
        _shuffle_into(self.x, order, self.x_shuf, self.staging, self.rng, self.augment, self.input_dropout)

    def _chunks(self, order: IntArray) -> Iterator[Chunk]:
        return iter(self._views)


class GatheringFeed(Feed):
    """Each chunk's rows gathered in the epoch's order into one small buffer, just before its steps.

    ``gather`` is what a subclass says; ``Prefetched`` runs it in a helper
    process instead, into its own buffers.
    """

    def __init__(self, batching: Batching, width: int, dtype: np.dtype[Any]) -> None:
        super().__init__(batching)
        self.width, self.dtype = width, dtype  # of a gathered row

    def gather(self, order: IntArray, out: FloatArray) -> None:
        """out (len(order), width) = the rows ``order`` (part of an epoch's order), ready to step on."""
        raise NotImplementedError

    @cached_property
    def _views(self) -> list[Chunk]:
        """The chunks in one small buffer, made at the first epoch (a feed that ``Prefetched`` wraps needs none)."""
        gathered = np.empty((self.batching.rows, self.width), self.dtype)
        return self.batching.chunks(lambda index, start, stop: gathered[: stop - start])

    def _chunks(self, order: IntArray) -> Iterator[Chunk]:
        for chunk in self._views:
            self.gather(order[chunk.start : chunk.stop], chunk.rows)
            yield chunk


class PixelFeed(GatheringFeed):
    """uint8 training pixels (n, n_in), kept as they are: each chunk's rows taken beside a column of 255s and scaled.

    See ``_gather_scaled``; ``extra`` (0 or 1) is the first layer's column
    of ones, ``dtype`` the network's.
    """

    def __init__(self, pixels: npt.NDArray[np.uint8], batching: Batching, *, extra: int, dtype: np.dtype[Any]) -> None:
        n_in = pixels.shape[1]
        super().__init__(batching, n_in + extra, dtype)
        self.pixels = pixels
        # The first layer's ones column as 255s, written once; each chunk's pixels go before it.
        self.staged = np.empty((batching.rows, n_in + extra), np.uint8)
        self.staged[:, n_in:] = 255
        self.taken = np.empty((batching.rows, n_in), np.uint8) if extra else self.staged

    def gather(self, order: IntArray, out: FloatArray) -> None:
        m = order.shape[0]
        _gather_scaled(self.pixels, order, self.taken[:m], self.staged[:m], out)


class ArrayFeed(GatheringFeed):
    """Float training rows (n, width), ready to step on (the first layer's ones included): each chunk's taken as is."""

    def __init__(self, x: FloatArray, batching: Batching) -> None:
        super().__init__(batching, x.shape[1], x.dtype)
        self.x = x

    def gather(self, order: IntArray, out: FloatArray) -> None:
        np.take(self.x, order, axis=0, out=out, mode="clip")


class Prefetched(Feed):
    """``feed``'s chunks, gathered by a helper process (``Prefetcher``) a few ahead of the steps.

    The helper runs ``feed.gather`` on the same rows, so the floats are the
    same bit for bit; if it dies, this process gathers the rest with the same
    function. With ``count`` (see ``Prefetcher``) it also counts part of the
    validation set between epochs. The helper is forked here: ``close`` stops it.
    """

    def __init__(self, feed: GatheringFeed, *, count: Count | None = None, params: Sequence[FloatArray] = ()) -> None:
        super().__init__(feed.batching)
        rows = feed.batching.rows
        self.prefetcher = Prefetcher(feed.gather, self.n, rows, feed.width, feed.dtype, count=count, params=params)
        try:
            self._views = feed.batching.chunks(lambda index, start, stop: self.prefetcher.buffer(index))
        except BaseException:
            self.prefetcher.close()
            raise

    @property
    def helper(self) -> Prefetcher:
        """The helper process."""
        return self.prefetcher

    def close(self) -> None:
        """Stop the helper and the steps' threads."""
        try:
            self.prefetcher.close()
        finally:
            super().close()

    def _start(self, order: IntArray) -> None:
        self.prefetcher.start_epoch(order)

    def _chunks(self, order: IntArray) -> Iterator[Chunk]:
        prefetcher = self.prefetcher
        for index, chunk in enumerate(self._views):
            prefetcher.wait(index)
            yield chunk
            prefetcher.release()


def open_feed(run: Run, data: TrainingSet, *, monitor_cost: bool, helper: bool | None, count: Count | None) -> Feed:
    """The feed for ``run``'s epochs on ``data``, its steps made for the run's network and optimizer (planned).

    A gathering feed is wrapped in ``Prefetched`` when ``prefetch.plan(n,
    helper)`` says so, and handed ``count`` (the helper's part of a
    validation count) when it says the helper counts too.
    """
    config, network, n = run.config, run.network, data.labels.shape[0]
    size = config.batch_size
    rows = min(size * max(1, _GATHER_ROWS // size), n)  # whole mini-batches

    def step(m: int) -> Stepper:
        kind = SplitStep if split.wanted(network, m) else Step
        return kind(network, m, run.optimizer, dropout=config.dropout, rng=run.rng)

    full = step(size)
    tail = step(n % size) if n % size else full
    labels = network.one_hot(data.labels)
    if config.label_smoothing:  # (1 - s) y + s / K: every class keeps a little of each target
        smoothing = config.label_smoothing
        np.multiply(labels, 1.0 - smoothing, out=labels)
        np.add(labels, smoothing / labels.shape[1], out=labels)
    kept = np.empty_like(labels) if monitor_cost else None
    batching = Batching(size, rows, full, tail, labels, labels.copy(), kept)
    extra = 1 if network.layers[0].ones_column else 0
    if data.whole_epoch:
        assert data.floats is not None
        return WholeEpochFeed(
            data.floats,
            batching,
            extra=extra,
            dtype=network.dtype,
            rng=run.rng,
            augment=data.augment,
            input_dropout=config.input_dropout,
        )
    feed: GatheringFeed
    if data.pixels is not None:
        feed = PixelFeed(data.pixels, batching, extra=extra, dtype=network.dtype)
    else:
        assert data.floats is not None
        feed = ArrayFeed(data.floats, batching)
    gathers, counts = prefetch.plan(n, helper)
    if not gathers:
        return feed
    counts = counts and count is not None
    return Prefetched(feed, count=count if counts else None, params=network.params if counts else ())
