"""The network: a stack of layers, its forward pass, backpropagation and the cost.

Arrays are batch first. For a mini-batch of m examples and a dense layer with
n_in inputs and n_out neurons:

    x         (m, n_in)       activations entering the layer (the images for layer 1)
    weights   (n_in, n_out)   biases (n_out,)
    z         (m, n_out)      z = x @ weights + biases
    a         (m, n_out)      a = f(z)

Backpropagation in this layout (Nielsen's BP1-BP4, rows are examples), with
L the output layer, y the one-hot targets and * elementwise:

    BP1  delta_L = (a_L - y) * f'(z_L)                 (quadratic cost; a_L - y for the
                                                         cross-entropy and log-likelihood costs)
    BP2  delta_l = (delta_{l+1} @ weights_{l+1}.T) * f'(z_l)
    BP3  grad_b_l = delta_l.sum(axis=0)
    BP4  grad_w_l = a_{l-1}.T @ delta_l

Gradients are sums over the mini-batch; an SGD step subtracts eta/m times
them, so eta means what it means in Nielsen's book. ``Network.backprop`` runs
these equations as written, one layer at a time: the cost gives BP1, and each
layer's ``backward`` (``mnist_nn.nn.layers``) takes the delta arriving from
above, applies its factor of BP2, returns BP3 and BP4 and passes
delta @ weights.T below. The fast step of ``mnist_nn.train`` runs the same
equations on preallocated buffers (``Layer.plan``). This package imports
nothing from training or the command line and does no I/O.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mnist_nn.config import IMAGE_PIXELS, IMAGE_SIDE
from mnist_nn.nn.activations import ACTIVATIONS, IDENTITY, Activation, FloatArray
from mnist_nn.nn.costs import COSTS, Cost
from mnist_nn.nn.layers import INITS, Dense, Layer, Shape, layer_from_description

IntArray = npt.NDArray[np.int64]

EVAL_CHUNK = 10_000  # rows per forward pass when evaluating large sets
# At most this many bytes of a layer's temporary per forward pass (a convolution's patches): a few MB
# stay in cache and are reused by the allocator, where 10,000 images' patches (a GB) are new memory.
EVAL_SCRATCH_BYTES = 8 * 2**20


@dataclass(frozen=True)
class InputTransform:
    """A named, deterministic transform of (m, n_in) images applied before the first layer.

    The functions live elsewhere (``mnist_nn.nn.transforms``); the network only calls them.
    """

    name: str
    fn: Callable[[FloatArray], FloatArray]


class BookTrainer(Protocol):
    """Nielsen's ``SGD`` as a function of the network; ``mnist_nn.train.nielsen.sgd`` is the one there is."""

    def __call__(
        self,
        network: Network,
        training_data: Any,
        epochs: int,
        mini_batch_size: int,
        eta: float,
        test_data: Any,
        *,
        rng: np.random.Generator | None,
        quiet: bool,
    ) -> Any: ...


# Network.SGD trains through the training loop, which imports this module: the loop's package registers
# its trainer here when it is imported (``import mnist_nn`` imports it), so imports still go one way.
_BOOK_TRAINERS: list[BookTrainer] = []


def register_book_trainer(trainer: BookTrainer) -> None:
    """Make ``trainer`` the one ``Network.SGD`` calls."""
    _BOOK_TRAINERS[:] = [trainer]


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


