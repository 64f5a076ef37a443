"""Mini-batch stochastic gradient descent: shuffling, the vectorized step, per-epoch records.

``sgd`` trains a ``Network`` in place and returns its ``History``. The step
is ``Network.backprop`` (BP1-BP4) rewritten for speed: at Nielsen's
mini-batch of 10 an epoch is 5,000 steps of tiny matrix products, so the cost
is NumPy's per-call overhead and every call the math does not need is gone:

- the training images get a column of ones once per run, so each layer is
  one matrix product (see ``mnist_nn.network`` on ``params``);
- each epoch shuffles into one contiguous buffer allocated once per run
  (``np.take(..., out=)``), and mini-batches are slices of it, never copies;
- every intermediate has a preallocated buffer written with ``out=``;
- -eta/m multiplies the output delta once; BP2 carries it to every layer, so
  each update is one in-place add of a gradient computed by one product.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from mnist_nn.config import TrainConfig
from mnist_nn.errors import TrainingError
from mnist_nn.network import FloatArray, IntArray, Network


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch measured.

    ``validation_correct`` and ``validation_total`` are None when no
    validation data was given; ``train_cost`` is the mean cost over the whole
    training set at the end of the epoch (None when not monitored).
    """

    epoch: int
    validation_correct: int | None
    validation_total: int | None
    train_cost: float | None
    seconds: float
    eta: float

    @property
    def validation_accuracy(self) -> float | None:
        """validation_correct / validation_total, in [0, 1]."""
        if self.validation_correct is None or not self.validation_total:
            return None
        return self.validation_correct / self.validation_total

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, accuracy included."""
        d = asdict(self)
        d["validation_accuracy"] = self.validation_accuracy
        return d


@dataclass
class History:
    """Per-epoch records of a training run, and which epoch was best on validation."""

    epochs: list[EpochRecord] = field(default_factory=list)

    def best(self) -> EpochRecord | None:
        """The earliest epoch with the highest validation count (None without validation)."""
        scored = [r for r in self.epochs if r.validation_correct is not None]
        if not scored:
            return None
        return max(scored, key=lambda r: (r.validation_correct, -r.epoch))

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-ready records."""
        return [r.to_dict() for r in self.epochs]

    @classmethod
    def from_list(cls, records: list[dict[str, Any]]) -> History:
        """The inverse of ``to_list``; raises ValueError for malformed records."""
        names = ("epoch", "validation_correct", "validation_total", "train_cost", "seconds", "eta")
        try:
            return cls([EpochRecord(**{k: r[k] for k in names}) for r in records])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed history record: {exc}") from None


class _Layer:
    """Preallocated buffers of one layer for a mini-batch of m rows, and views of its parameters.

    ``a`` is the layer's output with a trailing column of ones (the next
    layer's bias input); ``a_view`` is its first n columns, where the
    activation writes. The transposed views are made once here because making
    a view costs as much as a small ufunc call.
    """

    def __init__(self, param: FloatArray, m: int, last: bool) -> None:
        n_out = param.shape[1]
        dtype = param.dtype
        self.param = param
        self.weights_t = param[:-1].T  # (n_out, n_in): BP2's weights_{l+1}.T
        # Hidden layers are column-major: then a_view, the activation's output, is
        # contiguous too, and the elementwise calls on it run about twice as fast.
        order: Literal["C", "F"] = "C" if last else "F"
        self.z = np.empty((m, n_out), dtype, order=order)
        self.a = self.z if last else np.ones((m, n_out + 1), dtype, order=order)
        self.a_view = self.z if last else self.a[:, :-1]
        self.a_t = self.a.T
        self.delta = np.empty((m, n_out), dtype, order=order)
        self.work = np.empty((m, n_out), dtype, order=order)
        self.grad = np.empty_like(param)


def _make_layers(net: Network, m: int) -> list[_Layer]:
    last = len(net.params) - 1
    return [_Layer(p, m, i == last) for i, p in enumerate(net.params)]


