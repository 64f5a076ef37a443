"""The command line: ``mnist-nn`` and its subcommands, and the scripts' entry points.

Only this package prints or reads argv; nothing else in ``mnist_nn`` imports it.
"""

from __future__ import annotations

from mnist_nn.cli.commands import SUBCOMMANDS, download_main, evaluate_main, main, train_main

__all__ = ["SUBCOMMANDS", "download_main", "evaluate_main", "main", "train_main"]
