"""``mnist-nn train`` and ``scripts/train_mnist.py``: flags to a ``TrainConfig``, the run, its files.

This module owns the training flags, resuming from a model file (every part
of it checked first), the progress bar and per-epoch lines, saving (at the
end, at checkpoints and after a stop: Ctrl-C, SIGTERM or diverged weights;
a signal never interrupts a save in progress, and one training at a time
saves to a path) and the ``--json`` and ``--plot`` outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mnist_nn._version import __version__
from mnist_nn.cli.base import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    JSON_HELP,
    Parser,
    add_data_args,
    check_output,
    command,
    dataset_classes,
    fail,
    json_to_stdout,
    show_progress,
    write_json_output,
)
from mnist_nn.config import (
    IMAGE_PIXELS,
    NUM_CLASSES,
    PRESET_DATASETS,
    PRESETS,
    TrainConfig,
    default_data_dir,
    default_models_dir,
    dense_sizes,
)
from mnist_nn.data import MnistData, load_mnist
from mnist_nn.data.datasets import DATASETS, MNIST
from mnist_nn.data.datasets import dataset as get_dataset
from mnist_nn.data.folder import is_folder
from mnist_nn.errors import ModelFileError, PlotError, TerminatedError, TrainingError, UsageError
from mnist_nn.files import PathLock
from mnist_nn.metrics import format_count
from mnist_nn.models import SavedModel, load_model
from mnist_nn.nn.activations import HIDDEN_ACTIVATIONS
from mnist_nn.nn.costs import COSTS
from mnist_nn.nn.layers import INITS
from mnist_nn.nn.network import layer_sizes
from mnist_nn.nn.specs import layer_from_spec
from mnist_nn.nn.transforms import TRANSFORMS
from mnist_nn.plots import plot_training_curves, require_matplotlib
from mnist_nn.text import one_line, short
from mnist_nn.train import checkpoint
from mnist_nn.train.augment import parse_augment
from mnist_nn.train.history import EpochRecord
from mnist_nn.train.loop import fit
from mnist_nn.train.prefetch import MIN_ROWS
from mnist_nn.train.run import Run
from mnist_nn.train.schedules import SCHEDULES
from mnist_nn.train.validation import count_in_chunks


def add_training_args(parser: argparse.ArgumentParser, *, seed: bool = True) -> argparse._ArgumentGroup:
    """Add the training flags (--preset, --hidden or --layers, --epochs, ..., --expand) to ``parser`` as one group.

    ``train_mnist.py`` and ``benchmark.py accuracy`` take them from this one
    definition, so anything that can be trained can be benchmarked. Every
    flag defaults to None (not given): ``config_from_args`` applies the
    given ones to a preset. A benchmark runs several seeds of its own and
    leaves --seed out (``seed=False``).

    Returns:
        The group, whose actions are the training flags.
    """
    group = parser.add_argument_group(
        "training", "what to train; flags not given take the --preset's values (nielsen-ch1 by default)"
    )
    _add_network_flags(group)
    _add_step_flags(group, seed=seed)
    _add_regularization_flags(group)
    _add_data_flags(group)
    return group


def _add_network_flags(group: argparse._ArgumentGroup) -> None:
    """--preset, and the network: --hidden or --layers."""
    d = TrainConfig()
    described = "; ".join(f"{name}: {preset.describe()}" for name, preset in PRESETS.items())
    group.add_argument(
        "--preset",
        type=_preset_name,
        metavar="NAME",
        help="start from a named configuration (default: nielsen-ch1); flags given beside it override it. "
        f"The presets: {described}",
    )
    hidden = " ".join(spec.removeprefix("dense") for spec in d.layers[:-1])
    shape = group.add_mutually_exclusive_group()
    shape.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        metavar="N",
        help=f"hidden layer sizes, e.g. --hidden 100 or --hidden 800 800 (default: {hidden}); "
        "a shorthand for --layers dense100 dense10 (the outputs: one per class of the data set, dense26 for 26)",
    )
    shape.add_argument(
        "--layers",
        nargs="+",
        metavar="SPEC",
        help="the layers, input side first, each conv<F>x<K>[p<P>] (F feature maps of KxK kernels, stride 1, "
        "P rows and columns of zeros around the input: none by default, p1 keeps a 3x3's maps the input's size), "
        "pool<P> (PxP max-pooling), avgpool<P> (PxP average pooling), dropout<rate> (drops each "
        "value entering it with probability rate in training), bn (batch normalization: the layer below stays "
        "linear, bn normalizes each of its features over the mini-batch and applies the activation) or "
        "dense<N> (N neurons), ending with dense10 (one output per class of the data set: dense26 for 26), e.g. "
        "--layers conv20x5 pool2 conv40x5 pool2 dense100 dense10 (Nielsen's chapter 6). With convolutions "
        "and no --preset, the flags not given default to --activation relu --cost log-likelihood --eta 0.03 "
        "--init he, as in the book's chapter 6 (the chapter-1 defaults leave a convolutional network at chance)",
    )


def _add_step_flags(group: argparse._ArgumentGroup, *, seed: bool) -> None:
    """How each step trains: epochs, mini-batch, eta, seed, dtype, activation, cost, initialization."""
    d = TrainConfig()
    group.add_argument("--epochs", type=int, help=f"total passes over the training set (default: {d.epochs})")
    group.add_argument("--batch-size", type=int, help=f"mini-batch size (default: {d.batch_size})")
    group.add_argument("--eta", type=float, help=f"learning rate (default: {d.eta})")
    if seed:
        group.add_argument(
            "--seed",
            type=int,
            help=f"seed of the initial weights and the shuffles; the same seed gives the same run (default: {d.seed})",
        )
    group.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        help=f"floating-point type of training (default: {d.dtype}: as accurate, and faster)",
    )
    group.add_argument(
        "--activation", choices=sorted(HIDDEN_ACTIVATIONS), help=f"hidden layers' activation (default: {d.activation})"
    )
    group.add_argument(
        "--cost",
        choices=sorted(COSTS),
        help=f"cost function; log-likelihood gives softmax outputs, the others sigmoid outputs (default: {d.cost})",
    )
    group.add_argument(
        "--init",
        choices=INITS,
        help="weight initialization: normal (N(0, 1), Nielsen ch. 1), scaled (N(0, 1/n_in), ch. 3), "
        "he (N(0, 2/n_in), for ReLU), glorot, or fan-out (N(0, 1/n_out), softmax layer 0, ch. 6) "
        f"(default: {d.init}; for --layers with convolutions, he "
        "with ReLU and scaled otherwise, since N(0, 1) weights saturate a convolutional network from the start)",
    )


def _add_regularization_flags(group: argparse._ArgumentGroup) -> None:
    """L2, dropout, momentum, the schedule and early stopping."""
    group.add_argument(
        "--l2",
        type=float,
        metavar="LAMBDA",
        help="L2 regularization lambda, Nielsen's convention: w -> (1 - eta*lambda/n) w each step (default: 0)",
    )
    group.add_argument(
        "--dropout", type=float, metavar="P", help="drop each hidden neuron with probability P in training (default: 0)"
    )
    group.add_argument(
        "--input-dropout",
        type=float,
        metavar="P",
        help="drop each input pixel with probability P in training (default: 0)",
    )
    group.add_argument(
        "--label-smoothing",
        type=float,
        metavar="S",
        help="label smoothing: train towards 1 - S + S/K for the true class and S/K for each other of the K "
        "classes, not 1 and 0, with the log-likelihood or cross-entropy cost (default: 0, off; 0.1 is usual)",
    )
    group.add_argument(
        "--ema",
        type=float,
        metavar="D",
        help="keep a moving average of the weights, a -> D a + (1 - D) w after every step, and validate, serve "
        "and save it in place of the weights themselves (default: 0, off; 0.999 is usual)",
    )
    group.add_argument("--momentum", type=float, metavar="MU", help="momentum coefficient (default: 0, plain SGD)")
    group.add_argument(
        "--nesterov", action="store_true", default=None, help="use Nesterov's momentum instead of the classical one"
    )
    group.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="learning-rate schedule: constant, plateau (halve eta when validation stalls for "
        "--schedule-patience epochs; stop below eta/128, as network2) or cosine, each epoch at one rate; or, "
        "changing every step, cosine-steps (the cosine step by step) or one-cycle (a half cosine up from eta/25 "
        "to eta over the first 30%% of the steps, then down to eta/250,000) (default: constant)",
    )
    group.add_argument(
        "--schedule-patience", type=int, metavar="N", help="epochs without improvement before plateau halves eta (5)"
    )
    group.add_argument(
        "--early-stopping",
        type=int,
        metavar="N",
        help="stop after N epochs without validation improvement; the best epoch's weights are kept (default: off)",
    )


def _add_data_flags(group: argparse._ArgumentGroup) -> None:
    """What the images go through: the input transform, augmentation, the expanded set."""
    group.add_argument(
        "--preprocess",
        choices=["none", *sorted(TRANSFORMS)],
        help="transform every image, training and test alike, before the first layer: deskew straightens "
        "slanted digits and centers them (default: none)",
    )
    group.add_argument(
        "--augment",
        metavar="SPEC",
        help="distort the training images every epoch: 'default', or keys such as "
        "'shift=2,rotate=10,scale=0.1,elastic=8:4' (see README), for clothes 'flip=0.5' to mirror about "
        "half the images left-right, and 'erase=0.5' to replace a random rectangle of about half the images "
        "by noise; 'none' turns it off",
    )
    group.add_argument(
        "--expand",
        action="store_true",
        default=None,
        help="train on every image and its four one-pixel shifts, 250,000 images an epoch "
        "(Nielsen's expanded training set, chapter 6)",
    )


def _preset_name(name: str) -> str:
    """argparse type of --preset: a preset's name; a mistyped one is refused with the nearest names."""
    if name in PRESETS:
        return name
    near = difflib.get_close_matches(name, PRESETS, n=2, cutoff=0.5)
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    raise argparse.ArgumentTypeError(f"no preset {name!r}{hint}")


