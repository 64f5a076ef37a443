"""Activation functions by name, each with its derivative written in terms of its output.

The training step keeps each layer's output a = f(z), not z, so every
activation here can multiply a delta by f'(z) from a alone. Softmax is not
elementwise: it only serves as the output of the log-likelihood cost.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]


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


class Identity:
    """f(z) = z: the "activation" of a layer that has none (a pool); never in the tables by name."""

    name = "identity"

    def forward(self, z: FloatArray, out: FloatArray) -> FloatArray:
        """a = z."""
        if out is not z:
            np.copyto(out, z)
        return out

    def scale_by_derivative(self, a: FloatArray, delta: FloatArray, work: FloatArray) -> None:
        """f' = 1: delta is unchanged."""


IDENTITY = Identity()

HIDDEN_ACTIVATIONS: dict[str, Activation] = {"sigmoid": Sigmoid(), "tanh": Tanh(), "relu": ReLU()}
ACTIVATIONS = HIDDEN_ACTIVATIONS  # the names ``activation=`` accepts
