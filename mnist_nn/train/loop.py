"""Mini-batch stochastic gradient descent: shuffling, the vectorized step, per-epoch records.

``sgd`` trains a ``Network`` in place and returns its ``History``. The step
is ``Network.backprop`` (BP1-BP4) rewritten for speed: at Nielsen's
mini-batch of 10 an epoch is 5,000 steps of tiny matrix products, so the cost
is NumPy's per-call overhead and every call the math does not need is gone:

- the training images get a column of ones once per run, so each layer is
  one matrix product (see ``mnist_nn.nn.network`` on ``params``);
- each epoch shuffles into one buffer allocated once per run (``np.take(...,
  out=)`` through a small staging buffer), and mini-batches are slices of it,
  never copies;
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
from mnist_nn.nn.network import FloatArray, IntArray, Network
from mnist_nn.train.augment import AugmentConfig, augment_images, parse_augment
from mnist_nn.train.transforms import input_transform


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

    def __init__(self, net: Network, index: int, m: int, dropout: float, nesterov: bool, momentum: float) -> None:
        param = net.params[index]
        last = index == len(net.params) - 1
        n_out = param.shape[1]
        dtype = param.dtype
        self.param = param
        self.weights = param[:-1]  # a contiguous view: L2 decays it in place
        self.weights_t = param[:-1].T  # (n_out, n_in): BP2's weights_{l+1}.T
        self.activation = net.layer_activations[index]
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
        # Inverted dropout on hidden layers: the activation goes to ``pre``, and
        # a_view = pre * mask, with mask 1/keep for kept neurons and 0 for dropped.
        self.dropout = dropout if not last else 0.0
        self.pre = np.empty((m, n_out), dtype, order=order) if self.dropout else self.a_view
        self.mask = np.empty((m, n_out), dtype, order=order) if self.dropout else self.a_view
        self.velocity_step = np.empty_like(param) if nesterov else self.grad
        self.momentum = momentum


class _Stepper:
    """The vectorized SGD step for one network and mini-batch size, with its options."""

    def __init__(self, net: Network, m: int, options: _Options, velocity: list[FloatArray] | None) -> None:
        self.net = net
        self.options = options
        self.layers = [
            _Layer(net, i, m, options.dropout, options.nesterov, options.momentum) for i in range(len(net.params))
        ]
        self.velocity = velocity
        self.cost_sum = 0.0

    def step(self, xb: FloatArray, xb_t: FloatArray, yb: FloatArray, scale: float, decay: float) -> None:
        """One step on a batch: params += scale * grad (scale = -eta/m), with the options' extras.

        xb (m, n_in + 1) carries its ones column and xb_t is its transpose; yb is one-hot.
        """
        matmul = np.matmul
        layers = self.layers
        opts = self.options
        a = xb
        for layer in layers:
            matmul(a, layer.param, out=layer.z)
            if layer.dropout:
                layer.activation.forward(layer.z, out=layer.pre)
                opts.rng.random(dtype=layer.mask.dtype, out=layer.mask)
                np.less(layer.mask, opts.keep, out=layer.mask)
                np.multiply(layer.mask, 1.0 / opts.keep, out=layer.mask)
                np.multiply(layer.pre, layer.mask, out=layer.a_view)
            else:
                layer.activation.forward(layer.z, out=layer.a_view)
            a = layer.a
        top = layers[-1]
        if opts.monitor_cost:
            self.cost_sum += self.net.cost.fn(top.a, yb)
        self.net.cost.output_delta(top.a, yb, top.delta, top.work)  # BP1
        # Scaling delta_L by -eta/m once scales every delta below it (BP2 is linear),
        # so each gradient product below is already the update.
        np.multiply(top.delta, scale, out=top.delta)
        for i in range(len(layers) - 1, -1, -1):
            layer = layers[i]
            if i:
                below = layers[i - 1]
                matmul(below.a_t, layer.delta, out=layer.grad)  # BP4, with BP3 in the last row
                matmul(layer.delta, layer.weights_t, out=below.delta)  # BP2, before the update
                below.activation.scale_by_derivative(below.pre, below.delta, below.work)
                if below.dropout:
                    np.multiply(below.delta, below.mask, out=below.delta)
            else:
                matmul(xb_t, layer.delta, out=layer.grad)
            self._update(i, layer, decay)

    def _update(self, i: int, layer: _Layer, decay: float) -> None:
        """params += the step: plain, classical momentum or Nesterov, after L2 weight decay."""
        if decay != 1.0:
            np.multiply(layer.weights, decay, out=layer.weights)  # w -> (1 - eta lambda / n) w
        if self.velocity is None:
            np.add(layer.param, layer.grad, out=layer.param)
            return
        v = self.velocity[i]
        np.multiply(v, layer.momentum, out=v)
        np.add(v, layer.grad, out=v)  # v -> mu v - eta/m grad
        if self.options.nesterov:
            # Nesterov's look-ahead, in the form that needs no second gradient:
            # w -> w + mu v_new - eta/m grad.
            np.multiply(v, layer.momentum, out=layer.velocity_step)
            np.add(layer.velocity_step, layer.grad, out=layer.velocity_step)
            np.add(layer.param, layer.velocity_step, out=layer.param)
        else:
            np.add(layer.param, v, out=layer.param)


@dataclass(frozen=True)
class _Options:
    """The per-step options of a run."""

    rng: np.random.Generator
    dropout: float
    keep: float
    nesterov: bool
    momentum: float
    monitor_cost: bool


EpochCallback = Callable[[EpochRecord], None]
ProgressCallback = Callable[[int, int], None]

SCHEDULES = ("constant", "plateau", "cosine")


def _check_hyperparameters(epochs: int, batch_size: int, eta: float, n: int) -> None:
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"expected epochs >= 0, got {epochs!r}")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise ValueError(f"expected a batch size between 1 and {n} (the training set), got {batch_size!r}")
    if not np.isfinite(eta) or eta <= 0:
        raise ValueError(f"expected a learning rate eta > 0, got {eta!r}")


def learning_rate(history: History, *, eta: float, schedule: str, epochs: int, patience: int = 5) -> float | None:
    """The learning rate of the epoch after ``history``'s last, or None when the schedule says stop.

    - constant: eta throughout.
    - cosine: eta * (1 + cos(pi * t / epochs)) / 2 for the t-th epoch (t from 0).
    - plateau: network2's rule: halve eta whenever validation accuracy has not
      improved for ``patience`` epochs, and stop once it falls below eta / 128.

    Every schedule is a function of the history alone, so a resumed run
    continues it exactly.
    """
    if schedule == "constant":
        return eta
    if schedule == "cosine":
        t = len(history.epochs)
        return 0.5 * eta * (1.0 + float(np.cos(np.pi * t / max(epochs, 1))))
    if schedule == "plateau":
        current, best, since = eta, -1, 0
        for r in history.epochs:
            correct = r.validation_correct if r.validation_correct is not None else -1
            if correct > best:
                best, since = correct, 0
            else:
                since += 1
                if since >= patience:
                    current, since = current / 2, 0
        return current if current >= eta / 128 else None
    raise ValueError(f"unknown schedule {schedule!r}; expected one of: {', '.join(SCHEDULES)}")


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
    """x_shuf[:, :-1] = x[order], distorted and dropped out as asked, through a small staging buffer.

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
        target = x_shuf[k : k + idx.shape[0], :-1]
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


