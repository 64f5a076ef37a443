"""mnist_nn: a from-scratch, vectorized NumPy neural network for MNIST digits."""

from __future__ import annotations

__version__ = "0.1.0"
