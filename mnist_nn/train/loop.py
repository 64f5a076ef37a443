"""The training loop: ``fit``, mini-batch SGD epoch after epoch, with validation, best weights and snapshots.

``fit`` is the one way to train: the command line, the benchmark and
Nielsen's ``Network.SGD`` all call it with a ``Run``. It reads as the
algorithm; three objects, each made once per run, hold the rest:

- the feed (``mnist_nn.train.feeds``) gives each epoch's mini-batches in
  the order ``fit`` draws, a chunk of a few hundred rows at a time, every
  mini-batch a view made once (its step, its rows and their transpose,
  its one-hot targets, its rows of the running cost's buffer): from uint8
  pixels scaled as each chunk is gathered, from a float buffer, or from a
  whole epoch shuffled and distorted at once; a helper process on a
  second core can gather the chunks ahead of the steps.
- ``Step`` (``mnist_nn.train.step``) moves the parameters by one
  mini-batch, on buffers planned once; each mini-batch costs nothing but
  its step.
- ``Validation`` (``mnist_nn.train.validation``) counts the validation
  set after every epoch, part of it in the helper process where there is one.

Overflow is checked once per epoch, after its steps, with a message saying
what to do: the weights and the running cost must be finite, and so must
the validation outputs.

The same run gives the same results bit for bit, whichever feed and with
or without the helper; a run stopped after any epoch and continued gives
the weights and records of training straight through, as everything an
epoch draws from (generator, optimizer state, history) belongs to the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from mnist_nn.errors import NonFiniteError, TrainingError
from mnist_nn.nn.network import Network
from mnist_nn.train.feeds import Batching, Feed, open_feed, training_set
from mnist_nn.train.history import EpochRecord
from mnist_nn.train.prefetch import Prefetcher
from mnist_nn.train.run import Run
from mnist_nn.train.schedules import learning_rate, stalled, step_rates
from mnist_nn.train.validation import Validation

RunCallback = Callable[[EpochRecord, Run], None]
ProgressCallback = Callable[[int, int], None]


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
    """Train ``run`` by mini-batch SGD up to ``run.config.epochs`` epochs in total; returns ``run``.

    Args:
        run: trained in place; a run that has trained some epochs continues from the next one.
        images: (n, n_in) floats in [0, 1] or uint8 pixels (kept as pixels).
        labels: (n,) class labels.
        validation: ``(images, labels)`` counted after every epoch; the best epoch's weights go to ``run.best_params``.
        monitor_cost: record each epoch's mean cost over its mini-batches, as trained.
        on_epoch: ``on_epoch(record, run)`` after each epoch, once the best weights and the snapshot are updated.
        on_progress: ``on_progress(examples_done, n)`` about 100 times an epoch.
        helper: gather chunks and count validation in a helper process (``prefetch.plan``: None where it helps).

    Raises:
        ValueError: data that does not fit the network, or a batch larger than the data.
        TrainingError: the weights, the cost or the validation outputs stopped being finite (lower eta).
    """
    config, network, history = run.config, run.network, run.history
    if (config.schedule == "plateau" or config.early_stopping) and validation is None:
        raise ValueError("the plateau schedule and early stopping need validation data")
    data = training_set(network, config, images, labels)
    run.optimizer.plan(network.params)
    val = Validation(run.evaluated(), *validation) if validation is not None else None
    run.take_snapshot()
    count = val.count_rest if val is not None and val.split else None
    with open_feed(run, data, monitor_cost=monitor_cost, helper=helper, count=count) as feed:
        while len(history.epochs) < config.epochs and not stalled(history, config.early_stopping):
            epoch, rate = len(history.epochs) + 1, _learning_rate(run)
            if rate is None:
                break
            start_time = time.perf_counter()
            chunks = feed.epoch(run.rng.permutation(feed.n))
            factors = iter(_factors(run, feed, epoch, rate))  # read across the chunks
            # Overflow (inf or NaN) is checked after the steps, with advice; NumPy's warnings would only add noise.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"), feed.stepping():
                for chunk in chunks:
                    for (step, xb, xb_t, yb, kept_rows), (scale, decay) in zip(chunk.batches, factors, strict=False):
                        step(xb, xb_t, yb, scale, decay, kept_rows)
                    if on_progress is not None:
                        on_progress(chunk.stop, feed.n)
            _check_weights(network, epoch, rate)
            train_cost = _train_cost(network, feed.batching, config.l2, epoch, rate)
            correct, total = _count(run, val, feed.helper, epoch, rate)
            record = EpochRecord(epoch, correct, total, train_cost, time.perf_counter() - start_time, rate)
            history.epochs.append(record)
            _keep_if_best(run, record)
            run.take_snapshot()
            if on_epoch is not None:
                on_epoch(record, run)
    return run


def _learning_rate(run: Run) -> float | None:
    """The next epoch's learning rate under the run's schedule; None: the schedule says stop."""
    config = run.config
    return learning_rate(
        run.history, eta=config.eta, schedule=config.schedule, epochs=config.epochs, patience=config.schedule_patience
    )


def _factors(run: Run, feed: Feed, epoch: int, rate: float) -> list[tuple[float, float]]:
    """Each of the epoch's steps' -eta/m and L2's decay: eta the epoch's ``rate``, or one per step (one-cycle)."""
    config = run.config
    rates = step_rates(config.schedule, config.eta, epoch, config.epochs, feed.batching.steps)
    return feed.factors(rate if rates is None else rates, config.l2)


def _check_weights(network: Network, epoch: int, rate: float) -> None:
    """TrainingError unless every weight is finite after ``epoch``."""
    if not all(np.isfinite(p).all() for p in network.params):
        raise TrainingError(
            f"the weights became infinite or NaN in epoch {epoch}; try a lower learning rate (eta={rate:g})"
        )


def _train_cost(network: Network, batching: Batching, l2: float, epoch: int, rate: float) -> float | None:
    """The epoch's mean cost over its mini-batches as trained (L2's term included); None if not monitored.

    Raises:
        TrainingError: the cost is infinite or NaN.
    """
    if batching.kept is None:
        return None
    n = batching.labels.shape[0]
    cost: float = network.cost.running_cost(batching.kept, batching.targets) / n + (
        l2 / n * network.l2_penalty() if l2 else 0.0
    )
    if not np.isfinite(cost):
        raise TrainingError(
            f"the cost became infinite or NaN in epoch {epoch}; try a lower learning rate (eta={rate:g})"
        )
    return cost


def _count(
    run: Run, val: Validation | None, helper: Prefetcher | None, epoch: int, rate: float
) -> tuple[int | None, int | None]:
    """(correct, total) of the run's evaluated weights on the validation set after ``epoch`` (Nones without one).

    Raises:
        TrainingError: the outputs overflowed.
    """
    if val is None:
        return None, None
    run.evaluated()  # the average of the weights, brought up to date, when the run keeps one
    try:
        return val.count(helper), val.total
    except NonFiniteError:
        raise TrainingError(
            f"the network's outputs became infinite or NaN in epoch {epoch} (its weights are too large); "
            f"try a lower learning rate (eta={rate:g})"
        ) from None


def _keep_if_best(run: Run, record: EpochRecord) -> None:
    """Copy the weights into ``run.best_params`` if ``record``'s epoch is the best so far."""
    best = run.history.best()
    if best is not None and best.epoch == record.epoch:
        run.best_params = run.evaluated().copy_params()
        run.best_epoch = record.epoch