def build_train_parser(prog: str = "train_mnist.py") -> argparse.ArgumentParser:
    """Arguments of ``train_mnist.py`` / ``mnist-nn train``."""
    parser = Parser(
        prog=prog,
        description="Train a network on MNIST by mini-batch SGD and report validation accuracy "
        "after every epoch and the test correct count at the end. The defaults are Nielsen's "
        "chapter-1 network: [784, 30, 10], sigmoid, quadratic cost, mini-batch 10, eta 3.0, 30 epochs. "
        "The weights of the epoch with the best validation count are the ones tested and saved.",
    )
    add_training_args(parser)
    add_data_args(parser, deadline=True, dataset=True)
    parser.add_argument(
        "--save",
        type=Path,
        nargs="?",
        const=_DEFAULT_SAVE,
        metavar="PATH",
        help=f"save the model (.npz) after training; without PATH, {default_models_dir() / 'mnist-SIZES-seedSEED.npz'} "
        "(e.g. mnist-784-30-10-seed12345.npz); with --resume, the resumed file unless PATH is given. "
        "Written atomically; an unwritable path, or one another training is saving to, "
        "is reported before training starts",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help="also write the --save file every N epochs, with what --resume needs to continue "
        "exactly after a crash (default: only at the end)",
    )
    parser.add_argument(
        "--save-last",
        action=argparse.BooleanOptionalAction,
        help="serve, test and save the last epoch's weights instead of the best validation epoch's "
        "(--no-save-last: the best's, the default). A resumed run keeps the rule it was saved with "
        "unless one of the two is given; a checkpoint holds the weights either rule needs",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="PATH",
        help="continue the run saved in PATH with its configuration, up to --epochs in total, "
        "exactly as if it had not stopped; saved back to PATH unless --save says where",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help=f"also write the per-epoch history, the final counts and the configuration as JSON{JSON_HELP}",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="DIR",
        help="write the training curves (curves.png) into DIR at the end (needs the 'plot' extra)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="hide progress bars and per-epoch lines; the final 'Test:' line is always printed",
    )
    parser.add_argument(
        "--no-helper",
        dest="helper",
        action="store_false",
        help="train in this one process. By default, on Linux, when this process may use two CPUs and "
        f"the training set has at least {MIN_ROWS:,} images, a helper process gathers each epoch's "
        "shuffled rows on the second CPU while the steps run (and, where OPENBLAS_NUM_THREADS=1, counts "
        "half the validation set); the results are the same either way",
    )
    return parser


