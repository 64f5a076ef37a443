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
  applied in place by the optimizer;
- the running training cost costs no call of its own: BP1 leaves what the
  cost needs in the mini-batch's rows of a buffer the loop keeps for the
  epoch (the output error for the quadratic cost, written by the subtraction
  BP1 makes anyway; the outputs for the others), and the loop sums the cost
  over the whole epoch once, at its end (``Cost.output_delta_kept``).
"""

from __future__ import annotations

import numpy as np

from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.layers import Layer, LayerStep
from mnist_nn.nn.network import Network
from mnist_nn.train.optimizers import SGD


class Step:
    """One SGD step for ``network`` on mini-batches of m rows.

    Args:
        network: the network to train (its layers' parameters are updated in place).
        m: the mini-batch size.
        optimizer: applies each update (planned already: the step binds its updates once).
        dropout: probability of dropping each neuron of the hidden layers that have neurons
            (``Layer.plan_dropout``; the output layer never drops).
        rng: draws the dropout masks.
    """

    def __init__(
        self,
        network: Network,
        m: int,
        optimizer: SGD,
        *,
        dropout: float,
        rng: np.random.Generator,
    ) -> None:
        self.network = network
        layers = network.layers
        last = len(layers) - 1
        self.steps = [
            _plan(layer, m, dropout if i < last else 0.0, ones_out=i < last and layers[i + 1].ones_column)
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
            )
            for i in range(last, -1, -1)
        ]
        self.updates = [
            (
                layers[i].decayed(layers[i].params),
                optimizer.bind(list(zip(slots[i], layers[i].params, self.steps[i].grads, strict=True))),
            )
            for i in range(last, -1, -1)
            if layers[i].params
        ]
        self.optimizer = optimizer
        self.cost = network.cost
        self.rng = rng
        self.work = np.empty_like(self.steps[-1].output)

    def __call__(
        self,
        xb: FloatArray,
        xb_t: FloatArray,
        yb: FloatArray,
        scale: float,
        decay: float,
        kept: FloatArray | None = None,
    ) -> None:
        """params += scale * grad (scale = -eta/m), after L2's decay w -> decay * w.

        xb is the batch as the first layer wants it (with its ones column if it
        asked for one) and xb_t its transpose; yb is one-hot. ``kept``, if
        given, is this batch's (m, n_out) rows of the epoch's cost buffer:
        BP1 leaves in it what ``Cost.running_cost`` sums at the epoch's end.
        """
        self.gradients(xb, xb_t, yb, scale, kept)
        self.apply(decay)

    def gradients(
        self, xb: FloatArray, xb_t: FloatArray, yb: FloatArray, scale: float, kept: FloatArray | None = None
    ) -> None:
        """The forward pass, BP1 and the backward pass: each layer's update (scale * grad) in its step's grads.

        The parameters do not move until ``apply``; each layer's backward pass
        reads its own weights only, so the updates may wait for the whole pass.
        """
        rng = self.rng
        x = xb
        for forward, out in self.forwards:
            forward(x, rng)
            x = out
        top = self.steps[-1]
        if kept is None:
            self.cost.output_delta(top.output, yb, top.delta, self.work)  # BP1
        else:
            self.cost.output_delta_kept(top.output, yb, top.delta, self.work, kept)  # BP1, keeping the cost's terms
        # Scaling delta_L by -eta/m once scales every delta below it (BP2 is linear),
        # so each gradient product below is already the update.
        np.multiply(top.delta, scale, out=top.delta)
        for backward, x_t, below, output in self.backwards:
            backward(xb_t if x_t is None else x_t, below, output)

    def apply(self, decay: float) -> None:
        """L2's decay w -> decay * w, then the optimizer's update from the grads, layer by layer."""
        for decayed, update in self.updates:
            if decay != 1.0:
                for w in decayed:
                    np.multiply(w, decay, out=w)  # w -> (1 - eta lambda / n) w
            update()

    def close(self) -> None:
        """Nothing to release (``SplitStep`` ends a thread here)."""


def _plan(layer: Layer, m: int, dropout: float, *, ones_out: bool) -> LayerStep:
    """The layer's step for m rows, with the run's dropout where it reaches the layer (its neurons)."""
    step = layer.plan_dropout(m, dropout, ones_out=ones_out) if dropout else None
    return layer.plan(m, ones_out=ones_out) if step is None else step
