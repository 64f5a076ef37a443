"""What several benchmarks share: where the data comes from and the statistics of repeated results.

``DataSource`` is picklable, so worker processes and subprocesses can load the
data themselves; ``Stats`` summarizes accuracies or seconds over runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mnist_nn.data import MnistData, load_mnist

QUICK_TRAIN_SIZE = 5_000  # training images of a --quick run: the first 5,000


@dataclass(frozen=True)
class DataSource:
    """Where the data set comes from, as ``load_mnist`` takes it (picklable, for worker processes)."""

    data_dir: Path | None = None
    mirror: str | None = None
    dataset: str = "mnist"  # a name of mnist_nn.data.datasets, or idx:DIR

    def load(self, dtype: str = "float32") -> MnistData:
        """``load_mnist`` from this source."""
        return load_mnist(self.data_dir, mirror=self.mirror, dtype=dtype, dataset=self.dataset)


@dataclass(frozen=True)
class Stats:
    """Mean, sample standard deviation (None for fewer than 2 values), minimum and maximum."""

    mean: float
    std: float | None
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        """The statistics of at least one value."""
        if not values:
            raise ValueError("expected at least one value, got none")
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(mean=statistics.fmean(values), std=std, min=min(values), max=max(values))