def _stalled(history: History, patience: int) -> bool:
    """Early stopping: no validation improvement in the last ``patience`` epochs."""
    best = history.best()
    return patience > 0 and best is not None and history.epochs[-1].epoch - best.epoch >= patience


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
    l2: float = 0.0,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    momentum: float = 0.0,
    nesterov: bool = False,
    schedule: str = "constant",
    schedule_patience: int = 5,
    early_stopping: int = 0,
    augment: AugmentConfig | None = None,
    velocity: list[FloatArray] | None = None,
    monitor_cost: bool = True,
    on_epoch: EpochCallback | None = None,
    on_progress: ProgressCallback | None = None,
    history: History | None = None,
) -> History:
    """Train ``network`` in place by mini-batch SGD.

    Every epoch shuffles the training set with ``rng`` (and distorts it when
    ``augment`` is given), takes mini-batches of ``batch_size`` in order (the
    last one may be smaller) and moves the parameters by -eta/m times each
    batch's gradient sum. The same network, data and ``rng`` state give
    bit-identical weights and records.

    Args:
        network: the network to train; its dtype is the training dtype.
        images: (n, n_in) floats in [0, 1].
        labels: (n,) integer class labels.
        epochs: the total number of epochs (counting those already in ``history``).
        batch_size: examples per step, 1..n.
        eta: the learning rate (the schedule's starting point).
        rng: the generator that shuffles, drops out and distorts.
        validation: ``(images, labels)`` counted after every epoch.
        l2: lambda of L2 regularization, as Nielsen: each step w -> (1 - eta lambda / n) w.
        dropout: probability of dropping each hidden neuron in training (inverted dropout).
        input_dropout: probability of dropping each input pixel in training.
        momentum: mu of momentum SGD (0 = plain SGD).
        nesterov: use Nesterov's momentum instead of the classical one.
        schedule: "constant", "plateau" or "cosine" (see ``learning_rate``).
        schedule_patience: epochs without improvement before "plateau" halves eta.
        early_stopping: stop after this many epochs without validation improvement (0 = never).
        augment: distort the training images every epoch (``mnist_nn.train.augment``).
        velocity: the momentum buffers to continue from (updated in place);
            zeros when None and momentum is used.
        monitor_cost: record the mean cost over each epoch's mini-batches, as trained.
        on_epoch: called with each ``EpochRecord``.
        on_progress: called as ``on_progress(examples_done, n)`` about 100 times an epoch.
        history: a run's history to continue: training starts at the epoch after
            its last and ``epochs`` counts the total.

    Returns:
        The ``History`` (``history`` itself when given).

    Raises:
        ValueError: bad shapes or hyperparameters.
        TrainingError: the weights stopped being finite (lower eta).
    """
    x = network.check_images(images)
    n = x.shape[0]
    y = network.check_labels(labels, n)
    x = network.prepare(x)  # the input transform, once for the whole run
    _check_hyperparameters(epochs, batch_size, eta, n)
    if not 0.0 <= dropout < 1.0 or not 0.0 <= input_dropout < 1.0:
        raise ValueError(f"expected dropout probabilities in [0, 1), got {dropout!r} and {input_dropout!r}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"expected momentum in [0, 1), got {momentum!r}")
    if l2 < 0 or not np.isfinite(l2):
        raise ValueError(f"expected L2 lambda >= 0, got {l2!r}")
    if (schedule == "plateau" or early_stopping) and validation is None:
        raise ValueError("the plateau schedule and early stopping need validation data")
    val: tuple[FloatArray, IntArray] | None = None
    if validation is not None:
        vx = network.check_images(validation[0], "validation images")
        val = (network.prepare(vx), network.check_labels(validation[1], vx.shape[0], "validation labels"))
    history = history if history is not None else History()
    if momentum and velocity is None:
        velocity = [np.zeros_like(p) for p in network.params]
    options = _Options(rng, dropout, 1.0 - dropout, nesterov, momentum, monitor_cost)

    dtype = network.dtype
    # The buffers the shuffles go into, allocated once per run and touched now
    # (np.ones, not np.empty), so no epoch pays for fresh memory. x_shuf's last
    # column stays 1: the first layer's bias input.
    x_shuf = np.ones((n, x.shape[1] + 1), dtype)
    staging = np.empty((min(_SHUFFLE_CHUNK, n), x.shape[1]), dtype)
    y_src = network.one_hot(y)
    y_shuf = y_src.copy()
    # Mini-batches are fixed slices of the shuffle buffers: make their views once.
    batches = [(x_shuf[k : k + batch_size], y_shuf[k : k + batch_size]) for k in range(0, n, batch_size)]
    batches_t = [xb.T for xb, _ in batches]
    full = _Stepper(network, batch_size, options, velocity if momentum else None)
    rest = n % batch_size
    tail = _Stepper(network, rest, options, velocity if momentum else None) if rest else full
    report_every = max(1, len(batches) // 100)

    while len(history.epochs) < epochs and not _stalled(history, early_stopping):
        epoch = len(history.epochs) + 1
        rate = learning_rate(history, eta=eta, schedule=schedule, epochs=epochs, patience=schedule_patience)
        if rate is None:
            break
        start = time.perf_counter()
        order = rng.permutation(n)
        _shuffle_into(x, order, x_shuf, staging, rng, augment, input_dropout)
        np.take(y_src, order, axis=0, out=y_shuf, mode="clip")
        decay = 1.0 - rate * l2 / n
        full.cost_sum = tail.cost_sum = 0.0
        # Overflow shows up as inf or NaN in the weights, checked after the epoch
        # with a message that says what to do; NumPy's warnings would only add noise.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for i, (xb, yb) in enumerate(batches):
                if xb.shape[0] == batch_size:
                    full.step(xb, batches_t[i], yb, -rate / batch_size, decay)
                else:
                    tail.step(xb, batches_t[i], yb, -rate / rest, decay)
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
        if on_epoch is not None:
            on_epoch(record)
    return history


@dataclass(frozen=True)
class Snapshot:
    """A run's state at the end of an epoch: what continuing it exactly needs."""

    params: list[FloatArray]
    velocity: list[FloatArray] | None
    rng_state: dict[str, Any]
    epochs_completed: int


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
    velocity: list[FloatArray] | None = None  # momentum buffers, laid out like network.params
    # The state after the last completed epoch. Training interrupted mid-epoch
    # leaves network and rng part way through it; this is what a save records.
    snapshot: Snapshot | None = None

    @classmethod
    def start(cls, config: TrainConfig) -> Run:
        """A new run: one generator seeded with ``config.seed`` draws the weights, then shuffles."""
        rng = np.random.default_rng(config.seed)
        network = Network(
            config.sizes,
            rng=rng,
            dtype=config.dtype,
            activation=config.activation,
            cost=config.cost,
            init=config.init,
            transform=input_transform(config.preprocess),
        )
        return cls(config=config, network=network, rng=rng)

    def take_snapshot(self) -> Snapshot:
        """Record the current state as the last completed epoch's (see ``snapshot``)."""
        self.snapshot = Snapshot(
            params=self.network.copy_params(),
            velocity=[v.copy() for v in self.velocity] if self.velocity is not None else None,
            rng_state=dict(self.rng.bit_generator.state),
            epochs_completed=self.epochs_completed,
        )
        return self.snapshot

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
            transform=self.network.transform,
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
    if config.momentum and run.velocity is None:
        run.velocity = [np.zeros_like(p) for p in run.network.params]

    run.take_snapshot()

    def after_epoch(record: EpochRecord) -> None:
        best = run.history.best()
        if best is not None and best.epoch == record.epoch:
            run.best_params = run.network.copy_params()
            run.best_epoch = record.epoch
        run.take_snapshot()
        if on_epoch is not None:
            on_epoch(record, run)

    sgd(
        run.network,
        images,
        labels,
        epochs=config.epochs,
        batch_size=config.batch_size,
        l2=config.l2,
        dropout=config.dropout,
        input_dropout=config.input_dropout,
        momentum=config.momentum,
        nesterov=config.nesterov,
        schedule=config.schedule,
        schedule_patience=config.schedule_patience,
        early_stopping=config.early_stopping,
        augment=parse_augment(config.augment) if config.augment else None,
        velocity=run.velocity,
        eta=config.eta,
        rng=run.rng,
        validation=validation,
        monitor_cost=monitor_cost,
        on_epoch=after_epoch,
        on_progress=on_progress,
        history=run.history,
    )
    return run
