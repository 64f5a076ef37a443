"""The textbook algorithm, one example at a time: the oracle and the baseline.

This is Nielsen's chapter-1 ``backprop`` and ``update_mini_batch``, in his
column-vector layout, kept deliberately plain: for one example x (n_in, 1)
with one-hot target y (n_out, 1), and W_l = weights[l].T of shape (n_out, n_in),

    z_l = W_l a_{l-1} + b_l,   a_l = sigma(z_l)
    delta_L = (a_L - y) * sigma'(z_L)                   (BP1, quadratic cost)
    delta_l = (W_{l+1}^T delta_{l+1}) * sigma'(z_l)     (BP2)
    dC/db_l = delta_l                                   (BP3)
    dC/dW_l = delta_l a_{l-1}^T                         (BP4)

A mini-batch's gradient is the sum of its examples' gradients, and the
update subtracts eta/m times it. The tests check the vectorized code in
``mnist_nn.nn`` and ``mnist_nn.train`` against this, and the benchmark
measures how much faster they are. Only stacks of sigmoid ``Dense`` layers
with the quadratic cost are covered: it is the reference for Nielsen's setup.
"""

from __future__ import annotations

import numpy as np

from mnist_nn.nn.activations import FloatArray, sigmoid, sigmoid_prime
from mnist_nn.nn.layers import Dense
from mnist_nn.nn.network import IntArray, Network


def _check_covered(network: Network) -> None:
    """ValueError unless the network is one the reference covers."""
    dense_sigmoid = all(isinstance(layer, Dense) and layer.activation.name == "sigmoid" for layer in network.layers)
    if not dense_sigmoid or network.cost.name != "quadratic":
        raise ValueError("the reference implementation covers sigmoid networks with the quadratic cost only")


def backprop_example(network: Network, x: FloatArray, y: FloatArray) -> tuple[list[FloatArray], list[FloatArray]]:
    """Gradient of the quadratic cost for one example.

    Args:
        network: a stack of sigmoid dense layers (its parameters are read, never changed).
        x: one input, shape (n_in,).
        y: its one-hot target, shape (n_out,).

    Returns:
        ``(grad_w, grad_b)`` in the network's batch-first layout: grad_w[l]
        of shape (n_in, n_out), grad_b[l] of shape (n_out,).
    """
    weights = [w.T for w in network.weights]  # Nielsen's (n_out, n_in)
    biases = [b.reshape(-1, 1) for b in network.biases]
    activation = x.reshape(-1, 1)
    activations = [activation]
    zs = []
    for w, b in zip(weights, biases, strict=True):
        z = w @ activation + b
        zs.append(z)
        activation = sigmoid(z)
        activations.append(activation)
    delta = (activations[-1] - y.reshape(-1, 1)) * sigmoid_prime(zs[-1])  # BP1
    nabla_w = [np.zeros_like(w) for w in weights]
    nabla_b = [np.zeros_like(b) for b in biases]
    nabla_w[-1] = delta @ activations[-2].T  # BP4
    nabla_b[-1] = delta  # BP3
    for layer in range(2, len(network.sizes)):
        delta = (weights[-layer + 1].T @ delta) * sigmoid_prime(zs[-layer])  # BP2
        nabla_w[-layer] = delta @ activations[-layer - 1].T
        nabla_b[-layer] = delta
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
