"""``mnist-nn predict``: a saved model's answer for each of the user's image files."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mnist_nn.cli.base import (
    EXIT_OK,
    JSON_HELP,
    TTA_HELP,
    Parser,
    check_output,
    command,
    fail,
    json_to_stdout,
    load_model_file,
    model_tta,
    write_json_output,
)
from mnist_nn.config import IMAGE_SIDE, NUM_CLASSES
from mnist_nn.data.datasets import DIGITS
from mnist_nn.errors import ImageError, OutputError, UsageError
from mnist_nn.export import load_onnx
from mnist_nn.images import load_digit, render_digit, save_digit_png
from mnist_nn.text import describe_os_error, one_line
from mnist_nn.tta import tta_probabilities


def build_predict_parser(prog: str = "mnist-nn predict") -> argparse.ArgumentParser:
    """Arguments of ``mnist-nn predict``."""
    parser = Parser(
        prog=prog,
        description="Classify your own digit images with a saved model. Each image is prepared as MNIST "
        "itself was made: grayscale, inverted when it is dark ink on light paper, cropped to the digit, "
        "scaled to fit 20x20 and placed in 28x28 by its center of mass. PNG, JPEG, GIF, BMP, TIFF, WebP and "
        "PGM/PPM pictures need the 'images' extra (other formats, such as ICO, are refused: their size cannot "
        "be checked before decoding); .npy arrays of shape (28, 28) or (784,) work without it. Only regular "
        "files are read, never a FIFO or a device. A photo (uneven light, a page edge in the frame) first has "
        "its paper's background removed and everything but the digit's strokes set aside (needs the 'images' "
        "extra's SciPy); --show prints the 28x28 image the network sees, so you can see why an answer is wrong.",
    )
    parser.add_argument(
        "model",
        type=Path,
        metavar="MODEL",
        help="a model file written by train --save, or an ONNX file (.onnx) written by export, which "
        "ONNX Runtime runs (pip install onnxruntime); the images are prepared here either way",
    )
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files (.png, .jpg, .npy, ...)")
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help=f"also write a list of {{file, prediction, probabilities}} as JSON{JSON_HELP}",
    )
    parser.add_argument(
        "--show", action="store_true", help="print the 28x28 image the network sees for each file, as text art"
    )
    parser.add_argument("--tta", action="store_true", help=f"{TTA_HELP} (a .npz model file only)")
    parser.add_argument(
        "--save-prepared",
        type=Path,
        metavar="DIR",
        help="write the 28x28 image the network sees for each file as a PNG in DIR (NAME.png after the "
        "file's name, NAME-2.png if two files share a name; DIR is created if needed)",
    )
    return parser


def _prepared_path(folder: Path, image: Path, taken: set[str]) -> Path:
    """Where ``--save-prepared`` writes ``image``'s 28x28 digit: DIR/STEM.png, numbered when a name repeats."""
    stem = image.stem or "image"
    name, n = f"{stem}.png", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.png"
    taken.add(name)
    return folder / name


@dataclass(frozen=True)
class _Answerer:
    """What predict needs of a model: its classes, its data set, its probabilities and how they are made."""

    classes: tuple[str, ...]
    dataset: str
    kind: str  # after "Probabilities: "
    probabilities: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.floating[Any]]]
    tta: str | None = None  # what --tta averaged over, for --json


def _answerer(path: Path, tta: bool) -> _Answerer:
    """The model at ``path``: an ONNX file (``.onnx``) in ONNX Runtime, else a model file, with ``--tta``'s copies."""
    if path.suffix.lower() == ".onnx":
        if tta:
            raise UsageError("--tta needs a model file (.npz); an ONNX model answers each image as it is")
        onnx = load_onnx(path)
        return _Answerer(onnx.classes, onnx.dataset, f"{onnx.probability_kind}, by {onnx.runtime}", onnx.probabilities)
    model = load_model_file(path)
    network = model.network
    if not tta:
        return _Answerer(model.classes, model.dataset, network.probability_kind, network.probabilities)
    copies = model_tta(model)
    return _Answerer(
        model.classes,
        model.dataset,
        f"{network.probability_kind}, {copies.describe()}",
        lambda x: tta_probabilities(network, x, copies),
        copies.describe(),
    )


@command
def predict_main(argv: Sequence[str] | None = None, prog: str = "mnist-nn predict") -> int:
    """Entry point of ``mnist-nn predict``."""
    args = build_predict_parser(prog).parse_args(argv)
    json_to_stdout(args.json)
    model = _answerer(args.model, args.tta)
    if args.json is not None:
        check_output(args.json)
    if args.save_prepared is not None:
        try:
            args.save_prepared.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cannot write into {one_line(str(args.save_prepared))}: {describe_os_error(exc)}"
            ) from None
    classes = model.classes
    digits = classes == DIGITS
    results: list[dict[str, Any]] = []
    saved: set[str] = set()
    failed = 0
    for path in args.images:
        try:
            digit = load_digit(path, model.dataset)
        except ImageError as exc:  # report it and go on with the other images
            fail(prog, str(exc), exc.exit_code)
            failed += 1
            continue
        x = digit.reshape(1, -1)
        probs = model.probabilities(x)[0]
        prediction = int(np.argmax(probs))
        if not results:  # the header belongs to the answers: an error alone is one line
            print(f"Probabilities: {model.kind}")
        answer = f"{prediction}" if digits else f"{prediction} {classes[prediction]}"
        print(f"{one_line(str(path))}: {answer} ({100.0 * probs[prediction]:.1f}%)")
        if len(classes) <= NUM_CLASSES:
            print("   " + "  ".join(f"{c}: {100.0 * p:4.1f}%" for c, p in zip(classes, probs, strict=True)))
        else:  # dozens of classes: the most probable ones (--json has them all)
            top = np.argsort(-probs, kind="stable")[:NUM_CLASSES]
            shown = "  ".join(f"{classes[k]}: {100.0 * probs[k]:4.1f}%" for k in top)
            print(f"   {shown}  (the {NUM_CLASSES} most probable of {len(classes)} classes)")
        if args.show:
            print(render_digit(digit, width=2 * IMAGE_SIDE))
        if args.save_prepared is not None:
            target = _prepared_path(args.save_prepared, path, saved)
            try:
                save_digit_png(digit, target)
            except OSError as exc:
                raise OutputError(f"cannot write {one_line(str(target))}: {describe_os_error(exc)}") from None
        results.append(
            {
                "file": str(path),
                "prediction": prediction,
                "class": classes[prediction],
                "probabilities": [float(p) for p in probs],
                "tta": model.tta,
            }
        )
    if args.json is not None:
        write_json_output(args.json, results)
    return ImageError.exit_code if failed else EXIT_OK