_DEFAULT_SAVE = Path("<default>")
_TRAIN_FLAGS = (
    "epochs",
    "batch_size",
    "eta",
    "seed",
    "dtype",
    "activation",
    "cost",
    "init",
    "l2",
    "dropout",
    "input_dropout",
    "momentum",
    "nesterov",
    "schedule",
    "schedule_patience",
    "early_stopping",
    "preprocess",
    "augment",
    "expand",
    "label_smoothing",
    "ema",
)


def config_from_args(
    args: argparse.Namespace, base: TrainConfig, *, classes: int = NUM_CLASSES, dataset: str = MNIST.name
) -> TrainConfig:
    """Apply the training flags given (``add_training_args``) to ``base``, checking their values once, up front.

    The network has one output per class of ``dataset`` (``classes`` of them): --hidden ends it
    with dense<classes>, --layers must end with it, and without either the last layer of ``base``
    (a preset's dense10) becomes it.

    Raises:
        ConfigError: a value out of range (``command`` names the flag).
        UsageError: --layers or --augment that cannot work.
    """
    changes: dict[str, Any] = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k, None) is not None}
    outputs = f"dense{classes}"
    if args.hidden is not None:
        if any(n < 1 for n in args.hidden):
            raise UsageError(f"--hidden sizes must be positive, got {' '.join(map(str, args.hidden))}")
        changes["layers"] = (*(f"dense{n}" for n in args.hidden), outputs)
    if getattr(args, "layers", None) is not None:
        changes.update(_layers(args.layers, classes, dataset))
        changes.update(convolution_defaults(args, base))
    elif args.hidden is None and base.layers[-1] != outputs:
        changes["layers"] = (*base.layers[:-1], outputs)
    if changes.get("preprocess") == "none":
        changes["preprocess"] = ""
    config = dataclasses.replace(base, **changes)  # ConfigError: ``command`` names the flag
    if config.augment:
        try:
            spec = parse_augment(config.augment)
        except ValueError as exc:
            raise UsageError(f"--augment: {exc}") from None
        config = dataclasses.replace(config, augment="" if spec.is_identity else spec.to_spec())
    return config


