"""The textbook algorithm, one example at a time: the oracle and the baseline.

This is Nielsen's chapter-1 ``backprop`` and ``update_mini_batch``, in his
column-vector layout, kept deliberately plain: for one example x (n_in, 1)
with one-hot target y (n_out, 1), and W_l = weights[l].T of shape (n_out, n_in),

    z_l = W_l a_{l-1} + b_l,   a_l = sigma(z_l)
    delta_L = (a_L - y) * sigma'(z_L)                   (BP1, quadratic cost)
    delta_l = (W_{l+1}^T delta_{l+1}) * sigma'(z_l)     (BP2)
    dC/db_l = delta_l                                   (BP3)
    dC/dW_l = delta_l a_{l-1}^T                         (BP4)

An average pool is a layer of fixed weights and no activation, a_l = A_l
a_{l-1}, each row of A_l holding 1/P^2 at the P^2 inputs of one block: it
has no gradients, and the layer below it takes A_l^T dC/da_l where BP2 has
W_{l+1}^T delta_{l+1}.

A mini-batch's gradient is the sum of its examples' gradients, and the
update subtracts eta/m times it. The tests check the vectorized code in
``mnist_nn.nn`` and ``mnist_nn.train`` against this, and the benchmark
measures how much faster they are. Covered: sigmoid ``Dense`` layers and
``AvgPool2D`` layers with the quadratic cost, the reference for Nielsen's
setup. It branches on the kind of each layer and never calls a layer's own
passes, so that it checks them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mnist_nn.nn.activations import FloatArray, sigmoid, sigmoid_prime
from mnist_nn.nn.layers import AvgPool2D, Dense
from mnist_nn.nn.network import IntArray, Network


def _check_covered(network: Network) -> None:
    """ValueError unless the network is one the reference covers."""
    covered = all(
        isinstance(layer, AvgPool2D) or (isinstance(layer, Dense) and layer.activation.name == "sigmoid")
        for layer in network.layers
    )
    if not covered or network.cost.name != "quadratic":
        raise ValueError(
            "the reference implementation covers sigmoid networks (dense layers and average pools) "
            "with the quadratic cost only"
        )


def _pool_matrix(layer: AvgPool2D, dtype: np.dtype[Any]) -> FloatArray:
    """A_l (n_out, n_in): 1/P^2 where output (i, j, c) averages input (i P + di, j P + dj, c), channel-last."""
    h, w, c = layer.image
    p = layer.pool
    a = np.zeros(((h // p) * (w // p) * c, h * w * c), dtype=dtype)
    for i in range(h // p):
        for j in range(w // p):
            for k in range(c):
                for di in range(p):
                    for dj in range(p):
                        a[(i * (w // p) + j) * c + k, ((i * p + di) * w + j * p + dj) * c + k] = 1.0 / (p * p)
    return a


def backprop_example(network: Network, x: FloatArray, y: FloatArray) -> tuple[list[FloatArray], list[FloatArray]]:
    """Gradient of the quadratic cost for one example.

    Args:
        network: sigmoid dense layers and average pools (its parameters are read, never changed).
        x: one input, shape (n_in,).
        y: its one-hot target, shape (n_out,).

    Returns:
        ``(grad_w, grad_b)`` in the network's batch-first layout, for the
        layers with weights: grad_w[l] of shape (n_in, n_out), grad_b[l] of
        shape (n_out,).
    """
    # Each layer's matrix in Nielsen's (n_out, n_in) layout, its biases (None for a pool).
    layers: list[tuple[FloatArray, FloatArray | None]] = []
    dense = zip(network.weights, network.biases, strict=True)
    for layer in network.layers:
        if isinstance(layer, AvgPool2D):
            layers.append((_pool_matrix(layer, network.dtype), None))
        else:
            weights, biases = next(dense)
            layers.append((weights.T, biases.reshape(-1, 1)))
    activation = x.reshape(-1, 1)
    activations = [activation]
    zs = []
    for w, b in layers:
        z = w @ activation
        if b is not None:
            z = z + b
            activation = sigmoid(z)
        else:
            activation = z
        zs.append(z)
        activations.append(activation)
    delta = (activations[-1] - y.reshape(-1, 1)) * sigmoid_prime(zs[-1])  # BP1
    nabla_w: list[FloatArray] = []
    nabla_b: list[FloatArray] = []
    for i in range(len(layers) - 1, -1, -1):
        w, b = layers[i]
        if b is not None:
            nabla_w.insert(0, delta @ activations[i].T)  # BP4
            nabla_b.insert(0, delta)  # BP3
        if i:
            error = w.T @ delta  # dC/da of the layer below: BP2's product (A_l^T for a pool)
            below_is_pool = layers[i - 1][1] is None
            delta = error if below_is_pool else error * sigmoid_prime(zs[i - 1])  # BP2 (a pool has no sigma')
    return [g.T for g in nabla_w], [g.ravel() for g in nabla_b]


def update_mini_batch(network: Network, x: FloatArray, y: FloatArray, eta: float) -> None:
    """One SGD step, looping over the m examples of the batch x (m, n_in), y (m, n_out)."""
    grad_w = [np.zeros_like(w) for w in network.weights]
    grad_b = [np.zeros_like(b) for b in network.biases]
    for xi, yi in zip(x, y, strict=True):
        dw, db = backprop_example(network, xi, yi)
        grad_w = [g + d for g, d in zip(grad_w, dw, strict=True)]
        grad_b = [g + d for g, d in zip(grad_b, db, strict=True)]
    scale = eta / x.shape[0]
    for w, b, gw, gb in zip(network.weights, network.biases, grad_w, grad_b, strict=True):
        w -= scale * gw  # the views write into the network's parameters
        b -= scale * gb


def sgd_reference(
    network: Network,
    images: FloatArray,
    labels: IntArray,
    *,
    epochs: int,
    batch_size: int,
    eta: float,
    rng: np.random.Generator,
) -> None:
    """Nielsen's ``SGD`` without evaluation: shuffle, then one step per mini-batch.

    Shuffles with ``rng.permutation`` exactly as ``mnist_nn.train.loop.fit``
    does, so both follow the same path through the data.
    """
    _check_covered(network)
    targets = network.one_hot(labels)
    n = images.shape[0]
    for _ in range(epochs):
        order = rng.permutation(n)
        for k in range(0, n, batch_size):
            idx = order[k : k + batch_size]
            update_mini_batch(network, images[idx].astype(network.dtype), targets[idx], eta)
