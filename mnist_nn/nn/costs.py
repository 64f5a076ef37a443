"""Cost functions by name, each paired with the output activation it is meant for.

``output_delta`` is BP1: the error of the output layer's weighted inputs,
delta_L = dC/dz_L, for a batch (see ``mnist_nn.nn.network``).
``output_delta_kept`` is the same BP1, with the same floating-point
operations, that also leaves in ``kept`` what ``running_cost`` needs to sum
the cost later, so the training step pays no call for its running cost: the
quadratic cost keeps the output error a - y (the subtraction BP1 makes
anyway), the others keep the outputs a (one copy).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from mnist_nn.nn.activations import Activation, FloatArray, Sigmoid, Softmax

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

    def output_delta_kept(
        self, a: FloatArray, y: FloatArray, out: FloatArray, work: FloatArray, kept: FloatArray
    ) -> None:
        """``output_delta``, bit for bit, also writing into ``kept`` (a's shape) what ``running_cost`` needs."""
        ...

    def running_cost(self, kept: FloatArray, y: FloatArray) -> float:
        """The cost summed over rows that ``output_delta_kept`` kept, for the one-hot targets y: ``fn(a, y)``."""
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

    def output_delta_kept(
        self, a: FloatArray, y: FloatArray, out: FloatArray, work: FloatArray, kept: FloatArray
    ) -> None:
        """kept = a - y; delta_L = kept * ((1 - a) * a), the products ``Sigmoid.scale_by_derivative`` makes."""
        np.subtract(a, y, out=kept)
        np.subtract(1.0, a, out=work)
        np.multiply(work, a, out=work)
        np.multiply(kept, work, out=out)

    def running_cost(self, kept: FloatArray, y: FloatArray) -> float:
        """1/2 the sum of the kept errors' squares, accumulated in float64, as ``fn``."""
        return 0.5 * float(np.einsum("ij,ij->", kept, kept, dtype=np.float64))


class _OutputMinusTarget:
    """BP1 for a cost whose output activation's derivative cancels: delta_L = a - y; the running cost keeps a."""

    def fn(self, a: FloatArray, y: FloatArray) -> float:
        """The cost summed over the batch (each cost's own)."""
        raise NotImplementedError

    def output_delta(self, a: FloatArray, y: FloatArray, out: FloatArray, work: FloatArray) -> None:
        """delta_L = a - y."""
        np.subtract(a, y, out=out)

    def output_delta_kept(
        self, a: FloatArray, y: FloatArray, out: FloatArray, work: FloatArray, kept: FloatArray
    ) -> None:
        """kept = a; delta_L = a - y."""
        np.copyto(kept, a)
        np.subtract(a, y, out=out)

    def running_cost(self, kept: FloatArray, y: FloatArray) -> float:
        """``fn`` of the kept outputs."""
        return self.fn(kept, y)


class CrossEntropyCost(_OutputMinusTarget):
    """C = -sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)], sigmoid outputs; delta_L = a - y (for any y in [0, 1]).

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


class LogLikelihoodCost(_OutputMinusTarget):
    """C = -ln a_y (the output for the true class), softmax outputs; delta_L = a - y.

    For targets that are not one-hot (label smoothing's (1 - s) y + s / K)
    it is the cross-entropy -sum_j y_j ln a_j, whose delta_L is a - y too.
    """

    name = "log-likelihood"
    output: Activation = Softmax()

    def fn(self, a: FloatArray, y: FloatArray) -> float:
        """Sum over the batch of -sum_j y_j ln a_j: -ln a_y for one-hot targets."""
        logs = np.log(np.maximum(a.astype(np.float64), _LOG_FLOOR))
        return -float(np.einsum("ij,ij->", logs, y, dtype=np.float64))


COSTS: dict[str, Cost] = {c.name: c for c in (QuadraticCost(), CrossEntropyCost(), LogLikelihoodCost())}