CHANCE_EPOCHS = 2  # after this many epochs, a validation accuracy under chance_level(classes) is said to be chance


def chance_level(classes: int) -> float:
    """Twice what guessing one of ``classes`` scores: 0.2 for ten digits; at most 0.6 (guessing one of two: 0.5)."""
    return min(2.0 / classes, 0.6)


# What a network with convolutions trains with when it starts from the chapter-1 defaults, whose
# sigmoid, quadratic cost and eta 3.0 leave it at chance level (Nielsen's chapter 6 uses these).
CONVOLUTION_DEFAULTS = {"activation": "relu", "cost": "log-likelihood", "eta": 0.03}


def convolution_defaults(args: argparse.Namespace, base: TrainConfig) -> dict[str, Any]:
    """The settings --layers with convolutions takes in place of the chapter-1 defaults, for the flags not given.

    Only a run from the chapter-1 defaults (no --preset, or nielsen-ch1) gets
    them: ReLU, the log-likelihood cost, eta 0.03, and He's initialization
    for ReLU (scaled otherwise).
    """
    specs = getattr(args, "layers", None)
    if not specs or all(spec.startswith("dense") for spec in specs) or base != PRESETS["nielsen-ch1"]:
        return {}
    chosen = {flag: value for flag, value in CONVOLUTION_DEFAULTS.items() if getattr(args, flag, None) is None}
    if args.init is None:
        activation = args.activation or chosen.get("activation", base.activation)
        chosen["init"] = "he" if activation == "relu" else "scaled"
    return chosen


