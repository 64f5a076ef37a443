"""What every command of the package shares: exit codes, the parser, common flags, errors and signals.

``command`` wraps each ``*_main(argv, prog)`` and is the one place that maps
errors to exit codes: a package error (``mnist_nn.errors``) becomes one line,
``prog: error: <message>``, and its ``exit_code``; a ``ConfigError`` is told
in the flags' words (``flag_message``); Ctrl-C, SIGTERM and a closed pipe end
in one line or quietly, never in a traceback. An ``OSError`` that no command
turned into a package error (a disk that filled, a folder that went read-only)
also ends in one line naming the file and what to do, with exit code 1.
``fail`` prints that line for the few failures a command reports itself. The
commands are the other modules of ``mnist_nn.cli``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import tqdm

from mnist_nn.config import default_models_dir, describe_data_dir
from mnist_nn.data.datasets import DATASETS, MNIST
from mnist_nn.data.datasets import dataset as get_dataset
from mnist_nn.data.download import DEADLINE_ENV, DEFAULT_DEADLINE
from mnist_nn.data.folder import folder_classes, is_folder
from mnist_nn.errors import ConfigError, MnistNNError, ModelFileError, OutputError, TerminatedError, UsageError
from mnist_nn.files import check_writable, json_text, write_output
from mnist_nn.models import SavedModel, load_model
from mnist_nn.text import describe_os_error, one_line, short
from mnist_nn.tta import TTA

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "JSON_HELP",
    "MainFunction",
    "Parser",
    "TerminatedError",
    "UsageError",
    "add_data_args",
    "check_output",
    "check_outputs",
    "command",
    "dataset_classes",
    "fail",
    "flag_message",
    "json_to_stdout",
    "load_model_file",
    "show_progress",
    "signals_as_interrupts",
    "write_json_output",
]

# The commands update their bars themselves: tqdm's monitor thread, which only adjusts bars that
# go quiet, would be one more thread at every fork of the training's helper, and tqdm 4.64 can
# deadlock joining it at exit.
tqdm.tqdm.monitor_interval = 0

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
STDOUT = "-"  # the output path that means standard output (``--json -``)
# The end of every --json flag's help.
JSON_HELP = (
    "; written atomically, or streamed to a device, a FIFO or /dev/stdout; - writes it to standard output, "
    "and the command's other output then goes to stderr"
)
# The standard output that ``json_to_stdout`` set aside, one entry per running command (the last one last).
_JSON_STDOUT: list[Any] = []


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: 'prog: error: ... (see --help)'."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def flag_message(error: ConfigError) -> str:
    """A setting's error in the words of the command line: 'batch_size must ...' -> '--batch-size must ...'."""
    flag = "--" + error.setting.replace("_", "-")
    return f"{flag} {error.reason}"


def fail(prog: str, message: str, code: int) -> int:
    """Print ``prog: error: message`` on stderr; returns ``code``."""
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
    return code


MainFunction = Callable[..., int]


