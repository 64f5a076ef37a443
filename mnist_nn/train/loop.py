"""The training loop: shuffling, the epochs, validation, the best weights and snapshots.

``fit`` is the one way to train: the command line, the benchmark and
Nielsen's ``Network.SGD`` all call it with a ``Run``. The training images
stay the caller's uint8 pixels when they come as pixels (no copy, a
quarter of the memory of floats); floats go once, at the start, into one
buffer of the network's dtype with the first layer's column of ones. Each
epoch draws a permutation and gathers the mini-batches' rows in that
order, a few hundred rows at a time, into a small staging buffer that
stays in cache (``np.take(..., out=)``; mini-batches are fixed views of
it), pixels taken as uint8 beside a column of 255s and scaled there by
the loader's ``scale_pixels`` (the same floats, bit for bit, as a float
buffer would hold); it runs ``Step`` on every mini-batch and records the
validation count, scaled a few thousand rows at a time (``count_correct``).
With a second CPU and a large enough set, a helper process does the
gathering instead, a few chunks ahead of the steps, into shared buffers
(``mnist_nn.train.prefetch``); the rows, and so the results, are the same.
Augmentation and input dropout distort a whole epoch at once, so those
runs shuffle into a second full-size buffer instead, as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mnist_nn.data import as_floats, scale_pixels
from mnist_nn.errors import NonFiniteError, TrainingError
from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.network import IntArray, Network
from mnist_nn.train import prefetch
from mnist_nn.train.augment import AugmentConfig, augment_images, parse_augment
from mnist_nn.train.expand import expand_shifts
from mnist_nn.train.history import EpochRecord
from mnist_nn.train.prefetch import Prefetcher
from mnist_nn.train.run import Run
from mnist_nn.train.schedules import learning_rate, stalled
from mnist_nn.train.step import Step

RunCallback = Callable[[EpochRecord, Run], None]
ProgressCallback = Callable[[int, int], None]

_SHUFFLE_CHUNK = 2048  # rows gathered at a time when a whole epoch is shuffled; small enough to stay in cache
_GATHER_ROWS = 500  # rows gathered at a time for the mini-batches: ~100 progress reports a 50,000-image epoch
_COUNT_ROWS = 2000  # validation pixels scaled and counted at a time: a float copy of 6 MB, not 31 MB


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


def _check_pixels(network: Network, pixels: npt.NDArray[np.uint8], what: str) -> None:
    """ValueError unless ``pixels`` is a batch (n, n_in) of the network's inputs."""
    if pixels.ndim != 2 or pixels.shape[1] != network.input_size:
        raise ValueError(f"expected {what} of shape (n, {network.input_size}), got {pixels.shape}")


def _prepared_images(network: Network, images: npt.ArrayLike, what: str = "images") -> FloatArray:
    """Images as the first layer sees them, in the network's dtype: uint8 pixels scaled, then the input transform."""
    pixels = np.asarray(images)
    if pixels.dtype == np.uint8:
        _check_pixels(network, pixels, what)
        return network.prepare(as_floats(pixels, network.dtype))
    return network.prepare(network.check_images(pixels, what))


def _training_buffer(network: Network, images: npt.ArrayLike, extra: int) -> FloatArray:
    """(n, n_in + extra) in the network's dtype: the training images, then ``extra`` (0 or 1) columns of ones.

    For float images, and pixels that go through an input transform; ``fit``
    keeps other uint8 pixels as they are (see ``_training_pixels``).
    """
    buffer: FloatArray = _widened(_prepared_images(network, images), network.dtype, extra)
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
    _check_pixels(network, pixels, "images")
    return pixels


def _widened(x: FloatArray, dtype: np.dtype[Any], extra: int) -> FloatArray:
    """A new (n, n_in + extra) array of ``dtype``: ``x``, then ``extra`` (0 or 1) columns of ones."""
    n, n_in = x.shape
    wide = np.empty((n, n_in + extra), dtype)
    wide[:, :n_in] = x
    if extra:
        wide[:, n_in] = 1.0
    return wide


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


def count_correct(
    network: Network, images: npt.ArrayLike, labels: npt.ArrayLike, buffer: FloatArray | None = None
) -> int:
    """How many of ``images`` the network gets right: floats as they are, uint8 pixels scaled a chunk at a time.

    Pixels (of a network without an input transform) are scaled into
    ``buffer`` (a few thousand rows of the network's dtype; one is made if
    None) and counted chunk by chunk, so no float copy of the whole set is
    ever made.
    """
    pixels = np.asarray(images)
    if pixels.dtype != np.uint8:
        return network.count_correct(pixels, labels)
    _check_pixels(network, pixels, "images")
    if network.transform is not None:
        return network.count_correct(as_floats(pixels, network.dtype), labels)
    y = network.check_labels(labels, pixels.shape[0])
    if buffer is None:
        buffer = np.empty((min(_COUNT_ROWS, max(pixels.shape[0], 1)), pixels.shape[1]), network.dtype)
    return _count_pixels(network, pixels, y, buffer)