def _layers(specs: list[str], classes: int, dataset: str) -> dict[str, Any]:
    """``layers`` for --layers, checked: specs that parse, chain and end with one output per class."""
    if specs[-1] != f"dense{classes}":
        what = f"class of {one_line(dataset)}" if is_folder(dataset) else "digit"
        raise UsageError(f"--layers must end with dense{classes} (one output per {what}), got {specs[-1]}")
    try:
        layer_sizes([layer_from_spec(spec) for spec in specs], IMAGE_PIXELS)
    except ValueError as exc:
        raise UsageError(f"--layers: {exc}") from None
    return {"layers": tuple(specs)}


def _resumed_run(args: argparse.Namespace, saved: SavedModel) -> Run:
    """The run saved in a model file (``checkpoint.resume_run``), with a new --epochs or --save-last if given.

    Any other training flag must leave the saved configuration as it is: a
    flag is compared by the configuration it makes, not by being given.
    """
    stored = checkpoint.saved_config(saved)
    config = config_from_args(args, stored, classes=saved.network.sizes[-1], dataset=saved.dataset)
    changed = checkpoint.changed_settings(stored, config)
    if changed:
        raise UsageError(
            "--resume continues the saved configuration; only --epochs and --save-last may change, "
            f"not {', '.join(changed)}"
        )
    try:
        return checkpoint.resume_run(saved, config, keep_last=args.save_last)
    except ModelFileError:
        raise
    except ValueError as exc:  # what was asked of the run does not fit it
        raise UsageError(f"--resume: {exc}") from None


def _check_outputs(args: argparse.Namespace, save_path: Path | None) -> None:
    """Refuse (UsageError) what would fail only after training: checkpoints without a file, plots
    without matplotlib, a file that cannot be written."""
    if args.checkpoint_every is not None:
        if args.checkpoint_every < 1:
            raise UsageError(f"--checkpoint-every must be at least 1, got {args.checkpoint_every}")
        if save_path is None:
            raise UsageError("--checkpoint-every needs --save PATH: checkpoints are written there")
    if args.plot is not None:
        try:
            require_matplotlib()
        except PlotError as exc:
            raise UsageError(f"--plot: {exc}") from None
    for path in (save_path, args.json, args.plot / "curves.png" if args.plot else None):
        if path is not None:
            check_output(path)


def _default_model_path(config: TrainConfig, dataset: str) -> Path:
    sizes = dense_sizes(config.layers, config.inputs)
    network = "-".join(map(str, sizes)) if sizes is not None else "-".join(config.layers)
    return default_models_dir() / f"{dataset}-{network}-seed{config.seed}.npz"


def _resumed_dataset(given: str | None, saved: SavedModel) -> str:
    """The data set a resumed run trains on: its own; a different --dataset is refused."""
    own = saved.dataset
    if own not in DATASETS and not is_folder(own):
        raise ModelFileError(one_line(f"{saved.path}: cannot resume: metadata 'dataset' is {short(own)}"))
    if given is not None and given != own:
        raise UsageError(f"--dataset {given}: {one_line(str(saved.path))} trains on {own}; resume it without --dataset")
    return own


