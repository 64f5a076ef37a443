"""Every exception of the project, each with the exit code the command line gives it.

Library code raises these; only the command line (``mnist_nn.cli.base.command``)
turns them into a one-line message and an exit code. Every message is a single
line that says what is wrong and, where it helps, what to do about it.
``exit_code`` follows argparse's convention: 2 when the user gave something
invalid (a flag value, a bad file), 1 for other failures.
"""

from __future__ import annotations

from http import HTTPStatus


class MnistNNError(Exception):
    """Base class of every error that ``mnist_nn`` raises on purpose."""

    exit_code = 1


class UsageError(MnistNNError):
    """A flag value that parses but makes no sense, or flags that contradict each other."""

    exit_code = 2


class DataFormatError(MnistNNError, ValueError):
    """An IDX file (or its gzip layer) is malformed, truncated or inconsistent."""

    exit_code = 2


class DownloadError(MnistNNError):
    """A file could not be fetched and verified from any mirror."""


class DataDirError(MnistNNError):
    """The data folder (the download cache) cannot be used: a file in its place, read-only, full,
    or a folder where a data file belongs. The message says which and what to do."""


class OutputError(MnistNNError):
    """An output file (``--json``) cannot be written: a full disk, a read-only place, a folder in the way."""


class ModelFileError(MnistNNError, ValueError):
    """A model file is missing, unreadable, malformed or unsafe."""

    exit_code = 2


class TrainingError(MnistNNError):
    """Training cannot go on, e.g. because the weights stopped being finite."""


class NonFiniteError(MnistNNError, ArithmeticError):
    """A network's weighted inputs overflowed to infinity or NaN: its weights are too large (a diverged run)."""


class PathBusyError(MnistNNError):
    """Another process owns a path this one means to write for a while (a training run saving there)."""


class ConfigError(MnistNNError, ValueError):
    """A training setting is out of range or unknown.

    ``setting`` is the ``TrainConfig`` field (e.g. ``"batch_size"``) and
    ``reason`` the rest of the sentence (``"must be at least 1, got 0"``), so
    the command line can name its flag (``--batch-size must be ...``) where
    Python names the field (``batch_size must be ...``).
    """

    exit_code = 2

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"{setting} {reason}")
        self.setting = setting
        self.reason = reason


class ImageError(MnistNNError, ValueError):
    """An image file or array cannot be read or holds no digit; the message names the file."""

    exit_code = 2


class PlotError(MnistNNError):
    """A figure cannot be drawn at all, e.g. because matplotlib is not installed."""

    exit_code = 2  # a missing optional dependency: the command cannot be used as given


class ExportError(MnistNNError):
    """A model cannot be exported to ONNX (a part with no ONNX export) or run as ONNX, or the package
    that does it (onnx, onnxruntime) is not installed; the message says which and what to install."""

    exit_code = 2  # a model or a missing optional dependency: the command cannot be used as given


class RequestError(MnistNNError):
    """A request the drawing server refuses: an HTTP status and a one-line reason for the client.

    The server answers it as JSON ``{"error": message}``; it does not reach the command line.
    """

    exit_code = 2

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class TerminatedError(Exception):
    """SIGTERM arrived while a long command (training, serving) was running; exit code 143 (128 + 15).

    Not an ``MnistNNError``: like KeyboardInterrupt it is a stop rather than a
    failure, and no handler of the package's errors may swallow it.
    """

    exit_code = 143


class BenchmarkError(MnistNNError):
    """A benchmark could not finish: a worker process died or the training subprocess failed."""


class MirrorError(Exception):
    """Why one fetch from one mirror failed; ``retry`` marks transient trouble.

    Internal to the downloader, which tries the next mirror and, when all
    fail, raises ``DownloadError`` naming every reason; it never escapes.
    """

    def __init__(self, reason: str, *, retry: bool = False, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.status = status


class BadModelFileError(Exception):
    """What is wrong with a model file, before the path is put in front.

    Internal to the model file reader, which turns it into ``ModelFileError``; it never escapes.
    """