def _count_pixels(network: Network, pixels: npt.NDArray[np.uint8], y: IntArray, buffer: FloatArray) -> int:
    """``count_correct`` of checked pixels and labels: scaled into ``buffer`` a chunk at a time, predicted, compared."""
    correct, rows, total = 0, buffer.shape[0], pixels.shape[0]
    for k in range(0, total, rows):
        chunk = buffer[: min(rows, total - k)]
        scale_pixels(pixels[k : k + rows], chunk)
        correct += int(np.count_nonzero(network.predict(chunk, prepared=True) == y[k : k + rows]))
    return correct


class _Validation:
    """The validation set, counted after every epoch.

    Floats are prepared once. uint8 pixels (of a network without an input
    transform) stay pixels: each count scales them a few thousand rows at a
    time into one small buffer, so the run never holds a full float copy
    beside the pixels its caller keeps. With a helper process, the helper
    counts the pixels from ``split`` on while this process counts those
    before (both on the same chunks of ``_COUNT_ROWS`` rows as a count here
    alone, so the count is the same).
    """

    def __init__(self, network: Network, images: npt.ArrayLike, labels: npt.ArrayLike) -> None:
        pixels = np.asarray(images)
        self.network = network
        if pixels.dtype == np.uint8 and network.transform is None:
            _check_pixels(network, pixels, "validation images")
            self.pixels: npt.NDArray[np.uint8] | None = pixels
            self.images = np.empty((min(_COUNT_ROWS, pixels.shape[0]), pixels.shape[1]), network.dtype)
        else:
            self.pixels = None
            self.images = _prepared_images(network, pixels, "validation images")
        self.total = pixels.shape[0]
        self.labels = network.check_labels(labels, self.total, "validation labels")
        chunks = -(-self.total // _COUNT_ROWS)
        self.split = _COUNT_ROWS * -(-chunks // 2) if self.pixels is not None and chunks > 1 else 0

    def count_correct(self, helper: Prefetcher | None = None) -> int:
        """How many of the validation images the network gets right; ``helper`` counts a part, where it can."""
        if self.pixels is None:
            return self.network.count_correct(self.images, self.labels, prepared=True)
        if helper is None or not self.split or not helper.start_count(self.network.params):
            return self._count(0, self.total)
        mine = self._count(0, self.split)
        theirs = helper.finish_count()
        if theirs is None or theirs < 0:  # the helper died or overflowed: its part is counted (or raised) here
            theirs = self._count(self.split, self.total)
        return mine + theirs

    def count_rest(self, params: list[FloatArray]) -> int:
        """The helper's part: the images from ``split`` on, counted by its own copy of the network with ``params``.

        -1 if the network's weighted inputs overflowed: the parent counts the part again and raises.
        """
        self.network.set_params(params)
        try:
            return self._count(self.split, self.total)
        except NonFiniteError:
            return -1

    def _count(self, start: int, stop: int) -> int:
        """The count of pixels start:stop (checked once, when this was made), a chunk at a time into the one buffer."""
        assert self.pixels is not None
        return _count_pixels(self.network, self.pixels[start:stop], self.labels[start:stop], self.images)


def _gatherer(
    pixels: npt.NDArray[np.uint8] | None, x: FloatArray | None, extra: int, rows: int
) -> Callable[[IntArray, FloatArray], None]:
    """gather(order's rows, out): the plain path's rows, ready to step on, for chunks of up to ``rows`` rows.

    From uint8 pixels: taken and scaled beside the first layer's ones (see
    ``_gather_scaled``), through two small uint8 buffers made here; from the
    float buffer ``x`` (its ones column included): taken as they are.
    """
    if pixels is None:
        assert x is not None
        source = x

        def take(order: IntArray, out: FloatArray) -> None:
            np.take(source, order, axis=0, out=out, mode="clip")

        return take
    n_in = pixels.shape[1]
    # The first layer's ones column as 255s, written once; each chunk's pixels go before it.
    staged = np.empty((rows, n_in + extra), np.uint8)
    staged[:, n_in:] = 255
    taken = np.empty((rows, n_in), np.uint8) if extra else staged

    def gather(order: IntArray, out: FloatArray) -> None:
        m = order.shape[0]
        _gather_scaled(pixels, order, taken[:m], staged[:m], out)

    return gather


@dataclass
class _Chunk:
    """Rows start:stop of an epoch: where they are gathered to (None: already in place) and their mini-batches."""

    start: int
    stop: int
    rows: FloatArray | None
    batches: list[tuple[Step, FloatArray, FloatArray, FloatArray, FloatArray | None]]  # step, xb, xb.T, yb, kept


def fit(
    run: Run,
    images: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    validation: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
    monitor_cost: bool = True,
    on_epoch: RunCallback | None = None,
    on_progress: ProgressCallback | None = None,
    helper: bool | None = None,
) -> Run:
    """Train ``run`` by mini-batch SGD up to ``run.config.epochs`` epochs in total.

    Every epoch shuffles the training set with ``run.rng`` (expanded with
    one-pixel shifts, and distorted, when the configuration asks), takes mini-batches of ``batch_size`` in
    order (the last one may be smaller) and moves the parameters by -eta/m
    times each batch's gradient sum, through the run's optimizer. A run
    that has trained some epochs continues from the next one: stopping after
    any epoch and continuing gives the same weights and records as training
    straight through, and the same run gives bit-identical results.

    Args:
        run: the run to train (its network, optimizer, generator and history change in place).
        images: (n, n_in) floats in [0, 1], or uint8 pixels 0-255 (kept as pixels, and scaled as the
            loader scales them as each chunk of mini-batches is gathered).
        labels: (n,) integer class labels.
        validation: ``(images, labels)`` (floats or uint8 pixels) counted after every epoch; the best
            epoch's weights are kept in ``run.best_params``.
        monitor_cost: record the mean cost over each epoch's mini-batches, as trained.
        on_epoch: called as ``on_epoch(record, run)`` after each epoch, once
            the best weights and the snapshot are updated (so it can save the run).
        on_progress: called as ``on_progress(examples_done, n)`` about 100 times an epoch.
        helper: gather each epoch's chunks in a helper process on a second core (``mnist_nn.train.prefetch``;
            runs that distort the whole epoch never do), and count part of the validation set there:
            None gathers there when ``prefetch.available`` says it helps, and counts there too when
            ``prefetch.one_blas_thread``; True does both always (Linux); False neither. The results
            are the same either way.

    Returns:
        ``run``.

    Raises:
        ValueError: data that does not fit the network, or a batch larger than the data.
        TrainingError: the weights or the cost stopped being finite (lower eta).
    """
    config, network, rng = run.config, run.network, run.rng
    if (config.schedule == "plateau" or config.early_stopping) and validation is None:
        raise ValueError("the plateau schedule and early stopping need validation data")
    augment: AugmentConfig | None = parse_augment(config.augment) if config.augment else None
    # Runs that distort or expand the whole epoch at once shuffle into a second full-size buffer;
    # the others gather each mini-batch's rows from the training pixels (uint8) or the one float buffer.
    whole_epoch = augment is not None or bool(config.input_dropout) or config.expand
    # A column of ones when the first layer asks for one (a dense layer's bias input).
    extra = 1 if network.layers[0].ones_column else 0
    x_shuf: FloatArray | None = None
    staging: FloatArray | None = None
    x: FloatArray | None = None
    # The plain path's training pixels, gathered as uint8 and scaled per chunk; None: a float buffer x.
    pixels = None if whole_epoch else _training_pixels(network, images)
    if pixels is None:
        x = _prepared_images(network, images) if whole_epoch else _training_buffer(network, images, extra)
    source_rows = pixels if pixels is not None else x
    assert source_rows is not None
    y = network.check_labels(labels, source_rows.shape[0])
    if config.expand and x is not None:
        x, y = expand_shifts(x, y)
    n = y.shape[0]
    if config.batch_size > n:
        raise ValueError(f"expected a batch size between 1 and {n} (the training set), got {config.batch_size}")
    val = _Validation(network, *validation) if validation is not None else None
    optimizer = run.optimizer
    optimizer.plan(network.params)
    history = run.history
    run.take_snapshot()

    dtype = network.dtype
    batch_size = config.batch_size
    gather_rows = batch_size * max(1, _GATHER_ROWS // batch_size)  # whole mini-batches
    gather: Callable[[IntArray, FloatArray], None] | None = None
    use_helper = helper_counts = False
    if whole_epoch:
        assert x is not None
        # Allocated once per run and touched now (np.ones, not np.empty), so no epoch pays for fresh
        # memory; x_shuf's last column is the first layer's ones, and stays 1.
        x_shuf = np.ones((n, x.shape[1] + extra), dtype)
        staging = np.empty((min(_SHUFFLE_CHUNK, n), x.shape[1]), dtype)
    else:
        gather_rows = min(gather_rows, n)
        width = pixels.shape[1] + extra if pixels is not None else source_rows.shape[1]
        gather = _gatherer(pixels, x, extra, gather_rows)
        use_helper, helper_counts = prefetch.plan(n, helper)
        if not use_helper:
            gathered = np.empty((gather_rows, width), dtype)
    y_src = network.one_hot(y)
    y_shuf = y_src.copy()
    kept = np.empty_like(y_src) if monitor_cost else None  # what BP1 keeps for the epoch's running cost
    full = Step(network, batch_size, optimizer, dropout=config.dropout, rng=rng, monitor_cost=monitor_cost)
    rest = n % batch_size
    tail = Step(network, rest, optimizer, dropout=config.dropout, rng=rng, monitor_cost=monitor_cost) if rest else full
    prefetcher: Prefetcher | None = None
    if use_helper and gather is not None:  # started last: from here on, the finally below stops it
        counts = helper_counts and val is not None and val.split > 0
        prefetcher = Prefetcher(
            gather,
            n,
            gather_rows,
            width,
            dtype,
            count=val.count_rest if val is not None and counts else None,
            params=network.params if counts else (),
        )
    try:
        # Every view the epochs use, made once: chunks of rows, each gathered at once, and their mini-batches.
        chunks: list[_Chunk] = []
        for start in range(0, n, gather_rows):
            stop = min(start + gather_rows, n)
            if x_shuf is not None:
                source = x_shuf[start:stop]
            elif prefetcher is not None:
                source = prefetcher.buffer(len(chunks))
            else:
                source = gathered[: stop - start]
            batches = []
            for k in range(start, stop, batch_size):
                xb = source[k - start : k - start + batch_size]
                step = full if xb.shape[0] == batch_size else tail
                batches.append(
                    (step, xb, xb.T, y_shuf[k : k + batch_size], kept[k : k + batch_size] if kept is not None else None)
                )
            chunks.append(_Chunk(start, stop, None if x_shuf is not None else source, batches))
        l2 = config.l2
        while len(history.epochs) < config.epochs and not stalled(history, config.early_stopping):
            epoch = len(history.epochs) + 1
            rate = learning_rate(
                history,
                eta=config.eta,
                schedule=config.schedule,
                epochs=config.epochs,
                patience=config.schedule_patience,
            )
            if rate is None:
                break
            start_time = time.perf_counter()
            order = rng.permutation(n)
            if x is not None and x_shuf is not None and staging is not None:
                _shuffle_into(x, order, x_shuf, staging, rng, augment, config.input_dropout)
            if prefetcher is not None:
                prefetcher.start_epoch(order)
            np.take(y_src, order, axis=0, out=y_shuf, mode="clip")
            decay = 1.0 - rate * l2 / n
            scales = {full: -rate / batch_size, tail: -rate / (rest or batch_size)}
            # Overflow shows up as inf or NaN in the weights, checked after the epoch
            # with a message that says what to do; NumPy's warnings would only add noise.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                for index, chunk in enumerate(chunks):
                    if prefetcher is not None:
                        prefetcher.wait(index)
                    elif gather is not None and chunk.rows is not None:
                        gather(order[chunk.start : chunk.stop], chunk.rows)
                    for step, xb, xb_t, yb, kept_rows in chunk.batches:
                        step(xb, xb_t, yb, scales[step], decay, kept_rows)
                    if prefetcher is not None:
                        prefetcher.release()
                    if on_progress is not None:
                        on_progress(chunk.stop, n)
            if not all(np.isfinite(p).all() for p in network.params):
                raise TrainingError(
                    f"the weights became infinite or NaN in epoch {epoch}; try a lower learning rate (eta={rate:g})"
                )
            train_cost = None
            if kept is not None:
                train_cost = network.cost.running_cost(kept, y_shuf) / n + (
                    l2 / n * network.l2_penalty() if l2 else 0.0
                )
                if not np.isfinite(train_cost):
                    raise TrainingError(
                        f"the cost became infinite or NaN in epoch {epoch}; try a lower learning rate (eta={rate:g})"
                    )
            try:
                correct = val.count_correct(prefetcher) if val is not None else None
            except NonFiniteError:
                raise TrainingError(
                    f"the network's outputs became infinite or NaN in epoch {epoch} (its weights are too large); "
                    f"try a lower learning rate (eta={rate:g})"
                ) from None
            record = EpochRecord(
                epoch=epoch,
                validation_correct=correct,
                validation_total=val.total if val is not None else None,
                train_cost=train_cost,
                seconds=time.perf_counter() - start_time,
                eta=rate,
            )
            history.epochs.append(record)
            best = history.best()
            if best is not None and best.epoch == record.epoch:
                run.best_params = network.copy_params()
                run.best_epoch = record.epoch
            run.take_snapshot()
            if on_epoch is not None:
                on_epoch(record, run)
    finally:
        if prefetcher is not None:
            prefetcher.close()
    return run
