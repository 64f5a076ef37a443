"""The command line: argument parsing, progress bars, printing and exit codes.

Each ``*_main(argv)`` parses its arguments, calls the package and turns the
package's errors into one line on stderr and an exit code: 2 for bad usage or
an invalid input file, 1 for other failures (such as a download that every
mirror refused). Results go to stdout; progress bars and notes to stderr.
Nothing in the package imports this module.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from tqdm import tqdm

from mnist_nn import __version__
from mnist_nn.config import IMAGE_PIXELS, NUM_CLASSES, TRAIN_SIZE, TrainConfig
from mnist_nn.errors import DataFormatError, DownloadError, MnistNNError, TrainingError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: 'prog: error: ... (see --help)'."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


class _UsageError(Exception):
    """A flag value that parses but makes no sense; exit code 2."""


def _fail(prog: str, message: str, code: int) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def _show_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mirror",
        metavar="URL_OR_DIR",
        help="try this MNIST mirror first: an http(s) or file:// URL, or a folder holding "
        "the .gz or uncompressed IDX files (default: $MNIST_NN_MIRROR, then the public mirrors)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="the download cache (default: $MNIST_NN_DATA, else the project's data/ folder)",
    )


# --- download ---------------------------------------------------------------------------


def build_download_parser(prog: str = "download_mnist.py") -> argparse.ArgumentParser:
    """Arguments of ``download_mnist.py`` / ``mnist-nn download``."""
    parser = _Parser(
        prog=prog,
        description="Download the four MNIST files, verify them against pinned SHA-256 digests "
        "and cache them. Files already in the cache are verified and reused without any network access.",
    )
    _add_data_args(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no report, only errors")
    return parser


def download_main(argv: Sequence[str] | None = None, prog: str = "download_mnist.py") -> int:
    """Entry point of ``scripts/download_mnist.py``."""
    from mnist_nn.download import ensure_mnist

    args = build_download_parser(prog).parse_args(argv)
    try:
        results = ensure_mnist(args.data_dir, mirror=args.mirror, quiet=not _show_progress(args.quiet))
    except DownloadError as exc:
        return _fail(prog, str(exc), EXIT_FAILURE)
    except OSError as exc:
        return _fail(prog, f"cannot use the data folder: {exc}", EXIT_FAILURE)
    if not args.quiet:
        for r in results:
            if r.source == "cache":
                print(f"{r.name}: already present and verified ({r.path})")
            else:
                print(f"{r.name}: downloaded from {r.source} and verified ({r.path})")
    return EXIT_OK


# --- train ------------------------------------------------------------------------------


def build_train_parser(prog: str = "train_mnist.py") -> argparse.ArgumentParser:
    """Arguments of ``train_mnist.py`` / ``mnist-nn train``."""
    d = TrainConfig()
    parser = _Parser(
        prog=prog,
        description="Train a network on MNIST by mini-batch SGD and report validation accuracy "
        "after every epoch and the test correct count at the end. The defaults are Nielsen's "
        "chapter-1 network: [784, 30, 10], sigmoid, quadratic cost, mini-batch 10, eta 3.0, 30 epochs.",
    )
    hidden = list(d.sizes[1:-1])
    parser.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        metavar="N",
        default=hidden,
        help=f"hidden layer sizes, e.g. --hidden 100 or --hidden 800 800 (default: {' '.join(map(str, hidden))})",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=d.epochs,
        help=f"passes over the training set (default: {d.epochs})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help=f"mini-batch size (default: {d.batch_size})",
    )
    parser.add_argument("--eta", type=float, default=d.eta, help=f"learning rate (default: {d.eta})")
    parser.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help=f"seed of the initial weights and the shuffles; the same seed gives the same run (default: {d.seed})",
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        default=d.dtype,
        help=f"floating-point type of training (default: {d.dtype}: as accurate, and faster)",
    )
    _add_data_args(parser)
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="also write the per-epoch history, the final counts and the configuration as JSON",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="hide progress bars and per-epoch lines; the final 'Test:' line is always printed",
    )
    return parser


def _train_config(args: argparse.Namespace) -> TrainConfig:
    """Check the flag values once, up front, and build the configuration."""
    if args.epochs < 1:
        raise _UsageError(f"--epochs must be at least 1, got {args.epochs}")
    if args.batch_size < 1 or args.batch_size > TRAIN_SIZE:
        raise _UsageError(f"--batch-size must be between 1 and {TRAIN_SIZE}, got {args.batch_size}")
    if not np.isfinite(args.eta) or args.eta <= 0:
        raise _UsageError(f"--eta must be a positive number, got {args.eta}")
    if any(n < 1 for n in args.hidden):
        raise _UsageError(f"--hidden sizes must be positive, got {' '.join(map(str, args.hidden))}")
    return TrainConfig(
        sizes=(IMAGE_PIXELS, *args.hidden, NUM_CLASSES),
        epochs=args.epochs,
        batch_size=args.batch_size,
        eta=args.eta,
        seed=args.seed,
        dtype=args.dtype,
    )


def train_main(argv: Sequence[str] | None = None, prog: str = "train_mnist.py") -> int:
    """Entry point of ``scripts/train_mnist.py``."""
    from mnist_nn.data import load_mnist
    from mnist_nn.files import check_writable, write_json
    from mnist_nn.metrics import format_count
    from mnist_nn.network import Network
    from mnist_nn.training import EpochRecord, sgd

    args = build_train_parser(prog).parse_args(argv)
    try:
        config = _train_config(args)
        if args.json is not None:
            check_writable(args.json)
    except _UsageError as exc:
        return _fail(prog, str(exc), EXIT_USAGE)
    except OSError as exc:
        return _fail(prog, f"cannot write {args.json}: {exc}", EXIT_USAGE)

    progress = _show_progress(args.quiet)
    try:
        data = load_mnist(args.data_dir, mirror=args.mirror, dtype=config.dtype, quiet=not progress)
    except DownloadError as exc:
        return _fail(prog, str(exc), EXIT_FAILURE)
    except DataFormatError as exc:
        return _fail(prog, str(exc), EXIT_USAGE)

    rng = np.random.default_rng(config.seed)
    network = Network(config.sizes, rng=rng, dtype=config.dtype, activation=config.activation, cost=config.cost)
    bar: tqdm[Any] | None = None

    def on_progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    def on_epoch(record: EpochRecord) -> None:
        nonlocal bar
        if bar is not None:
            bar.close()
        if not args.quiet:
            assert record.validation_correct is not None and record.validation_total is not None
            print(
                f"Epoch {record.epoch}/{config.epochs}: validation "
                f"{format_count(record.validation_correct, record.validation_total)}, "
                f"cost {record.train_cost:.4f}, {record.seconds:.2f} s",
                flush=True,
            )
        if progress and record.epoch < config.epochs:
            bar = tqdm(
                total=len(data.train),
                desc=f"Epoch {record.epoch + 1}/{config.epochs}",
                unit="img",
                unit_scale=True,
                leave=False,
                file=sys.stderr,
            )

    if progress:
        bar = tqdm(
            total=len(data.train),
            desc=f"Epoch 1/{config.epochs}",
            unit="img",
            unit_scale=True,
            leave=False,
            file=sys.stderr,
        )
    start = time.perf_counter()
    try:
        history = sgd(
            network,
            data.train.images,
            data.train.labels,
            epochs=config.epochs,
            batch_size=config.batch_size,
            eta=config.eta,
            rng=rng,
            validation=data.validation,
            on_epoch=on_epoch,
            on_progress=on_progress if progress else None,
        )
    except TrainingError as exc:
        return _fail(prog, str(exc), EXIT_FAILURE)
    finally:
        if bar is not None:
            bar.close()
    train_seconds = time.perf_counter() - start
    test_correct = network.count_correct(*data.test)
    test_total = len(data.test)
    last = history.epochs[-1]
    if args.json is not None:
        write_json(
            args.json,
            {
                "history": history.to_list(),
                "validation_correct": last.validation_correct,
                "validation_total": last.validation_total,
                "test_correct": test_correct,
                "test_total": test_total,
                "train_seconds": train_seconds,
                "config": config.to_dict(),
                "version": __version__,
            },
        )
    print(f"Test: {test_correct} / {test_total} correct ({100.0 * test_correct / test_total:.2f}%)")
    return EXIT_OK


def run(main: Any, argv: Sequence[str] | None = None) -> int:
    """Run a ``*_main`` so that a library error that escaped still prints one line."""
    try:
        return int(main(argv))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except MnistNNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
