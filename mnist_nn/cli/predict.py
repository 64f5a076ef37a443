"""``mnist-nn predict``: a saved model's answer for each of the user's image files."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_nn.cli.base import (
    EXIT_OK,
    Parser,
    check_output,
    command,
    fail,
    write_json_output,
)
from mnist_nn.errors import ImageError
from mnist_nn.images import load_digit
from mnist_nn.models import load_model
from mnist_nn.text import one_line


def build_predict_parser(prog: str = "mnist-nn predict") -> argparse.ArgumentParser:
    """Arguments of ``mnist-nn predict``."""
    parser = Parser(
        prog=prog,
        description="Classify your own digit images with a saved model. Each image is prepared as MNIST "
        "itself was made: grayscale, inverted when it is dark ink on light paper, cropped to the digit, "
        "scaled to fit 20x20 and placed in 28x28 by its center of mass. PNG, JPEG, GIF, BMP, TIFF, WebP and "
        "PGM/PPM pictures need the 'images' extra (other formats, such as ICO, are refused: their size cannot "
        "be checked before decoding); .npy arrays of shape (28, 28) or (784,) work without it. Only regular "
        "files are read, never a FIFO or a device.",
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
    args = build_predict_parser(prog).parse_args(argv)
    model = load_model(args.model)
    if args.json is not None:
        check_output(args.json)
    network = model.network
    results: list[dict[str, Any]] = []
    failed = 0
    print(f"Probabilities: {network.probability_kind}")
    for path in args.images:
        try:
            digit = load_digit(path)
        except ImageError as exc:  # report it and go on with the other images
            fail(prog, str(exc), exc.exit_code)
            failed += 1
            continue
        probs = network.probabilities(digit.reshape(1, -1))[0]
        prediction = int(np.argmax(probs))
        print(f"{one_line(str(path))}: {prediction} ({100.0 * probs[prediction]:.1f}%)")
        print("   " + "  ".join(f"{d}: {100.0 * p:4.1f}%" for d, p in enumerate(probs)))
        results.append({"file": str(path), "prediction": prediction, "probabilities": [float(p) for p in probs]})
    if args.json is not None:
        write_json_output(args.json, results)
    return ImageError.exit_code if failed else EXIT_OK
