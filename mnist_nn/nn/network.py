"""The network: parameters, forward pass, backpropagation and the cost.

Arrays are batch first. For a mini-batch of m examples and a layer with
n_in inputs and n_out neurons:

    x         (m, n_in)       activations entering the layer (the images for layer 1)
    weights   (n_in, n_out)   biases (n_out,)
    z         (m, n_out)      z = x @ weights + biases
    a         (m, n_out)      a = sigma(z)

Backpropagation in this layout (Nielsen's BP1-BP4, rows are examples), with
L the output layer, y the one-hot targets and * elementwise:

    BP1  delta_L = (a_L - y) * sigma'(z_L)                 (quadratic cost)
    BP2  delta_l = (delta_{l+1} @ weights_{l+1}.T) * sigma'(z_l)
    BP3  grad_b_l = delta_l.sum(axis=0)
    BP4  grad_w_l = a_{l-1}.T @ delta_l

Gradients are sums over the mini-batch; an SGD step subtracts eta/m times
them, so eta means what it means in Nielsen's book.

Each layer's weights and biases live in one (n_in + 1, n_out) array,
``params[l]``: the first n_in rows are ``weights[l]`` and the last row is
``biases[l]`` (both are views into it). Appending a column of ones to x turns
x @ weights + biases into one matrix product, and its gradient a_{l-1}.T @
delta_l carries BP3 in its last row, which is what makes the training loop
in ``mnist_nn.train.loop`` fast. This module imports nothing else from the
package and does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]
IntArray = npt.NDArray[np.int64]

EVAL_CHUNK = 10_000  # rows per forward pass when evaluating large sets


# --- activations -----------------------------------------------------------------------


def sigmoid(z: FloatArray, out: FloatArray | None = None) -> FloatArray:
    """The logistic function 1 / (1 + exp(-z)), computed as 0.5 + 0.5 * tanh(z / 2).

    The tanh form never overflows (exp(-z) does for z < -88 in float32),
    costs four in-place NumPy calls and is within one ulp of 1.0 of the exact
    value everywhere (so deep in the negative tail it rounds to 0).
    """
    out = np.multiply(z, 0.5, out=out)
    np.tanh(out, out=out)
    np.multiply(out, 0.5, out=out)
    np.add(out, 0.5, out=out)
    return out


def sigmoid_prime(z: FloatArray) -> FloatArray:
    """Derivative of the sigmoid: sigma(z) * (1 - sigma(z))."""
    s = sigmoid(z)
    return s * (1.0 - s)


class Activation(Protocol):
    """An activation whose derivative can be written in terms of its output.

    ``forward`` may write into ``z`` itself. ``scale_by_derivative`` multiplies
    delta by f'(z) using only a = f(z), so the training step keeps no z.
    Softmax is not elementwise: it only serves as the output of the
    log-likelihood cost, whose delta needs no derivative.
    """

    name: str

    def forward(self, z: FloatArray, out: FloatArray) -> FloatArray:
        """a = f(z), written into ``out``."""
        ...

    def scale_by_derivative(self, a: FloatArray, delta: FloatArray, work: FloatArray) -> None:
        """delta *= f'(z), computed from the output a = f(z); ``work`` is scratch of a's shape."""
        ...


class Sigmoid:
    """sigma(z) = 1 / (1 + exp(-z)); sigma' = a * (1 - a)."""

    name = "sigmoid"

    def forward(self, z: FloatArray, out: FloatArray) -> FloatArray:
        """a = sigma(z)."""
        return sigmoid(z, out=out)

    def scale_by_derivative(self, a: FloatArray, delta: FloatArray, work: FloatArray) -> None:
        """delta *= a * (1 - a)."""
        np.subtract(1.0, a, out=work)
        np.multiply(work, a, out=work)
        np.multiply(delta, work, out=delta)


class Tanh:
    """tanh(z); tanh' = 1 - a^2."""

    name = "tanh"

    def forward(self, z: FloatArray, out: FloatArray) -> FloatArray:
        """a = tanh(z)."""
        return np.tanh(z, out=out)

    def scale_by_derivative(self, a: FloatArray, delta: FloatArray, work: FloatArray) -> None:
        """delta *= 1 - a^2."""
        np.multiply(a, a, out=work)
        np.subtract(1.0, work, out=work)
        np.multiply(delta, work, out=delta)


