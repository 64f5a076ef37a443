"""Layers: what one stage of a network owns and does.

A layer owns its parameters and its part of the work (the equations are in
``mnist_nn.nn.network``, BP1-BP4):

- its output shape from its input shape (``build``), and the shapes of its
  parameters, known before anything is allocated (``param_shapes``);
- its initialization (``initialize``), drawn from the run's generator;
- a forward pass and a backward pass for any batch (``forward``,
  ``backward``): the delta arriving from above in, its gradients and the delta
  it passes below out;
- the buffers of the fast training step, planned once per mini-batch size
  (``plan``), and the step's own forward and backward on them;
- which of its arrays L2 decays (``decayed``);
- a JSON-ready description it can be rebuilt from (``describe`` and
  ``layer_from_description``), and the names and shapes under which a model
  file stores its parameters (``stored_arrays``; ``file_arrays`` and
  ``params_from_file`` map them for every kind).

``Layer``'s defaults are those of a layer without parameters, so such a kind
implements ``build``, ``forward``, ``backward``, ``plan`` and ``describe``
only. A new kind is a class here, registered in ``LAYER_KINDS``, and a row of
``mnist_nn.nn.specs`` for its command-line spec; the network, the training
loop and the model file work through this interface only.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from mnist_nn.errors import NonFiniteError
from mnist_nn.nn.activations import ACTIVATIONS, IDENTITY, Activation, FloatArray
from mnist_nn.nn.winograd import Tiles, TilesBackward, kernels_gradient, transform_kernels

Shape = tuple[int, ...]

_matmul = np.matmul  # bound once: the fast step calls it three times per layer
# A convolution's step with at least this many patch rows (m * H' * W') takes the delta below one
# kernel offset at a time (see ``_ConvStep``): 4,096 at chapter 6's second layer at mini-batch 64.
BLOCKED_SHARES_ROWS = 2048
# A 3x3 convolution's step with an even output and at least this many input channels computes by
# Winograd's F(2x2, 3x3) (see ``_WinogradConvStep``); with fewer, im2col's copies are cheap.
WINOGRAD_MIN_CHANNELS = 32

# Initializations by name: "normal" is Nielsen's chapter 1 (weights and biases N(0, 1)),
# "fan-out" his chapter 6 (network3.py: weights N(0, 1/n_out), biases N(0, 1), a softmax layer 0).
INITS = ("normal", "scaled", "he", "glorot", "fan-out")


@dataclass(frozen=True)
class StoredArray:
    """One array a model file stores for a layer: rows ``rows`` of ``params[param]``, in shape ``shape``.

    The file names it ``layer{i}_{name}`` (``layer0_w``); the rows, reshaped
    to ``shape``, are a view of the parameter, so writing copies nothing.
    """

    name: str
    param: int
    rows: slice
    shape: Shape


class Layer(ABC):
    """One stage of a network (see the module docstring for what it owns).

    ``params`` are the arrays training updates, in ``dtype`` (the network's),
    set by ``initialize``; ``activation`` is the output activation, fixed
    when the network is built. Every kind implements the abstract methods.
    The defaults of the next group describe a layer without parameters or an
    activation of its own (a pool, dropout), and a kind with parameters
    overrides them; the last group maps any kind's parameters to a model
    file's arrays, from ``stored_arrays``.
    """

    kind: ClassVar[str]  # the name in descriptions, e.g. "dense"
    # True when the layer wants its input with one more trailing column, all ones (Dense's
    # bias trick): whoever writes its input (the previous layer, the loop's shuffle) adds it.
    ones_column: ClassVar[bool] = False
    # True for a layer with an activation of its own (Dense, Conv2D), which the network fixes
    # when it builds the layers; a pool or dropout has none.
    activated: ClassVar[bool] = False
    # The names under which a model file stores each of ``params`` whole (see ``stored_arrays``).
    param_names: ClassVar[tuple[str, ...]] = ()
    # True for a layer that normalizes its input and applies the activation itself (a batch
    # norm): the activated layer below it (directly, or through pools and dropout), unless given an
    # activation, stays linear.
    normalizes: ClassVar[bool] = False

    activation: Activation = IDENTITY  # until the network fixes it; a layer that is not activated keeps it
    params: list[FloatArray]
    dtype: np.dtype[Any]
    input_shape: Shape
    output_shape: Shape

    # --- what every kind implements ---

    @abstractmethod
    def build(self, input_shape: Shape) -> Shape:
        """Remember the input shape (one example's) and return the output shape; ValueError if it does not fit."""

    @abstractmethod
    def forward(self, x: FloatArray) -> FloatArray:
        """The layer's output a for a batch x, in new arrays."""

    @abstractmethod
    def backward(
        self, x: FloatArray, a: FloatArray, delta: FloatArray, *, output: bool
    ) -> tuple[list[FloatArray], FloatArray]:
        """Gradients of ``params`` (batch sums) and dC/dx, from x, a = forward(x) and delta = dC/da.

        For the output layer (``output``) delta is already dC/dz (BP1 pairs
        the cost with the output activation).
        """

    @abstractmethod
    def plan(self, m: int, *, ones_out: bool) -> LayerStep:
        """The fast step's buffers for mini-batches of m rows, in ``dtype`` (see ``LayerStep``).

        ``ones_out``: the next layer wants the output with a trailing column of ones.
        """

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """A JSON-ready description: ``layer_from_description`` rebuilds an equal layer from it."""

    def forward_training(self, x: FloatArray) -> FloatArray:
        """The output as a training step computes it, without its randomness (``Network.backprop`` uses it).

        ``forward``, but for a batch norm, which normalizes with the batch's own statistics.
        """
        return self.forward(x)

    # --- what a kind with parameters overrides ---

    def param_shapes(self) -> list[Shape]:
        """Shapes of ``params``, known after ``build`` and before anything is allocated (none by default)."""
        return []

    def initialize(self, rng: np.random.Generator | None, init: str, dtype: np.dtype[Any]) -> None:
        """Draw ``params`` in ``dtype`` from ``rng`` by the named initialization (zeros when rng is None).

        By default there is nothing to draw, and the dtype is kept for the step's buffers.
        """
        self.dtype = dtype
        self.params = []

    def weights_and_biases(self, params: Sequence[FloatArray]) -> tuple[FloatArray, FloatArray] | None:
        """Views of the weights and biases inside this layer's ``params`` (None for a layer without, the default)."""
        return None

    def decayed(self, params: Sequence[FloatArray]) -> list[FloatArray]:
        """Views of the arrays in a params-shaped list that L2 decays (weights, not biases; none by default)."""
        return []

    def stored_arrays(self) -> list[StoredArray]:
        """The arrays a model file stores for this layer, known after ``build``.

        By default each of ``params`` whole, under its name in ``param_names``.
        """
        return [
            StoredArray(name, i, slice(None), shape)
            for i, (name, shape) in enumerate(zip(self.param_names, self.param_shapes(), strict=True))
        ]

    def macs(self) -> int:
        """Multiply-adds per example of the forward pass, after ``build`` (a training step does about 3x as many)."""
        return 0

    def scratch_per_row(self) -> int:
        """Values of the temporary that ``forward`` makes per input row beyond its output (0: none worth bounding)."""
        return 0

    @property
    def merges(self) -> int:
        """Input values each output value summarizes: P^2 for a P x P pool, 1 for other layers."""
        return 1

    def connect(self, above: Layer) -> None:
        """Called once both are built, with the layer that reads this one's output; nothing to do by default.

        A convolution reads ``above.merges`` here, for the "fan-out" initialization.
        """
        return

    def connect_below(self, below: Layer) -> None:
        """Called once both are built, with the layer whose output this one reads; nothing to do by default.

        A max-pool reads ``below.activation`` here (see ``_MaxPoolStep``).
        """
        return

    def plan_dropout(self, m: int, rate: float, *, ones_out: bool) -> LayerStep | None:
        """``plan`` with the run's dropout (``rate``, ``Step``'s ``dropout``) on this hidden layer's outputs.

        Only neurons drop: None (the default) says the run's dropout does not
        reach this kind, and ``Step`` plans it without.
        """
        return None

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> Layer:
        """The inverse of ``describe``; ValueError for anything else.

        By default the description's keys besides "kind" are the
        constructor's arguments, by name.
        """
        names = list(inspect.signature(cls).parameters)
        _check_keys(description, {"kind", *names})
        return cls(**{name: description[name] for name in names})

    # --- the model file's arrays, the same for every kind (from ``stored_arrays``) ---

    def file_arrays(self, params: Sequence[FloatArray]) -> dict[str, FloatArray]:
        """This layer's share of a params-shaped list as the named arrays a model file stores (views)."""
        return {s.name: params[s.param][s.rows].reshape(s.shape) for s in self.stored_arrays()}

    def file_shapes(self) -> dict[str, Shape]:
        """The names and shapes of ``file_arrays``, known before anything is read."""
        return {s.name: s.shape for s in self.stored_arrays()}

    def params_from_file(self, arrays: Mapping[str, FloatArray], dtype: np.dtype[Any]) -> list[FloatArray]:
        """The inverse of ``file_arrays``: new arrays laid out like ``params``."""
        params = [np.empty(shape, dtype=dtype) for shape in self.param_shapes()]
        for s in self.stored_arrays():
            rows = params[s.param][s.rows]
            rows[...] = arrays[s.name].reshape(rows.shape)
        return params


class LayerStep(ABC):
    """A layer's part of the fast training step, for mini-batches of one size.

    ``out`` is the layer's output buffer (with the trailing column of ones
    when the next layer asked for it), ``output`` the same without that
    column, and ``out_t`` the transpose of ``out``, made once; ``delta`` is
    where the layer above writes dC/da; ``grads`` are the gradient buffers,
    laid out like the layer's ``params``.
    """

    out: FloatArray
    output: FloatArray
    out_t: FloatArray
    delta: FloatArray
    grads: list[FloatArray]

    @abstractmethod
    def forward(self, x: FloatArray, rng: np.random.Generator) -> None:
        """out = the layer's output for the batch x (its input buffer), with dropout drawn from rng."""

    @abstractmethod
    def backward(self, x_t: FloatArray, below: FloatArray | None, output: bool) -> None:
        """From ``delta``: ``grads`` = this batch's update, and dC/d(input) into ``below`` (if not None).

        x_t is the transpose of the input buffer. The delta arriving at the
        output layer is already scaled by -eta/m, so the gradients come out
        as the update itself.
        """


def _weighted_input(x: FloatArray, p: FloatArray) -> FloatArray:
    """z = x @ weights + biases of a fused (fan_in + 1, fan_out) array p, in a new array.

    Raises:
        NonFiniteError: a value of z is infinite or NaN: the product overflowed
            (weights of a diverged run). A sigmoid or tanh would turn it into a
            plain 0 or 1, and the network would go on answering.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is raised below, in one line, not warned
        z = x @ p[:-1]
        z += p[-1]
    # Two reductions find any inf or NaN (NaN propagates through max) without an array of z's size.
    if z.size and not (np.isfinite(z.max()) and np.isfinite(z.min())):
        with np.errstate(over="ignore", invalid="ignore"):
            largest = float(np.max(np.abs(p)))
        raise NonFiniteError(
            f"a layer's weighted inputs overflowed to infinity or NaN: its weights are too large "
            f"(the largest is {largest:.3g} in absolute value)"
        )
    return z


# --- Dense -----------------------------------------------------------------------------


def _check_activation(name: str | None, *, output: bool) -> None:
    """ValueError unless ``name`` is None or an activation (softmax too, for a layer that can be the output)."""
    if name is not None and name not in ACTIVATIONS and not (output and name == "softmax"):
        raise ValueError(f"unknown activation {name!r}; expected one of: {', '.join(sorted(ACTIVATIONS))}")


def _init_dense(rng: np.random.Generator, n_in: int, n_out: int, init: str, spread: int) -> npt.NDArray[np.float64]:
    """One layer's (n_in + 1, n_out) parameters; the last row is the biases.

    ``spread`` is the number of outputs each input reaches, n_out in
    Nielsen's network3 (for a convolution followed by a pool, F K^2 / P^2),
    which scales the "fan-out" initialization.
    """
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
    elif init == "fan-out":  # Nielsen's network3: weights N(0, 1/n_out), biases N(0, 1)
        p[:-1] /= np.sqrt(spread)
    return p


class _FusedLayer(Layer):
    """A layer whose weights (fan_in, fan_out) and biases (fan_out,) are one (fan_in + 1, fan_out) array.

    ``params[0]``'s first fan_in rows are the weights and its last row the
    biases (both views). With a column of ones beside its input, the layer's
    weighted input is one matrix product, and that product's gradient carries
    BP3 in its last row. L2 decays the weights, never the biases; a model
    file stores them apart, as ``w`` (in the layer's ``weights_shape``) and ``b``.
    """

    activated = True

    @property
    @abstractmethod
    def fan_in(self) -> int:
        """Values each neuron (or each kernel, at one position) sees."""

    @property
    @abstractmethod
    def fan_out(self) -> int:
        """Neurons (or feature maps)."""

    @property
    @abstractmethod
    def weights_shape(self) -> Shape:
        """The weights' shape in a model file: fan_in * fan_out values, in the order of the fused array's rows."""

    def param_shapes(self) -> list[Shape]:
        """One (fan_in + 1, fan_out) array: the weights, then the biases as the last row."""
        return [(self.fan_in + 1, self.fan_out)]

    # Outputs each input value reaches, for the "fan-out" initialization (0: fan_out; a
    # convolution counts it in ``build`` and ``connect``).
    spread: int = 0

    def initialize(self, rng: np.random.Generator | None, init: str, dtype: np.dtype[Any]) -> None:
        """Weights and biases together, drawn in float64 and cast, so float32 and float64 start alike.

        Under "fan-out", a softmax output layer starts at 0, as Nielsen's ``SoftmaxLayer``.
        """
        self.dtype = dtype
        softmax_zero = init == "fan-out" and self.activation.name == "softmax"
        if rng is None or softmax_zero:
            self.params = [np.zeros(self.param_shapes()[0], dtype=dtype)]
        else:
            spread = self.spread or self.fan_out
            self.params = [_init_dense(rng, self.fan_in, self.fan_out, init, spread).astype(dtype)]

    def weights_and_biases(self, params: Sequence[FloatArray]) -> tuple[FloatArray, FloatArray]:
        """Views of rows :-1 and -1 of the fused array."""
        return params[0][:-1], params[0][-1]

    def decayed(self, params: Sequence[FloatArray]) -> list[FloatArray]:
        """The weights: a contiguous view of the fused array (biases are not decayed)."""
        return [params[0][:-1]]

    def stored_arrays(self) -> list[StoredArray]:
        """``w``, the rows :-1 in ``weights_shape``, and ``b``, the last row, (fan_out,)."""
        return [
            StoredArray("w", 0, slice(None, -1), self.weights_shape),
            StoredArray("b", 0, slice(-1, None), (self.fan_out,)),
        ]


class Dense(_FusedLayer):
    """A fully connected layer of ``size`` neurons: a = f(x @ weights + biases).

    Its weights (n_in, n_out) and biases (n_out,) live in one (n_in + 1,
    n_out) array, ``params[0]``: the first n_in rows are the weights and the
    last row the biases (both views). With a column of ones appended to x,
    x @ weights + biases is one matrix product, and its gradient x.T @ delta
    carries BP3 in its last row. That is what makes the fast step fast at
    Nielsen's mini-batch of 10, where each NumPy call costs more than its
    arithmetic.

    Args:
        size: neurons in the layer.
        activation: a name from ``ACTIVATIONS``; None lets the network choose
            (its hidden activation, or the cost's output activation for the
            last layer).
    """

    kind = "dense"
    ones_column = True

    def __init__(self, size: int, activation: str | None = None) -> None:
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise ValueError(f"expected a positive integer layer size, got {size!r}")
        _check_activation(activation, output=True)
        self.size = int(size)
        self.activation_name = activation
        self.params = []

    def __repr__(self) -> str:
        return f"Dense({self.size}, {self.activation_name!r})"

    @property
    def n_in(self) -> int:
        """Inputs per example (the input shape flattened)."""
        return math.prod(self.input_shape)

    @property
    def fan_in(self) -> int:
        """n_in."""
        return self.n_in

    @property
    def fan_out(self) -> int:
        """size."""
        return self.size

    @property
    def weights_shape(self) -> Shape:
        """(n_in, size)."""
        return (self.n_in, self.size)

    def build(self, input_shape: Shape) -> Shape:
        """Any input shape, flattened to n_in values; the output is (size,)."""
        self.input_shape = tuple(input_shape)
        self.output_shape = (self.size,)
        return self.output_shape

    def macs(self) -> int:
        """n_in * size: one per weight."""
        return self.n_in * self.size

    def forward(self, x: FloatArray) -> FloatArray:
        """a = f(x @ weights + biases); NonFiniteError if a weighted input is not finite."""
        z = _weighted_input(x, self.params[0])
        return self.activation.forward(z, out=z)

    def backward(
        self, x: FloatArray, a: FloatArray, delta: FloatArray, *, output: bool
    ) -> tuple[list[FloatArray], FloatArray]:
        """BP2's derivative factor (hidden layers), BP4 and BP3, and the delta passed below."""
        if not output:
            delta = delta.copy()
            self.activation.scale_by_derivative(a, delta, np.empty_like(a))
        grad = np.empty_like(self.params[0])
        grad[:-1] = x.T @ delta  # BP4
        grad[-1] = delta.sum(axis=0)  # BP3
        return [grad], delta @ self.params[0][:-1].T  # BP2's product, for the layer below

    def plan(self, m: int, *, ones_out: bool) -> LayerStep:
        """Buffers for m rows (see ``_DenseStep``)."""
        return _DenseStep(self, m, 0.0, ones_out)

    def plan_dropout(self, m: int, rate: float, *, ones_out: bool) -> LayerStep | None:
        """Buffers for m rows, each neuron dropped with probability ``rate`` in every step.

        A hidden layer kept linear for a batch norm above drops nothing: the
        batch norm applies the activation, and drops after it.
        """
        return None if self.activation is IDENTITY else _DenseStep(self, m, rate, ones_out)

    def describe(self) -> dict[str, Any]:
        """{"kind": "dense", "size": n, "activation": name}."""
        return {"kind": self.kind, "size": self.size, "activation": _activation_name(self)}

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> Dense:
        """The inverse of ``describe``; ValueError for anything else."""
        _check_keys(description, {"kind", "size", "activation"})
        size, activation = description["size"], description["activation"]
        if not isinstance(size, int) or isinstance(size, bool):
            raise ValueError(f"expected a dense layer's size to be an integer, got {size!r}")
        if activation is not None and not isinstance(activation, str):
            raise ValueError(f"expected a dense layer's activation to be a name or null, got {activation!r}")
        return cls(size, activation)


def draw_mask(mask: FloatArray, keep: float, rng: np.random.Generator) -> None:
    """An inverted-dropout mask in place: 1/keep with probability keep, else 0."""
    rng.random(dtype=mask.dtype, out=mask)
    np.less(mask, keep, out=mask)
    np.multiply(mask, 1.0 / keep, out=mask)


class _DenseStep(LayerStep):
    """A dense layer's buffers for m rows, and views of its parameters made once.

    ``out`` carries a trailing column of ones when the next layer wants one;
    ``a`` is its first n columns, where the activation writes. Making a view
    costs as much as a small ufunc call, so every view is made here.
    """

    def __init__(self, layer: Dense, m: int, dropout: float, ones_out: bool) -> None:
        param = layer.params[0]
        n_out = layer.size
        dtype = param.dtype
        self.param = param
        self.weights_t = param[:-1].T  # (n_out, n_in): BP2's weights.T
        self.activation = layer.activation
        # Hidden layers are column-major: then a, the activation's output, is
        # contiguous too, and the elementwise calls on it run about twice as fast.
        order: Literal["C", "F"] = "F" if ones_out else "C"
        self.z = np.empty((m, n_out), dtype, order=order)
        self.out = np.ones((m, n_out + 1), dtype, order=order) if ones_out else self.z
        self.a = self.out[:, :-1] if ones_out else self.z
        self.output = self.a
        self.out_t = self.out.T
        self.delta = np.empty((m, n_out), dtype, order=order)
        self.work = np.empty((m, n_out), dtype, order=order)
        self.grad = np.empty_like(param)
        self.grads = [self.grad]
        # Inverted dropout: the activation goes to ``pre``, and a = pre * mask,
        # with mask 1/keep for kept neurons and 0 for dropped ones.
        self.dropout = dropout
        self.keep = 1.0 - dropout
        self.pre = np.empty((m, n_out), dtype, order=order) if dropout else self.a
        self.mask = np.empty((m, n_out), dtype, order=order) if dropout else self.a

    def forward(self, x: FloatArray, rng: np.random.Generator) -> None:
        """z = x @ params (x carries its ones column), then the activation and dropout."""
        _matmul(x, self.param, out=self.z)
        if self.dropout:
            self.activation.forward(self.z, out=self.pre)
            draw_mask(self.mask, self.keep, rng)
            np.multiply(self.pre, self.mask, out=self.a)
        else:
            self.activation.forward(self.z, out=self.a)

    def backward(self, x_t: FloatArray, below: FloatArray | None, output: bool) -> None:
        """BP2's derivative factor and dropout mask (hidden layers), BP4 with BP3 in the last row, BP2's product."""
        if not output:
            self.activation.scale_by_derivative(self.pre, self.delta, self.work)
            if self.dropout:
                np.multiply(self.delta, self.mask, out=self.delta)
        _matmul(x_t, self.delta, out=self.grad)
        if below is not None:
            _matmul(self.delta, self.weights_t, out=below)  # before the update changes the weights


# --- Conv2D and the pools --------------------------------------------------------------
#
# Feature maps are channel-last: one example's activations have shape (H, W, C) and
# travel between layers flattened, as rows of H * W * C values. A 784-pixel image is
# (28, 28, 1). Convolution is one matrix product over im2col patches, whose last column
# is all ones, so that, as in Dense, the biases are the last row of one (C*K*K + 1, F)
# parameter array; its gradient with respect to the input is a sum of K*K shifted slices.


def _image_shape(input_shape: Shape, layer: str) -> tuple[int, int, int]:
    """(H, W, C) of an input: a flat square image such as (784,) is (28, 28, 1)."""
    if len(input_shape) == 3:
        h, w, c = input_shape
        return h, w, c
    if len(input_shape) == 1:
        side = math.isqrt(input_shape[0])
        if side * side == input_shape[0]:
            return side, side, 1
    raise ValueError(f"{layer} needs square images or feature maps as input, got shape {input_shape}")


def _activation_name(layer: Dense | Conv2D) -> str | None:
    """The activation the network fixed, else the one the layer was given (None: the network's choice)."""
    return layer.activation.name if layer.activation is not IDENTITY else layer.activation_name


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"expected a positive integer {what}, got {value!r}")
    return int(value)


class Conv2D(_FusedLayer):
    """``filters`` feature maps of ``kernel`` x ``kernel`` kernels, stride 1, ``padding`` zeros around the input.

    Input (H, W, C), output (H + 2P - K + 1, W + 2P - K + 1, F): without
    padding (P = 0) the maps shrink by K - 1; with P = (K - 1) / 2 they keep
    the input's size ("same" padding). Its weights, shape (K, K, C, F) in a
    model file, decay under L2; its biases (F,) do not.

    Args:
        filters: feature maps F.
        kernel: side K of each kernel.
        activation: a name from ``ACTIVATIONS``, or None for the network's hidden activation.
        padding: P, the rows and columns of zeros added on each side of the input, 0 <= P < K.
    """

    kind = "conv2d"

    def __init__(self, filters: int, kernel: int, activation: str | None = None, padding: int = 0) -> None:
        _check_activation(activation, output=False)
        self.filters = _positive(filters, "number of feature maps")
        self.kernel = _positive(kernel, "kernel size")
        if isinstance(padding, bool) or not isinstance(padding, int | np.integer) or not 0 <= padding < self.kernel:
            raise ValueError(f"expected a padding from 0 to {self.kernel - 1} (less than the kernel), got {padding!r}")
        self.padding = int(padding)
        self.activation_name = activation
        self.params = []

    def __repr__(self) -> str:
        if self.padding:
            return f"Conv2D({self.filters}, {self.kernel}, padding={self.padding}, activation={self.activation_name!r})"
        return f"Conv2D({self.filters}, {self.kernel}, {self.activation_name!r})"

    @property
    def padded(self) -> tuple[int, int, int]:
        """(H + 2P, W + 2P, C): the input with its border of zeros."""
        h, w, c = self.image
        return h + 2 * self.padding, w + 2 * self.padding, c

    def build(self, input_shape: Shape) -> Shape:
        """Output (H + 2P - K + 1, W + 2P - K + 1, F); ValueError when the kernel is larger than the padded input."""
        self.image = _image_shape(tuple(input_shape), "a convolution")
        h, w, _ = self.padded
        k = self.kernel
        if k > h or k > w:
            raise ValueError(f"a {k}x{k} kernel is larger than its {h}x{w} input")
        self.input_shape = tuple(input_shape)
        self.output_shape = (h - k + 1, w - k + 1, self.filters)
        self.spread = self.filters * k * k  # a pool above divides this (``connect``)
        return self.output_shape

    def connect(self, above: Layer) -> None:
        """Each input reaches F K^2 outputs, F K^2 / P^2 after a P x P pool, as Nielsen's ``ConvPoolLayer`` counts."""
        self.spread = max(1, self.filters * self.kernel * self.kernel // above.merges)

    @property
    def patch_size(self) -> int:
        """C * K * K: the values one output position sees."""
        return self.image[2] * self.kernel * self.kernel

    @property
    def fan_in(self) -> int:
        """The patch size, K*K*C."""
        return self.patch_size

    @property
    def fan_out(self) -> int:
        """The feature maps, F."""
        return self.filters

    @property
    def weights_shape(self) -> Shape:
        """(K, K, C, F): kernel row, column, input channel, feature map."""
        return (self.kernel, self.kernel, self.image[2], self.filters)

    def macs(self) -> int:
        """H' * W' * F * K*K*C: every output position sees one patch through every kernel."""
        return math.prod(self.output_shape) * self.patch_size

    def scratch_per_row(self) -> int:
        """H' * W' * K*K*C: the patches of one image, which ``forward`` copies out."""
        return math.prod(self.output_shape[:2]) * self.patch_size

    def _patches(self, x: FloatArray) -> FloatArray:
        """im2col: (m * H' * W', K*K*C) patches of a batch of flattened inputs (padded first), in (K, K, C) order."""
        h, w, c = self.image
        p = self.padding
        images = x.reshape(-1, h, w, c)
        if p:
            images = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
        windows = np.lib.stride_tricks.sliding_window_view(
            images, (self.kernel, self.kernel), axis=(1, 2)
        )  # (m, H', W', C, K, K), a view
        patches: FloatArray = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, self.patch_size)
        return patches

    def forward(self, x: FloatArray) -> FloatArray:
        """a = f(patches @ kernels + biases), flattened to (m, H' * W' * F)."""
        z = _weighted_input(self._patches(x), self.params[0])
        return self.activation.forward(z, out=z).reshape(x.shape[0], -1)

    def backward(
        self, x: FloatArray, a: FloatArray, delta: FloatArray, *, output: bool
    ) -> tuple[list[FloatArray], FloatArray]:
        """BP2's derivative factor, BP4 and BP3 over the patches, and the delta below as shifted slices."""
        if not output:
            delta = delta.copy()
            self.activation.scale_by_derivative(a, delta, np.empty_like(a))
        m = x.shape[0]
        d = delta.reshape(-1, self.filters)  # (m * H' * W', F)
        grad = np.empty_like(self.params[0])
        grad[:-1] = self._patches(x).T @ d
        grad[-1] = d.sum(axis=0)
        return [grad], self._col2im(d @ self.params[0][:-1].T, m)

    def _col2im(self, d_patches: FloatArray, m: int) -> FloatArray:
        """The gradient with respect to the input: each kernel offset's share added at its shifted slice.

        With padding, the shares land on the padded input, and its border (zeros, not inputs) is dropped.
        """
        h, w, c = self.padded
        k, p = self.kernel, self.padding
        ho, wo, _ = self.output_shape
        d6 = d_patches.reshape(m, ho, wo, k, k, c)
        dx = np.zeros((m, h, w, c), dtype=d_patches.dtype)
        for i in range(k):
            for j in range(k):
                dx[:, i : i + ho, j : j + wo, :] += d6[:, :, :, i, j, :]
        return dx[:, p : h - p, p : w - p, :].reshape(m, -1)

    def plan(self, m: int, *, ones_out: bool) -> LayerStep:
        """Buffers for m rows (see ``_WinogradConvStep`` for the 3x3 kernels it takes, else ``_ConvStep``)."""
        ho, wo, _ = self.output_shape
        if self.kernel == 3 and ho % 2 == 0 and wo % 2 == 0 and self.image[2] >= WINOGRAD_MIN_CHANNELS:
            return _WinogradConvStep(self, m, ones_out)
        return _ConvStep(self, m, ones_out)

    def describe(self) -> dict[str, Any]:
        """{"kind": "conv2d", "filters": F, "kernel": K, "activation": name}, and "padding": P when P > 0."""
        described = {"kind": self.kind, "filters": self.filters, "kernel": self.kernel}
        described["activation"] = _activation_name(self)
        return described | ({"padding": self.padding} if self.padding else {})

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> Conv2D:
        """The inverse of ``describe``; ValueError for anything else."""
        _check_keys(description, {"kind", "filters", "kernel", "activation"} | ({"padding"} & set(description)))
        activation = description["activation"]
        if activation is not None and not isinstance(activation, str):
            raise ValueError(f"expected a conv2d layer's activation to be a name or null, got {activation!r}")
        return cls(description["filters"], description["kernel"], activation, description.get("padding", 0))


def output_rows(out: FloatArray, n: int) -> FloatArray:
    """The first n columns of an output buffer (all of it when it has no ones column)."""
    return out if out.shape[1] == n else out[:, :n]


class _ConvStep(LayerStep):
    """A convolution's buffers for m rows: the patches (with their ones column), z, the output.

    The input is copied into a buffer of the layer's own, so the windows over
    it (a view made once) never change; each step copies them into the
    patches buffer, and one product gives every position's z.
    """

    def __init__(self, layer: Conv2D, m: int, ones_out: bool) -> None:
        h, w, c = layer.padded
        k, f, p = layer.kernel, layer.filters, layer.padding
        ho, wo, _ = layer.output_shape
        param = layer.params[0]
        dtype = param.dtype
        n_out = ho * wo * f
        self.param = param
        self.weights_t = param[:-1].T  # (F, C*K*K)
        self.activation = layer.activation
        self.image = np.zeros((m, h, w, c), dtype)  # its border (with padding) stays 0
        self.interior = self.image[:, p : h - p, p : w - p, :]  # where each batch is copied
        windows = np.lib.stride_tricks.sliding_window_view(self.image, (k, k), axis=(1, 2))  # (m, H', W', C, K, K)
        if c == 1:
            # One channel: a patch row would be copied one value at a time, so the patches are kept
            # transposed, (K*K + 1, m*H'*W'), each row a copy in runs of W' values; the products read
            # them through a transposed view, which BLAS takes as it is.
            self.patches_t = np.ones((layer.patch_size + 1, m * ho * wo), dtype)
            self.patches = self.patches_t.T
            self.patch_view = self.patches_t[:-1].reshape(k, k, m, ho, wo)
            self.windows = windows[:, :, :, 0].transpose(3, 4, 0, 1, 2)
        else:
            # (m, H', W', K, K, C): each patch in (K, K, C) order, so runs of C values are contiguous.
            self.windows = windows.transpose(0, 1, 2, 4, 5, 3)
            self.patches = np.ones((m * ho * wo, layer.patch_size + 1), dtype)
            self.patches_t = self.patches.T
            self.patch_view = self.patches[:, :-1].reshape(m, ho, wo, k, k, c)
        self.z = np.empty((m * ho * wo, f), dtype)
        self.z4 = self.z.reshape(m, ho, wo, f)
        self.out = np.ones((m, n_out + 1), dtype) if ones_out else np.empty((m, n_out), dtype)
        self.output = output_rows(self.out, n_out)
        self.a4 = self.output.reshape(m, ho, wo, f)
        self.out_t = self.out.T
        self.delta = np.empty((m, n_out), dtype)
        self.delta4 = self.delta.reshape(m, ho, wo, f)
        self.delta2 = self.delta.reshape(m * ho * wo, f)
        self.work = np.empty((m, ho, wo, f), dtype)
        self.grad = np.empty_like(param)
        self.grads = [self.grad]
        # The delta below: each kernel offset's share of it, added at its shifted slice. Many rows
        # take each offset's share as its own product, (m*H'*W', F) @ (F, C), small enough to stay
        # in cache for its addition; few take all the shares as one product, then add its slices.
        self.blocked = m * ho * wo >= BLOCKED_SHARES_ROWS
        if self.blocked:
            self.d_patches = np.empty((m * ho * wo, c), dtype)
            d6 = self.d_patches.reshape(m, ho, wo, 1, 1, c)
            kernels = param[:-1].reshape(k, k, c, f)
            self.shifts = [(i, j, kernels[i, j].T) for i in range(k) for j in range(k)]  # (F, C) views
        else:
            self.d_patches = np.empty((m * ho * wo, layer.patch_size), dtype)
            d6 = self.d_patches.reshape(m, ho, wo, k, k, c)
            self.shifts = [(i, j, d6[:, :, :, i, j, :]) for i in range(k) for j in range(k)]
        self.d4 = d6[:, :, :, 0, 0, :]
        self.pad, self.out_size = p, (ho, wo)
        # With padding the shares of the delta below land on a padded buffer, whose interior is the delta below.
        self.padded_below = np.empty((m, h, w, c), dtype) if p else None
        self._below: FloatArray | None = None
        self._slices: list[tuple[FloatArray, FloatArray]] = []

    def forward(self, x: FloatArray, rng: np.random.Generator) -> None:
        """Copy x into the image buffer, im2col, one product, the activation."""
        np.copyto(self.interior, x.reshape(self.interior.shape))
        np.copyto(self.patch_view, self.windows)
        _matmul(self.patches, self.param, out=self.z)
        self.activation.forward(self.z4, out=self.a4)

    def backward(self, x_t: FloatArray, below: FloatArray | None, output: bool) -> None:
        """BP2's derivative factor, the kernels' gradient over the patches, the delta below as shifted slices."""
        if not output:
            self.activation.scale_by_derivative(self.a4, self.delta4, self.work)
        _matmul(self.patches_t, self.delta2, out=self.grad)
        if below is None:
            return
        if below is not self._below:  # the slices of the buffer below, made once
            ho, wo = self.out_size
            below4 = below.reshape(self.interior.shape)
            self._below = below
            self._below4 = below4 if self.padded_below is None else self.padded_below
            self._slices = [(self._below4[:, i : i + ho, j : j + wo, :], d) for i, j, d in self.shifts]
            self._interior_below = below4
        self._below4.fill(0.0)
        if self.blocked:
            delta2, share, d4 = self.delta2, self.d_patches, self.d4
            for target, kernel_t in self._slices:
                _matmul(delta2, kernel_t, out=share)
                np.add(target, d4, out=target)
        else:
            _matmul(self.delta2, self.weights_t, out=self.d_patches)
            for target, d in self._slices:
                np.add(target, d, out=target)
        if self.padded_below is not None:
            p = self.pad
            np.copyto(self._interior_below, self.padded_below[:, p:-p, p:-p, :])


class _WinogradConvStep(LayerStep):
    """A 3x3 convolution's step by F(2x2, 3x3) (``mnist_nn.nn.winograd``): 16 products where im2col has 36.

    The input is copied into the tiles' padded image buffer; the
    kernels are transformed at each step (they change at every update), and
    the transformed input, the products and their gradients are buffers of
    the step. The update is the textbook one up to rounding.
    """

    def __init__(self, layer: Conv2D, m: int, ones_out: bool) -> None:
        c, f = layer.image[2], layer.filters
        ho, wo, _ = layer.output_shape
        param = layer.params[0]
        dtype = param.dtype
        n_out = ho * wo * f
        self.param = param
        self.kernels = param[:-1].reshape(3, 3, c, f)
        self.activation = layer.activation
        self.tiles = Tiles(m, layer.image, layer.padding, f, dtype)
        self.back = TilesBackward(self.tiles)
        self.u = np.empty((16, c, f), dtype)  # the transformed kernels
        self.u_t = self.u.transpose(0, 2, 1)
        self.v_t = self.tiles.v.transpose(0, 2, 1)
        self.d_u = np.empty((16, c, f), dtype)
        self.out = np.ones((m, n_out + 1), dtype) if ones_out else np.empty((m, n_out), dtype)
        self.output = output_rows(self.out, n_out)
        self.a4 = self.output.reshape(m, ho, wo, f)
        self.a_tiled = self.tiles.tiled(self.output)
        self.out_t = self.out.T
        self.delta = np.empty((m, n_out), dtype)
        self.delta4 = self.delta.reshape(m, ho, wo, f)
        self.delta2 = self.delta.reshape(m * ho * wo, f)
        self.work = np.empty((m, ho, wo, f), dtype)
        self.grad = np.empty_like(param)
        self.grads = [self.grad]
        self.grad_kernels = self.grad[:-1].reshape(3, 3, c, f)

    def forward(self, x: FloatArray, rng: np.random.Generator) -> None:
        """Copy x into the tiles' image; V = B^T d B, M = V @ U, z = A^T M A + b; the activation."""
        self.tiles.load(x)
        transform_kernels(self.kernels, self.u)
        self.tiles.transform_input()
        _matmul(self.tiles.v, self.u, out=self.tiles.products)
        self.tiles.transform_output(self.param[-1])
        self.activation.forward(self.tiles.z, out=self.a_tiled)  # back in the maps' order

    def backward(self, x_t: FloatArray, below: FloatArray | None, output: bool) -> None:
        """BP2's derivative factor; dM = A dY A^T; the kernels' gradient G^T (V^T dM) G; the delta below."""
        if not output:
            self.activation.scale_by_derivative(self.a4, self.delta4, self.work)
        back = self.back
        back.transform_delta(self.delta)
        _matmul(self.v_t, back.d_products, out=self.d_u)
        kernels_gradient(self.d_u, self.grad_kernels)
        np.sum(self.delta2, axis=0, out=self.grad[-1])
        if below is not None:
            _matmul(back.d_products, self.u_t, out=back.d_v)
            back.delta_below(below)


class _Pool2D(Layer):
    """Pooling over ``pool`` x ``pool`` blocks, stride ``pool``: input (H, W, C), output (H/P, W/P, C).

    A pool has no parameters and no activation; ``merges`` is P^2.
    """

    what: ClassVar[str]  # the pool in messages, e.g. "a max-pool"

    def __init__(self, pool: int) -> None:
        self.pool = _positive(pool, "pool size")
        self.params = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pool})"

    @property
    def merges(self) -> int:
        """P^2: each output summarizes one block."""
        return self.pool * self.pool

    def build(self, input_shape: Shape) -> Shape:
        """Output (H/P, W/P, C); ValueError unless P divides H and W."""
        h, w, c = _image_shape(tuple(input_shape), self.what)
        p = self.pool
        if h % p or w % p:
            raise ValueError(f"a {p}x{p} pool does not divide its {h}x{w} input")
        self.image = (h, w, c)
        self.input_shape = tuple(input_shape)
        self.output_shape = (h // p, w // p, c)
        return self.output_shape

    def _blocks(self, x: FloatArray) -> FloatArray:
        """x as (m, H/P, P, W/P, P, C): each block's values along axes 2 and 4."""
        h, w, c = self.image
        p = self.pool
        return x.reshape(-1, h // p, p, w // p, p, c)

    def describe(self) -> dict[str, Any]:
        """{"kind": kind, "pool": P}."""
        return {"kind": self.kind, "pool": self.pool}


class MaxPool2D(_Pool2D):
    """Max-pooling over ``pool`` x ``pool`` blocks, stride ``pool``: input (H, W, C), output (H/P, W/P, C).

    It has no parameters and no activation; the gradient goes to the
    maximum of each block.
    """

    kind = "maxpool2d"
    what = "a max-pool"
    first_maximum_only = False  # whether the step routes each block's delta to its first maximum alone

    def connect_below(self, below: Layer) -> None:
        """Below a linear layer, tied maxima are not cancelled below, so the step routes to the first only."""
        self.first_maximum_only = below.activation is IDENTITY

    def forward(self, x: FloatArray) -> FloatArray:
        """The maximum of each block, flattened to (m, H/P * W/P * C)."""
        pooled: FloatArray = self._blocks(x).max(axis=(2, 4))
        return pooled.reshape(x.shape[0], -1)

    def backward(
        self, x: FloatArray, a: FloatArray, delta: FloatArray, *, output: bool
    ) -> tuple[list[FloatArray], FloatArray]:
        """Each block's delta to its maximum (the first one, if several are equal), 0 elsewhere."""
        m = x.shape[0]
        h, w, c = self.image
        p = self.pool
        blocks = self._blocks(x).transpose(0, 1, 3, 5, 2, 4).reshape(m, h // p, w // p, c, p * p)
        first = blocks.argmax(axis=-1)[..., None]
        d = np.zeros_like(blocks)
        np.put_along_axis(d, first, delta.reshape(m, h // p, w // p, c, 1), axis=-1)
        dx = d.reshape(m, h // p, w // p, c, p, p).transpose(0, 1, 4, 2, 5, 3)
        return [], dx.reshape(m, -1)

    def plan(self, m: int, *, ones_out: bool) -> LayerStep:
        """Buffers for m rows (see ``_MaxPoolStep``)."""
        return _MaxPoolStep(self, m, ones_out)


class AvgPool2D(_Pool2D):
    """Average pooling over ``pool`` x ``pool`` blocks, stride ``pool``: input (H, W, C), output (H/P, W/P, C).

    It has no parameters and no activation; each block's delta goes to its
    P^2 values in equal shares, delta / P^2.
    """

    kind = "avgpool2d"
    what = "an average pool"

    def forward(self, x: FloatArray) -> FloatArray:
        """The mean of each block, flattened to (m, H/P * W/P * C)."""
        pooled: FloatArray = self._blocks(x).mean(axis=(2, 4))
        return pooled.reshape(x.shape[0], -1)

    def backward(
        self, x: FloatArray, a: FloatArray, delta: FloatArray, *, output: bool
    ) -> tuple[list[FloatArray], FloatArray]:
        """delta / P^2 to every value of its block."""
        m = x.shape[0]
        h, w, c = self.image
        p = self.pool
        share = delta.reshape(m, h // p, 1, w // p, 1, c) / self.merges
        return [], np.broadcast_to(share, (m, h // p, p, w // p, p, c)).reshape(m, -1)

    def plan(self, m: int, *, ones_out: bool) -> LayerStep:
        """Buffers for m rows (see ``_AvgPoolStep``)."""
        return _AvgPoolStep(self, m, ones_out)


class _PoolStep(LayerStep):
    """A pool's buffers for m rows: the output and the delta, and views of both that broadcast over each block.

    ``x6`` is the input buffer as blocks (m, H/P, P, W/P, P, C); ``out6``
    and ``delta6`` are (m, H/P, 1, W/P, 1, C), so one ufunc call reduces
    over or spreads into every block.
    """

    def __init__(self, layer: _Pool2D, m: int, ones_out: bool) -> None:
        h, w, c = layer.image
        p = layer.pool
        ho, wo = h // p, w // p
        n_out = ho * wo * c
        dtype = layer.dtype
        self.block_shape = (m, ho, p, wo, p, c)
        self.out = np.ones((m, n_out + 1), dtype) if ones_out else np.empty((m, n_out), dtype)
        self.out_t = self.out.T
        self.output = output_rows(self.out, n_out)
        self.out6 = self.output.reshape(m, ho, 1, wo, 1, c)
        self.delta = np.empty((m, n_out), dtype)
        self.delta6 = self.delta.reshape(m, ho, 1, wo, 1, c)
        self.grads = []
        # The views of the input buffer and of the buffer below, made at the first step that
        # sees them (inline there: a method call costs as much as the ufunc).
        self._input: FloatArray | None = None
        self._below: FloatArray | None = None


class _MaxPoolStep(_PoolStep):
    """A max-pool's step.

    Above an activation, the backward pass sends each block's delta to every
    position equal to the block's maximum. Where the tie is at a saturated
    or zero activation (ReLU's 0, a sigmoid's or tanh's 1 in float
    precision) the derivative below is 0 and cancels the extra shares, as
    routing to one maximum would; a ReLU tied at a positive value (a
    convolution's positive bias over a blank area) keeps them, as Theano's
    max-pool gradient (which Nielsen's ``network3.py`` trains with) does, where
    the reference (``MaxPool2D.backward``) routes to the first maximum. Above a
    linear layer (``MaxPool2D.first_maximum_only``) each block's delta goes
    to its first maximum only, as in the reference.
    """

    def __init__(self, layer: MaxPool2D, m: int, ones_out: bool) -> None:
        super().__init__(layer, m, ones_out)
        self.equal = np.empty(self.block_shape, dtype=bool)
        m, ho, p, wo, _, c = self.block_shape
        # Below a linear layer (conv pool bn) the ties are real, e.g. a convolution's bias over a blank
        # area: each block's corners of ``equal``, and which blocks have had a maximum so far.
        corners = [self.equal[:, :, i, :, j, :] for i in range(p) for j in range(p)]
        self.first = (corners, np.empty((m, ho, wo, c), bool)) if layer.first_maximum_only and p > 1 else None
        self.out4 = self.out6.reshape(m, ho, wo, c)  # a view: only axes of length 1 go

    def forward(self, x: FloatArray, rng: np.random.Generator) -> None:
        """The maximum of each block into the output buffer, as elementwise maxima of its P^2 strided corners.

        P^2 - 1 ``np.maximum`` calls over strided views take about a third
        of the time of one ``np.max`` reducing the block axes, and give the
        same values (a maximum is exact).
        """
        if x is not self._input:
            self._input = x
            self.x6 = x.reshape(self.block_shape)
            m, ho, p, wo, _, c = self.block_shape
            x4 = x.reshape(m, ho * p, wo * p, c)
            self.corners = [x4[:, i::p, j::p] for i in range(p) for j in range(p)]
        corners, out4 = self.corners, self.out4
        if len(corners) == 1:
            np.copyto(out4, corners[0])
            return
        np.maximum(corners[0], corners[1], out=out4)
        for corner in corners[2:]:
            np.maximum(out4, corner, out=out4)

    def backward(self, x_t: FloatArray, below: FloatArray | None, output: bool) -> None:
        """delta below = delta where the input equals its block's maximum (the first one only, if asked), else 0."""
        if below is None:
            return
        if below is not self._below:
            self._below = below
            self.below6 = below.reshape(self.block_shape)
        np.equal(self.x6, self.out6, out=self.equal)
        if self.first is not None:
            corners, seen = self.first
            np.copyto(seen, corners[0])
            for corner in corners[1:-1]:
                np.greater(corner, seen, out=corner)  # a maximum, and no earlier one
                np.logical_or(seen, corner, out=seen)
            np.greater(corners[-1], seen, out=corners[-1])
        np.multiply(self.equal, self.delta6, out=self.below6)


class _AvgPoolStep(_PoolStep):
    """An average pool's step: the mean of each block, and delta / P^2 spread over it."""

    def __init__(self, layer: AvgPool2D, m: int, ones_out: bool) -> None:
        super().__init__(layer, m, ones_out)
        self.share = 1.0 / layer.merges

    def forward(self, x: FloatArray, rng: np.random.Generator) -> None:
        """The mean of each block into the output buffer."""
        if x is not self._input:
            self._input = x
            self.x6 = x.reshape(self.block_shape)
        np.mean(self.x6, axis=(2, 4), out=self.out6, keepdims=True)

    def backward(self, x_t: FloatArray, below: FloatArray | None, output: bool) -> None:
        """delta below = delta / P^2 at every position of its block."""
        if below is None:
            return
        if below is not self._below:
            self._below = below
            self.below6 = below.reshape(self.block_shape)
        np.multiply(self.delta6, self.share, out=self.below6)


# --- Dropout ---------------------------------------------------------------------------


class Dropout(Layer):
    """Drops each of its inputs with probability ``rate`` in training (inverted dropout), passes them unchanged after.

    In the training step a kept value is scaled by 1 / (1 - rate) and a
    dropped one is 0, with a fresh mask per mini-batch, so the expected
    output equals the input and evaluation needs no rescaling. Nielsen's
    chapter 6 drops out the inputs of his fully connected layers:
    ``pool2 dropout0.5 dense1000``.

    Args:
        rate: the probability of dropping each value, in [0, 1).
    """

    kind = "dropout"

    def __init__(self, rate: float) -> None:
        if isinstance(rate, bool) or not isinstance(rate, float | int | np.floating | np.integer):
            raise ValueError(f"expected a dropout rate in [0, 1), got {rate!r}")
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"expected a dropout rate in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.params = []

    def __repr__(self) -> str:
        return f"Dropout({self.rate:g})"

    def build(self, input_shape: Shape) -> Shape:
        """The output has the input's shape."""
        self.input_shape = self.output_shape = tuple(input_shape)
        return self.output_shape

    def forward(self, x: FloatArray) -> FloatArray:
        """Outside training, dropout passes its input through (a copy)."""
        out: FloatArray = x.copy()
        return out

    def backward(
        self, x: FloatArray, a: FloatArray, delta: FloatArray, *, output: bool
    ) -> tuple[list[FloatArray], FloatArray]:
        """Outside training the layer is the identity, so the delta passes through."""
        below: FloatArray = delta.copy()
        return [], below

    def plan(self, m: int, *, ones_out: bool) -> LayerStep:
        """Buffers for m rows (see ``_DropoutStep``), at the layer's own rate."""
        return _DropoutStep(self, m, ones_out)

    def describe(self) -> dict[str, Any]:
        """{"kind": "dropout", "rate": rate}."""
        return {"kind": self.kind, "rate": self.rate}


class _DropoutStep(LayerStep):
    """Dropout's buffers for m rows: the mask (1/keep where kept, 0 where dropped) and the output."""

    def __init__(self, layer: Dropout, m: int, ones_out: bool) -> None:
        n = math.prod(layer.output_shape)
        dtype = layer.dtype
        self.keep = 1.0 - layer.rate
        self.mask = np.empty((m, n), dtype)
        self.out = np.ones((m, n + 1), dtype) if ones_out else np.empty((m, n), dtype)
        self.out_t = self.out.T
        self.output = output_rows(self.out, n)
        self.delta = np.empty((m, n), dtype)
        self.grads = []

    def forward(self, x: FloatArray, rng: np.random.Generator) -> None:
        """A fresh mask from rng, then output = x * mask."""
        draw_mask(self.mask, self.keep, rng)
        np.multiply(output_rows(x, self.mask.shape[1]), self.mask, out=self.output)

    def backward(self, x_t: FloatArray, below: FloatArray | None, output: bool) -> None:
        """The delta below is the delta through the same mask."""
        if below is not None:
            np.multiply(self.delta, self.mask, out=below)


# --- descriptions ----------------------------------------------------------------------

LAYER_KINDS: dict[str, type[Layer]] = {kind.kind: kind for kind in (Dense, Conv2D, MaxPool2D, AvgPool2D, Dropout)}


def register_layer_kind(kind: type[Layer]) -> None:
    """Make a kind of layer defined in a module of its own (``mnist_nn.nn.batchnorm``) readable from descriptions."""
    LAYER_KINDS[kind.kind] = kind


def _check_keys(description: Mapping[str, Any], expected: set[str]) -> None:
    """ValueError unless the description has exactly the expected keys."""
    missing, unknown = expected - set(description), set(description) - expected
    if missing or unknown:
        kind = description.get("kind")
        raise ValueError(
            f"expected a {kind} layer with keys {', '.join(sorted(expected))}; "
            + (
                f"missing {', '.join(sorted(missing))}"
                if missing
                else f"unknown {', '.join(sorted(map(str, unknown)))}"
            )
        )


def layer_from_description(description: Any) -> Layer:
    """The layer a ``describe()`` dict describes; ValueError naming what is wrong."""
    if not isinstance(description, Mapping):
        raise ValueError(f"expected a layer description (a JSON object), got {type(description).__name__}")
    kind = description.get("kind")
    if kind not in LAYER_KINDS:
        raise ValueError(f"unknown layer kind {kind!r}; expected one of: {', '.join(sorted(LAYER_KINDS))}")
    return LAYER_KINDS[kind].from_description(description)