class _EpochReport:
    """What a run shows as it trains: a progress bar per epoch, a line after each, a warning at chance level."""

    def __init__(self, prog: str, total: int, images: int, *, quiet: bool, bars: bool) -> None:
        self.prog, self.total, self.images, self.quiet, self.bars = prog, total, images, quiet, bars
        self.bar: tqdm[Any] | None = None

    def new_bar(self, epoch: int) -> None:
        """The bar of ``epoch``, when bars are shown and the run has that epoch."""
        if self.bars and epoch <= self.total:
            self.bar = tqdm(
                total=self.images,
                desc=f"Epoch {epoch}/{self.total}",
                unit="img",
                unit_scale=True,
                leave=False,
                file=sys.stderr,
            )

    def progress(self, done: int, n: int) -> None:
        """``fit``'s progress callback: examples done of n."""
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        """Close the current bar, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def epoch_done(self, record: EpochRecord, run: Run) -> None:
        """The line after an epoch, the chance-level warning after ``CHANCE_EPOCHS``, the next epoch's bar."""
        self.close()
        if not self.quiet and record.validation_correct is not None and record.validation_total:
            print(
                f"Epoch {record.epoch}/{self.total}: validation "
                f"{format_count(record.validation_correct, record.validation_total)}, "
                f"cost {record.train_cost:.4f}, {record.seconds:.2f} s",
                flush=True,
            )
        accuracy = record.validation_accuracy
        chance = chance_level(run.network.sizes[-1])
        if record.epoch == CHANCE_EPOCHS and accuracy is not None and accuracy < chance and not self.quiet:
            hint = (
                ""
                if dense_sizes(run.config.layers)
                else "; convolutions train with --activation relu --cost log-likelihood"
            )
            print(
                f"{self.prog}: warning: validation is at chance level ({100 * accuracy:.2f}%) after {record.epoch} "
                f"epochs: the network is not learning; try a lower --eta, or --init scaled{hint}",
                file=sys.stderr,
            )
        self.new_bar(record.epoch + 1)


