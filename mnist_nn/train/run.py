"""A training run: its configuration, network, generator, optimizer and history, and its snapshots.

A run holds everything needed to continue it exactly: a snapshot after every
epoch (``ResumeState``, the record a run file stores), which
``mnist_nn.train.checkpoint`` saves and resumes. ``Run.start`` is the one
place a network is built from a ``TrainConfig``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mnist_nn.config import TrainConfig
from mnist_nn.models import ResumeState
from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.costs import COSTS
from mnist_nn.nn.network import Network, build_layers
from mnist_nn.nn.specs import layer_from_spec, spec_of
from mnist_nn.nn.transforms import input_transform
from mnist_nn.text import short
from mnist_nn.train.history import History
from mnist_nn.train.optimizers import SGD, make_optimizer


def build_network(config: TrainConfig, rng: np.random.Generator) -> Network:
    """The network ``config`` describes, its initial weights drawn from ``rng``.

    Raises:
        ValueError: layer specs that name no layer or do not chain.
    """
    return Network(
        [layer_from_spec(spec) for spec in config.layers],
        input_size=config.inputs,
        rng=rng,
        dtype=config.dtype,
        activation=config.activation,
        cost=config.cost,
        init=config.init,
        transform=input_transform(config.preprocess),
    )


def layer_specs(network: Network) -> tuple[str, ...]:
    """The specs of ``network``'s layers, as a ``TrainConfig`` names them (``("dense30", "dense10")``)."""
    return tuple(spec_of(layer) for layer in network.layers)


def check_network_fits(config: TrainConfig, network: Network) -> None:
    """ValueError unless ``network`` is the one ``config`` describes.

    Its input size, dtype, layers (kinds, sizes, activations), cost and input
    transform are compared; the configuration's layers are built on their
    shapes only, so a configuration claiming huge layers allocates nothing.
    """
    _check_layers(config, network)
    try:
        layers = [layer_from_spec(spec) for spec in config.layers]
        build_layers(layers, (config.inputs,), activation=config.activation, cost=COSTS[config.cost])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"the configuration's layers {' '.join(config.layers)} cannot be built: {exc}") from None
    described = [layer.describe() for layer in layers]
    if described != network.describe():
        raise ValueError(
            f"the configuration describes the layers {short(described)}, the network has {short(network.describe())}"
        )
    if network.cost.name != config.cost:
        raise ValueError(f"the configuration's cost is {config.cost}, the network's {network.cost.name}")
    transform = network.transform.name if network.transform is not None else ""
    if transform != config.preprocess:
        raise ValueError(
            f"the configuration's preprocess is {config.preprocess!r}, the network's input transform {transform!r}"
        )


def _check_layers(config: TrainConfig, network: Network) -> None:
    """ValueError unless the network has the configuration's inputs, layers and dtype."""
    specs = layer_specs(network)
    if network.input_size != config.inputs or specs != config.layers or network.dtype.name != config.dtype:
        raise ValueError(
            f"the network ({network.input_size} inputs, {' '.join(specs)}, {network.dtype}) does not match its "
            f"configuration ({config.inputs} inputs, {' '.join(config.layers)}, {config.dtype})"
        )


