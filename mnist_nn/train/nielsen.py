"""Nielsen's calling convention: ``Network(sizes)`` with an ``SGD`` method.

``mnist_nn.nn.Network`` knows nothing of training (imports go one way, from
training down to the network), so the method that trains lives here, on a
subclass that is the package's public ``mnist_nn.Network``:

    net = Network([784, 30, 10])
    net.SGD(training_data, 30, 10, 3.0, test_data=test_data)

It trains through ``fit``, the same loop as everything else.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mnist_nn.nn import network as nn_network
from mnist_nn.nn.network import as_arrays
from mnist_nn.train.history import History
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
    ) -> History:
        """Train with mini-batch stochastic gradient descent, as Nielsen's ``SGD``.

        ``training_data`` is Nielsen's list of ``(x, y)`` tuples from
        ``load_data_wrapper()`` or an ``(images, labels)`` pair; ``test_data``
        (optional, either form) is evaluated after every epoch. ``rng``
        shuffles (default: seeded with 0). Returns the ``History``; nothing
        is printed.

        Raises:
            ConfigError: epochs, mini_batch_size or eta out of range.
        """
        images, labels = as_arrays(training_data, self.input_size)
        validation = as_arrays(test_data, self.input_size) if test_data is not None else None
        rng = rng if rng is not None else np.random.default_rng(0)
        run = Run.for_network(self, rng, epochs=epochs, batch_size=mini_batch_size, eta=eta, seed=0)
        return fit(run, images, labels, validation=validation).history
