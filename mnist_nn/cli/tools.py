"""The tools around a trained model: ``mnist-nn predict``, ``show`` and ``plot``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_nn.cli.base import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Parser, add_data_args, command, fail, show_progress
from mnist_nn.data import Split, load_mnist
from mnist_nn.errors import ImageError
from mnist_nn.files import check_writable, write_json
from mnist_nn.models import load_model

# --- predict ----------------------------------------------------------------------------


def build_predict_parser(prog: str = "mnist-nn predict") -> argparse.ArgumentParser:
    """Arguments of ``mnist-nn predict``."""
    parser = Parser(
        prog=prog,
        description="Classify your own digit images with a saved model. Each image is prepared as MNIST "
        "itself was made: grayscale, inverted when it is dark ink on light paper, cropped to the digit, "
        "scaled to fit 20x20 and placed in 28x28 by its center of mass. PNG, JPEG and anything Pillow "
        "reads need the 'images' extra; .npy arrays of shape (28, 28) or (784,) work without it.",
    )
    parser.add_argument("model", type=Path, metavar="MODEL", help="a model file written by train --save")
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files (.png, .jpg, .npy, ...)")
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write a list of {file, prediction, probabilities} as JSON"
    )
    return parser


@command
def predict_main(argv: Sequence[str] | None = None, prog: str = "mnist-nn predict") -> int:
    """Entry point of ``mnist-nn predict``."""
    from mnist_nn.images import load_digit

    args = build_predict_parser(prog).parse_args(argv)
    model = load_model(args.model)
    if args.json is not None:
        try:
            check_writable(args.json)
        except OSError as exc:
            return fail(prog, f"cannot write {args.json}: {exc.strerror or exc}", EXIT_USAGE)
    network = model.network
    results: list[dict[str, Any]] = []
    failed = 0
    print(f"Probabilities: {network.probability_kind}")
    for path in args.images:
        try:
            digit = load_digit(path)
        except ImageError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        probs = network.probabilities(digit.reshape(1, -1))[0]
        prediction = int(np.argmax(probs))
        print(f"{path}: {prediction} ({100.0 * probs[prediction]:.1f}%)")
        print("   " + "  ".join(f"{d}: {100.0 * p:4.1f}%" for d, p in enumerate(probs)))
        results.append({"file": str(path), "prediction": prediction, "probabilities": [float(p) for p in probs]})
    if args.json is not None:
        write_json(args.json, results)
    return EXIT_USAGE if failed else EXIT_OK


# --- show -------------------------------------------------------------------------------


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
    add_data_args(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


@command
def show_main(argv: Sequence[str] | None = None, prog: str = "mnist-nn show") -> int:
    """Entry point of ``mnist-nn show``."""
    from mnist_nn.images import render_digit

    args = build_show_parser(prog).parse_args(argv)
    if args.count < 1:
        return fail(prog, f"--count must be at least 1, got {args.count}", EXIT_USAGE)
    if args.model is not None and args.mistakes is not None and args.model != args.mistakes:
        return fail(prog, "give --model or --mistakes, not two different models", EXIT_USAGE)
    model_path = args.mistakes or args.model
    network = load_model(model_path).network if model_path is not None else None
    data = load_mnist(args.data_dir, mirror=args.mirror, quiet=not show_progress(args.quiet))
    split: Split = getattr(data, args.split)
    if not 0 <= args.index < len(split):
        return fail(prog, f"--index must be between 0 and {len(split) - 1} for {args.split}, got {args.index}", 2)
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


# --- plot -------------------------------------------------------------------------------


def build_plot_parser(prog: str = "mnist-nn plot") -> argparse.ArgumentParser:
    """Arguments of ``mnist-nn plot``."""
    parser = Parser(
        prog=prog,
        description="Draw PNG figures (needs the 'plot' extra, matplotlib). From a model file: training "
        "curves, the confusion matrix and the most confident mistakes. From benchmark accuracy JSON files: "
        "test accuracy per configuration with error bars.",
    )
    parser.add_argument("inputs", type=Path, nargs="+", metavar="MODEL_OR_JSON", help="model files or benchmark JSON")
    parser.add_argument("--out", type=Path, default=Path("plots"), help="folder for the PNG files (default: plots/)")
    parser.add_argument(
        "--split", choices=["test", "validation", "train"], default="test", help="split for the confusion matrix"
    )
    add_data_args(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars or file list")
    return parser


@command
def plot_main(argv: Sequence[str] | None = None, prog: str = "mnist-nn plot") -> int:
    """Entry point of ``mnist-nn plot``."""
    from mnist_nn.plots import load_benchmark_report, plot_benchmark, plot_model

    args = build_plot_parser(prog).parse_args(argv)
    models = [p for p in args.inputs if p.suffix == ".npz"]
    reports = [p for p in args.inputs if p.suffix != ".npz"]
    written: list[Path] = []
    try:
        if reports:
            docs = [load_benchmark_report(path) for path in reports]
            written.append(plot_benchmark(docs if len(docs) > 1 else docs[0], args.out / "benchmark.png"))
        if models:
            data = load_mnist(args.data_dir, mirror=args.mirror, quiet=not show_progress(args.quiet))
            split: Split = getattr(data, args.split)
            for path in models:
                out = args.out if len(models) == 1 else args.out / path.stem
                written.extend(plot_model(path, split.images, split.labels, out, split=args.split))
    except ValueError as exc:  # malformed inputs to the figures
        return fail(prog, str(exc), EXIT_USAGE)
    except OSError as exc:
        return fail(prog, f"cannot write to {args.out}: {exc.strerror or exc}", EXIT_FAILURE)
    if not args.quiet:
        for path in written:
            print(path)
    return EXIT_OK
