"""``mnist-nn export``: a saved model as a file other programs run (ONNX)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from mnist_nn.cli.base import EXIT_OK, Parser, check_output, command, load_model_file
from mnist_nn.errors import UsageError
from mnist_nn.export import EXPORT_INSTALL, OPSET, export_onnx
from mnist_nn.text import one_line


def build_export_parser(prog: str = "mnist-nn export") -> argparse.ArgumentParser:
    """Arguments of ``mnist-nn export``."""
    parser = Parser(
        prog=prog,
        description="Write a saved model as an ONNX file, which ONNX Runtime (Python, C++, C#, Java, JavaScript, "
        "the browser), OpenCV's dnn module and Netron read; mnist-nn predict reads it back through ONNX Runtime. "
        "The graph takes float32 pixels in [0, 1], (N, 784) for a dense network and (N, 1, 28, 28) for one with "
        "convolutions, applies the model's own input transform (deskewing) and gives each class's probability "
        "(output 'probabilities') and the output layer's activations ('activations'); the model's data set, "
        f"class names and recorded accuracy are metadata properties. Needs the 'export' extra: {EXPORT_INSTALL}.",
    )
    parser.add_argument("model", type=Path, metavar="MODEL", help="a model file written by train --save")
    parser.add_argument(
        "--onnx",
        type=Path,
        metavar="OUT.onnx",
        help="the ONNX file to write, atomically (an earlier file there is replaced; its folder must exist)",
    )
    return parser


def _check_target(path: Path, model: Path) -> None:
    """Refuse (UsageError, one line) an output that is a folder, in a missing folder, or the model itself."""
    where = f"--onnx {one_line(str(path))}"
    if path.is_dir():
        raise UsageError(f"{where}: is a directory, expected the .onnx file to write")
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"{where}: the folder {one_line(str(folder))} does not exist")
    try:
        same = os.path.samefile(path, model)
    except OSError:  # either is missing: not the same file
        same = False
    if same:
        raise UsageError(f"{where} is the model file itself; choose another name")
    check_output(path)


@command
def export_main(argv: Sequence[str] | None = None, prog: str = "mnist-nn export") -> int:
    """Entry point of ``mnist-nn export``."""
    args = build_export_parser(prog).parse_args(argv)
    if args.onnx is None:
        raise UsageError("nothing to write: give --onnx OUT.onnx")
    _check_target(args.onnx, args.model)
    model = load_model_file(args.model)
    size = export_onnx(model, args.onnx)
    weights = model.network.num_params
    print(
        f"Wrote {one_line(str(args.onnx))}: {size:,} bytes (ONNX opset {OPSET}; "
        f"{weights:,} weights, {4 * weights:,} bytes as float32)"
    )
    return EXIT_OK
