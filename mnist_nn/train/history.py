"""What a training run measured: one record per epoch, and which epoch was best on validation."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from mnist_nn.text import short


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch measured.

    ``validation_correct`` and ``validation_total`` are None when no
    validation data was given; ``train_cost`` is the mean cost over the whole
    training set at the end of the epoch (None when not monitored).
    """

    epoch: int
    validation_correct: int | None
    validation_total: int | None
    train_cost: float | None
    seconds: float
    eta: float

    @property
    def validation_accuracy(self) -> float | None:
        """validation_correct / validation_total, in [0, 1]."""
        if self.validation_correct is None or not self.validation_total:
            return None
        return self.validation_correct / self.validation_total

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, accuracy included."""
        d = asdict(self)
        d["validation_accuracy"] = self.validation_accuracy
        return d


@dataclass
class History:
    """Per-epoch records of a training run, and which epoch was best on validation."""

    epochs: list[EpochRecord] = field(default_factory=list)

    def __repr__(self) -> str:
        """Short, for the prompt: ``History(30 epochs, best epoch 26: 9557 / 10000)``."""
        best = self.best()
        tail = f", best epoch {best.epoch}: {best.validation_correct} / {best.validation_total}" if best else ""
        return f"History({len(self.epochs)} epochs{tail})"

    def best(self) -> EpochRecord | None:
        """The earliest epoch with the highest validation count (None without validation)."""
        scored = [r for r in self.epochs if r.validation_correct is not None]
        if not scored:
            return None
        return max(scored, key=lambda r: (r.validation_correct, -r.epoch))

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-ready records."""
        return [r.to_dict() for r in self.epochs]

    @classmethod
    def from_list(cls, records: Any) -> History:
        """The inverse of ``to_list``, every value checked; raises ValueError for malformed records.

        Records must be numbered 1, 2, ... in order, hold integer counts (or
        None for both, without validation) with 0 <= correct <= total, and
        finite numbers for the cost (or None), the seconds and the learning rate.
        """
        if not isinstance(records, list):
            raise ValueError(f"expected the history as a list of records, got {type(records).__name__}")
        return cls([_record(r, i) for i, r in enumerate(records, start=1)])


_RECORD_KEYS = ("epoch", "validation_correct", "validation_total", "train_cost", "seconds", "eta")


def _record(r: Any, epoch: int) -> EpochRecord:
    """One checked record of ``History.from_list``, expected to be epoch ``epoch``."""
    if not isinstance(r, dict):
        raise ValueError(f"malformed history record {epoch}: expected an object, got {type(r).__name__}")
    missing = [k for k in _RECORD_KEYS if k not in r]
    if missing:
        raise ValueError(f"malformed history record {epoch}: no {', '.join(missing)}")
    bad = f"malformed history record {epoch}:"
    if not _is_int(r["epoch"]) or r["epoch"] != epoch:
        raise ValueError(f"{bad} expected epoch {epoch}, got {short(r['epoch'])}")
    correct, total = r["validation_correct"], r["validation_total"]
    if (correct, total) != (None, None) and not (_is_int(correct) and _is_int(total) and 0 <= correct <= total):
        raise ValueError(
            f"{bad} expected validation counts 0 <= correct <= total, got {short(correct)} of {short(total)}"
        )
    if r["train_cost"] is not None and not _is_finite(r["train_cost"]):
        raise ValueError(f"{bad} expected train_cost to be a finite number or null, got {short(r['train_cost'])}")
    for key in ("seconds", "eta"):
        if not _is_finite(r[key]) or r[key] < 0:
            raise ValueError(f"{bad} expected {key} to be a finite number >= 0, got {short(r[key])}")
    return EpochRecord(**{k: r[k] for k in _RECORD_KEYS})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False
