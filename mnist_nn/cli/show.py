"""``mnist-nn show``: MNIST digits as text in the terminal, with a model's predictions or only its mistakes."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mnist_nn.cli.base import (
    EXIT_OK,
    Parser,
    add_data_args,
    check_outputs,
    command,
    load_model_file,
    models_dataset,
)
from mnist_nn.data import Split, load_mnist
from mnist_nn.data.datasets import DIGITS, MNIST
from mnist_nn.errors import UsageError
from mnist_nn.images import render_digit

MISTAKES_PAGE = 10  # mistakes shown at a time, as many as evaluate lists


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
    parser.add_argument(
        "--count",
        type=int,
        help=f"how many examples to show (default: 1, or {MISTAKES_PAGE} with --mistakes)",
    )
    parser.add_argument("--model", type=Path, metavar="MODEL", help="also show this model's prediction")
    parser.add_argument(
        "--mistakes",
        type=Path,
        metavar="MODEL",
        help=f"show only examples this model misclassifies, from --index on ({MISTAKES_PAGE} at a time "
        "unless --count says otherwise), and how many there are",
    )
    add_data_args(parser, deadline=True, dataset=True)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


@command
def show_main(argv: Sequence[str] | None = None, prog: str = "mnist-nn show") -> int:
    """Entry point of ``mnist-nn show``."""
    args = build_show_parser(prog).parse_args(argv)
    if args.count is None:
        args.count = MISTAKES_PAGE if args.mistakes is not None else 1
    if args.count < 1:
        raise UsageError(f"--count must be at least 1, got {args.count}")
    if args.model is not None and args.mistakes is not None and args.model != args.mistakes:
        raise UsageError("give --model or --mistakes, not two different models")
    model_path = args.mistakes or args.model
    model = load_model_file(model_path) if model_path is not None else None
    network = model.network if model is not None else None
    dataset = models_dataset([model], args.dataset) if model is not None else args.dataset or MNIST.name
    data = load_mnist(
        args.data_dir, mirror=args.mirror, quiet=args.quiet, deadline=args.download_deadline, dataset=dataset
    )
    if model is not None:
        check_outputs([model], data.dataset, data.classes)
    names = data.classes if data.classes != DIGITS else None
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
        head = f"{args.split} #{i}: label {label}" + (f" {names[label]}" if names else "")
        if predictions is not None:
            guess = int(predictions[k] if args.mistakes is not None else predictions[i - args.index])
            head += f", predicted {guess}" + (f" {names[guess]}" if names else "")
            head += "" if guess == label else "  <- wrong"
        print(head)
        print(render_digit(split.images[i], width=56))
    if args.mistakes is not None:
        print(_mistakes_summary(indices, args.count, args.split, args.index, len(split)))
    return EXIT_OK


def _mistakes_summary(indices: npt.NDArray[np.intp], count: int, split: str, start: int, total: int) -> str:
    """How many mistakes there are from ``start`` on, how many were shown, and how to see the next ones."""
    where = f"{split} from #{start} on" if start else split
    examples = f"{total - start:,} examples"
    if not len(indices):
        return f"No mistakes in {where} ({examples})."
    mistakes = f"{len(indices):,} mistake{'s' if len(indices) != 1 else ''}"
    if len(indices) <= count:
        return f"Shown: all {mistakes} in {where} ({examples})."
    following = int(indices[count])
    return (
        f"Shown: {count} of the {mistakes} in {where} ({examples}); "
        f"--index {following} shows the next ones, --count N more at a time."
    )
