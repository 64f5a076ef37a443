"""Layers: what one stage of a network owns and does.

A layer owns its parameters and its part of the work (the equations are in
``mnist_nn.nn.network``, BP1-BP4):

- its output shape from its input shape (``build``), and the shapes of its
  parameters, known before anything is allocated;
- its initialization (``initialize``), drawn from the run's generator;
- a forward pass and a backward pass for any batch (``forward``,
  ``backward``): the delta arriving from above in, its gradients and the delta
  it passes below out;
- the buffers of the fast training step, planned once per mini-batch size
  (``plan``), and the step's own forward and backward on them;
- which of its arrays L2 decays (``decayed``);
- a JSON-ready description it can be rebuilt from (``describe`` and
  ``layer_from_description``), and the named arrays a model file stores.

Adding a kind of layer means a class here, registered in ``LAYER_KINDS``;
the network, the training loop and the model file work through this
interface only.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from mnist_nn.nn.activations import ACTIVATIONS, Activation, FloatArray

Shape = tuple[int, ...]

_matmul = np.matmul  # bound once: the fast step calls it three times per layer

# Initializations by name: "normal" is Nielsen's chapter 1 (weights and biases N(0, 1)).
INITS = ("normal", "scaled", "he", "glorot")


class Layer(ABC):
    """One stage of a network (see the module docstring for what it owns).

    ``params`` are the arrays training updates, in the network's dtype, set by
    ``initialize`` or ``set_params``; ``activation`` is the output activation,
    fixed when the network is built.
    """

    kind: ClassVar[str]  # the name in descriptions, e.g. "dense"
    # True when the layer wants its input with one more trailing column, all ones (Dense's
    # bias trick): whoever writes its input (the previous layer, the loop's shuffle) adds it.
    ones_column: ClassVar[bool] = False

    activation: Activation
    params: list[FloatArray]
    input_shape: Shape
    output_shape: Shape

    @abstractmethod
    def build(self, input_shape: Shape) -> Shape:
        """Remember the input shape (one example's) and return the output shape; ValueError if it does not fit."""

    @abstractmethod
    def param_shapes(self) -> list[Shape]:
        """Shapes of ``params``, known after ``build`` and before anything is allocated."""

    @abstractmethod
    def initialize(self, rng: np.random.Generator | None, init: str, dtype: np.dtype[Any]) -> None:
        """Draw ``params`` from ``rng`` by the named initialization (zeros when rng is None)."""

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
    def weights_and_biases(self, params: Sequence[FloatArray]) -> tuple[FloatArray, FloatArray] | None:
        """Views of the weights and biases inside this layer's ``params`` (None for a layer without)."""

    @abstractmethod
    def decayed(self, params: Sequence[FloatArray]) -> list[FloatArray]:
        """Views of the arrays in a params-shaped list that L2 regularization decays (weights, not biases)."""

    @abstractmethod
    def plan(self, m: int, *, dropout: float, ones_out: bool) -> LayerStep:
        """The fast step's buffers for mini-batches of m rows (see ``LayerStep``)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """A JSON-ready description: ``layer_from_description`` rebuilds an equal layer from it."""

    @abstractmethod
    def file_arrays(self, params: Sequence[FloatArray]) -> dict[str, FloatArray]:
        """This layer's ``params`` as the named arrays a model file stores (views where possible)."""

    @abstractmethod
    def file_shapes(self) -> dict[str, Shape]:
        """The names and shapes of ``file_arrays``, known before anything is read."""

    @abstractmethod
    def params_from_file(self, arrays: Mapping[str, FloatArray], dtype: np.dtype[Any]) -> list[FloatArray]:
        """The inverse of ``file_arrays``: new arrays laid out like ``params``."""


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


# --- Dense -----------------------------------------------------------------------------


def _init_dense(rng: np.random.Generator, n_in: int, n_out: int, init: str) -> npt.NDArray[np.float64]:
    """One dense layer's (n_in + 1, n_out) parameters; the last row is the biases."""
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


class Dense(Layer):
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
        if activation is not None and activation not in ACTIVATIONS and activation != "softmax":
            raise ValueError(f"unknown activation {activation!r}; expected one of: {', '.join(sorted(ACTIVATIONS))}")
        self.size = int(size)
        self.activation_name = activation
        self.params = []

    def __repr__(self) -> str:
        return f"Dense({self.size}, {self.activation_name!r})"

    @property
    def n_in(self) -> int:
        """Inputs per example (the input shape flattened)."""
        return math.prod(self.input_shape)

    def build(self, input_shape: Shape) -> Shape:
        """Any input shape, flattened to n_in values; the output is (size,)."""
        self.input_shape = tuple(input_shape)
        self.output_shape = (self.size,)
        return self.output_shape

    def param_shapes(self) -> list[Shape]:
        """One (n_in + 1, size) array: the weights, then the biases as the last row."""
        return [(self.n_in + 1, self.size)]

    def initialize(self, rng: np.random.Generator | None, init: str, dtype: np.dtype[Any]) -> None:
        """Weights and biases together, drawn in float64 and cast, so float32 and float64 start alike."""
        if rng is None:
            self.params = [np.zeros(self.param_shapes()[0], dtype=dtype)]
        else:
            self.params = [_init_dense(rng, self.n_in, self.size, init).astype(dtype)]

    def forward(self, x: FloatArray) -> FloatArray:
        """a = f(x @ weights + biases)."""
        p = self.params[0]
        z = x @ p[:-1]
        z += p[-1]
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

    def weights_and_biases(self, params: Sequence[FloatArray]) -> tuple[FloatArray, FloatArray]:
        """Views of rows :-1 and -1 of the fused array."""
        return params[0][:-1], params[0][-1]

    def decayed(self, params: Sequence[FloatArray]) -> list[FloatArray]:
        """The weights: a contiguous view of the fused array (biases are not decayed)."""
        return [params[0][:-1]]

    def plan(self, m: int, *, dropout: float, ones_out: bool) -> LayerStep:
        """Buffers for m rows (see ``_DenseStep``)."""
        return _DenseStep(self, m, dropout, ones_out)

    def describe(self) -> dict[str, Any]:
        """{"kind": "dense", "size": n, "activation": name}."""
        return {"kind": self.kind, "size": self.size, "activation": self.activation.name}

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> Dense:
        """The inverse of ``describe``; ValueError for anything else."""
        _check_keys(description, {"kind", "size", "activation"})
        size, activation = description["size"], description["activation"]
        if not isinstance(size, int) or isinstance(size, bool):
            raise ValueError(f"expected a dense layer's size to be an integer, got {size!r}")
        if not isinstance(activation, str):
            raise ValueError(f"expected a dense layer's activation to be a name, got {activation!r}")
        return cls(size, activation)

    def file_arrays(self, params: Sequence[FloatArray]) -> dict[str, FloatArray]:
        """``w`` (n_in, size) and ``b`` (size,)."""
        return {"w": params[0][:-1], "b": params[0][-1]}

    def file_shapes(self) -> dict[str, Shape]:
        """``w`` (n_in, size) and ``b`` (size,)."""
        return {"w": (self.n_in, self.size), "b": (self.size,)}

    def params_from_file(self, arrays: Mapping[str, FloatArray], dtype: np.dtype[Any]) -> list[FloatArray]:
        """``w`` and ``b`` fused again into one (n_in + 1, size) array."""
        p = np.empty((self.n_in + 1, self.size), dtype=dtype)
        p[:-1] = arrays["w"]
        p[-1] = arrays["b"]
        return [p]


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
            rng.random(dtype=self.mask.dtype, out=self.mask)
            np.less(self.mask, self.keep, out=self.mask)
            np.multiply(self.mask, 1.0 / self.keep, out=self.mask)
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


# --- descriptions ----------------------------------------------------------------------

LAYER_KINDS: dict[str, type[Dense]] = {Dense.kind: Dense}


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
