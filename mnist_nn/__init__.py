"""mnist_nn: a from-scratch, vectorized NumPy neural network for MNIST digits.

The names most programs need; the subpackages say more (``data``, ``nn``,
``train``, ``bench``, ``cli``) and the README's "Architecture" section maps them:

    from mnist_nn import Dense, Network, load_mnist
    data = load_mnist()
    net = Network([784, 30, 10])  # or Network([Dense(30), Dense(10)])
    net.SGD(data.train, 30, 10, 3.0, test_data=data.validation)
    print(net.evaluate(data.test), "/ 10000")
"""

from __future__ import annotations

from mnist_nn._version import __version__
from mnist_nn.config import PRESETS, TrainConfig
from mnist_nn.data import load_data, load_data_wrapper, load_mnist, vectorized_result
from mnist_nn.models import SavedModel, load_model, save_model
from mnist_nn.nn.batchnorm import BatchNorm
from mnist_nn.nn.layers import AvgPool2D, Conv2D, Dense, Dropout, MaxPool2D
from mnist_nn.nn.network import Network
from mnist_nn.train import EpochRecord, History, Run, fit

__all__ = [
    "PRESETS",
    "AvgPool2D",
    "BatchNorm",
    "Conv2D",
    "Dense",
    "Dropout",
    "EpochRecord",
    "History",
    "MaxPool2D",
    "Network",
    "Run",
    "SavedModel",
    "TrainConfig",
    "__version__",
    "fit",
    "load_data",
    "load_data_wrapper",
    "load_mnist",
    "load_model",
    "save_model",
    "vectorized_result",
]
