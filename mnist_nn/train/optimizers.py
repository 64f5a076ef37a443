"""Optimizers: how a step's update moves the parameters, and the state that takes.

Each optimizer receives, for every parameter array, the batch's update
already scaled by -eta/m (``apply`` takes one layer's (slot, param, update)
triples at a time) (the fast step folds that factor into the output
delta) and applies it in place:

    plain SGD    w -> w + g
    momentum     v -> mu v + g,  w -> w + v
    Nesterov     v -> mu v + g,  w -> w + mu v + g   (the look-ahead without a second gradient)

where g = -eta/m grad C. Any of them can also keep an exponential moving
average of the parameters (``average``: d, e.g. 0.999), updated after every
step, a -> d a + (1 - d) w, which a run validates and serves in place of
the weights themselves. An optimizer owns its state (the velocities, the
average), laid out like ``Network.params``, which a model file stores so
that a resumed run continues exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from mnist_nn.config import TrainConfig
from mnist_nn.nn.activations import FloatArray


class SGD:
    """Plain stochastic gradient descent: w -> w + g; no state but the average, if it keeps one.

    Args:
        average: d of the moving average of the parameters, in (0, 1); 0 keeps none.
    """

    name = "sgd"

    def __init__(self, average: float = 0.0) -> None:
        self.state: dict[str, list[FloatArray]] = {}
        self.average = average

    def plan(self, params: Sequence[FloatArray]) -> None:
        """Make the state for these parameters, unless it was loaded already: the average starts at the weights."""
        if self.average:
            if "average" not in self.state:
                self.state["average"] = [p.copy() for p in params]
            self._average = self.state["average"]
            self._difference = [np.empty_like(p) for p in params]

    def load_state(self, state: Mapping[str, Sequence[FloatArray]]) -> None:
        """Continue from saved state (the keys of ``state``); ValueError if it does not fit."""
        if set(state) != set(self.state_keys()):
            raise ValueError(
                f"expected optimizer state {sorted(self.state_keys())} for {self.name}, got {sorted(state)}"
            )
        self.state = {k: [a.copy() for a in v] for k, v in state.items()}

    def state_keys(self) -> tuple[str, ...]:
        """The names of the state's arrays lists."""
        return ("average",) if self.average else ()

    def apply(self, updates: Sequence[tuple[int, FloatArray, FloatArray]]) -> None:
        """param += g for each (k, param, g): k numbers the parameter array, as in ``Network.params``."""
        for _, param, g in updates:
            np.add(param, g, out=param)

    def bind(self, updates: Sequence[tuple[int, FloatArray, FloatArray]]) -> Callable[[], object]:
        """A call without arguments that does ``apply(updates)``, made once (after ``plan``) for the fast step.

        For plain SGD on one array it is the in-place add itself, with its arguments bound.
        """
        if self.average:
            return functools.partial(self._apply_and_average, updates)
        if type(self) is SGD and len(updates) == 1:
            _, param, g = updates[0]
            return functools.partial(np.add, param, g, out=param)
        return functools.partial(self.apply, updates)

    def _apply_and_average(self, updates: Sequence[tuple[int, FloatArray, FloatArray]]) -> None:
        """``apply``, then a -> a + (1 - d)(w - a) for each of the parameters just moved."""
        self.apply(updates)
        share = 1.0 - self.average
        for k, param, _ in updates:
            a, difference = self._average[k], self._difference[k]
            np.subtract(param, a, out=difference)
            np.multiply(difference, share, out=difference)
            np.add(a, difference, out=a)


class Momentum(SGD):
    """Classical momentum: v -> mu v + g, w -> w + v."""

    name = "momentum"

    def __init__(self, mu: float, average: float = 0.0) -> None:
        super().__init__(average)
        self.mu = mu

    def state_keys(self) -> tuple[str, ...]:
        """The velocities, one array per parameter array (and the average, if kept)."""
        return ("velocity", *super().state_keys())

    def plan(self, params: Sequence[FloatArray]) -> None:
        """Zero velocities, unless loaded."""
        super().plan(params)
        if "velocity" not in self.state:
            self.state["velocity"] = [np.zeros_like(p) for p in params]
        self._velocity = self.state["velocity"]

    def apply(self, updates: Sequence[tuple[int, FloatArray, FloatArray]]) -> None:
        """v -> mu v + g, then w -> w + v, for each (k, param, g)."""
        for k, param, g in updates:
            v = self._velocity[k]
            np.multiply(v, self.mu, out=v)
            np.add(v, g, out=v)
            np.add(param, v, out=param)


class Nesterov(Momentum):
    """Nesterov's momentum: v -> mu v + g, w -> w + mu v + g."""

    name = "nesterov"

    def plan(self, params: Sequence[FloatArray]) -> None:
        """Zero velocities, unless loaded, and one scratch array per parameter array."""
        super().plan(params)
        self._scratch = [np.empty_like(p) for p in params]

    def apply(self, updates: Sequence[tuple[int, FloatArray, FloatArray]]) -> None:
        """v -> mu v + g, then w -> w + mu v + g, for each (k, param, g)."""
        for k, param, g in updates:
            v, s = self._velocity[k], self._scratch[k]
            np.multiply(v, self.mu, out=v)
            np.add(v, g, out=v)
            np.multiply(v, self.mu, out=s)
            np.add(s, g, out=s)
            np.add(param, s, out=param)


def make_optimizer(config: TrainConfig) -> SGD:
    """The optimizer a configuration asks for: momentum 0 is plain SGD, whatever ``nesterov`` says."""
    if not config.momentum:
        return SGD(config.ema)
    return Nesterov(config.momentum, config.ema) if config.nesterov else Momentum(config.momentum, config.ema)