class _StopSignals:
    """SIGINT and SIGTERM during a training run, which never interrupt a save.

    While ``installed``, a signal is recorded in ``pending``. Inside
    ``interruptible`` (the training loop) it also stops training at once, as
    KeyboardInterrupt or TerminatedError, except inside ``held`` (a checkpoint
    being written), where it waits until the file is complete. Outside the
    loop (saving at the end, or what was reached after a stop) it only
    records: the command finishes the save, then exits with the signal's code.
    """

    def __init__(self) -> None:
        self.pending: int | None = None
        self._interruptible = False
        self._held = 0

    def _handle(self, signum: int, frame: Any) -> None:
        if self.pending is None:
            self.pending = signum
        if self._interruptible and not self._held:
            self._stop()

    def _stop(self) -> None:
        self._interruptible = False  # one stop is enough: saving what was reached then runs to its end
        if self.pending == signal.SIGINT:
            raise KeyboardInterrupt
        raise TerminatedError

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM (in the main thread; elsewhere signals are left alone)."""
        try:
            previous = {signum: signal.signal(signum, self._handle) for signum in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread
            yield
            return
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A stretch where a signal stops at once (outside ``held``)."""
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """A save: a signal that arrives during it stops only once it is written."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
        if self.pending is not None and self._interruptible and not self._held:
            self._stop()


def _stop_words(signum: int) -> tuple[str, int]:
    """How a stop by ``signum`` is told, and its exit code."""
    if signum == signal.SIGINT:
        return "interrupted", EXIT_INTERRUPTED
    return "terminated", TerminatedError.exit_code


@command
def train_main(argv: Sequence[str] | None = None, prog: str = "train_mnist.py") -> int:
    """Entry point of ``scripts/train_mnist.py``."""
    args = build_train_parser(prog).parse_args(argv)
    json_to_stdout(args.json)
    # Every flag, the run to resume and every output file are checked before the data is loaded.
    saved = load_model(args.resume) if args.resume is not None else None
    resumed = None
    if saved is not None:
        resumed = _resumed_run(args, saved)
        config = resumed.config
        args.dataset = _resumed_dataset(args.dataset, saved)
    else:
        args.dataset = args.dataset or PRESET_DATASETS.get(args.preset or "", MNIST.name)
        classes = len(dataset_classes(args.dataset))
        base = PRESETS[args.preset or "nielsen-ch1"]
        config = config_from_args(args, base, classes=classes, dataset=args.dataset)
        chosen = convolution_defaults(args, base)
        if chosen and not args.quiet:
            flags = " ".join(
                f"--{name} {value:g}" if name == "eta" else f"--{name} {value}" for name, value in chosen.items()
            )
            print(f"Convolutions train with {flags} here (give a flag to choose otherwise)", file=sys.stderr)
        if config.layers[-1] != base.layers[-1] and args.hidden is None and args.layers is None and not args.quiet:
            print(
                f"{one_line(args.dataset)} has {classes} classes: the network ends with {config.layers[-1]} "
                f"in place of the preset's {base.layers[-1]} (--hidden or --layers choose otherwise)",
                file=sys.stderr,
            )
    save_path = _default_model_path(config, args.dataset) if args.save == _DEFAULT_SAVE else args.save
    if save_path is None and args.resume is not None:
        save_path = args.resume  # a resumed run goes back where it came from, unless --save says otherwise
    _check_outputs(args, save_path)
    # A model already at the path, other than the run being resumed, is replaced: the save says so.
    replacing = save_path is not None and save_path.is_file() and save_path != args.resume
    # One training at a time saves to a path: a second one is refused while the first runs.
    with PathLock(save_path) if save_path is not None else contextlib.nullcontext():
        return _train(prog, args, config, resumed, save_path, replacing)


def _train(
    prog: str,
    args: argparse.Namespace,
    config: TrainConfig,
    resumed: Run | None,
    save_path: Path | None,
    replacing: bool = False,
) -> int:
    """Load the data, train (or continue) the run, save it and report; returns the exit code."""
    progress = show_progress(args.quiet)
    # The files' pixels, not floats: fit scales the training images straight into its buffer and
    # the others when they are counted, so no full-size float copy is ever made.
    # A named data set's first download says where it went; a folder's files are read where they are.
    named = None if is_folder(args.dataset) else get_dataset(args.dataset)
    folder = named.cache_dir(args.data_dir or default_data_dir()) if named is not None else None
    first_time = named is not None and folder is not None and not all((folder / f.name).is_file() for f in named.files)
    data = load_mnist(
        args.data_dir,
        mirror=args.mirror,
        dtype="uint8",
        quiet=args.quiet,
        deadline=args.download_deadline,
        dataset=args.dataset,
    )
    if first_time and named is not None and not args.quiet:
        print(f"{named.title} downloaded and verified into {one_line(str(folder))}", file=sys.stderr)
    run = resumed if resumed is not None else Run.start(config, keep_last=bool(args.save_last))
    outputs = run.network.sizes[-1]
    if outputs != len(data.classes):  # a folder whose classes.txt changed since the run was saved
        raise UsageError(
            f"{one_line(data.dataset)} has {len(data.classes)} classes, but the network has {outputs} outputs"
        )
    if resumed is not None and not args.quiet:
        where = "back to it" if save_path == args.resume else f"to {one_line(str(save_path))}"
        serves = "its last epoch (--save-last)" if run.keep_last else "its best epoch (--no-save-last)"
        print(
            f"Resuming {one_line(str(args.resume))} after epoch {run.epochs_completed} of {run.config.epochs}, "
            f"serving {serves}; saving {where}",
            file=sys.stderr,
        )

    stops = _StopSignals()
    report = _EpochReport(prog, run.config.epochs, len(data.train), quiet=args.quiet, bars=progress)

    def on_epoch(record: EpochRecord, run: Run) -> None:
        report.epoch_done(record, run)
        if save_path is not None and args.checkpoint_every and record.epoch % args.checkpoint_every == 0:
            with stops.held():
                checkpoint.save_run(save_path, run, data, status="checkpoint")

    report.new_bar(run.epochs_completed + 1)
    start = time.perf_counter()
    with stops.installed():
        try:
            with stops.interruptible():
                fit(
                    run,
                    *data.train,
                    validation=data.validation,
                    on_epoch=on_epoch,
                    on_progress=report.progress,
                    helper=None if args.helper else False,
                )
        except (KeyboardInterrupt, TerminatedError) as exc:  # stop, and save what was reached
            what, code = _stop_words(signal.SIGINT if isinstance(exc, KeyboardInterrupt) else signal.SIGTERM)
            return fail(prog, f"{what} after epoch {run.epochs_completed}; " + _salvage(save_path, run, data), code)
        except TrainingError as exc:  # diverged: save the last finite epoch, and say so in the same line
            return fail(prog, f"{exc}; " + _salvage(save_path, run, data, "diverged"), EXIT_FAILURE)
        except OSError as exc:  # a checkpoint could not be written; the earlier file is intact
            return fail(prog, f"cannot save the model to {save_path}: {exc.strerror or exc}", EXIT_FAILURE)
        finally:
            report.close()
        # Training is over: a signal from here on waits for the end to be saved and reported.
        code = _finish(prog, args, run, data, save_path, time.perf_counter() - start, stops, replacing)
    if stops.pending is None or code != EXIT_OK:
        return code
    what, code = _stop_words(stops.pending)
    _, epoch = run.served()
    saved = f"epoch {epoch}'s weights were saved to {save_path}" if save_path else "nothing saved (no --save given)"
    return fail(prog, f"{what} after the last epoch, once the run was complete; {saved}", code)


def _finish(
    prog: str,
    args: argparse.Namespace,
    run: Run,
    data: MnistData,
    save_path: Path | None,
    train_seconds: float,
    stops: _StopSignals,
    replacing: bool = False,
) -> int:
    """Save the finished run, write --json and --plot, print the test count; returns the exit code."""
    _, served_epoch = run.served()
    test_total = len(data.test)
    if save_path is None:
        test_correct = count_in_chunks(run.served_network(), *data.test)
    else:
        try:
            test_correct = checkpoint.save_run(save_path, run, data)  # counts the served weights
        except OSError as exc:
            return fail(prog, f"cannot save the model to {save_path}: {exc.strerror or exc}", EXIT_FAILURE)
        if not args.quiet and stops.pending is None:  # after a signal, its one line says where
            replaced = " (replacing the model that was there)" if replacing else ""
            print(f"Saved epoch {served_epoch}'s weights to {one_line(str(save_path))}{replaced}", file=sys.stderr)
    if args.json is not None:
        last = run.history.epochs[-1] if run.history.epochs else None
        write_json_output(
            args.json,
            {
                "history": run.history.to_list(),
                "served_epoch": served_epoch,
                "validation_correct": last.validation_correct if last else None,
                "validation_total": last.validation_total if last else None,
                "test_correct": test_correct,
                "test_total": test_total,
                "train_seconds": train_seconds,
                "config": run.config.to_dict(),
                "dataset": data.dataset,
                "model": str(save_path) if save_path is not None else None,
                "version": __version__,
            },
        )
    if args.plot is not None:
        curves = plot_training_curves(run.history, args.plot / "curves.png", title=run.config.describe())
        if not args.quiet:
            print(f"Wrote {one_line(str(curves))}", file=sys.stderr)
    print(f"Test: {test_correct} / {test_total} correct ({100.0 * test_correct / test_total:.2f}%)")
    return EXIT_OK


def _salvage(save_path: Path | None, run: Run, data: MnistData, status: str = "interrupted") -> str:
    """Save what training reached after a stop; returns the end of the one-line message."""
    if run.snapshot is None or run.snapshot.epochs_completed == 0 or not run.history.epochs:
        return "no epoch was completed, nothing to save"
    if save_path is None:
        return "nothing saved (no --save given)"
    try:
        checkpoint.save_run(save_path, run, data, status=status)
    except OSError as exc:
        return f"could not save to {save_path}: {exc.strerror or exc}"
    _, epoch = run.served()
    resume = f"; continue with --resume {save_path}" if status == "interrupted" else ""
    return f"epoch {epoch}'s weights and the run so far were saved to {save_path}{resume}"
