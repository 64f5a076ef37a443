"""The training loop: shuffling, the epochs, validation, the best weights and snapshots.

``fit`` is the one way to train: the command line, the benchmark and
Nielsen's ``Network.SGD`` all call it with a ``Run``. Each epoch shuffles the
training set into one buffer allocated once per run (``np.take(..., out=)``
through a small staging buffer; mini-batches are slices of it, never
copies), distorts it when asked, runs ``Step`` on every mini-batch and
records the validation count.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from mnist_nn.errors import TrainingError
from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.network import IntArray
from mnist_nn.train.augment import AugmentConfig, augment_images, parse_augment
from mnist_nn.train.expand import expand_shifts
from mnist_nn.train.history import EpochRecord
from mnist_nn.train.run import Run
from mnist_nn.train.schedules import learning_rate, stalled
from mnist_nn.train.step import Step

RunCallback = Callable[[EpochRecord, Run], None]
ProgressCallback = Callable[[int, int], None]

_SHUFFLE_CHUNK = 2048  # rows gathered at a time; small enough to stay in cache


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
    allocate a full-size copy, and a shuffled copy of the whole training set
    with its ones column would double the memory held; a staging buffer that
    stays in cache costs neither. mode="clip" skips the bounds check that
    would also make np.take allocate.
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


def fit(
    run: Run,
    images: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    validation: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
    monitor_cost: bool = True,
    on_epoch: RunCallback | None = None,
    on_progress: ProgressCallback | None = None,
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
        images: (n, n_in) floats in [0, 1].
        labels: (n,) integer class labels.
        validation: ``(images, labels)`` counted after every epoch; the best
            epoch's weights are kept in ``run.best_params``.
        monitor_cost: record the mean cost over each epoch's mini-batches, as trained.
        on_epoch: called as ``on_epoch(record, run)`` after each epoch, once
            the best weights and the snapshot are updated (so it can save the run).
        on_progress: called as ``on_progress(examples_done, n)`` about 100 times an epoch.

    Returns:
        ``run``.

    Raises:
        ValueError: data that does not fit the network, or a batch larger than the data.
        TrainingError: the weights or the cost stopped being finite (lower eta).
    """
    config, network, rng = run.config, run.network, run.rng
    x = network.check_images(images)
    n = x.shape[0]
    y = network.check_labels(labels, n)
    x = network.prepare(x)  # the input transform, once for the whole run
    if config.expand:
        x, y = expand_shifts(x, y)
        n = x.shape[0]
    if config.batch_size > n:
        raise ValueError(f"expected a batch size between 1 and {n} (the training set), got {config.batch_size}")
    if (config.schedule == "plateau" or config.early_stopping) and validation is None:
        raise ValueError("the plateau schedule and early stopping need validation data")
    val: tuple[FloatArray, IntArray] | None = None
    if validation is not None:
        vx = network.check_images(validation[0], "validation images")
        val = (network.prepare(vx), network.check_labels(validation[1], vx.shape[0], "validation labels"))
    augment: AugmentConfig | None = parse_augment(config.augment) if config.augment else None
    optimizer = run.optimizer
    optimizer.plan(network.params)
    history = run.history
    run.take_snapshot()

    dtype = network.dtype
    # The buffers the shuffles go into, allocated once per run and touched now
    # (np.ones, not np.empty), so no epoch pays for fresh memory. When the first
    # layer asks for a column of ones (a dense layer's bias input), x_shuf's last
    # column is it, and stays 1.
    extra = 1 if network.layers[0].ones_column else 0
    x_shuf = np.ones((n, x.shape[1] + extra), dtype)
    staging = np.empty((min(_SHUFFLE_CHUNK, n), x.shape[1]), dtype)
    y_src = network.one_hot(y)
    y_shuf = y_src.copy()
    batch_size = config.batch_size
    # Mini-batches are fixed slices of the shuffle buffers: make their views once.
    batches = [(x_shuf[k : k + batch_size], y_shuf[k : k + batch_size]) for k in range(0, n, batch_size)]
    batches_t = [xb.T for xb, _ in batches]
    full = Step(network, batch_size, optimizer, dropout=config.dropout, rng=rng, monitor_cost=monitor_cost)
    rest = n % batch_size
    tail = Step(network, rest, optimizer, dropout=config.dropout, rng=rng, monitor_cost=monitor_cost) if rest else full
    report_every = max(1, len(batches) // 100)
    l2 = config.l2

    while len(history.epochs) < config.epochs and not stalled(history, config.early_stopping):
        epoch = len(history.epochs) + 1
        rate = learning_rate(
            history, eta=config.eta, schedule=config.schedule, epochs=config.epochs, patience=config.schedule_patience
        )
        if rate is None:
            break
        start = time.perf_counter()
        order = rng.permutation(n)
        _shuffle_into(x, order, x_shuf, staging, rng, augment, config.input_dropout)
        np.take(y_src, order, axis=0, out=y_shuf, mode="clip")
        decay = 1.0 - rate * l2 / n
        full.cost_sum = tail.cost_sum = 0.0
        # Overflow shows up as inf or NaN in the weights, checked after the epoch
        # with a message that says what to do; NumPy's warnings would only add noise.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for i, (xb, yb) in enumerate(batches):
                if xb.shape[0] == batch_size:
                    full(xb, batches_t[i], yb, -rate / batch_size, decay)
                else:
                    tail(xb, batches_t[i], yb, -rate / rest, decay)
                if on_progress is not None and i % report_every == 0:
                    on_progress(i * batch_size, n)
        if on_progress is not None:
            on_progress(n, n)
        if not all(np.isfinite(p).all() for p in network.params):
            raise TrainingError(
                f"the weights became infinite or NaN in epoch {epoch}; try a lower learning rate (eta={rate:g})"
            )
        train_cost = None
        if monitor_cost:
            cost_sum = full.cost_sum + (tail.cost_sum if tail is not full else 0.0)
            train_cost = cost_sum / n + (l2 / n * network.l2_penalty() if l2 else 0.0)
            if not np.isfinite(train_cost):
                raise TrainingError(
                    f"the cost became infinite or NaN in epoch {epoch}; try a lower learning rate (eta={rate:g})"
                )
        correct = network.count_correct(*val, prepared=True) if val is not None else None
        record = EpochRecord(
            epoch=epoch,
            validation_correct=correct,
            validation_total=val[0].shape[0] if val is not None else None,
            train_cost=train_cost,
            seconds=time.perf_counter() - start,
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
    return run