def _step(net: Network, layers: list[_Layer], xb: FloatArray, xb_t: FloatArray, yb: FloatArray, scale: float) -> None:
    """One SGD step on a batch: params += scale * grad, with scale = -eta/m.

    xb (m, n_in + 1) carries its ones column and xb_t is its transpose; yb is one-hot.
    """
    matmul = np.matmul
    forward = net.activation.forward
    scale_by_derivative = net.activation.scale_by_derivative
    a = xb
    for layer in layers:
        matmul(a, layer.param, out=layer.z)
        forward(layer.z, out=layer.a_view)
        a = layer.a
    top = layers[-1]
    net.cost.output_delta(top.a, yb, net.activation, top.delta, top.work)  # BP1
    # Scaling delta_L by -eta/m once scales every delta below it (BP2 is linear),
    # so each gradient product below is already the update.
    np.multiply(top.delta, scale, out=top.delta)
    for i in range(len(layers) - 1, 0, -1):
        layer, below = layers[i], layers[i - 1]
        matmul(below.a_t, layer.delta, out=layer.grad)  # BP4, with BP3 in the last row
        matmul(layer.delta, layer.weights_t, out=below.delta)  # BP2, before the update
        scale_by_derivative(below.a_view, below.delta, below.work)
        np.add(layer.param, layer.grad, out=layer.param)
    first = layers[0]
    matmul(xb_t, first.delta, out=first.grad)
    np.add(first.param, first.grad, out=first.param)


EpochCallback = Callable[[EpochRecord], None]
ProgressCallback = Callable[[int, int], None]


def _check_hyperparameters(epochs: int, batch_size: int, eta: float, n: int) -> None:
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"expected epochs >= 0, got {epochs!r}")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise ValueError(f"expected a batch size between 1 and {n} (the training set), got {batch_size!r}")
    if not np.isfinite(eta) or eta <= 0:
        raise ValueError(f"expected a learning rate eta > 0, got {eta!r}")


