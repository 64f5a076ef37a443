"""Nielsen's ``SGD``: the trainer behind ``Network.SGD``, the book's calling convention.

    net = Network([784, 30, 10])
    net.SGD(training_data, 30, 10, 3.0, test_data=test_data)

``mnist_nn.nn.Network`` knows nothing of training (imports go one way, from
training down to the network), so ``Network.SGD`` calls the trainer that
this module registers when it is imported. It trains through ``fit``, the
same loop as everything else, and prints a line after every epoch as
Nielsen's code does (``Epoch 0: 9129 / 10000``), the one entry point of the
library that prints: it is what the book's reader types at the prompt.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mnist_nn.nn import network as nn_network
from mnist_nn.nn.network import Network, as_arrays
from mnist_nn.train.history import EpochRecord, History
from mnist_nn.train.loop import fit
from mnist_nn.train.run import Run


def sgd(
    network: Network,
    training_data: Any,
    epochs: int,
    mini_batch_size: int,
    eta: float,
    test_data: Any,
    *,
    rng: np.random.Generator | None,
    quiet: bool,
) -> History:
    """``network.SGD(...)``: see ``Network.SGD``."""
    images, labels = as_arrays(training_data, network.input_size)
    validation = as_arrays(test_data, network.input_size) if test_data is not None else None
    rng = rng if rng is not None else np.random.default_rng(0)
    run = Run.for_network(network, rng, epochs=epochs, batch_size=mini_batch_size, eta=eta, seed=0)
    return fit(run, images, labels, validation=validation, on_epoch=None if quiet else _print_epoch).history


def _print_epoch(record: EpochRecord, run: Run) -> None:
    """Nielsen's line after an epoch: the test count, or that it is complete."""
    if record.validation_correct is not None:
        print(f"Epoch {record.epoch - 1}: {record.validation_correct} / {record.validation_total}", flush=True)
    else:
        print(f"Epoch {record.epoch - 1} complete", flush=True)


nn_network.register_book_trainer(sgd)