class Run:
    """A training run: its configuration and everything needed to continue it.

    ``network`` holds the current weights (those of the last epoch trained);
    ``best_params`` the weights of the epoch with the highest validation
    count so far, which is what a run serves unless ``keep_last`` says to
    serve the last epoch's. That rule is part of the run: a restored run
    keeps the one it was saved with.
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
        keep_last: bool = False,
    ) -> None:
        _check_layers(config, network)
        self.config = config
        self.network = network
        self.rng = rng
        self.history = history if history is not None else History()
        self.optimizer = optimizer if optimizer is not None else make_optimizer(config)
        self.best_params: list[FloatArray] | None = None
        self.best_epoch: int | None = None
        self.snapshot: ResumeState | None = None
        self.keep_last = keep_last
        self._averaged: Network | None = None

    @classmethod
    def start(cls, config: TrainConfig, keep_last: bool = False) -> Run:
        """A new run: one generator seeded with ``config.seed`` draws the weights, then shuffles."""
        rng = np.random.default_rng(config.seed)
        return cls(config=config, network=build_network(config, rng), rng=rng, keep_last=keep_last)

    @classmethod
    def for_network(cls, network: Network, rng: np.random.Generator, **settings: Any) -> Run:
        """A new run that trains an existing ``network`` with ``settings`` (``TrainConfig`` fields).

        The configuration's description of the network (layers, dtype, the
        hidden layers' activation, cost, init, preprocess) is read from the
        network itself.

        Raises:
            ConfigError: a setting out of range.
        """
        hidden = {layer.activation.name for layer in network.layers[:-1]}
        described = {
            "layers": layer_specs(network),
            "inputs": network.input_size,
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
        served_epoch: int,
        epochs_completed: int,
    ) -> Run:
        """A saved run, to continue: its current ``params`` and optimizer state, generator and history.

        ``served`` is the saved network holding its served weights, those of
        epoch ``served_epoch``: the best validation epoch's when
        ``served_is_best`` (they stay the best so far, and the run keeps
        serving its best epoch), else the last epoch's (``keep_last``).
        Everything is checked against the configuration and the history
        before the run is built.

        Raises:
            ValueError: the saved state does not fit the configuration, or its parts disagree.
        """
        check_network_fits(config, served)
        if epochs_completed != len(history.epochs):
            raise ValueError(f"the history holds {len(history.epochs)} epochs, but {epochs_completed} were completed")
        if epochs_completed > config.epochs:
            raise ValueError(f"{epochs_completed} epochs were completed, more than the {config.epochs} asked for")
        best = history.best()
        if served_is_best:
            if best is None or served_epoch != best.epoch:
                expected = "no validated epoch" if best is None else f"epoch {best.epoch}"
                raise ValueError(
                    f"the served weights are said to be the best epoch's ({served_epoch}), "
                    f"but the history's best is {expected}"
                )
        elif served_epoch != epochs_completed:
            raise ValueError(
                f"the served weights are said to be the last epoch's ({epochs_completed}), not epoch {served_epoch}"
            )
        optimizer = make_optimizer(config)
        optimizer.load_state(optimizer_state)
        run = cls(
            config=config,
            network=served.clone(params),
            rng=rng,
            history=history,
            optimizer=optimizer,
            keep_last=not served_is_best,
        )
        if served_is_best and best is not None:
            run.best_params = served.copy_params()
            run.best_epoch = best.epoch
        return run

    @property
    def epochs_completed(self) -> int:
        """Epochs trained so far."""
        return len(self.history.epochs)

    def evaluated(self) -> Network:
        """The network validated and served: ``network``, or the average of its weights.

        When the run averages its weights (``config.ema``), a network holding
        that average, brought up to date from the optimizer's state.
        """
        average = self.optimizer.state.get("average")
        if average is None:
            return self.network
        if self._averaged is None:
            self._averaged = self.network.clone(average)
        else:
            self._averaged.set_params(average)
        return self._averaged

    def take_snapshot(self) -> ResumeState:
        """Record the current state as the last completed epoch's (see ``snapshot``)."""
        state = self.optimizer.state
        self.snapshot = ResumeState(
            params=self.network.copy_params(),
            optimizer={k: [a.copy() for a in v] for k, v in state.items()},
            rng_state=dict(self.rng.bit_generator.state),
            epochs_completed=self.epochs_completed,
        )
        return self.snapshot

    def served(self, keep_last: bool | None = None) -> tuple[list[FloatArray], int]:
        """The weights this run serves and the epoch they come from.

        The best validation epoch's weights, or the last epoch's when
        ``keep_last`` (default: the run's ``keep_last``) is set or no epoch
        was validated.
        """
        last = self.keep_last if keep_last is None else keep_last
        if last or self.best_params is None or self.best_epoch is None:
            return self.evaluated().params, self.epochs_completed
        return self.best_params, self.best_epoch

    def served_network(self, keep_last: bool | None = None) -> Network:
        """A copy of the network holding the served weights (see ``served``)."""
        params, _ = self.served(keep_last)
        return self.network.clone(params)