class ReLU:
    """max(z, 0); its derivative is 1 where a > 0, else 0 (0 at z = 0, by convention)."""

    name = "relu"

    def forward(self, z: FloatArray, out: FloatArray) -> FloatArray:
        """a = max(z, 0)."""
        return np.maximum(z, 0.0, out=out)

    def scale_by_derivative(self, a: FloatArray, delta: FloatArray, work: FloatArray) -> None:
        """delta *= (a > 0)."""
        np.greater(a, 0.0, out=work)
        np.multiply(delta, work, out=delta)


class Softmax:
    """softmax(z)_j = exp(z_j) / sum_k exp(z_k) over each row; the log-likelihood cost's output."""

    name = "softmax"

    def forward(self, z: FloatArray, out: FloatArray) -> FloatArray:
        """a = softmax(z) row by row, shifted by the row maximum so exp never overflows."""
        np.subtract(z, z.max(axis=1, keepdims=True), out=out)
        np.exp(out, out=out)
        np.divide(out, out.sum(axis=1, keepdims=True), out=out)
        return out

    def scale_by_derivative(self, a: FloatArray, delta: FloatArray, work: FloatArray) -> None:
        """Not elementwise: softmax is only used with the log-likelihood cost."""
        raise NotImplementedError("softmax is only used as the output of the log-likelihood cost")


HIDDEN_ACTIVATIONS: dict[str, Activation] = {"sigmoid": Sigmoid(), "tanh": Tanh(), "relu": ReLU()}
ACTIVATIONS = HIDDEN_ACTIVATIONS  # the names ``activation=`` accepts


# --- costs ---------------------------------------------------------------------------

_LOG_FLOOR = 1e-300  # keeps log() finite where an output rounds to exactly 0 or 1


class Cost(Protocol):
    """A cost C(a, y) of the output activations a and one-hot targets y, with its output layer."""

    name: str
    output: Activation  # the output layer's activation that this cost is paired with

    def fn(self, a: FloatArray, y: FloatArray) -> float:
        """The cost summed over the rows of a (m, 10) batch."""
        ...

    def output_delta(self, a: FloatArray, y: FloatArray, out: FloatArray, work: FloatArray) -> None:
        """delta_L = dC/dz_L for the batch, written into ``out`` (BP1)."""
        ...


class QuadraticCost:
    """C = 1/2 ||a - y||^2 per example, sigmoid outputs; delta_L = (a - y) * sigma'(z_L)."""

    name = "quadratic"
    output: Activation = Sigmoid()

    def fn(self, a: FloatArray, y: FloatArray) -> float:
        """Sum over the batch of 1/2 ||a - y||^2."""
        d = a - y
        return 0.5 * float(np.einsum("ij,ij->", d, d, dtype=np.float64))

    def output_delta(self, a: FloatArray, y: FloatArray, out: FloatArray, work: FloatArray) -> None:
        """delta_L = (a - y) * a * (1 - a)."""
        np.subtract(a, y, out=out)
        self.output.scale_by_derivative(a, out, work)


class CrossEntropyCost:
    """C = -sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)], sigmoid outputs; delta_L = a - y.

    The sigmoid's derivative cancels, so saturated output neurons still learn
    fast (Nielsen, chapter 3).
    """

    name = "cross-entropy"
    output: Activation = Sigmoid()

    def fn(self, a: FloatArray, y: FloatArray) -> float:
        """Sum over the batch of the binary cross-entropy of every output."""
        a64 = a.astype(np.float64)
        c = y * np.log(np.maximum(a64, _LOG_FLOOR)) + (1.0 - y) * np.log(np.maximum(1.0 - a64, _LOG_FLOOR))
        return -float(c.sum())

    def output_delta(self, a: FloatArray, y: FloatArray, out: FloatArray, work: FloatArray) -> None:
        """delta_L = a - y."""
        np.subtract(a, y, out=out)


