"""Training: the fast step, optimizers, the epoch loop, runs and checkpoints, augmentation.

- ``step``: one mini-batch step on preallocated buffers.
- ``optimizers``: plain SGD, classical and Nesterov momentum, each owning its state.
- ``loop``: ``fit``, the one training loop (epochs, steps, validation, best weights).
- ``feeds``: where an epoch's mini-batches come from (gathered pixels, a float buffer, a whole shuffled epoch).
- ``validation``: ``Validation``, counted after every epoch, and ``count_in_chunks``, which counts
  uint8 pixels without a float copy of the whole set.
- ``prefetch``: the helper process that gathers each epoch's shuffled rows on a second CPU.
- ``run``: ``Run`` (configuration, network, generator, optimizer, history) and its snapshots.
- ``history``, ``schedules``: per-epoch records; learning-rate schedules and early stopping.
- ``augment``: distortions of the training images.
- ``nielsen``: the trainer behind ``Network.SGD``, Nielsen's calling convention.
"""

from __future__ import annotations

from mnist_nn.train import nielsen as nielsen  # imported for its effect: registers the trainer behind Network.SGD
from mnist_nn.train.history import EpochRecord, History
from mnist_nn.train.loop import fit
from mnist_nn.train.run import Run
from mnist_nn.train.validation import count_in_chunks

__all__ = ["EpochRecord", "History", "Run", "count_in_chunks", "fit"]