def _lookup(table: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; expected one of: {', '.join(sorted(table))}")
    return table[name]


def build_layers(layers: Sequence[Layer], input_shape: Shape, *, activation: str, cost: Cost) -> list[Shape]:
    """Build each layer on the previous one's output and fix its activation; returns the output shapes.

    A layer without an activation of its own gets ``activation`` when
    hidden and the cost's output activation when last; a last layer whose
    activation differs from the cost's is refused. A layer below a batch
    norm (``Layer.normalizes``), directly or through pools and dropout,
    stays linear unless it names an activation: the batch norm applies it
    (a max-pool commutes with a batch norm's increasing map, so ``conv pool
    bn`` is ``conv bn pool`` with statistics over a quarter of the values).
    Then each layer meets the one above it (``Layer.connect``) and the one
    below it (``Layer.connect_below``). Nothing is allocated, so a model
    file's description can be checked before its arrays are read.
    """
    if not layers:
        raise ValueError("expected at least one layer, got none")
    shapes = []
    shape = input_shape
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise ValueError(f"expected layers such as Dense(30), got {layer!r}")
        shape = layer.build(shape)
        shapes.append(shape)
        name = getattr(layer, "activation_name", None)
        last = i == len(layers) - 1
        if not layer.activated or (last and layer.normalizes):
            if last:
                raise ValueError(f"the last layer gives the outputs, so it needs an activation: not {layer!r}")
            continue
        if not last and _normalized_above(layers, i) and name is None:
            layer.activation = IDENTITY  # the batch norm above applies it
        elif last:
            if name is not None and name != cost.output.name:
                raise ValueError(
                    f"the {cost.name} cost needs {cost.output.name} outputs, "
                    f"but the last layer's activation is {name!r}"
                )
            layer.activation = cost.output
        else:
            layer.activation = _lookup(ACTIVATIONS, name or activation, "activation")
    for below, above in itertools.pairwise(layers):
        below.connect(above)
        above.connect_below(below)
    return shapes


def _normalized_above(layers: Sequence[Layer], i: int) -> bool:
    """Whether the next activated layer above layer i normalizes (a batch norm), past pools and dropout."""
    for above in layers[i + 1 :]:
        if above.activated:
            return bool(getattr(above, "normalizes", False))
    return False


def layer_sizes(layers: Sequence[Layer], input_size: int, *, cost: str = "log-likelihood") -> tuple[int, ...]:
    """Values per example entering the network and leaving each layer, computed without allocating anything.

    Raises:
        ValueError: layers that do not chain (a kernel larger than its input, a pool that does not divide it).
    """
    shapes = build_layers(layers, (input_size,), activation="sigmoid", cost=_lookup(COSTS, cost, "cost"))
    return (input_size, *(math.prod(s) for s in shapes))


class Network:
    """A feedforward network: ``Network([784, 30, 10])`` or ``Network([Dense(30), Dense(10)])``.

    Args:
        layers: neurons per layer, input first (a stack of ``Dense`` layers, as
            Nielsen's ``Network(sizes)``), or the layers themselves.
        input_size: inputs per example when ``layers`` are layers (784 pixels by default).
        rng: the generator that draws the initial weights (default: seeded with ``seed``).
        seed: used only when ``rng`` is None.
        dtype: float32 or float64 for every parameter and activation.
        activation: the hidden layers' activation where a layer names none:
            "sigmoid" (default), "tanh" or "relu".
        cost: "quadratic" (default), "cross-entropy" (both with sigmoid outputs)
            or "log-likelihood" (softmax outputs).
        init: "normal" (default: weights and biases drawn from the standard
            normal, as Nielsen's chapter 1), "scaled" (weights N(0, 1/n_in), his
            chapter 3), "he" (N(0, 2/n_in), biases 0), "glorot" (uniform) or
            "fan-out" (his chapter 6: N(0, 1/n_out) with n_out = F K^2 / P^2
            for a convolution and its pool, biases N(0, 1), softmax outputs 0);
            None leaves every parameter 0 (for loading saved weights).
        transform: an ``InputTransform`` applied to every input first (e.g. deskewing).

    Layers are drawn in order from one generator, so ``Network([784, 30, 10],
    seed=s)`` and ``Network([Dense(30), Dense(10)], seed=s)`` start from the same weights.
    """

    def __init__(
        self,
        layers: Sequence[int] | Sequence[Layer],
        *,
        input_size: int = IMAGE_PIXELS,
        rng: np.random.Generator | None = None,
        seed: int | None = 0,
        dtype: npt.DTypeLike = np.float32,
        activation: str = "sigmoid",
        cost: str = "quadratic",
        init: str | None = "normal",
        transform: InputTransform | None = None,
    ) -> None:
        if isinstance(layers, str) or not all(isinstance(layer, Layer) for layer in layers) or not layers:
            sizes = _check_sizes(layers)  # type: ignore[arg-type]
            stack: list[Layer] = [Dense(n) for n in sizes[1:]]
            input_size = sizes[0]
        else:
            stack = list(layers)  # type: ignore[arg-type]
        self.dtype = _check_dtype(dtype)
        self.activation: Activation = _lookup(ACTIVATIONS, activation, "activation")
        self.cost: Cost = _lookup(COSTS, cost, "cost")
        if init is not None and init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of: {', '.join(INITS)}")
        self.init = init
        self.transform = transform
        self.input_size = int(input_size)
        build_layers(stack, (self.input_size,), activation=activation, cost=self.cost)
        self.layers: list[Layer] = stack
        if rng is None and init is not None:
            rng = np.random.default_rng(seed)
        for layer in self.layers:
            layer.initialize(rng, init or "normal", self.dtype)

    # --- what the network is ---

    def __repr__(self) -> str:
        """One line: the inputs, each layer with its activation, the cost, the dtype and the parameter count.

        ``<Network 784 -> Dense(30, 'sigmoid') -> Dense(10, 'sigmoid'), quadratic cost, float32, 23,860 parameters>``
        """
        stack = " -> ".join([str(self.input_size), *(_layer_text(layer) for layer in self.layers)])
        transform = f", input transform {self.transform.name!r}" if self.transform is not None else ""
        return (
            f"<{type(self).__name__} {stack}, {self.cost.name} cost, {self.dtype}{transform}, "
            f"{self.num_params:,} parameters>"
        )

    @property
    def num_params(self) -> int:
        """How many numbers training updates: every weight and bias, 23,860 for (784, 30, 10)."""
        return sum(int(p.size) for p in self.params)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Values per example entering the network and leaving each layer, e.g. (784, 30, 10)."""
        return (self.input_size, *(math.prod(layer.output_shape) for layer in self.layers))

    @property
    def num_layers(self) -> int:
        """Layers including the input layer, as in Nielsen's ``num_layers``."""
        return len(self.layers) + 1

    @property
    def layer_activations(self) -> list[Activation]:
        """The activation of each layer, the cost's output activation last."""
        return [layer.activation for layer in self.layers]

    def describe(self) -> list[dict[str, Any]]:
        """Each layer's JSON-ready description, input side first."""
        return [layer.describe() for layer in self.layers]

    @classmethod
    def from_description(cls, descriptions: Sequence[Any], **kwargs: Any) -> Network:
        """The network that ``describe()`` described (weights all 0 unless ``init`` is given)."""
        kwargs.setdefault("init", None)
        return cls([layer_from_description(d) for d in descriptions], **kwargs)

    def clone(self, params: Sequence[FloatArray] | None = None) -> Network:
        """A new network of the same kind and layers, holding ``params`` (default: a copy of this one's)."""
        net = type(self).from_description(
            self.describe(),
            input_size=self.input_size,
            dtype=self.dtype,
            activation=self.activation.name,
            cost=self.cost.name,
            transform=self.transform,
        )
        net.init = self.init
        net.set_params(self.params if params is None else params)
        return net

    # --- parameters ---

    @property
    def params(self) -> list[FloatArray]:
        """Every array training updates, layer by layer (a dense layer's weights and biases in one)."""
        return [p for layer in self.layers for p in layer.params]

    @property
    def weights(self) -> list[FloatArray]:
        """weights[l] has shape (n_in, n_out): views into ``params``, for the layers that have weights."""
        return [wb[0] for wb in self._weights_and_biases()]

    @property
    def biases(self) -> list[FloatArray]:
        """biases[l] has shape (n_out,): views into ``params``."""
        return [wb[1] for wb in self._weights_and_biases()]

    def _weights_and_biases(self) -> list[tuple[FloatArray, FloatArray]]:
        found = (layer.weights_and_biases(layer.params) for layer in self.layers)
        return [wb for wb in found if wb is not None]

    def copy_params(self) -> list[FloatArray]:
        """A deep copy of the parameters (for keeping the best epoch's weights)."""
        return [p.copy() for p in self.params]

    def set_params(self, params: Sequence[FloatArray]) -> None:
        """Copy ``params`` into this network's parameter arrays (shapes must match)."""
        mine = self.params
        if len(params) != len(mine):
            raise ValueError(f"expected {len(mine)} parameter arrays, got {len(params)}")
        for p, theirs in zip(mine, params, strict=True):
            if p.shape != theirs.shape:
                raise ValueError(f"expected parameters of shape {p.shape}, got {theirs.shape}")
            p[...] = theirs

    def named_arrays(self, params: Sequence[FloatArray]) -> dict[str, FloatArray]:
        """A params-shaped list as a model file's named arrays: ``layer0_w``, ``layer0_b``, ..."""
        named: dict[str, FloatArray] = {}
        for i, (layer, chunk) in enumerate(zip(self.layers, self._split(params), strict=True)):
            named.update({f"layer{i}_{k}": v for k, v in layer.file_arrays(chunk).items()})
        return named

    def named_shapes(self) -> dict[str, Shape]:
        """The names and shapes ``named_arrays`` gives, known before anything is read."""
        return {f"layer{i}_{k}": s for i, layer in enumerate(self.layers) for k, s in layer.file_shapes().items()}

    def params_from_named(self, arrays: Mapping[str, FloatArray]) -> list[FloatArray]:
        """The inverse of ``named_arrays``: new arrays laid out like ``params``."""
        params: list[FloatArray] = []
        for i, layer in enumerate(self.layers):
            mine = {k: arrays[f"layer{i}_{k}"] for k in layer.file_shapes()}
            params.extend(layer.params_from_file(mine, self.dtype))
        return params

    def _split(self, params: Sequence[FloatArray]) -> list[Sequence[FloatArray]]:
        """A params-shaped list cut into each layer's share."""
        chunks, k = [], 0
        for layer in self.layers:
            chunks.append(params[k : k + len(layer.params)])
            k += len(layer.params)
        if k != len(params):
            raise ValueError(f"expected {k} parameter arrays, got {len(params)}")
        return chunks

    # --- inputs ---

    def check_images(self, images: npt.ArrayLike, what: str = "images") -> FloatArray:
        """Return ``images`` as a (m, n_in) array of this network's dtype, or raise ValueError."""
        x = np.asarray(images)
        n_in = self.input_size
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

    @property
    def eval_rows(self) -> int:
        """Rows per pass through the layers up to the last convolution: ``EVAL_CHUNK``, fewer where its patches
        would pass ``EVAL_SCRATCH_BYTES``."""
        values = max(layer.scratch_per_row() for layer in self.layers)
        return max(1, min(EVAL_CHUNK, EVAL_SCRATCH_BYTES // max(values * self.dtype.itemsize, 1)))

    def _forward(self, a: FloatArray) -> FloatArray:
        """Forward pass of one chunk, no checks.

        The layers up to the last one with a large temporary (a convolution's
        patches) take ``eval_rows`` rows at a time; the layers above take the
        whole chunk at once, so their products, and their rounding, do not
        depend on ``eval_rows``.
        """
        split = max((i + 1 for i, layer in enumerate(self.layers) if layer.scratch_per_row()), default=0)
        rows = self.eval_rows
        if split and a.shape[0] > rows:
            parts = [self._forward_through(a[k : k + rows], self.layers[:split]) for k in range(0, a.shape[0], rows)]
            return self._forward_through(np.concatenate(parts), self.layers[split:])
        return self._forward_through(a, self.layers)

    @staticmethod
    def _forward_through(a: FloatArray, layers: Sequence[Layer]) -> FloatArray:
        """``a`` through ``layers``."""
        for layer in layers:
            a = layer.forward(a)
        return a

    def as_batch(self, x: npt.ArrayLike, what: str = "x") -> tuple[FloatArray, bool]:
        """A batch (m, n_in) of this network's dtype, and whether ``x`` was one image rather than a batch.

        Accepted: a batch (m, n_in), or one image (n_in,); for 784 inputs also
        28 x 28 images, one (28, 28) or a batch (m, 28, 28). (28, 28) is a
        batch of 28 only for a network of 28 inputs.

        Raises:
            ValueError: any other shape, or values that are not floats.
        """
        a = np.asarray(x)
        n_in = self.input_size
        square = n_in == IMAGE_SIDE * IMAGE_SIDE
        single = a.ndim == 1 or (square and a.shape == (IMAGE_SIDE, IMAGE_SIDE))
        if a.shape == (n_in,):
            a = a.reshape(1, n_in)
        elif square and a.ndim in (2, 3) and a.shape[-2:] == (IMAGE_SIDE, IMAGE_SIDE):
            a = a.reshape(-1, n_in)  # (28, 28) -> (1, 784), (m, 28, 28) -> (m, 784)
        elif a.ndim != 2 or a.shape[1] != n_in:
            images = f", ({IMAGE_SIDE}, {IMAGE_SIDE}) or (n, {IMAGE_SIDE}, {IMAGE_SIDE})" if square else ""
            raise ValueError(f"expected {what} of shape (n, {n_in}) or ({n_in},){images}, got {a.shape}")
        return self.check_images(a, what), single

    def predict(self, x: npt.ArrayLike, *, prepared: bool = False) -> IntArray:
        """The most activated output neuron for each image: (m,) int64 labels for a batch x.

        For one image, (784,) or (28, 28) (see ``as_batch``), the label comes
        without the batch axis: a 0-d array, so ``int(net.predict(image))`` is the digit.
        """
        batch, single = self.as_batch(x)
        labels: IntArray = np.argmax(self.feedforward(batch, prepared=prepared), axis=1).astype(np.int64)
        return labels[0, ...] if single else labels

    def probabilities(self, x: npt.ArrayLike) -> FloatArray:
        """Each image's output as a probability distribution over the classes, (m, n_out) for a batch.

        Softmax outputs are one already; sigmoid outputs are divided by their
        sum (``probability_kind`` says which was done). For one image, (784,)
        or (28, 28), the result is its (n_out,) row.
        """
        batch, single = self.as_batch(x)
        a = self.feedforward(batch).astype(np.float64)
        if self.cost.output.name != "softmax":
            total = a.sum(axis=1, keepdims=True)
            total[total == 0] = 1.0
            a = np.asarray(a / total)
        return a[0] if single else a

    @property
    def probability_kind(self) -> str:
        """How ``probabilities`` are made from the outputs."""
        return "softmax" if self.cost.output.name == "softmax" else "normalized sigmoid outputs"

    def count_correct(self, images: npt.ArrayLike, labels: npt.ArrayLike, *, prepared: bool = False) -> int:
        """How many of the images the network classifies as their labels."""
        x = self.check_images(images)
        y = self.check_labels(labels, x.shape[0])
        return int(np.count_nonzero(self.predict(x, prepared=prepared) == y))

    def SGD(  # noqa: N802 - Nielsen's name
        self,
        training_data: Any,
        epochs: int,
        mini_batch_size: int,
        eta: float,
        test_data: Any = None,
        *,
        rng: np.random.Generator | None = None,
        quiet: bool = False,
    ) -> Any:
        """Train with mini-batch stochastic gradient descent, as Nielsen's ``SGD``.

        ``training_data`` is Nielsen's list of ``(x, y)`` tuples from
        ``load_data_wrapper()`` or an ``(images, labels)`` pair; ``test_data``
        (optional, either form) is counted after every epoch. ``rng``
        shuffles (default: seeded with 0). After every epoch it prints, as
        Nielsen's code does, ``Epoch 0: 9129 / 10000`` (the count on
        ``test_data``; epochs numbered from 0) or, without test data, ``Epoch
        0 complete``; ``quiet`` prints nothing. It trains through
        ``mnist_nn.train.fit`` (``mnist_nn.train.nielsen``) and returns the
        run's ``History``.

        Raises:
            ConfigError: epochs, mini_batch_size or eta out of range.
        """
        if not _BOOK_TRAINERS:
            raise RuntimeError("Network.SGD trains through mnist_nn.train: import mnist_nn (or mnist_nn.train) first")
        return _BOOK_TRAINERS[-1](self, training_data, epochs, mini_batch_size, eta, test_data, rng=rng, quiet=quiet)

    def evaluate(self, data: Any) -> int:
        """Number of correct answers, as Nielsen's ``evaluate``.

        ``data`` is either Nielsen's list of ``(x, y)`` tuples (x of shape
        (784, 1), y an integer label or a one-hot column) or an
        ``(images, labels)`` pair of arrays such as a ``Split``.
        """
        images, labels = as_arrays(data, self.input_size)
        return self.count_correct(images, labels)

    def l2_penalty(self) -> float:
        """1/2 sum of every squared weight (biases excluded): the L2 term without lambda/n."""
        return 0.5 * sum(
            float(np.einsum("ij,ij->", w, w, dtype=np.float64))
            for layer in self.layers
            for w in layer.decayed(layer.params)
        )

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
        """Gradient of the cost summed over a mini-batch, by BP1-BP4 (see the module docstring).

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
        grads = self._split(self.gradients(x, y, l2, n))
        found = [layer.weights_and_biases(g) for layer, g in zip(self.layers, grads, strict=True)]
        pairs = [wb for wb in found if wb is not None]
        return [w for w, _ in pairs], [b for _, b in pairs]

    def gradients(self, x: npt.ArrayLike, y: npt.ArrayLike, l2: float = 0.0, n: int = 1) -> list[FloatArray]:
        """``backprop``'s gradients laid out like ``params``: every layer's, a batch norm's too.

        Each layer computes as a training step does (``Layer.forward_training``:
        a batch norm with the batch's statistics), without dropout.
        """
        a = self.check_images(x, "x")
        targets = np.asarray(y, dtype=self.dtype)
        if targets.shape != (a.shape[0], self.sizes[-1]):
            raise ValueError(f"expected y of shape ({a.shape[0]}, {self.sizes[-1]}), got {targets.shape}")
        activations = [a]
        for layer in self.layers:
            activations.append(layer.forward_training(activations[-1]))
        delta = np.empty_like(activations[-1])
        self.cost.output_delta(activations[-1], targets, delta, np.empty_like(delta))  # BP1
        grads: list[list[FloatArray]] = [[] for _ in self.layers]
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            grads[i], delta = layer.backward(
                activations[i], activations[i + 1], delta, output=i == len(self.layers) - 1
            )
            if l2:
                for g, w in zip(layer.decayed(grads[i]), layer.decayed(layer.params), strict=True):
                    g += (a.shape[0] * l2 / n) * w
        return [g for layer_grads in grads for g in layer_grads]


def _layer_text(layer: Layer) -> str:
    """A layer's repr with the activation the network chose for it: ``Dense(30, 'sigmoid')`` for ``Dense(30)``.

    Also ``Conv2D(32, 3, padding=1, activation='identity')`` below a batch norm, and ``BatchNorm('relu')``.
    """
    text = repr(layer)
    if layer.activated and getattr(layer, "activation_name", "") is None:
        if text.endswith("None)"):
            text = f"{text.removesuffix('None)')}{layer.activation.name!r})"
        elif text.endswith("()"):
            text = f"{text.removesuffix(')')}{layer.activation.name!r})"
    return text


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
