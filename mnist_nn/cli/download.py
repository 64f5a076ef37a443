"""``mnist-nn download`` and ``scripts/download_mnist.py``: fetch, verify and cache a data set's four files."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from mnist_nn.cli.base import (
    EXIT_OK,
    Parser,
    add_data_args,
    command,
)
from mnist_nn.config import DATA_ENV, project_root
from mnist_nn.data.datasets import MNIST, ensure_dataset
from mnist_nn.data.datasets import dataset as get_dataset
from mnist_nn.data.folder import is_folder
from mnist_nn.errors import UsageError
from mnist_nn.text import one_line


def build_download_parser(prog: str = "download_mnist.py") -> argparse.ArgumentParser:
    """Arguments of ``download_mnist.py`` / ``mnist-nn download``."""
    parser = Parser(
        prog=prog,
        description="Download the four files of MNIST (or --dataset), verify them against pinned SHA-256 "
        "digests and cache them. Files already in the cache are verified and reused without any network access.",
    )
    add_data_args(parser, deadline=True, dataset=True)
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no report, only errors")
    return parser


@command
def download_main(argv: Sequence[str] | None = None, prog: str = "download_mnist.py") -> int:
    """Entry point of ``scripts/download_mnist.py``."""
    args = build_download_parser(prog).parse_args(argv)
    if args.dataset is not None and is_folder(args.dataset):
        raise UsageError(
            f"--dataset {one_line(args.dataset)}: a folder's files are read where they are; nothing to download"
        )
    data = get_dataset(args.dataset or MNIST.name)
    results = ensure_dataset(data, args.data_dir, mirror=args.mirror, quiet=args.quiet, deadline=args.download_deadline)
    if not args.quiet:
        for r in results:
            if r.source == "cache":
                print(f"{r.name}: already present and verified ({one_line(str(r.path))})")
            else:
                print(f"{r.name}: downloaded from {one_line(r.source)} and verified ({one_line(str(r.path))})")
        folder = results[0].path.parent if results else None
        if folder is not None:
            print(f"{data.title} is in {one_line(str(folder))}{_whose(args.data_dir)}")
    return EXIT_OK


def _whose(data_dir: Path | None) -> str:
    """What kind of folder the data went to, when the user did not choose it with --data-dir."""
    if data_dir is not None:
        return ""
    if os.environ.get(DATA_ENV):
        return f" (${DATA_ENV})"
    if project_root() is not None:
        return " (this checkout's data/ folder; --data-dir or $MNIST_NN_DATA moves it)"
    return " (the per-user cache, shared wherever mnist-nn runs; --data-dir or $MNIST_NN_DATA moves it)"
