"""``mnist-nn export``: a saved model as a file other programs run (ONNX), or as a page that runs it (HTML)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from mnist_nn.cli.base import EXIT_OK, Parser, check_output, command, load_model_file
from mnist_nn.errors import UsageError
from mnist_nn.export import EXPORT_INSTALL, OPSET, export_onnx
from mnist_nn.export_html import check_page_exportable, export_html
from mnist_nn.text import one_line


def build_export_parser(prog: str = "mnist-nn export") -> argparse.ArgumentParser:
    """Arguments of ``mnist-nn export``."""
    parser = Parser(
        prog=prog,
        description="Write a saved model as an ONNX file, which ONNX Runtime (Python, C++, C#, Java, JavaScript, "
        "the browser), OpenCV's dnn module and Netron read, or as one HTML file that classifies what you draw "
        "with no server, or both. mnist-nn predict reads the ONNX file back through ONNX Runtime. "
        "The graph takes float32 pixels in [0, 1], (N, 784) for a dense network and (N, 1, 28, 28) for one with "
        "convolutions, applies the model's own input transform (deskewing) and gives each class's probability "
        "(output 'probabilities') and the output layer's activations ('activations'); the model's data set, "
        f"class names and recorded accuracy are metadata properties. ONNX needs the 'export' extra: {EXPORT_INSTALL}. "
        "The page is mnist-nn serve's page with the model inside (its weights as float32, in base64): it prepares "
        "a drawing as serve does and runs the network in JavaScript, fetching nothing; open it from disk.",
    )
    parser.add_argument("model", type=Path, metavar="MODEL", help="a model file written by train --save")
    parser.add_argument(
        "--onnx",
        type=Path,
        metavar="OUT.onnx",
        help="the ONNX file to write, atomically (an earlier file there is replaced; its folder must exist)",
    )
    parser.add_argument(
        "--html",
        type=Path,
        metavar="OUT.html",
        help="the single-file page to write, atomically (an earlier file there is replaced; its folder must exist)",
    )
    return parser


def _check_target(flag: str, path: Path, model: Path) -> None:
    """Refuse (UsageError, one line) an output that is -, a folder, in a missing folder, or the model itself."""
    where = f"{flag} {one_line(str(path))}"
    if str(path) == "-":
        raise UsageError(f"{where}: the export is not written to standard output; name the file to write")
    if path.is_dir():
        raise UsageError(f"{where}: is a directory, expected the .{flag[2:]} file to write")
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


def _check_targets(onnx: Path | None, page: Path | None, model: Path) -> None:
    """Refuse no output at all, one path for both, and each output as ``_check_target`` does."""
    if onnx is None and page is None:
        raise UsageError("nothing to write: give --onnx OUT.onnx, --html OUT.html or both")
    if onnx is not None and page is not None and _same_file(onnx, page):
        raise UsageError(f"--onnx and --html name the same file, {one_line(str(page))}; choose two names")
    for flag, path in (("--onnx", onnx), ("--html", page)):
        if path is not None:
            _check_target(flag, path, model)


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same path, or two names of an existing file."""
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing: not the same file
        return False


@command
def export_main(argv: Sequence[str] | None = None, prog: str = "mnist-nn export") -> int:
    """Entry point of ``mnist-nn export``."""
    args = build_export_parser(prog).parse_args(argv)
    _check_targets(args.onnx, args.html, args.model)
    model = load_model_file(args.model)
    weights = model.network.num_params
    if args.html is not None:
        check_page_exportable(model.network)  # before the ONNX file is written: both or neither
    if args.onnx is not None:
        size = export_onnx(model, args.onnx)
        print(
            f"Wrote {one_line(str(args.onnx))}: {size:,} bytes (ONNX opset {OPSET}; "
            f"{weights:,} weights, {4 * weights:,} bytes as float32)"
        )
    if args.html is not None:
        size = export_html(model, args.html)
        print(
            f"Wrote {one_line(str(args.html))}: {size:,} bytes (a single-file page; "
            f"{weights:,} weights, {4 * weights:,} bytes as float32, in base64)"
        )
    return EXIT_OK
