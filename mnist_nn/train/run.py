"""A training run: its configuration, network, generator, optimizer and history, and its snapshots.

A run holds everything needed to continue it exactly: a model file stores it
(``mnist_nn.models``) and ``--resume`` rebuilds it. ``Run.start`` is the one
place a network is built from a ``TrainConfig``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnist_nn.config import TrainConfig
from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.layers import Layer, layer_from_spec
from mnist_nn.nn.network import Network
from mnist_nn.train.history import History
from mnist_nn.train.optimizers import SGD, make_optimizer
from mnist_nn.train.transforms import input_transform


def build_network(config: TrainConfig, rng: np.random.Generator, kind: type[Network] = Network) -> Network:
    """The network ``config`` describes, its initial weights drawn from ``rng``.

    Raises:
        ValueError: layer specs that name no layer or do not chain.
    """
    layers: Sequence[int] | Sequence[Layer] = config.sizes
    if config.layers:
        layers = [layer_from_spec(spec) for spec in config.layers]
    return kind(
        layers,
        input_size=config.sizes[0],
        rng=rng,
        dtype=config.dtype,
        activation=config.activation,
        cost=config.cost,
        init=config.init,
        transform=input_transform(config.preprocess),
    )


@dataclass(frozen=True)
class Snapshot:
    """A run's state at the end of an epoch: what continuing it exactly needs."""

    params: list[FloatArray]
    optimizer_state: dict[str, list[FloatArray]]
    rng_state: dict[str, Any]
    epochs_completed: int


class Run:
    """A training run: its configuration and everything needed to continue it.

    ``network`` holds the current weights (those of the last epoch trained);
    ``best_params`` the weights of the epoch with the highest validation
    count so far, which is what a run serves unless told to keep the last.
    ``optimizer`` defaults to the one the configuration asks for.
    ``snapshot`` is the state after the last completed epoch: training
    interrupted mid-epoch leaves network and rng part way through it, and
    the snapshot is what a save records.

    Raises:
        ValueError: the network does not match the configuration.
    """

    def __init__(
        self,
        config: TrainConfig,
        network: Network,
        rng: np.random.Generator,
        history: History | None = None,
        optimizer: SGD | None = None,
    ) -> None:
        if tuple(network.sizes) != tuple(config.sizes) or network.dtype.name != config.dtype:
            raise ValueError(
                f"the run's network ({list(network.sizes)}, {network.dtype}) does not match its "
                f"configuration ({list(config.sizes)}, {config.dtype})"
            )
        self.config = config
        self.network = network
        self.rng = rng
        self.history = history if history is not None else History()
        self.optimizer = optimizer if optimizer is not None else make_optimizer(config)
        self.best_params: list[FloatArray] | None = None
        self.best_epoch: int | None = None
        self.snapshot: Snapshot | None = None

    @classmethod
    def start(cls, config: TrainConfig) -> Run:
        """A new run: one generator seeded with ``config.seed`` draws the weights, then shuffles."""
        rng = np.random.default_rng(config.seed)
        return cls(config=config, network=build_network(config, rng), rng=rng)

    @classmethod
    def for_network(cls, network: Network, rng: np.random.Generator, **settings: Any) -> Run:
        """A new run that trains an existing ``network`` with ``settings`` (``TrainConfig`` fields).

        The configuration's description of the network (sizes, dtype, the
        hidden layers' activation, cost, init, preprocess) is read from the
        network itself.

        Raises:
            ConfigError: a setting out of range.
        """
        hidden = {layer.activation.name for layer in network.layers[:-1]}
        described = {
            "sizes": network.sizes,
            "dtype": network.dtype.name,
            "activation": hidden.pop() if len(hidden) == 1 else network.activation.name,
            "cost": network.cost.name,
            "init": network.init or "normal",
            "preprocess": network.transform.name if network.transform is not None else "",
        }
        eta = settings.get("eta")
        if isinstance(eta, int) and not isinstance(eta, bool):
            settings["eta"] = float(eta)
        return cls(TrainConfig(**(described | settings)), network, rng)

    @classmethod
    def restore(
        cls,
        config: TrainConfig,
        served: Network,
        *,
        params: list[FloatArray],
        optimizer_state: Mapping[str, Sequence[FloatArray]],
        rng: np.random.Generator,
        history: History,
        served_is_best: bool,
    ) -> Run:
        """A saved run, to continue: its current ``params`` and optimizer state, generator and history.

        ``served`` is the saved network holding its served weights; when they
        are the best epoch's (``served_is_best``) they stay the best so far.

        Raises:
            ValueError: the saved state does not fit the configuration.
        """
        optimizer = make_optimizer(config)
        optimizer.load_state(optimizer_state)
        run = cls(config=config, network=served.clone(params), rng=rng, history=history, optimizer=optimizer)
        best = history.best()
        if served_is_best and best is not None:
            run.best_params = served.copy_params()
            run.best_epoch = best.epoch
        return run

    @property
    def epochs_completed(self) -> int:
        """Epochs trained so far."""
        return len(self.history.epochs)

    def take_snapshot(self) -> Snapshot:
        """Record the current state as the last completed epoch's (see ``snapshot``)."""
        state = self.optimizer.state
        self.snapshot = Snapshot(
            params=self.network.copy_params(),
            optimizer_state={k: [a.copy() for a in v] for k, v in state.items()},
            rng_state=dict(self.rng.bit_generator.state),
            epochs_completed=self.epochs_completed,
        )
        return self.snapshot

    def served(self, keep_last: bool = False) -> tuple[list[FloatArray], int]:
        """The weights this run serves and the epoch they come from.

        The best validation epoch's weights, or the last epoch's when
        ``keep_last`` is set or no epoch was validated.
        """
        if keep_last or self.best_params is None or self.best_epoch is None:
            return self.network.params, self.epochs_completed
        return self.best_params, self.best_epoch

    def served_network(self, keep_last: bool = False) -> Network:
        """A copy of the network holding the served weights (see ``served``)."""
        params, _ = self.served(keep_last)
        return self.network.clone(params)