class LogLikelihoodCost:
    """C = -ln a_y (the output for the true class), softmax outputs; delta_L = a - y."""

    name = "log-likelihood"
    output: Activation = Softmax()

    def fn(self, a: FloatArray, y: FloatArray) -> float:
        """Sum over the batch of -ln a_y."""
        picked = np.einsum("ij,ij->i", a.astype(np.float64), y)
        return -float(np.log(np.maximum(picked, _LOG_FLOOR)).sum())

    def output_delta(self, a: FloatArray, y: FloatArray, out: FloatArray, work: FloatArray) -> None:
        """delta_L = a - y."""
        np.subtract(a, y, out=out)


COSTS: dict[str, Cost] = {c.name: c for c in (QuadraticCost(), CrossEntropyCost(), LogLikelihoodCost())}


# --- initialization ------------------------------------------------------------------


def _init_layer(rng: np.random.Generator, n_in: int, n_out: int, init: str) -> npt.NDArray[np.float64]:
    """One layer's (n_in + 1, n_out) parameters; the last row is the biases."""
    if init == "glorot":
        limit = np.sqrt(6.0 / (n_in + n_out))
        p = rng.uniform(-limit, limit, size=(n_in + 1, n_out))
        p[-1] = 0.0
        return p
    p = rng.standard_normal((n_in + 1, n_out))
    if init == "scaled":  # Nielsen's chapter 3: weights N(0, 1/n_in), biases N(0, 1)
        p[:-1] /= np.sqrt(n_in)
    elif init == "he":  # He et al. 2015, for ReLU: weights N(0, 2/n_in), biases 0
        p[:-1] *= np.sqrt(2.0 / n_in)
        p[-1] = 0.0
    return p


# Initializations by name: "normal" is Nielsen's chapter 1 (weights and biases N(0, 1)).
INITS = ("normal", "scaled", "he", "glorot")


# --- input transforms ----------------------------------------------------------------


@dataclass(frozen=True)
class InputTransform:
    """A named, deterministic transform of (m, n_in) images applied before the first layer.

    The functions live elsewhere (``mnist_nn.train.transforms``); the network only calls them.
    """

    name: str
    fn: Callable[[FloatArray], FloatArray]


# --- the network -------------------------------------------------------------------


def _check_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    """Validate layer sizes once, at entry."""
    try:
        checked = tuple(int(n) for n in sizes)
    except (TypeError, ValueError):
        raise ValueError(f"expected layer sizes as a sequence of integers, got {sizes!r}") from None
    if len(checked) < 2:
        raise ValueError(f"expected at least 2 layer sizes (input and output), got {list(checked)}")
    if any(n < 1 for n in checked) or any(n != s for n, s in zip(checked, sizes, strict=True)):
        raise ValueError(f"expected positive integer layer sizes, got {list(sizes)}")
    return checked


def _check_dtype(dtype: npt.DTypeLike) -> np.dtype[Any]:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"expected dtype float32 or float64, got {dt}")
    return dt


def _lookup(table: dict[str, Any], name: str, what: str) -> Any:
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; expected one of: {', '.join(sorted(table))}")
    return table[name]


