"""What a training run measured: one record per epoch, and which epoch was best on validation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
    def from_list(cls, records: list[dict[str, Any]]) -> History:
        """The inverse of ``to_list``; raises ValueError for malformed records."""
        names = ("epoch", "validation_correct", "validation_total", "train_cost", "seconds", "eta")
        try:
            return cls([EpochRecord(**{k: r[k] for k in names}) for r in records])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed history record: {exc}") from None
