"""The project's exception types.

Library code raises these; only the command line turns them into a one-line
message and an exit code. Every message is a single line that says what is
wrong and, where it helps, what to do about it. ``exit_code`` follows
argparse's convention: 2 when the user gave something invalid (a bad file),
1 for other failures.
"""

from __future__ import annotations


class MnistNNError(Exception):
    """Base class of every error that ``mnist_nn`` raises on purpose."""

    exit_code = 1


class DataFormatError(MnistNNError, ValueError):
    """An IDX file (or its gzip layer) is malformed, truncated or inconsistent."""

    exit_code = 2


class DownloadError(MnistNNError):
    """A file could not be fetched and verified from any mirror."""


class ModelFileError(MnistNNError, ValueError):
    """A model file is missing, unreadable, malformed or unsafe."""

    exit_code = 2


class TrainingError(MnistNNError):
    """Training cannot go on, e.g. because the weights stopped being finite."""


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


class BenchmarkError(MnistNNError):
    """A benchmark could not finish: a worker process died or the training subprocess failed."""
