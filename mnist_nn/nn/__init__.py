"""The network itself: activations, costs, layers, ``Network(layers)`` and the per-example reference.

Pure NumPy math: nothing here does I/O or knows about training loops or files;
``specs`` is the one module that knows how the command line names layers.

- ``activations``: sigmoid, tanh, ReLU and softmax, by name.
- ``costs``: quadratic, cross-entropy and log-likelihood, by name.
- ``layers``: ``Layer`` (what a layer owns) and its kinds: ``Dense``, ``Conv2D``, ``MaxPool2D``, ``AvgPool2D``,
  ``Dropout``; ``batchnorm``: ``BatchNorm``.
- ``specs``: the command-line syntax of layers (``conv20x5``, ``pool2``, ``dense100``).
- ``network``: ``Network(layers)``, forward pass and backpropagation (BP1-BP4), Nielsen's ``SGD``.
- ``transforms``, ``warp``: the input transforms a model applies (deskewing) and their bilinear sampler.
- ``reference``: Nielsen's per-example backpropagation, the tests' oracle.
"""

from __future__ import annotations

from mnist_nn.nn.batchnorm import BatchNorm
from mnist_nn.nn.layers import Dense, Layer
from mnist_nn.nn.network import Network

__all__ = ["BatchNorm", "Dense", "Layer", "Network"]