class Network:
    """A fully connected feedforward network, e.g. ``Network([784, 30, 10])``.

    Args:
        sizes: neurons per layer, input first.
        rng: the generator that draws the initial weights (default: seeded with ``seed``).
        seed: used only when ``rng`` is None.
        dtype: float32 or float64 for every parameter and activation.
        activation: the hidden layers' activation: "sigmoid" (default), "tanh" or "relu".
        cost: "quadratic" (default), "cross-entropy" (both with sigmoid outputs)
            or "log-likelihood" (softmax outputs).
        init: "normal" (default: weights and biases drawn from the standard
            normal, as Nielsen's chapter 1), "scaled" (weights N(0, 1/n_in), his
            chapter 3), "he" (N(0, 2/n_in), biases 0) or "glorot" (uniform).

        transform: an ``InputTransform`` applied to every input first (e.g. deskewing).

    With one output layer only (no hidden layer) the cost's output activation
    is the only activation.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        rng: np.random.Generator | None = None,
        seed: int | None = 0,
        dtype: npt.DTypeLike = np.float32,
        activation: str = "sigmoid",
        cost: str = "quadratic",
        init: str = "normal",
        transform: InputTransform | None = None,
    ) -> None:
        self.sizes = _check_sizes(sizes)
        self.dtype = _check_dtype(dtype)
        self.activation: Activation = _lookup(ACTIVATIONS, activation, "activation")
        self.cost: Cost = _lookup(COSTS, cost, "cost")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of: {', '.join(INITS)}")
        self.init = init
        self.transform = transform
        if rng is None:
            rng = np.random.default_rng(seed)
        # Drawn in float64 and then cast, so a float32 and a float64 network
        # built from the same seed start from the same weights.
        self.params: list[FloatArray] = [
            _init_layer(rng, n_in, n_out, init).astype(self.dtype)
            for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:], strict=True)
        ]

    @property
    def layer_activations(self) -> list[Activation]:
        """The activation of each layer: the hidden one, then the cost's output activation."""
        return [self.activation] * (len(self.params) - 1) + [self.cost.output]

    @property
    def num_layers(self) -> int:
        """Layers including the input layer, as in Nielsen's ``num_layers``."""
        return len(self.sizes)

    @property
    def weights(self) -> list[FloatArray]:
        """weights[l] has shape (n_in, n_out): a view of ``params[l]``."""
        return [p[:-1] for p in self.params]

    @property
    def biases(self) -> list[FloatArray]:
        """biases[l] has shape (n_out,): a view of ``params[l]``."""
        return [p[-1] for p in self.params]

    def copy_params(self) -> list[FloatArray]:
        """A deep copy of the parameters (for keeping the best epoch's weights)."""
        return [p.copy() for p in self.params]

    def set_params(self, params: Sequence[FloatArray]) -> None:
        """Copy ``params`` into this network's parameter arrays (shapes must match)."""
        if len(params) != len(self.params):
            raise ValueError(f"expected {len(self.params)} parameter arrays, got {len(params)}")
        for mine, theirs in zip(self.params, params, strict=True):
            if mine.shape != theirs.shape:
                raise ValueError(f"expected parameters of shape {mine.shape}, got {theirs.shape}")
            mine[...] = theirs

    # --- inputs ---

    def check_images(self, images: npt.ArrayLike, what: str = "images") -> FloatArray:
        """Return ``images`` as a (m, n_in) array of this network's dtype, or raise ValueError."""
        x = np.asarray(images)
        n_in = self.sizes[0]
        if x.ndim != 2 or x.shape[1] != n_in:
            raise ValueError(f"expected {what} of shape (n, {n_in}), got {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"expected {what} as floats in [0, 1], got dtype {x.dtype}")
        return x.astype(self.dtype, copy=False)

    def check_labels(self, labels: npt.ArrayLike, n: int, what: str = "labels") -> IntArray:
        """Return ``labels`` as an (n,) int64 array of class indices, or raise ValueError."""
        y = np.asarray(labels)
        n_out = self.sizes[-1]
        if y.shape != (n,):
            raise ValueError(f"expected {what} of shape ({n},), got {y.shape}")
        if n and not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"expected integer {what}, got dtype {y.dtype}")
        if n and (int(y.min()) < 0 or int(y.max()) >= n_out):
            raise ValueError(f"expected {what} in 0..{n_out - 1}, got values {int(y.min())}..{int(y.max())}")
        return y.astype(np.int64, copy=False)

    def one_hot(self, labels: IntArray) -> FloatArray:
        """(m,) class indices -> (m, n_out) one-hot rows of this network's dtype."""
        y = np.zeros((labels.shape[0], self.sizes[-1]), dtype=self.dtype)
        y[np.arange(labels.shape[0]), labels] = 1.0
        return y

    # --- forward ---

    def prepare(self, x: FloatArray) -> FloatArray:
        """x as the first layer sees it: through the input transform, if any (a new array then)."""
        return x if self.transform is None else self.transform.fn(x)

    def feedforward(self, x: npt.ArrayLike, *, prepared: bool = False) -> FloatArray:
        """Output activations (m, n_out) for a batch x of shape (m, n_in).

        ``prepared`` says x went through ``prepare`` already.
        """
        a = self.check_images(x, "x")
        if not prepared:
            a = self.prepare(a)
        out = np.empty((a.shape[0], self.sizes[-1]), dtype=self.dtype)
        for start in range(0, a.shape[0], EVAL_CHUNK):
            out[start : start + EVAL_CHUNK] = self._forward(a[start : start + EVAL_CHUNK])
        return out

    def _forward(self, a: FloatArray) -> FloatArray:
        """Forward pass of one chunk, no checks."""
        for p, f in zip(self.params, self.layer_activations, strict=True):
            z = a @ p[:-1]
            z += p[-1]
            a = f.forward(z, out=z)
        return a

    def predict(self, x: npt.ArrayLike, *, prepared: bool = False) -> IntArray:
        """The most activated output neuron for each row of x: (m,) int64 labels."""
        labels: IntArray = np.argmax(self.feedforward(x, prepared=prepared), axis=1).astype(np.int64)
        return labels

    def probabilities(self, x: npt.ArrayLike) -> FloatArray:
        """Each row's output as a probability distribution over the classes, (m, n_out).

        Softmax outputs are one already; sigmoid outputs are divided by their
        sum (``probability_kind`` says which was done).
        """
        a = self.feedforward(x).astype(np.float64)
        if self.cost.output.name == "softmax":
            return a
        total = a.sum(axis=1, keepdims=True)
        total[total == 0] = 1.0
        return np.asarray(a / total)

    @property
    def probability_kind(self) -> str:
        """How ``probabilities`` are made from the outputs."""
        return "softmax" if self.cost.output.name == "softmax" else "normalized sigmoid outputs"

    def count_correct(self, images: npt.ArrayLike, labels: npt.ArrayLike, *, prepared: bool = False) -> int:
        """How many of the images the network classifies as their labels."""
        x = self.check_images(images)
        y = self.check_labels(labels, x.shape[0])
        return int(np.count_nonzero(self.predict(x, prepared=prepared) == y))

    def evaluate(self, data: Any) -> int:
        """Number of correct answers, as Nielsen's ``evaluate``.

        ``data`` is either Nielsen's list of ``(x, y)`` tuples (x of shape
        (784, 1), y an integer label or a one-hot column) or an
        ``(images, labels)`` pair of arrays such as a ``Split``.
        """
        images, labels = as_arrays(data, self.sizes[0])
        return self.count_correct(images, labels)

    def l2_penalty(self) -> float:
        """1/2 sum of every squared weight (biases excluded): the L2 term without lambda/n."""
        return 0.5 * sum(float(np.einsum("ij,ij->", w, w, dtype=np.float64)) for w in self.weights)

    def total_cost(self, images: npt.ArrayLike, labels: npt.ArrayLike, l2: float = 0.0) -> float:
        """Mean cost over a set: C = 1/n sum_x C_x + lambda/(2n) sum w^2 (Nielsen's convention).

        For the quadratic cost and no L2 this is 1/(2n) sum ||a - y||^2.
        """
        x = self.prepare(self.check_images(images))
        y = self.check_labels(labels, x.shape[0])
        n = max(int(x.shape[0]), 1)
        total = 0.0
        for start in range(0, x.shape[0], EVAL_CHUNK):
            a = self._forward(x[start : start + EVAL_CHUNK])
            total += self.cost.fn(a, self.one_hot(y[start : start + EVAL_CHUNK]))
        return total / n + (l2 / n * self.l2_penalty() if l2 else 0.0)

    # --- backward ---

    def backprop(
        self, x: npt.ArrayLike, y: npt.ArrayLike, l2: float = 0.0, n: int = 1
    ) -> tuple[list[FloatArray], list[FloatArray]]:
        """Gradient of the cost summed over a mini-batch, by BP1-BP4.

        With L2 (lambda = ``l2``, training-set size ``n``) the weight
        gradients also get the batch's share of the penalty's gradient,
        m * lambda / n * w, so that a step of -eta/m times the result is
        Nielsen's update w -> (1 - eta lambda / n) w - eta/m sum grad C_x.

        Args:
            x: inputs as the first layer sees them (after any input transform), shape (m, n_in).
            y: one-hot targets, shape (m, n_out).
            l2: the L2 regularization parameter lambda.
            n: the training-set size that lambda is divided by.

        Returns:
            ``(grad_w, grad_b)``: lists shaped like ``weights`` and ``biases``.
        """
        a = self.check_images(x, "x")
        targets = np.asarray(y, dtype=self.dtype)
        if targets.shape != (a.shape[0], self.sizes[-1]):
            raise ValueError(f"expected y of shape ({a.shape[0]}, {self.sizes[-1]}), got {targets.shape}")
        activations = [a]
        for p, f in zip(self.params, self.layer_activations, strict=True):
            z = a @ p[:-1] + p[-1]
            a = f.forward(z, out=z)
            activations.append(a)
        delta = np.empty_like(a)
        self.cost.output_delta(a, targets, delta, np.empty_like(a))  # BP1
        grad_w: list[FloatArray] = [np.empty(0)] * len(self.params)
        grad_b: list[FloatArray] = [np.empty(0)] * len(self.params)
        for layer in range(len(self.params) - 1, -1, -1):
            grad_w[layer] = activations[layer].T @ delta  # BP4
            if l2:
                grad_w[layer] += (a.shape[0] * l2 / n) * self.params[layer][:-1]
            grad_b[layer] = delta.sum(axis=0)  # BP3
            if layer > 0:
                delta = delta @ self.params[layer][:-1].T  # BP2
                a_prev = activations[layer]
                self.activation.scale_by_derivative(a_prev, delta, np.empty_like(a_prev))
        return grad_w, grad_b

    # --- training (implemented in mnist_nn.train.loop) ---

    def SGD(  # noqa: N802 - Nielsen's name
        self,
        training_data: Any,
        epochs: int,
        mini_batch_size: int,
        eta: float,
        test_data: Any = None,
        *,
        rng: np.random.Generator | None = None,
    ) -> Any:
        """Train with mini-batch stochastic gradient descent, as Nielsen's ``SGD``.

        ``training_data`` is Nielsen's list of ``(x, y)`` tuples from
        ``load_data_wrapper()`` or an ``(images, labels)`` pair; ``test_data``
        (optional, either form) is evaluated after every epoch. Returns the
        ``History``; nothing is printed.
        """
        from mnist_nn.train.loop import sgd  # training imports this module

        images, labels = as_arrays(training_data, self.sizes[0])
        validation = as_arrays(test_data, self.sizes[0]) if test_data is not None else None
        return sgd(
            self,
            images,
            labels,
            epochs=epochs,
            batch_size=mini_batch_size,
            eta=eta,
            rng=rng if rng is not None else np.random.default_rng(0),
            validation=validation,
        )


