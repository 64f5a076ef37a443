"""Counting what a network gets right: correct counts, accuracy, confusion matrices.

A count is an int and an accuracy a float in [0, 1]; the two are never mixed up.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from mnist_nn.config import NUM_CLASSES


def count_correct(predictions: npt.NDArray[np.integer[Any]], labels: npt.NDArray[np.integer[Any]]) -> int:
    """How many predictions equal their labels."""
    if predictions.shape != labels.shape:
        raise ValueError(f"expected predictions of shape {labels.shape}, got {predictions.shape}")
    return int(np.count_nonzero(predictions == labels))


def accuracy(predictions: npt.NDArray[np.integer[Any]], labels: npt.NDArray[np.integer[Any]]) -> float:
    """The fraction of predictions equal to their labels, in [0, 1]."""
    return count_correct(predictions, labels) / max(int(labels.shape[0]), 1)


def confusion_matrix(
    predictions: npt.NDArray[np.integer[Any]],
    labels: npt.NDArray[np.integer[Any]],
    classes: int = NUM_CLASSES,
) -> npt.NDArray[np.int64]:
    """(classes, classes) counts: row = true label, column = predicted label."""
    if predictions.shape != labels.shape:
        raise ValueError(f"expected predictions of shape {labels.shape}, got {predictions.shape}")
    flat = labels.astype(np.int64) * classes + predictions.astype(np.int64)
    return np.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def format_count(correct: int, total: int) -> str:
    """'9512 / 10000 (95.12%)'."""
    percent = 100.0 * correct / total if total else 0.0
    return f"{correct} / {total} ({percent:.2f}%)"
