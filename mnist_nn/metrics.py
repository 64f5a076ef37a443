"""Counting what a network gets right: correct counts, accuracy, confusion matrices.

A count is an int and an accuracy a float in [0, 1]; the two are never mixed up.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mnist_nn.config import NUM_CLASSES
from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.network import Network
from mnist_nn.tta import TTA, tta_probabilities


def count_matches(predictions: npt.NDArray[np.integer[Any]], labels: npt.NDArray[np.integer[Any]]) -> int:
    """How many predictions equal their labels (``Network.count_correct`` predicts them first)."""
    if predictions.shape != labels.shape:
        raise ValueError(f"expected predictions of shape {labels.shape}, got {predictions.shape}")
    return int(np.count_nonzero(predictions == labels))


def accuracy(predictions: npt.NDArray[np.integer[Any]], labels: npt.NDArray[np.integer[Any]]) -> float:
    """The fraction of predictions equal to their labels, in [0, 1]."""
    return count_matches(predictions, labels) / max(int(labels.shape[0]), 1)


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


@dataclass(frozen=True)
class Mistake:
    """One misclassified example: its index in the split, labels and the network's confidence."""

    index: int
    label: int
    predicted: int
    confidence: float


@dataclass(frozen=True)
class Evaluation:
    """A network's results on one split."""

    correct: int
    total: int
    per_digit: list[float]  # accuracy on each true class: the digits 0-9 for MNIST
    confusion: list[list[int]]  # rows: true label, columns: predicted label
    mistakes: list[Mistake]  # the most confident mistakes first
    seconds: float  # time of the forward pass over the split

    @property
    def accuracy(self) -> float:
        """correct / total."""
        return self.correct / self.total if self.total else 0.0

    @property
    def images_per_second(self) -> float:
        """Evaluation throughput."""
        return self.total / self.seconds if self.seconds > 0 else float("inf")


def _probabilities(network: Network, x: FloatArray, tta: TTA | None) -> FloatArray:
    """The network's probabilities of x, averaged over the copies of ``tta`` if given."""
    return network.probabilities(x) if tta is None else tta_probabilities(network, x, tta)


def evaluate_network(
    network: Network, images: npt.ArrayLike, labels: npt.ArrayLike, top: int = 10, tta: TTA | None = None
) -> Evaluation:
    """Count, per-class accuracy, confusion matrix (one row per output) and the ``top`` most confident mistakes.

    With ``tta``, each image's probabilities are averaged over its copies (``mnist_nn.tta``).
    """
    return evaluate_ensemble([network], images, labels, top, tta)


def evaluate_ensemble(
    networks: Sequence[Network], images: npt.ArrayLike, labels: npt.ArrayLike, top: int = 10, tta: TTA | None = None
) -> Evaluation:
    """``evaluate_network`` for the average of several networks' output probabilities.

    Each network's outputs are made a distribution first (``Network.probabilities``,
    over the copies of ``tta`` if given), then the distributions are averaged,
    and the most probable class is the answer.
    """
    if not networks:
        raise ValueError("expected at least one network to evaluate, got none")
    x = networks[0].check_images(images)
    y = networks[0].check_labels(labels, x.shape[0])
    start = time.perf_counter()
    probs = _probabilities(networks[0], x, tta)
    for network in networks[1:]:
        probs += _probabilities(network, network.check_images(x), tta)
    probs /= len(networks)
    seconds = time.perf_counter() - start
    predicted = np.argmax(probs, axis=1)
    confusion = confusion_matrix(predicted, y, networks[0].sizes[-1])
    per_true = confusion.sum(axis=1)
    per_digit = [float(confusion[i, i] / per_true[i]) if per_true[i] else 0.0 for i in range(len(per_true))]
    wrong = np.flatnonzero(predicted != y)
    confidence = probs[wrong, predicted[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][:top]
    mistakes = [Mistake(int(i), int(y[i]), int(predicted[i]), float(probs[i, predicted[i]])) for i in order]
    return Evaluation(
        correct=count_matches(predicted, y),
        total=int(y.shape[0]),
        per_digit=per_digit,
        confusion=confusion.tolist(),
        mistakes=mistakes,
        seconds=seconds,
    )
