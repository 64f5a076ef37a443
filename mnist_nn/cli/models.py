"""``mnist-nn models``: the saved models in a folder, newest first, with what each one is and scores."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from mnist_nn.cli.base import EXIT_OK, Parser, command, load_model_file
from mnist_nn.config import default_models_dir, dense_sizes
from mnist_nn.errors import ModelFileError, UsageError
from mnist_nn.metrics import format_count
from mnist_nn.text import one_line
from mnist_nn.train.run import layer_specs


def build_models_parser(prog: str = "mnist-nn models") -> argparse.ArgumentParser:
    """Arguments of ``mnist-nn models``."""
    parser = Parser(
        prog=prog,
        description="List the saved models (.npz) in a folder, newest first: each file's network, its served "
        "epoch and its test count, so that evaluate, predict, show and serve can be given one.",
    )
    parser.add_argument(
        "folder",
        type=Path,
        nargs="?",
        metavar="DIR",
        help=f"the folder to list (default: {default_models_dir()}, where train --save alone saves)",
    )
    return parser


@command
def models_main(argv: Sequence[str] | None = None, prog: str = "mnist-nn models") -> int:
    """Entry point of ``mnist-nn models``."""
    args = build_models_parser(prog).parse_args(argv)
    folder = args.folder if args.folder is not None else default_models_dir()
    if args.folder is not None and not folder.is_dir():
        raise UsageError(f"{one_line(str(folder))} is not a folder")
    files = sorted(
        (p for p in folder.glob("*.npz") if p.is_file() and not p.name.startswith(".")) if folder.is_dir() else [],
        key=lambda p: (p.stat().st_mtime, p.name),
        reverse=True,
    )
    if not files:
        print(f"No models in {one_line(str(folder))}; train one with: mnist-nn train --save")
        return EXIT_OK
    print(f"Models in {one_line(str(folder))}, newest first:")
    for path in files:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
        try:
            saved = load_model_file(path)
        except ModelFileError as exc:
            print(f"  {one_line(path.name)}  {when}  unreadable: {one_line(str(exc))}")
            continue
        meta = saved.metadata
        specs = layer_specs(saved.network)
        sizes = dense_sizes(specs, saved.network.input_size)
        network = f"[{', '.join(map(str, sizes))}]" if sizes is not None else " ".join(specs)
        correct, total = meta.get("test_correct"), meta.get("test_total")
        test = f"test {format_count(correct, total)}" if isinstance(correct, int) and isinstance(total, int) else ""
        epoch = f"epoch {meta['epoch']}" if isinstance(meta.get("epoch"), int) else ""
        details = ", ".join(part for part in (network, epoch, test) if part)
        print(f"  {one_line(path.name)}  {when}  {details}")
    return EXIT_OK
