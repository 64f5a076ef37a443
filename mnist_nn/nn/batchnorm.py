"""Batch normalization (Ioffe and Szegedy 2015): each feature standardized over the mini-batch, then scaled and shifted.

A ``BatchNorm`` layer sits above a dense or convolutional layer, which then
stays linear, and applies the network's activation itself, so ``conv32x3
bn`` is conv, normalize, ReLU. For one feature (a dense layer's neuron, or
a convolution's feature map over every position of every image), with the
N values x of a training mini-batch:

    mu = mean(x)    var = mean((x - mu)^2)    xhat = (x - mu) / sqrt(var + eps)
    y = gamma xhat + beta    a = f(y)

and, backwards, from delta = dC/dy (after f's factor):

    dC/dgamma = sum(delta xhat)    dC/dbeta = sum(delta)
    dC/dx = gamma / sqrt(var + eps) (delta - dC/dbeta / N - xhat dC/dgamma / N)

Training also keeps running averages of each feature's mean and variance,
r -> (1 - momentum) r + momentum * batch value (the variance unbiased,
N / (N - 1) times the batch's, as PyTorch does); evaluation and prediction
normalize with them, so an image's answer does not depend on its batch.

The layer's ``params`` are gamma and beta as one (2, C) array, which
training updates, and the running mean and variance as a second (2, C)
array, which the training step's forward pass updates: its update is always
zero, so an optimizer leaves it as it is, and it travels with the weights
wherever they go (the best epoch's copy, the model file, a resumed run).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.layers import Layer, LayerStep, Shape, StoredArray, draw_mask, output_rows, register_layer_kind


class BatchNorm(Layer):
    """Normalizes each feature of its input over the mini-batch, scales, shifts, then applies the activation.

    Features are the last axis of the input: a dense layer's neurons, or a
    convolution's feature maps (shared by every position).

    Args:
        momentum: the weight of each mini-batch in the running averages, in (0, 1].
        eps: added to the variance before its square root, > 0.
    """

    kind = "batchnorm"
    activated = True
    normalizes = True

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5) -> None:
        self.momentum = _number(momentum, "momentum", lambda v: 0.0 < v <= 1.0, "in (0, 1]")
        self.eps = _number(eps, "eps", lambda v: 0.0 < v < 1.0, "in (0, 1)")
        self.activation_name: str | None = None  # the network's hidden activation
        self.params = []

    def __repr__(self) -> str:
        return "BatchNorm()"

    @property
    def features(self) -> int:
        """C: the input's last axis."""
        return self.input_shape[-1]

    def build(self, input_shape: Shape) -> Shape:
        """The output has the input's shape."""
        self.input_shape = self.output_shape = tuple(input_shape)
        return self.output_shape

    def param_shapes(self) -> list[Shape]:
        """gamma and beta (2, C); the running mean and variance (2, C)."""
        return [(2, self.features), (2, self.features)]

    def initialize(self, rng: np.random.Generator | None, init: str, dtype: np.dtype[Any]) -> None:
        """gamma 1, beta 0, running mean 0 and variance 1, whatever the initialization (nothing is drawn)."""
        self.dtype = dtype
        scale_shift = np.zeros((2, self.features), dtype)
        scale_shift[0] = 1.0
        running = np.zeros((2, self.features), dtype)
        running[1] = 1.0
        self.params = [scale_shift, running]

    def stored_arrays(self) -> list[StoredArray]:
        """``gamma``, ``beta``, ``mean`` and ``var``, each (C,)."""
        c = (self.features,)
        return [
            StoredArray("gamma", 0, slice(0, 1), c),
            StoredArray("beta", 0, slice(1, 2), c),
            StoredArray("mean", 1, slice(0, 1), c),
            StoredArray("var", 1, slice(1, 2), c),
        ]

    def macs(self) -> int:
        """One multiply-add per value (the scale and shift folded together)."""
        return math.prod(self.output_shape)

    def _columns(self, x: FloatArray) -> FloatArray:
        """x as (N, C): one row per example and position."""
        return x.reshape(-1, self.features)

    def forward(self, x: FloatArray) -> FloatArray:
        """a = f(gamma (x - running mean) / sqrt(running var + eps) + beta): evaluation's normalization."""
        (gamma, beta), (mean, var) = self.params
        scale = gamma / np.sqrt(var + self.eps)
        y = self._columns(x) * scale
        y += beta - mean * scale
        return self.activation.forward(y, out=y).reshape(x.shape[0], -1)

    def _batch_statistics(self, x2: FloatArray) -> tuple[FloatArray, FloatArray]:
        """xhat and 1 / sqrt(var + eps) of a batch's (N, C) values."""
        mean = x2.mean(axis=0)
        centered = x2 - mean
        inv = 1.0 / np.sqrt((centered * centered).mean(axis=0) + self.eps)
        return centered * inv, inv

    def forward_training(self, x: FloatArray) -> FloatArray:
        """a = f(gamma xhat + beta) with the batch's own statistics, as the training step computes it."""
        xhat, _ = self._batch_statistics(self._columns(x))
        y = xhat * self.params[0][0] + self.params[0][1]
        return self.activation.forward(y, out=y).reshape(x.shape[0], -1)

    def backward(
        self, x: FloatArray, a: FloatArray, delta: FloatArray, *, output: bool
    ) -> tuple[list[FloatArray], FloatArray]:
        """Gradients of gamma and beta (the running averages' is 0) and dC/dx, with the batch's statistics."""
        delta = delta.copy()
        self.activation.scale_by_derivative(a, delta, np.empty_like(a))
        d2 = self._columns(delta)
        xhat, inv = self._batch_statistics(self._columns(x))
        n = d2.shape[0]
        d_gamma, d_beta = (d2 * xhat).sum(axis=0), d2.sum(axis=0)
        dx = (self.params[0][0] * inv) * (d2 - d_beta / n - xhat * (d_gamma / n))
        return [np.stack([d_gamma, d_beta]), np.zeros_like(self.params[1])], dx.reshape(x.shape[0], -1)

    def plan(self, m: int, *, ones_out: bool) -> LayerStep:
        """Buffers for m rows (see ``BatchNormStep``)."""
        return BatchNormStep(self, m, 0.0, ones_out)

    def plan_dropout(self, m: int, rate: float, *, ones_out: bool) -> LayerStep | None:
        """The run's dropout on the outputs, after the activation, for a dense layer's features only."""
        return BatchNormStep(self, m, rate, ones_out) if len(self.input_shape) == 1 else None

    def describe(self) -> dict[str, Any]:
        """{"kind": "batchnorm", "momentum": momentum, "eps": eps}."""
        return {"kind": self.kind, "momentum": self.momentum, "eps": self.eps}


