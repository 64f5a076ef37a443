"""Nielsen's calling convention: ``Network(sizes)`` with an ``SGD`` method.

``mnist_nn.nn.Network`` knows nothing of training (imports go one way, from
training down to the network), so the method that trains lives here, on a
subclass that is the package's public ``mnist_nn.Network``:

    net = Network([784, 30, 10])
    net.SGD(training_data, 30, 10, 3.0, test_data=test_data)

It trains through ``fit``, the same loop as everything else, and prints a
line after every epoch as his code does (``Epoch 0: 9129 / 10000``), the one
entry point of the library that prints: it is what the book's reader types
at the prompt.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mnist_nn.nn import network as nn_network
from mnist_nn.nn.network import as_arrays
from mnist_nn.train.history import EpochRecord, History
from mnist_nn.train.loop import fit
from mnist_nn.train.run import Run


class Network(nn_network.Network):
    """``mnist_nn.nn.network.Network`` with Nielsen's ``SGD``; everything else is the same."""

    def SGD(  # noqa: N802 - Nielsen's name
        self,
        training_data: Any,
        epochs: int,
        mini_batch_size: int,
        eta: float,
        test_data: Any = None,
        *,
        rng: np.random.Generator | None = None,
        quiet: bool = False,
    ) -> History:
        """Train with mini-batch stochastic gradient descent, as Nielsen's ``SGD``.

        ``training_data`` is Nielsen's list of ``(x, y)`` tuples from
        ``load_data_wrapper()`` or an ``(images, labels)`` pair; ``test_data``
        (optional, either form) is evaluated after every epoch. ``rng``
        shuffles (default: seeded with 0). After every epoch it prints, as
        Nielsen's code does, ``Epoch 0: 9129 / 10000`` (the count on
        ``test_data``; epochs numbered from 0) or, without test data, ``Epoch
        0 complete``; ``quiet`` prints nothing. Returns the ``History``.

        Raises:
            ConfigError: epochs, mini_batch_size or eta out of range.
        """
        images, labels = as_arrays(training_data, self.input_size)
        validation = as_arrays(test_data, self.input_size) if test_data is not None else None
        rng = rng if rng is not None else np.random.default_rng(0)
        run = Run.for_network(self, rng, epochs=epochs, batch_size=mini_batch_size, eta=eta, seed=0)
        return fit(run, images, labels, validation=validation, on_epoch=None if quiet else _print_epoch).history


def _print_epoch(record: EpochRecord, run: Run) -> None:
    """Nielsen's line after an epoch: the test count, or that it is complete."""
    if record.validation_correct is not None:
        print(f"Epoch {record.epoch - 1}: {record.validation_correct} / {record.validation_total}", flush=True)
    else:
        print(f"Epoch {record.epoch - 1} complete", flush=True)
