"""The project's exception types.

Library code raises these; only the command line turns them into a one-line
message and an exit code. Every message is a single line that says what is
wrong and, where it helps, what to do about it.
"""

from __future__ import annotations


class MnistNNError(Exception):
    """Base class of every error that ``mnist_nn`` raises on purpose."""


class DataFormatError(MnistNNError, ValueError):
    """An IDX file (or its gzip layer) is malformed, truncated or inconsistent."""


class DownloadError(MnistNNError):
    """A file could not be fetched and verified from any mirror."""


class ModelFileError(MnistNNError, ValueError):
    """A model file is missing, unreadable, malformed or unsafe."""


class TrainingError(MnistNNError):
    """Training cannot go on, e.g. because the weights stopped being finite."""
