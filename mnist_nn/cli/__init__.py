"""The command line: ``mnist-nn`` and its subcommands, and the scripts' entry points.

One module per command (``download``, ``train``, ``evaluate``, ``benchmark``,
``predict``, ``serve``, ``show``, ``plot``, ``export``), the ``mnist-nn`` dispatcher in
``main`` and what they all share in ``base``: the parser, the common flags and
``command``, the one place that turns the package's errors into a message and
an exit code. Only this package prints results or reads argv; nothing else in
``mnist_nn`` imports it.
"""

from __future__ import annotations

from mnist_nn.cli.download import download_main
from mnist_nn.cli.evaluate import evaluate_main
from mnist_nn.cli.main import SUBCOMMANDS, main
from mnist_nn.cli.train import train_main

__all__ = ["SUBCOMMANDS", "download_main", "evaluate_main", "main", "train_main"]
