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
from typing import Any

import numpy as np
import numpy.typing as npt

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


class _Workspace:
    """Preallocated buffers for one mini-batch size m."""

    def __init__(self, sizes: tuple[int, ...], m: int, dtype: np.dtype[Any]) -> None:
        outs = sizes[1:]
        self.z = [np.empty((m, n), dtype) for n in outs]
        # Hidden activations carry a trailing column of ones for the next layer's biases.
        self.a = [np.ones((m, n + 1), dtype) for n in outs[:-1]]
        self.a_view = [a[:, :-1] for a in self.a]
        self.delta = [np.empty((m, n), dtype) for n in outs]
        self.work = [np.empty((m, n), dtype) for n in outs]
        self.grad = [np.empty((n_in + 1, n_out), dtype) for n_in, n_out in zip(sizes[:-1], outs, strict=True)]


def _step(net: Network, ws: _Workspace, xb: FloatArray, yb: FloatArray, scale: float) -> None:
    """One SGD step on the batch (xb with its ones column, yb one-hot): params += scale * grad."""
    params = net.params
    act = net.activation
    last = len(params) - 1
    a = xb
    for layer in range(last):
        np.matmul(a, params[layer], out=ws.z[layer])
        act.forward(ws.z[layer], out=ws.a_view[layer])
        a = ws.a[layer]
    out = ws.z[last]
    np.matmul(a, params[last], out=out)
    act.forward(out, out=out)
    delta = ws.delta[last]
    net.cost.output_delta(out, yb, act, delta, ws.work[last])  # BP1
    np.multiply(delta, scale, out=delta)  # scale = -eta/m, carried by BP2 to every layer
    for layer in range(last, -1, -1):
        a_prev = ws.a[layer - 1] if layer else xb
        np.matmul(a_prev.T, ws.delta[layer], out=ws.grad[layer])  # BP3 + BP4 in one product
        if layer:
            # BP2 with this layer's weights before their update.
            np.matmul(ws.delta[layer], params[layer][:-1].T, out=ws.delta[layer - 1])
            act.scale_by_derivative(ws.a_view[layer - 1], ws.delta[layer - 1], ws.work[layer - 1])
        np.add(params[layer], ws.grad[layer], out=params[layer])


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
    x_shuf = np.empty_like(x_src)
    y_shuf = np.empty_like(y_src)
    full = _Workspace(network.sizes, batch_size, dtype)
    rest = n % batch_size
    tail = _Workspace(network.sizes, rest, dtype) if rest else full
    report_every = max(1, (n // batch_size) // 100) * batch_size

    history = History()
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        order = rng.permutation(n)
        # mode="clip" skips the bounds check that would make np.take allocate a copy.
        np.take(x_src, order, axis=0, out=x_shuf, mode="clip")
        np.take(y_src, order, axis=0, out=y_shuf, mode="clip")
        scale = -eta / batch_size
        for k in range(0, n - rest, batch_size):
            _step(network, full, x_shuf[k : k + batch_size], y_shuf[k : k + batch_size], scale)
            if on_progress is not None and (k + batch_size) % report_every == 0:
                on_progress(k + batch_size, n)
        if rest:
            _step(network, tail, x_shuf[n - rest :], y_shuf[n - rest :], -eta / rest)
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
