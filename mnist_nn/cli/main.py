"""The ``mnist-nn`` command (and ``python -m mnist_nn``): the table of subcommands and the dispatcher."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mnist_nn._version import __version__
from mnist_nn.cli.base import (
    EXIT_OK,
    EXIT_USAGE,
    MainFunction,
    fail,
)
from mnist_nn.cli.download import download_main
from mnist_nn.cli.evaluate import evaluate_main
from mnist_nn.cli.export import export_main
from mnist_nn.cli.models import models_main
from mnist_nn.cli.plot import plot_main
from mnist_nn.cli.predict import predict_main
from mnist_nn.cli.serve import serve_main
from mnist_nn.cli.show import show_main
from mnist_nn.cli.train import train_main


def _benchmark(argv: Sequence[str] | None = None, prog: str = "mnist-nn benchmark") -> int:
    """``mnist-nn benchmark``, imported when run: no other command needs the benchmark's machinery."""
    from mnist_nn.cli.benchmark import benchmark_main

    return benchmark_main(argv, prog)


SUBCOMMANDS: dict[str, tuple[MainFunction, str]] = {
    "download": (download_main, "download and verify MNIST into the cache"),
    "train": (train_main, "train a network (Nielsen's chapter-1 setup by default, or --preset NAME)"),
    "evaluate": (evaluate_main, "evaluate saved models: counts, per-digit accuracy, confusion, mistakes"),
    "benchmark": (_benchmark, "accuracy over seeds, or speed against the per-example reference"),
    "models": (models_main, "list the saved models in a folder, newest first, with their test counts"),
    "predict": (predict_main, "classify your own digit images (PNG, JPEG, .npy)"),
    "serve": (serve_main, "draw digits in the browser and watch the model classify them as you draw"),
    "show": (show_main, "show MNIST digits in the terminal, with a model's predictions or mistakes"),
    "plot": (plot_main, "draw training curves, confusion matrices, mistakes and benchmark charts"),
    "export": (export_main, "write a saved model as an ONNX file, for ONNX Runtime and other frameworks"),
}


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [
        "usage: mnist-nn [--version] [--help] COMMAND [ARGS...]",
        "",
        "A from-scratch NumPy neural network for MNIST digits. Commands:",
        "",
        *(f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items()),
        "",
        "'mnist-nn COMMAND --help' explains a command's options.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mnist-nn`` command and ``python -m mnist_nn``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(_usage(), file=sys.stderr)
        return EXIT_USAGE
    if args[0] in ("-h", "--help"):
        print(_usage())
        return EXIT_OK
    if args[0] in ("-V", "--version"):
        print(f"mnist-nn {__version__}")
        return EXIT_OK
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        return fail("mnist-nn", f"unknown command {name!r}; expected one of: {', '.join(SUBCOMMANDS)}", EXIT_USAGE)
    return SUBCOMMANDS[name][0](rest, f"mnist-nn {name}")
