"""Training: the fast step, optimizers, the epoch loop, runs and checkpoints, augmentation.

- ``step``: one mini-batch step on preallocated buffers.
- ``optimizers``: plain SGD, classical and Nesterov momentum, each owning its state.
- ``loop``: ``fit``, the one training loop (shuffling, epochs, validation, best weights), and
  ``count_correct``, which counts uint8 pixels without a float copy of the whole set.
- ``prefetch``: the helper process that gathers each epoch's shuffled rows on a second CPU.
- ``run``: ``Run`` (configuration, network, generator, optimizer, history) and its snapshots.
- ``history``, ``schedules``: per-epoch records; learning-rate schedules and early stopping.
- ``augment``, ``transforms``: distortions of the training images; deskewing as a model's input transform.
- ``nielsen``: the public ``Network``, with Nielsen's ``SGD`` method.
"""

from __future__ import annotations

from mnist_nn.train.history import EpochRecord, History
from mnist_nn.train.loop import count_correct, fit
from mnist_nn.train.nielsen import Network
from mnist_nn.train.run import Run

__all__ = ["EpochRecord", "History", "Network", "Run", "count_correct", "fit"]