def sgd(
    network: Network,
    images: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    epochs: int,
    batch_size: int,
    eta: float,
    rng: np.random.Generator,
    validation: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
    monitor_cost: bool = True,
    on_epoch: EpochCallback | None = None,
    on_progress: ProgressCallback | None = None,
    history: History | None = None,
) -> History:
    """Train ``network`` in place by mini-batch SGD.

    Every epoch shuffles the training set with ``rng``, takes mini-batches of
    ``batch_size`` in order (the last one may be smaller) and moves the
    parameters by -eta/m times each batch's gradient sum. The same network,
    data and ``rng`` state give bit-identical weights and records.

    Args:
        network: the network to train; its dtype is the training dtype.
        images: (n, n_in) floats in [0, 1].
        labels: (n,) integer class labels.
        epochs: passes over the training set.
        batch_size: examples per step, 1..n.
        eta: the learning rate.
        rng: the generator that shuffles.
        validation: ``(images, labels)`` counted after every epoch.
        monitor_cost: record the mean training cost after every epoch.
        on_epoch: called with each ``EpochRecord``.
        on_progress: called as ``on_progress(examples_done, n)`` about 100 times an epoch.
        history: a run's history to continue: training starts at the epoch after
            its last and ``epochs`` counts the total.

    Returns:
        The ``History``.

    Raises:
        ValueError: bad shapes or hyperparameters.
        TrainingError: the weights stopped being finite (lower eta).
    """
    x = network.check_images(images)
    n = x.shape[0]
    y = network.check_labels(labels, n)
    _check_hyperparameters(epochs, batch_size, eta, n)
    val: tuple[FloatArray, IntArray] | None = None
    if validation is not None:
        vx = network.check_images(validation[0], "validation images")
        val = (vx, network.check_labels(validation[1], vx.shape[0], "validation labels"))

    dtype = network.dtype
    # The source with its ones column, and the buffers the shuffles go into:
    # allocated (and touched) once per run, so no epoch pays for fresh memory.
    x_src = np.ones((n, x.shape[1] + 1), dtype)
    x_src[:, :-1] = x
    y_src = network.one_hot(y)
    x_shuf = x_src.copy()  # a copy, not np.empty: its pages are touched now, not in epoch 1
    y_shuf = y_src.copy()
    # Mini-batches are fixed slices of the shuffle buffers: make their views once.
    starts = range(0, n, batch_size)
    batches = [(x_shuf[k : k + batch_size], y_shuf[k : k + batch_size]) for k in starts]
    batches_t = [xb.T for xb, _ in batches]
    full = _make_layers(network, batch_size)
    rest = n % batch_size
    tail = _make_layers(network, rest) if rest else full
    report_every = max(1, len(batches) // 100)

    history = history if history is not None else History()
    for epoch in range(len(history.epochs) + 1, epochs + 1):
        start = time.perf_counter()
        order = rng.permutation(n)
        # mode="clip" skips the bounds check that would make np.take allocate a copy.
        np.take(x_src, order, axis=0, out=x_shuf, mode="clip")
        np.take(y_src, order, axis=0, out=y_shuf, mode="clip")
        scale = -eta / batch_size
        for i, (xb, yb) in enumerate(batches):
            if xb.shape[0] == batch_size:
                _step(network, full, xb, batches_t[i], yb, scale)
            else:
                _step(network, tail, xb, batches_t[i], yb, -eta / rest)
            if on_progress is not None and i % report_every == 0:
                on_progress(i * batch_size, n)
        if on_progress is not None:
            on_progress(n, n)
        if not all(np.isfinite(p).all() for p in network.params):
            raise TrainingError(
                f"the weights became infinite or NaN in epoch {epoch}; try a lower learning rate (eta={eta:g})"
            )
        train_cost = network.total_cost(x, y) if monitor_cost else None
        correct = network.count_correct(*val) if val is not None else None
        record = EpochRecord(
            epoch=epoch,
            validation_correct=correct,
            validation_total=val[0].shape[0] if val is not None else None,
            train_cost=train_cost,
            seconds=time.perf_counter() - start,
            eta=eta,
        )
        history.epochs.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return history


@dataclass
class Run:
    """A training run: its configuration and everything needed to continue it.

    ``network`` holds the current weights (those of the last epoch trained);
    ``best_params`` the weights of the epoch with the highest validation
    count so far, which is what a run serves unless told to keep the last.
    A model file stores all of it, so a saved run can be resumed exactly.
    """

    config: TrainConfig
    network: Network
    rng: np.random.Generator
    history: History = field(default_factory=History)
    best_params: list[FloatArray] | None = None
    best_epoch: int | None = None

    @classmethod
    def start(cls, config: TrainConfig) -> Run:
        """A new run: one generator seeded with ``config.seed`` draws the weights, then shuffles."""
        rng = np.random.default_rng(config.seed)
        network = Network(config.sizes, rng=rng, dtype=config.dtype, activation=config.activation, cost=config.cost)
        return cls(config=config, network=network, rng=rng)

    @property
    def epochs_completed(self) -> int:
        """Epochs trained so far."""
        return len(self.history.epochs)

    def served(self, keep_last: bool = False) -> tuple[list[FloatArray], int]:
        """The weights this run serves and the epoch they come from.

        The best validation epoch's weights, or the last epoch's when
        ``keep_last`` is set or no epoch was validated.
        """
        if keep_last or self.best_params is None or self.best_epoch is None:
            return self.network.params, self.epochs_completed
        return self.best_params, self.best_epoch

    def served_network(self, keep_last: bool = False) -> Network:
        """A copy of the network holding the served weights (see ``served``)."""
        params, _ = self.served(keep_last)
        net = Network(
            self.network.sizes,
            dtype=self.network.dtype,
            activation=self.network.activation.name,
            cost=self.network.cost.name,
        )
        net.set_params(params)
        return net


RunCallback = Callable[[EpochRecord, Run], None]


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
    """Train ``run`` up to ``run.config.epochs`` epochs in total, keeping the best epoch's weights.

    A run that has already trained some epochs continues from the next one,
    with its generator where it left off: stopping after any epoch and
    continuing gives the same weights and records as training straight through.
    ``on_epoch(record, run)`` is called after the best weights are updated,
    so it can save the run.
    """
    config = run.config

    def after_epoch(record: EpochRecord) -> None:
        best = run.history.best()
        if best is not None and best.epoch == record.epoch:
            run.best_params = run.network.copy_params()
            run.best_epoch = record.epoch
        if on_epoch is not None:
            on_epoch(record, run)

    sgd(
        run.network,
        images,
        labels,
        epochs=config.epochs,
        batch_size=config.batch_size,
        eta=config.eta,
        rng=run.rng,
        validation=validation,
        monitor_cost=monitor_cost,
        on_epoch=after_epoch,
        on_progress=on_progress,
        history=run.history,
    )
    return run
