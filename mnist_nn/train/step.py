"""The fast training step: BP1-BP4 on preallocated buffers, one mini-batch size at a time.

At Nielsen's mini-batch of 10 an epoch is 5,000 steps of tiny matrix
products, so what costs is NumPy's per-call overhead, and every call the
math does not need is gone:

- each layer plans its buffers once per mini-batch size (``Layer.plan``) and
  every intermediate is written into them with ``out=``; the speed tricks of
  one kind of layer (a dense layer's biases as the last row of its weights,
  fed by a column of ones) stay inside that layer;
- -eta/m multiplies the output delta once; BP2 is linear, so it carries the
  factor to every layer and each gradient product is already the update,
  applied in place by the optimizer.
"""

from __future__ import annotations

import numpy as np

from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.network import Network
from mnist_nn.train.optimizers import SGD


class Step:
    """One SGD step for ``network`` on mini-batches of m rows.

    Args:
        network: the network to train (its layers' parameters are updated in place).
        m: the mini-batch size.
        optimizer: applies each update (planned already).
        dropout: probability of dropping each hidden neuron (the output layer never drops).
        rng: draws the dropout masks.
        monitor_cost: add each batch's cost to ``cost_sum``.
    """

    def __init__(
        self,
        network: Network,
        m: int,
        optimizer: SGD,
        *,
        dropout: float,
        rng: np.random.Generator,
        monitor_cost: bool,
    ) -> None:
        self.network = network
        layers = network.layers
        last = len(layers) - 1
        self.steps = [
            layer.plan(
                m,
                dtype=network.dtype,
                dropout=dropout if i < last else 0.0,
                ones_out=i < last and layers[i + 1].ones_column,
            )
            for i, layer in enumerate(layers)
        ]
        slots, k = [], 0
        for layer in layers:
            slots.append(list(range(k, k + len(layer.params))))
            k += len(layer.params)
        # What each step calls, bound once: a method lookup costs as much as a small ufunc.
        self.forwards = [(s.forward, s.out) for s in self.steps]
        self.backwards = [
            (
                self.steps[i].backward,
                self.steps[i - 1].out_t if i else None,  # None: the batch's own transpose
                self.steps[i - 1].delta if i else None,
                i == last,
                layers[i].decayed(layers[i].params),
                list(zip(slots[i], layers[i].params, self.steps[i].grads, strict=True)),
            )
            for i in range(last, -1, -1)
        ]
        self.optimizer = optimizer
        self.cost = network.cost
        self.rng = rng
        self.monitor_cost = monitor_cost
        self.work = np.empty_like(self.steps[-1].output)
        self.cost_sum = 0.0

    def __call__(self, xb: FloatArray, xb_t: FloatArray, yb: FloatArray, scale: float, decay: float) -> None:
        """params += scale * grad (scale = -eta/m), after L2's decay w -> decay * w.

        xb is the batch as the first layer wants it (with its ones column if it
        asked for one) and xb_t its transpose; yb is one-hot.
        """
        rng = self.rng
        x = xb
        for forward, out in self.forwards:
            forward(x, rng)
            x = out
        top = self.steps[-1]
        a = top.output
        if self.monitor_cost:
            self.cost_sum += self.cost.fn(a, yb)
        self.cost.output_delta(a, yb, top.delta, self.work)  # BP1
        # Scaling delta_L by -eta/m once scales every delta below it (BP2 is linear),
        # so each gradient product below is already the update.
        np.multiply(top.delta, scale, out=top.delta)
        apply = self.optimizer.apply
        for backward, x_t, below, output, decayed, updates in self.backwards:
            backward(xb_t if x_t is None else x_t, below, output)
            if decay != 1.0:
                for w in decayed:
                    np.multiply(w, decay, out=w)  # w -> (1 - eta lambda / n) w
            apply(updates)