def _number(value: Any, what: str, ok: Any, expected: str) -> float:
    """``value`` as a float when it is a number that passes ``ok``, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"expected a batch norm {what} {expected}, got {value!r}")
    if not (math.isfinite(float(value)) and ok(float(value))):
        raise ValueError(f"expected a batch norm {what} {expected}, got {value!r}")
    return float(value)


def _columns_view(buffer: FloatArray, n: int) -> FloatArray:
    """A buffer of the step's (m, features) rows as (n, C), a view; ValueError if that would be a copy."""
    columns = buffer.reshape(n, -1)
    if not np.may_share_memory(columns, buffer):  # a copy would be written and lost
        raise ValueError(f"a batch norm's buffer of shape {buffer.shape} is not contiguous")
    return columns


class BatchNormStep(LayerStep):
    """A batch norm's buffers for m rows: xhat as (N, C), N = m * positions, and the output.

    The sums over the N rows are products with a vector of ones (BLAS),
    and the sums of products einsum's, which needs no (N, C) temporary. The
    output buffer may carry a ones
    column for a dense layer above; its values are written through a
    (m, positions, C) view, which splitting each row makes without a copy.
    """

    def __init__(self, layer: BatchNorm, m: int, dropout: float, ones_out: bool) -> None:
        c = layer.features
        n_out = math.prod(layer.output_shape)
        positions = n_out // c
        dtype = layer.dtype
        self.n = m * positions
        self.scale_shift, self.running = layer.params
        self.momentum = layer.momentum
        self.eps = layer.eps
        self.activation = layer.activation
        self.ones = np.ones(self.n, dtype)
        self.xhat = np.empty((self.n, c), dtype)
        self.xhat3 = self.xhat.reshape(m, positions, c)
        self.work3 = np.empty((m, positions, c), dtype)
        self.sums = np.empty(c, dtype)
        self.mean = np.empty(c, dtype)
        self.inv = np.empty(c, dtype)
        self.out = np.ones((m, n_out + 1), dtype) if ones_out else np.empty((m, n_out), dtype)
        self.out_t = self.out.T
        self.output = output_rows(self.out, n_out)
        self.a3 = self.output.reshape(m, positions, c)
        self.delta = np.empty((m, n_out), dtype)
        self.delta2 = self.delta.reshape(self.n, c)
        self.delta3 = self.delta.reshape(m, positions, c)
        self.grad = np.empty_like(self.scale_shift)
        self.grads = [self.grad, np.zeros_like(self.running)]
        # Inverted dropout after the activation, as a dense layer's (see ``_DenseStep``).
        self.keep = 1.0 - dropout
        self.pre3 = np.empty((m, positions, c), dtype) if dropout else self.a3
        self.mask3 = np.empty((m, positions, c), dtype) if dropout else self.a3
        self._input: FloatArray | None = None
        self._below: FloatArray | None = None
        # A step that splits its mini-batch in two (``mnist_nn.train.split``) steps each half with a batch
        # norm step of its own and sets these: ``total``, the N of the whole batch; ``exchange``, which adds
        # the other half's sums (over its rows) into this half's, in place; ``keeps_running``, False in the
        # half that leaves the running averages to the other.
        self.total = self.n
        self.exchange: Callable[[FloatArray], None] | None = None
        self.keeps_running = True

    def forward(self, x: FloatArray, rng: np.random.Generator) -> None:
        """Normalize with the batch's statistics, update the running ones, scale, shift, activate (and drop)."""
        if x is not self._input:
            self._input = x
            self.x2 = _columns_view(x, self.n)
        n, exchange = self.total, self.exchange
        np.matmul(self.ones, self.x2, out=self.sums)
        if exchange is not None:
            exchange(self.sums)
        np.multiply(self.sums, 1.0 / n, out=self.mean)
        np.subtract(self.x2, self.mean, out=self.xhat)
        np.einsum("ij,ij->j", self.xhat, self.xhat, out=self.sums)  # no (N, C) temporary
        if exchange is not None:
            exchange(self.sums)
        np.multiply(self.sums, 1.0 / n, out=self.inv)  # the batch's variance, for now
        if self.keeps_running:
            self._update_running()
        np.add(self.inv, self.eps, out=self.inv)
        np.sqrt(self.inv, out=self.inv)
        np.divide(1.0, self.inv, out=self.inv)
        np.multiply(self.xhat, self.inv, out=self.xhat)
        np.multiply(self.xhat3, self.scale_shift[0], out=self.pre3)
        np.add(self.pre3, self.scale_shift[1], out=self.pre3)
        self.activation.forward(self.pre3, out=self.pre3)
        if self.keep < 1.0:
            draw_mask(self.mask3, self.keep, rng)
            np.multiply(self.pre3, self.mask3, out=self.a3)

    def _update_running(self) -> None:
        """running -> (1 - momentum) running + momentum * (the batch's mean; its variance, unbiased)."""
        running, k = self.running, self.momentum
        np.multiply(running, 1.0 - k, out=running)
        running[0] += k * self.mean
        running[1] += (k * (self.total / max(self.total - 1, 1))) * self.inv

    def backward(self, x_t: FloatArray, below: FloatArray | None, output: bool) -> None:
        """The activation's factor (and dropout's mask), the gradients of gamma and beta, and dC/dx below.

        dC/dx = a delta + b xhat + c per feature, a = gamma / sqrt(var + eps),
        b = -a dC/dgamma / N and c = -a dC/dbeta / N: three passes, the last two in place.
        """
        self.activation.scale_by_derivative(self.pre3, self.delta3, self.work3)
        if self.keep < 1.0:
            np.multiply(self.delta3, self.mask3, out=self.delta3)
        d_gamma, d_beta = self.grad
        np.matmul(self.ones, self.delta2, out=d_beta)
        np.einsum("ij,ij->j", self.delta2, self.xhat, out=d_gamma)
        if self.exchange is not None:
            self.exchange(self.grad)  # both halves' gradients, which the delta below needs
        if below is None:
            return
        if below is not self._below:
            self._below = below
            self.below2 = _columns_view(below, self.n)
        a = self.scale_shift[0] * self.inv
        np.multiply(self.xhat, a * d_gamma * (-1.0 / self.total), out=self.below2)
        np.add(self.below2, a * d_beta * (-1.0 / self.total), out=self.below2)
        np.multiply(self.delta2, a, out=self.delta2)  # delta is spent: the gradients are taken
        np.add(self.below2, self.delta2, out=self.below2)


register_layer_kind(BatchNorm)
