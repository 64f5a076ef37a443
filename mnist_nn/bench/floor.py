"""Two yardsticks for the training step: the floor of its math in NumPy, and a plain port of Nielsen's network.

``FloorSGD`` is the fast step's math and nothing else, for a dense network:
biases folded into the weights through a column of ones, every buffer
allocated once, -eta/m folded into the output delta, each update one
in-place add; no shuffle (mini-batches are consecutive rows), no cost, no
validation, no optimizer, dropout or L2, no layer objects. It makes the same
NumPy calls on the same buffer layouts as ``mnist_nn.train.Step`` for such a
network, so on the same mini-batches it gives bit-identical weights (the
tests check it), and the real step's time over it is what the step's own
machinery costs.

``NielsenPort`` is Nielsen's ``network.py`` as anyone would port it to
mini-batch matrices in NumPy: column vectors, weights (n_out, n_in) and
biases (n_out, 1), the sigmoid as 1 / (1 + exp(-z)), new arrays for every
intermediate; in the network's dtype, without evaluation or cost. Its
mini-batches come either from arrays, gathered by fancy indexing (``epoch``),
or from his own data layout, a shuffled list of (784, 1) columns stacked
into matrices (``epoch_lists``, his chapter-2 exercise). It is what "faster
than plain NumPy" is measured against.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import numpy as np

from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.layers import Layer
from mnist_nn.nn.network import IntArray, Network


def _dense_layers(network: Network) -> list[Layer]:
    """The network's layers, or ValueError unless it is a stack of dense layers.

    A dense layer is one that takes its input with a column of ones (``Layer.ones_column``):
    its weighted input is one product of that input and its one parameter array.
    """
    layers = network.layers
    if not all(layer.ones_column for layer in layers):
        raise ValueError(f"the floor is written for dense networks, got {network.describe()}")
    return layers


class FloorSGD:
    """Plain SGD epochs over consecutive mini-batches of m rows, with only the math of the fast step.

    Args:
        network: a dense network; its parameters are updated in place.
        x: (n, n_in + 1) training rows in the network's dtype, the last column ones.
        y: (n, n_out) one-hot targets.
        m: the mini-batch size; it must divide n.
    """

    def __init__(self, network: Network, x: FloatArray, y: FloatArray, m: int) -> None:
        layers = _dense_layers(network)
        dtype = network.dtype
        if x.shape[0] % m:
            raise ValueError(f"expected a mini-batch size that divides {x.shape[0]}, got {m}")
        self.m = m
        self.batches = [(x[k : k + m], x[k : k + m].T, y[k : k + m]) for k in range(0, x.shape[0], m)]
        self.cost = network.cost
        last = len(layers) - 1
        self.layers: list[dict[str, Any]] = []
        for i, layer in enumerate(layers):
            param = layer.params[0]
            n_out = param.shape[1]
            hidden = i < last
            # The fast step's layouts: hidden layers column-major, with the next layer's ones column.
            order: Literal["C", "F"] = "F" if hidden else "C"
            z = np.empty((m, n_out), dtype, order=order)
            out = np.ones((m, n_out + 1), dtype, order=order) if hidden else z
            self.layers.append(
                {
                    "param": param,
                    "weights_t": param[:-1].T,
                    "activation": layer.activation,
                    "z": z,
                    "out": out,
                    "out_t": out.T,
                    "a": out[:, :-1] if hidden else z,
                    "delta": np.empty((m, n_out), dtype, order=order),
                    "work": np.empty((m, n_out), dtype, order=order),
                    "grad": np.empty_like(param),
                }
            )

    def epoch(self, eta: float) -> None:
        """One epoch over the rows in order."""
        m = self.m
        scale = -eta / m
        matmul, multiply, add = np.matmul, np.multiply, np.add
        forward = [(s["param"], s["z"], s["a"], s["out"], s["activation"].forward) for s in self.layers]
        top = self.layers[-1]
        a_top, delta_top, work_top = top["a"], top["delta"], top["work"]
        output_delta = self.cost.output_delta
        backward = []
        for i in range(len(self.layers) - 1, -1, -1):
            s = self.layers[i]
            below = self.layers[i - 1] if i else None
            backward.append(
                (
                    s["activation"].scale_by_derivative if i < len(self.layers) - 1 else None,
                    s["a"],
                    s["delta"],
                    s["work"],
                    below["out_t"] if below is not None else None,
                    s["grad"],
                    s["weights_t"] if below is not None else None,
                    below["delta"] if below is not None else None,
                    s["param"],
                )
            )
        for xb, xb_t, yb in self.batches:
            inputs = xb
            for param, z, a, out, activate in forward:
                matmul(inputs, param, out=z)
                activate(z, out=a)
                inputs = out
            output_delta(a_top, yb, delta_top, work_top)
            multiply(delta_top, scale, out=delta_top)
            for derivative, a, delta, work, x_t, grad, weights_t, delta_below, param in backward:
                if derivative is not None:
                    derivative(a, delta, work)
                matmul(xb_t if x_t is None else x_t, delta, out=grad)
                if weights_t is not None:
                    matmul(delta, weights_t, out=delta_below)
                add(param, grad, out=param)


class NielsenPort:
    """Nielsen's ``network.py`` ported to mini-batch matrices in plain NumPy (see the module docstring).

    Args:
        sizes: layer sizes, e.g. (784, 30, 10).
        dtype: float32 or float64.
        seed: seeds the weights and the shuffles.
    """

    def __init__(self, sizes: tuple[int, ...], dtype: str, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.weights = [self.rng.standard_normal((b, a)).astype(dtype) for a, b in itertools.pairwise(sizes)]
        self.biases = [self.rng.standard_normal((b, 1)).astype(dtype) for b in sizes[1:]]

    @staticmethod
    def _sigmoid(z: FloatArray) -> FloatArray:
        # Nielsen's form: exp(-z) overflows to inf for z below about -88 in float32, and 1 / (1 + inf)
        # is the right 0, so the epochs run with overflow warnings off (once, not per call).
        out: FloatArray = 1.0 / (1.0 + np.exp(-z))
        return out

    def epoch(self, images: FloatArray, labels: IntArray, m: int, eta: float) -> None:
        """One epoch of mini-batch SGD on images (n, n_in) and integer labels (n,), shuffled.

        Each mini-batch is gathered from the arrays by fancy indexing.
        """
        n = images.shape[0]
        targets = np.eye(self.weights[-1].shape[0], dtype=self.dtype)[labels]
        order = self.rng.permutation(n)
        with np.errstate(over="ignore"):  # see _sigmoid
            for k in range(0, n, m):
                idx = order[k : k + m]
                self._update(images[idx].T, targets[idx].T, eta)  # (n_in, m), (n_out, m)

    def epoch_lists(self, training_data: list[tuple[FloatArray, FloatArray]], m: int, eta: float) -> None:
        """One epoch on Nielsen's own data layout: a list of (x (n_in, 1), one-hot y (n_out, 1)) pairs.

        As his ``SGD``: the list is shuffled, cut into mini-batches, and each
        mini-batch is stacked into matrices (his chapter-2 exercise).
        """
        order = self.rng.permutation(len(training_data))
        shuffled = [training_data[i] for i in order]
        with np.errstate(over="ignore"):  # see _sigmoid
            for k in range(0, len(shuffled), m):
                batch = shuffled[k : k + m]
                self._update(np.hstack([x for x, _ in batch]), np.hstack([y for _, y in batch]), eta)

    def _update(self, x: FloatArray, y: FloatArray, eta: float) -> None:
        """One mini-batch: x (n_in, m) and one-hot y (n_out, m), backprop in matrices, w -= eta/m grad."""
        activations, a = [x], x
        for w, b in zip(self.weights, self.biases, strict=True):
            a = self._sigmoid(w @ a + b)
            activations.append(a)
        delta = (a - y) * a * (1 - a)
        for layer in range(len(self.weights) - 1, -1, -1):
            grad_w = delta @ activations[layer].T
            grad_b = delta.sum(axis=1, keepdims=True)
            if layer:
                a_below = activations[layer]
                delta = (self.weights[layer].T @ delta) * a_below * (1 - a_below)
            self.weights[layer] -= (eta / x.shape[1]) * grad_w
            self.biases[layer] -= (eta / x.shape[1]) * grad_b