def as_arrays(data: Any, n_in: int) -> tuple[FloatArray, IntArray]:
    """Turn Nielsen's list of ``(x, y)`` tuples, or an ``(images, labels)`` pair, into arrays.

    Returns images (n, n_in) and integer labels (n,); one-hot y columns become
    their index.
    """
    images, labels = getattr(data, "images", None), getattr(data, "labels", None)
    if isinstance(images, np.ndarray) and isinstance(labels, np.ndarray):  # a Split
        return images, labels
    if (
        isinstance(data, tuple)
        and len(data) == 2
        and isinstance(data[0], np.ndarray)
        and isinstance(data[1], np.ndarray)
        and data[0].ndim == 2
    ):
        return data[0], data[1]
    try:
        pairs = list(data)
    except TypeError:
        raise ValueError(
            f"expected a list of (x, y) tuples or an (images, labels) pair, got {type(data).__name__}"
        ) from None
    if not pairs:
        raise ValueError("expected at least one (x, y) example, got none")
    try:
        images = np.stack([np.asarray(x).reshape(n_in) for x, _ in pairs])
        labels = np.array([int(np.argmax(y)) if np.ndim(y) else int(y) for _, y in pairs], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"expected (x, y) tuples with x of {n_in} values: {exc}") from None
    return images, labels