def command(main: MainFunction) -> MainFunction:
    """Wrap a ``*_main`` so that errors and stops end in one line and an exit code, never a traceback.

    A package error prints ``prog: error: <message>`` and exits with its
    ``exit_code`` (a ``ConfigError`` names the flag, not the setting); Ctrl-C
    prints "interrupted" and exits 130, SIGTERM (inside
    ``signals_as_interrupts``) "terminated" and 143; a closed pipe (``| head``)
    ends quietly; any other ``OSError`` prints the file and what went wrong
    (``os_error_message``) and exits 1.
    """

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
        defaults = main.__defaults__ or ()
        name = prog or (str(defaults[-1]) if defaults else "mnist-nn")
        stdout, set_aside = sys.stdout, len(_JSON_STDOUT)  # ``json_to_stdout`` changes both for this command
        try:
            return int(main(argv, name))
        except KeyboardInterrupt:
            print(f"{name}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except TerminatedError as exc:
            print(f"{name}: terminated", file=sys.stderr)
            return exc.exit_code
        except BrokenPipeError:
            # stdout's reader went away: stop writing, and keep Python from
            # complaining about it again at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_FAILURE
        except ConfigError as exc:  # a TrainConfig value, which the user gave as a flag
            return fail(name, flag_message(exc), exc.exit_code)
        except MnistNNError as exc:  # the error type says which exit code (see mnist_nn.errors)
            return fail(name, str(exc), exc.exit_code)
        except OSError as exc:  # a disk or file problem no command foresaw: still one line
            return fail(name, os_error_message(exc), EXIT_FAILURE)
        finally:
            sys.stdout = stdout
            del _JSON_STDOUT[set_aside:]

    return wrapper


def os_error_message(exc: OSError) -> str:
    """An ``OSError`` as one line: the file it concerns (line breaks escaped) and what it means."""
    files = [f for f in (exc.filename, exc.filename2) if f is not None]
    where = " -> ".join(one_line(os.fsdecode(f)) for f in files)
    return f"{where}: {describe_os_error(exc)}" if where else describe_os_error(exc)


def load_model_file(path: Path) -> SavedModel:
    """``load_model``, where a missing file's error also names the folder ``--save`` alone writes to."""
    try:
        return load_model(path)
    except ModelFileError as exc:
        if Path(path).exists():
            raise
        folder = one_line(str(default_models_dir()))
        raise ModelFileError(
            f"{exc}; models saved with --save alone are in {folder} (mnist-nn models lists them)"
        ) from None


def _is_stdout(path: Path | None) -> bool:
    """Whether an output path is ``-``, standard output."""
    return path is not None and str(path) == STDOUT


def json_to_stdout(path: Path | None) -> None:
    """For ``--json -``: from here until the command returns, its other output goes to stderr.

    Standard output then holds the JSON document alone, ready for a pipe
    (``| jq``). ``command`` puts ``sys.stdout`` back when the command returns.
    """
    if _is_stdout(path) and sys.stdout is not sys.stderr:
        sys.stdout.flush()
        _JSON_STDOUT.append(sys.stdout)
        sys.stdout = sys.stderr


def check_output(path: Path) -> None:
    """Refuse now (``UsageError``, one line) an output path that could not be written later (``-`` can)."""
    if _is_stdout(path):
        return
    try:
        check_writable(path)
    except OSError as exc:
        raise UsageError(f"cannot write {one_line(str(path))}: {describe_os_error(exc)}") from None


def write_json_output(path: Path, obj: Any) -> None:
    """Write an output JSON file (``--json``), or raise ``OutputError`` in one line.

    ``-`` writes it to standard output; a device, a FIFO or ``/dev/stdout``
    gets the bytes streamed; a file (or a symlink's target file) is written
    atomically (``mnist_nn.files.write_output``).

    Raises:
        OutputError: the file cannot be written (a full disk, a read-only place, a folder in the way);
            any earlier file at ``path`` is left as it was.
    """
    text = json_text(obj)
    if _is_stdout(path):
        out = _JSON_STDOUT.pop() if _JSON_STDOUT else sys.stdout
        out.write(text)
        out.flush()
        return
    sys.stdout.flush()  # what was printed comes first, if the path is this process's standard output
    try:
        write_output(path, text.encode("utf-8"))
    except OSError as exc:
        raise OutputError(f"cannot write {one_line(str(path))}: {describe_os_error(exc)}") from None


def show_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def _seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return seconds


def dataset_name(name: str) -> str:
    """argparse type of --dataset: a known data set's name, or idx:DIR; an unknown one is refused naming the nearest."""
    if is_folder(name):
        return name
    try:
        return get_dataset(name).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def models_dataset(models: Sequence[SavedModel], given: str | None, *, other: bool = False) -> str:
    """The data set the models were trained on (MNIST for files that do not say); ``given`` must be it.

    With ``other``, ``given`` may name another data set on purpose, and is what is returned.

    Raises:
        UsageError: models of different data sets, or ``given`` another one without ``other`` (exit 2).
    """
    owns = {model.path: model.dataset for model in models}
    names = sorted(set(owns.values()))
    if len(names) > 1:
        raise UsageError(f"the models were trained on different data sets: {', '.join(names)}")
    own = names[0] if names else MNIST.name
    if given is not None and given != own:
        if other:
            return given
        path = one_line(str(next(iter(owns))))
        raise UsageError(
            f"--dataset {given}: {path} was trained on {own}; its answers on {given} mean nothing "
            "(--other-dataset counts them anyway)"
        )
    if own not in DATASETS and not is_folder(own):
        raise UsageError(f"{one_line(str(next(iter(owns))))}: trained on an unknown data set {short(own)}")
    return own


def dataset_classes(name: str) -> tuple[str, ...]:
    """The class names of the data set ``name`` (a known name, or idx:DIR: read from the folder, images left).

    Raises:
        ValueError: an unknown name.
        DataFormatError: a folder that is missing, or whose classes.txt or labels are malformed.
    """
    return folder_classes(name) if is_folder(name) else get_dataset(name).classes


def check_outputs(models: Sequence[SavedModel], dataset: str, classes: Sequence[str]) -> None:
    """Refuse (UsageError) a model without one output per class of the data set it is to be counted on."""
    for model in models:
        outputs = model.network.sizes[-1]
        if outputs != len(classes):
            raise UsageError(
                f"{one_line(str(model.path))} has {outputs} outputs, but {one_line(dataset)} has {len(classes)} "
                "classes: its answers cannot be counted there"
            )


def add_dataset_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--dataset NAME`` (default None: MNIST, or the data set of a preset, a model or a resumed run)."""
    parser.add_argument(
        "--dataset",
        type=dataset_name,
        metavar="NAME",
        help=f"the data set: {', '.join(DATASETS)} (default: mnist, or the one a --preset, model or resumed run "
        "was trained on), each with its own mirror variable "
        f"({', '.join(f'${d.mirror_env}' for d in DATASETS.values())}) and its own folder in the cache; "
        "or idx:DIR, MNIST's four files (plain or .gz) in the folder DIR, with DIR/classes.txt naming the "
        "classes (2 to 256, one per line; without it the labels are the classes' numbers), checked for "
        "structure only",
    )


def add_data_args(parser: argparse.ArgumentParser, *, deadline: bool = False, dataset: bool = False) -> None:
    """Add ``--mirror`` and ``--data-dir``, ``--download-deadline`` with ``deadline``, ``--dataset`` with ``dataset``.

    ``--dataset`` defaults to None: the command decides (MNIST, or a model's or a run's own data set).
    """
    if dataset:
        add_dataset_arg(parser)
    parser.add_argument(
        "--mirror",
        metavar="URL_OR_DIR",
        help="try this mirror first: an http(s) or file:// URL, or a folder holding "
        "the .gz or uncompressed IDX files (default: the data set's variable, $MNIST_NN_MIRROR for MNIST, "
        "then the public mirrors)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help=f"the download cache (default: {describe_data_dir()})",
    )
    if not deadline:
        return
    parser.add_argument(
        "--download-deadline",
        type=_seconds,
        metavar="SECONDS",
        help="the time each mirror gets for each file, on top of the per-read timeouts; a mirror still "
        f"sending after it counts as failed and the next one is tried (default: ${DEADLINE_ENV}, "
        f"else {DEFAULT_DEADLINE:g})",
    )


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Turn SIGTERM into ``TerminatedError`` and make sure SIGINT raises KeyboardInterrupt, for a while."""

    def terminate(signum: int, frame: Any) -> None:
        raise TerminatedError

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
        # Python leaves SIGINT ignored when it started ignored (a background job of a
        # script): training must still stop and save on Ctrl-C or kill -INT.
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


TTA_HELP = (
    "test-time augmentation: answer with each image's probabilities averaged over it and its 4 one-pixel shifts "
    "(and the mirror image of each, for a model trained with mirrored images, --augment flip=)"
)


def model_tta(model: SavedModel) -> TTA:
    """The copies ``--tta`` answers for ``model``: mirrored ones too when its training mirrored images."""
    config = model.metadata.get("config")
    spec = config.get("augment") if isinstance(config, dict) else None
    return TTA.for_training(spec if isinstance(spec, str) else None)
