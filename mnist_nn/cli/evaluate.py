"""``mnist-nn evaluate`` and ``scripts/evaluate.py``: saved models on an MNIST split, as text and JSON.

One model gets the full report (counts, per-digit accuracy, confusion matrix,
confident mistakes, throughput); several get a comparison table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from mnist_nn.cli.base import (
    EXIT_OK,
    JSON_HELP,
    TTA_HELP,
    Parser,
    add_data_args,
    check_output,
    check_outputs,
    command,
    json_to_stdout,
    load_model_file,
    model_tta,
    models_dataset,
    show_progress,
    write_json_output,
)
from mnist_nn.config import NUM_CLASSES
from mnist_nn.data import Split, as_floats, load_mnist
from mnist_nn.data.datasets import DIGITS
from mnist_nn.errors import UsageError
from mnist_nn.metrics import Evaluation, evaluate_ensemble, evaluate_network
from mnist_nn.text import one_line
from mnist_nn.tta import TTA


def build_evaluate_parser(prog: str = "evaluate.py") -> argparse.ArgumentParser:
    """Arguments of ``evaluate.py`` / ``mnist-nn evaluate``."""
    parser = Parser(
        prog=prog,
        description="Evaluate saved models on an MNIST split. One model: the correct count, per-digit "
        "accuracy, the confusion matrix, the most confident mistakes and the throughput. Several: a "
        "comparison table.",
    )
    parser.add_argument("models", type=Path, nargs="+", metavar="MODEL", help="model files written by --save")
    parser.add_argument(
        "--split", choices=["test", "validation", "train"], default="test", help="the split to evaluate (default: test)"
    )
    parser.add_argument(
        "--mistakes", type=int, default=10, metavar="N", help="how many confident mistakes to list (default: 10)"
    )
    add_data_args(parser, deadline=True, dataset=True)
    parser.add_argument(
        "--other-dataset",
        action="store_true",
        help="count the models on --dataset even when they were trained on another one, on purpose (a "
        "Fashion-MNIST model on MNIST's digits, say); without it that is refused",
    )
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="also count the answers of the models together: each image's digit is the one with the highest "
        "output probability averaged over the models (needs at least 2 models)",
    )
    parser.add_argument("--tta", action="store_true", help=TTA_HELP)
    parser.add_argument("--json", type=Path, metavar="PATH", help=f"also write all results as JSON{JSON_HELP}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _print_evaluation(split: str, result: Evaluation, classes: Sequence[str], tta: TTA | None) -> None:
    print(f"{split.capitalize()}: {result.correct} / {result.total} correct ({100.0 * result.accuracy:.2f}%)")
    if tta is not None:
        print(f"  {tta.describe()}")
    print()
    if tuple(classes) == DIGITS:
        print("Per digit: " + "  ".join(f"{d}: {100.0 * a:.1f}%" for d, a in enumerate(result.per_digit)))
        print()
        print("Confusion matrix (rows: true digit, columns: predicted digit):")
    elif len(classes) > NUM_CLASSES:  # a table: one line with dozens of names would not read
        print("Per class:")
        width = max(len(c) for c in classes)
        for k, (c, a) in enumerate(zip(classes, result.per_digit, strict=True)):
            print(f"{k:>5}  {c:<{width}}  {100.0 * a:5.1f}%")
        print()
        print("Confusion matrix (rows: true class, columns: predicted class, numbered as above):")
    else:
        print(
            "Per class: " + "  ".join(f"{c}: {100.0 * a:.1f}%" for c, a in zip(classes, result.per_digit, strict=True))
        )
        print()
        print(
            "Confusion matrix (rows: true class, columns: predicted class; "
            + ", ".join(f"{i} {c}" for i, c in enumerate(classes))
            + "):"
        )
    print("     " + "".join(f"{d:>6}" for d in range(len(result.confusion))))
    for d, row in enumerate(result.confusion):
        print(f"{d:>5}" + "".join(f"{n:>6}" for n in row))
    print()
    if result.mistakes:
        print("Most confident mistakes:")
        print(f"{'index':>7} {'true':>5} {'predicted':>10} {'confidence':>11}")
        for m in result.mistakes:
            print(f"{m.index:>7} {m.label:>5} {m.predicted:>10} {m.confidence:>11.3f}")
        print()
    print(f"Throughput: {result.images_per_second:,.0f} images/s ({result.seconds * 1000:.1f} ms for {result.total})")


@command
def evaluate_main(argv: Sequence[str] | None = None, prog: str = "evaluate.py") -> int:
    """Entry point of ``scripts/evaluate.py``."""
    args = build_evaluate_parser(prog).parse_args(argv)
    json_to_stdout(args.json)
    if args.json is not None:
        check_output(args.json)
    if args.mistakes < 0:
        raise UsageError(f"--mistakes must be >= 0, got {args.mistakes}")
    models = [load_model_file(path) for path in args.models]
    data = load_mnist(
        args.data_dir,
        mirror=args.mirror,
        dtype="uint8",
        quiet=args.quiet,
        deadline=args.download_deadline,
        dataset=models_dataset(models, args.dataset, other=args.other_dataset),
    )
    check_outputs(models, data.dataset, data.classes)
    pixels: Split = getattr(data, args.split)
    split = Split(as_floats(pixels.images), pixels.labels)  # only the split evaluated becomes floats (float32)
    results = []
    for model in tqdm(
        models,
        desc="Evaluating",
        unit="model",
        disable=len(models) < 2 or not show_progress(args.quiet),
        file=sys.stderr,
    ):
        tta = model_tta(model) if args.tta else None
        results.append(evaluate_network(model.network, split.images, split.labels, top=args.mistakes, tta=tta))
    ttas = [model_tta(model) for model in models] if args.tta else []
    if args.ensemble:
        if len(models) < 2:
            raise UsageError(f"--ensemble needs at least 2 models, got {len(models)}")
        tta = TTA(mirror=all(t.mirror for t in ttas)) if args.tta else None
        networks = [m.network for m in models]
        ensemble = evaluate_ensemble(networks, split.images, split.labels, top=args.mistakes, tta=tta)
        head = f"{args.split.capitalize()} (ensemble of {len(models)})"
        print(f"{head}: {ensemble.correct} / {ensemble.total} correct ({100.0 * ensemble.accuracy:.2f}%)")
        print("  the answer of each image is the class with the highest output probability averaged over the models")
        if tta is not None:
            print(f"  {tta.describe()}")
        print()
    if len(models) == 1:
        _print_evaluation(args.split, results[0], data.classes, ttas[0] if ttas else None)
    else:
        print("| model | sizes | split | correct | accuracy |")
        print("| --- | --- | --- | --- | --- |")
        for model, result in zip(models, results, strict=True):
            sizes = "[" + ", ".join(map(str, model.network.sizes)) + "]"
            print(
                f"| {one_line(str(model.path))} | {sizes} | {args.split} | {result.correct} / {result.total} | "
                f"{100.0 * result.accuracy:.2f}% |"
            )
    if args.json is not None:
        write_json_output(
            args.json,
            [
                {
                    "model": str(model.path),
                    "sizes": list(model.network.sizes),
                    "dataset": data.dataset,
                    "classes": list(data.classes),
                    "split": args.split,
                    "epoch": model.metadata.get("epoch"),
                    "correct": result.correct,
                    "total": result.total,
                    "accuracy": result.accuracy,
                    "per_digit": result.per_digit,
                    "confusion": result.confusion,
                    "mistakes": [dataclasses.asdict(m) for m in result.mistakes],
                    "images_per_second": result.images_per_second,
                    "probabilities": model.network.probability_kind,
                    "tta": model_tta(model).describe() if args.tta else None,
                }
                for model, result in zip(models, results, strict=True)
            ],
        )
    return EXIT_OK
