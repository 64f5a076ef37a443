"""``mnist-nn plot``: PNG figures of model files (curves, confusion, mistakes) and benchmark reports."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from mnist_nn.cli.base import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    Parser,
    add_data_args,
    check_outputs,
    command,
    fail,
    load_model_file,
    models_dataset,
)
from mnist_nn.data import Split, load_mnist
from mnist_nn.plots import load_benchmark_report, load_sweep_report, plot_benchmark, plot_model, plot_sweep
from mnist_nn.text import one_line


def build_plot_parser(prog: str = "mnist-nn plot") -> argparse.ArgumentParser:
    """Arguments of ``mnist-nn plot``."""
    parser = Parser(
        prog=prog,
        description="Draw PNG figures (needs the 'plot' extra, matplotlib). From a model file: training "
        "curves, the confusion matrix and the most confident mistakes. From benchmark accuracy JSON files: "
        "test accuracy per configuration with error bars. From sweep JSON files (benchmark.py accuracy --grid "
        "... --json): accuracy against a swept value, a line per setting of the others (--x picks the value).",
    )
    parser.add_argument("inputs", type=Path, nargs="+", metavar="MODEL_OR_JSON", help="model files or benchmark JSON")
    parser.add_argument("--out", type=Path, default=Path("plots"), help="folder for the PNG files (default: plots/)")
    parser.add_argument(
        "--split", choices=["test", "validation", "train"], default="test", help="split for the confusion matrix"
    )
    parser.add_argument(
        "--x", metavar="NAME", help="for a sweep: the swept flag along the x axis (default: the first numeric one)"
    )
    add_data_args(parser, deadline=True, dataset=True)
    parser.add_argument("--quiet", action="store_true", help="no progress bars or file list")
    return parser


def _is_sweep(path: Path) -> bool:
    """Whether a JSON file is a sweep report (its own reader then says what else is wrong)."""
    try:
        with path.open(encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("action") == "sweep"


@command
def plot_main(argv: Sequence[str] | None = None, prog: str = "mnist-nn plot") -> int:
    """Entry point of ``mnist-nn plot``."""
    args = build_plot_parser(prog).parse_args(argv)
    models = [p for p in args.inputs if p.suffix == ".npz"]
    reports = [p for p in args.inputs if p.suffix != ".npz"]
    written: list[Path] = []
    try:
        sweeps = [path for path in reports if _is_sweep(path)]
        reports = [path for path in reports if path not in sweeps]
        for path in sweeps:
            name = "sweep.png" if len(sweeps) == 1 else f"sweep-{path.stem}.png"
            written.append(plot_sweep(load_sweep_report(path), args.out / name, x=args.x))
        if reports:
            docs = [load_benchmark_report(path) for path in reports]
            written.append(plot_benchmark(docs if len(docs) > 1 else docs[0], args.out / "benchmark.png"))
        if models:
            saved = [load_model_file(path) for path in models]
            dataset = models_dataset(saved, args.dataset)
            data = load_mnist(
                args.data_dir, mirror=args.mirror, quiet=args.quiet, deadline=args.download_deadline, dataset=dataset
            )
            check_outputs(saved, data.dataset, data.classes)
            split: Split = getattr(data, args.split)
            for path in models:
                out = args.out if len(models) == 1 else args.out / path.stem
                written.extend(plot_model(path, split.images, split.labels, out, split=args.split))
    except ValueError as exc:  # plots reports malformed inputs as plain ValueErrors (package errors map the same)
        return fail(prog, str(exc), EXIT_USAGE)
    except OSError as exc:
        return fail(prog, f"cannot write to {args.out}: {exc.strerror or exc}", EXIT_FAILURE)
    if not args.quiet:
        for path in written:
            print(one_line(str(path)))
    return EXIT_OK
