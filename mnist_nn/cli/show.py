"""``mnist-nn show``: MNIST digits as text in the terminal, with a model's predictions or only its mistakes."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mnist_nn.cli.base import (
    EXIT_OK,
    Parser,
    add_data_args,
    command,
    show_progress,
)
from mnist_nn.data import Split, load_mnist
from mnist_nn.errors import UsageError
from mnist_nn.images import render_digit
from mnist_nn.models import load_model


def build_show_parser(prog: str = "mnist-nn show") -> argparse.ArgumentParser:
    """Arguments of ``mnist-nn show``."""
    parser = Parser(
        prog=prog,
        description="Show MNIST digits in the terminal as text, with their labels and, given a model, "
        "its predictions; --mistakes MODEL shows only the digits that model gets wrong.",
    )
    parser.add_argument(
        "--split", choices=["train", "validation", "test"], default="test", help="which split (default: test)"
    )
    parser.add_argument("--index", type=int, default=0, help="the first example to show (default: 0)")
    parser.add_argument("--count", type=int, default=1, help="how many examples to show (default: 1)")
    parser.add_argument("--model", type=Path, metavar="MODEL", help="also show this model's prediction")
    parser.add_argument(
        "--mistakes",
        type=Path,
        metavar="MODEL",
        help="show only examples this model misclassifies, from --index on",
    )
    add_data_args(parser, deadline=True)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


@command
def show_main(argv: Sequence[str] | None = None, prog: str = "mnist-nn show") -> int:
    """Entry point of ``mnist-nn show``."""
    args = build_show_parser(prog).parse_args(argv)
    if args.count < 1:
        raise UsageError(f"--count must be at least 1, got {args.count}")
    if args.model is not None and args.mistakes is not None and args.model != args.mistakes:
        raise UsageError("give --model or --mistakes, not two different models")
    model_path = args.mistakes or args.model
    network = load_model(model_path).network if model_path is not None else None
    data = load_mnist(
        args.data_dir, mirror=args.mirror, quiet=not show_progress(args.quiet), deadline=args.download_deadline
    )
    split: Split = getattr(data, args.split)
    if not 0 <= args.index < len(split):
        raise UsageError(f"--index must be between 0 and {len(split) - 1} for {args.split}, got {args.index}")
    indices = np.arange(args.index, len(split))
    predictions = None
    if network is not None:
        predictions = network.predict(split.images[args.index :])
        if args.mistakes is not None:
            indices = indices[predictions != split.labels[args.index :]]
            predictions = predictions[predictions != split.labels[args.index :]]
    for k, i in enumerate(indices[: args.count]):
        label = int(split.labels[i])
        head = f"{args.split} #{i}: label {label}"
        if predictions is not None:
            guess = int(predictions[k] if args.mistakes is not None else predictions[i - args.index])
            head += f", predicted {guess}" + ("" if guess == label else "  <- wrong")
        print(head)
        print(render_digit(split.images[i], width=56))
    if args.mistakes is not None and not len(indices):
        print(f"no mistakes in {args.split} from #{args.index} on")
    return EXIT_OK
