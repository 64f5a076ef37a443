"""Test accuracy over seeds: one seed's run (``train_seed``) and the report of a configuration's runs.

``train_seed`` is the one place the benchmarks call the training API; its
``SeedResult`` holds a run's validation and test counts (the test count is
that of the served weights, the best validation epoch's, see
``Run.served``) and goes to and from JSON. ``AccuracyReport`` is every seed's
run of one configuration, the spread of test accuracy and, when asked, the
ensemble of the seeds' networks (their averaged output probabilities);
``mnist_nn.bench.sweep`` runs the seeds, here or elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from mnist_nn.bench.common import Stats
from mnist_nn.bench.machine import blas_threads
from mnist_nn.config import TRAIN_SIZE, TrainConfig
from mnist_nn.data import MnistData
from mnist_nn.metrics import count_matches
from mnist_nn.train import Run, fit
from mnist_nn.tta import TTA, tta_probabilities


@dataclass(frozen=True)
class SeedResult:
    """One seed's run: the served (best validation epoch) weights' counts and the last epoch's."""

    seed: int
    served_epoch: int
    validation_correct: int  # of the served epoch
    test_correct: int  # of the served weights
    last_epoch: int
    last_validation_correct: int
    last_test_correct: int
    validation_total: int
    test_total: int
    seconds: float  # building the network and training it, validation counts included
    blas_threads: int | None  # what the process that ran it used, when known
    # The served weights' output probabilities on the test set, kept for an ensemble.
    test_probabilities: npt.NDArray[np.float32] | None = field(default=None, repr=False, compare=False)
    # The served weights' counts with test-time augmentation (``mnist_nn.tta``), when asked.
    validation_correct_tta: int | None = None
    test_correct_tta: int | None = None
    # Their test probabilities with test-time augmentation, kept for an ensemble.
    test_probabilities_tta: npt.NDArray[np.float32] | None = field(default=None, repr=False, compare=False)

    @property
    def test_accuracy(self) -> float:
        """test_correct / test_total, in [0, 1]."""
        return self.test_correct / self.test_total

    @property
    def validation_accuracy(self) -> float:
        """validation_correct / validation_total, in [0, 1]."""
        return self.validation_correct / self.validation_total

    @property
    def test_accuracy_tta(self) -> float | None:
        """test_correct_tta / test_total, when test-time augmentation was asked for."""
        return None if self.test_correct_tta is None else self.test_correct_tta / self.test_total

    @property
    def validation_accuracy_tta(self) -> float | None:
        """validation_correct_tta / validation_total, when test-time augmentation was asked for."""
        return None if self.validation_correct_tta is None else self.validation_correct_tta / self.validation_total

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, accuracies included (the probabilities left out, the TTA counts only when asked)."""
        d = asdict(self)
        del d["test_probabilities"], d["test_probabilities_tta"]
        if self.test_correct_tta is None:
            del d["validation_correct_tta"], d["test_correct_tta"]
        else:
            d["test_accuracy_tta"] = self.test_accuracy_tta
            d["validation_accuracy_tta"] = self.validation_accuracy_tta
        d["test_accuracy"] = self.test_accuracy
        d["validation_accuracy"] = self.validation_accuracy
        return d

    @classmethod
    def from_dict(cls, d: Any) -> SeedResult:
        """The inverse of ``to_dict`` (without probabilities), every value checked.

        Raises:
            ValueError: naming the first field that is missing or out of range.
        """
        if not isinstance(d, dict):
            raise ValueError(f"expected a run's result as an object, got {type(d).__name__}")
        values: dict[str, Any] = {}
        for name in _COUNT_FIELDS:
            value = d.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"expected {name} as an integer >= 0, got {value!r}")
            values[name] = value
        seconds = d.get("seconds")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 <= seconds < float("inf"):
            raise ValueError(f"expected seconds as a number >= 0, got {seconds!r}")
        threads = d.get("blas_threads")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool)):
            raise ValueError(f"expected blas_threads as an integer or null, got {threads!r}")
        tta: dict[str, int | None] = {}
        for name in ("validation_correct_tta", "test_correct_tta"):
            value = d.get(name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"expected {name} as an integer >= 0 or absent, got {value!r}")
            tta[name] = value
        if (tta["validation_correct_tta"] is None) != (tta["test_correct_tta"] is None):
            raise ValueError("expected validation_correct_tta and test_correct_tta both or neither")
        for count, total in (
            ("validation_correct_tta", "validation_total"),
            ("test_correct_tta", "test_total"),
        ):
            value = tta[count]
            if value is not None and value > values[total]:
                raise ValueError(f"expected {count} <= {total}, got {value} and {values[total]}")
        for count, total in (
            ("validation_correct", "validation_total"),
            ("last_validation_correct", "validation_total"),
            ("test_correct", "test_total"),
            ("last_test_correct", "test_total"),
        ):
            if values[count] > values[total] or values[total] == 0:
                raise ValueError(f"expected {count} <= {total} > 0, got {values[count]} and {values[total]}")
        if not 1 <= values["served_epoch"] <= values["last_epoch"]:
            raise ValueError(f"expected 1 <= served_epoch <= last_epoch, got {values['served_epoch']}")
        return cls(
            **values,
            seconds=float(seconds),
            blas_threads=threads,
            validation_correct_tta=tta["validation_correct_tta"],
            test_correct_tta=tta["test_correct_tta"],
        )


_COUNT_FIELDS = (
    "seed",
    "served_epoch",
    "validation_correct",
    "test_correct",
    "last_epoch",
    "last_validation_correct",
    "last_test_correct",
    "validation_total",
    "test_total",
)


@dataclass(frozen=True)
class AccuracyReport:
    """Every seed's run of one configuration and the spread of their accuracies."""

    preset: str | None
    config: TrainConfig  # its seed is that of the first run; each run replaces it
    train_size: int
    jobs: int
    runs: list[SeedResult]
    environment: dict[str, Any]
    ensemble_correct: int | None = None  # the runs' averaged output probabilities, when asked
    executor: str = ""  # where the runs went: "1 job", "2 jobs", "Dask scheduler tcp://..."
    results: str | None = None  # the --results folder, when runs are kept
    from_results: int = 0  # runs read back from that folder rather than trained
    failures: list[dict[str, Any]] = field(default_factory=list)  # {"seed", "reason"} of each failed run
    dataset: str = "mnist"
    ensemble_tta_correct: int | None = None  # the same with test-time augmentation, when asked

    @property
    def tta(self) -> bool:
        """Whether the runs were also tested with test-time augmentation."""
        return all(r.test_correct_tta is not None for r in self.runs)

    @property
    def test_accuracy_tta(self) -> Stats | None:
        """Test accuracy of the served weights with test-time augmentation over the runs, when asked."""
        return Stats.of([r.test_accuracy_tta or 0.0 for r in self.runs]) if self.tta else None

    @property
    def validation_accuracy_tta(self) -> Stats | None:
        """Validation accuracy of the served weights with test-time augmentation over the runs, when asked."""
        return Stats.of([r.validation_accuracy_tta or 0.0 for r in self.runs]) if self.tta else None

    @property
    def ensemble_accuracy(self) -> float | None:
        """ensemble_correct over the test images, when an ensemble was asked for."""
        if self.ensemble_correct is None:
            return None
        return self.ensemble_correct / self.runs[0].test_total

    @property
    def test_accuracy(self) -> Stats:
        """Test accuracy of the served weights over the runs."""
        return Stats.of([r.test_accuracy for r in self.runs])

    @property
    def validation_accuracy(self) -> Stats:
        """Validation accuracy of the served epoch over the runs."""
        return Stats.of([r.validation_accuracy for r in self.runs])

    @property
    def seconds(self) -> Stats:
        """Seconds per run."""
        return Stats.of([r.seconds for r in self.runs])

    @property
    def seeds(self) -> list[int]:
        """The seeds, in the order of ``runs``."""
        return [r.seed for r in self.runs]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the TTA figures only when asked)."""
        config = self.config.to_dict()
        del config["seed"]  # each run has its own
        return {
            "action": "accuracy",
            "preset": self.preset,
            "config": config,
            "seeds": self.seeds,
            "train_size": self.train_size,
            "dataset": self.dataset,
            "jobs": self.jobs,
            "executor": self.executor,
            "results": self.results,
            "from_results": self.from_results,
            "runs": [r.to_dict() for r in self.runs],
            "failures": self.failures,
            "summary": {
                "runs": len(self.runs),
                "test_accuracy": asdict(self.test_accuracy),
                "validation_accuracy": asdict(self.validation_accuracy),
                "seconds": asdict(self.seconds),
                "ensemble": None
                if self.ensemble_correct is None
                else {
                    "networks": len(self.runs),
                    "test_correct": self.ensemble_correct,
                    "test_accuracy": self.ensemble_accuracy,
                    **self._ensemble_tta(),
                },
                **self._tta_summary(),
            },
            "environment": self.environment,
        }

    def _tta_summary(self) -> dict[str, Any]:
        """The summary's TTA accuracies, when asked."""
        test, validation = self.test_accuracy_tta, self.validation_accuracy_tta
        if test is None or validation is None:
            return {}
        return {"test_accuracy_tta": asdict(test), "validation_accuracy_tta": asdict(validation)}

    def _ensemble_tta(self) -> dict[str, Any]:
        """The ensemble's count with test-time augmentation, when asked."""
        if self.ensemble_tta_correct is None:
            return {}
        return {
            "tta_test_correct": self.ensemble_tta_correct,
            "tta_test_accuracy": self.ensemble_tta_correct / self.runs[0].test_total,
        }


def train_seed(
    config: TrainConfig,
    data: MnistData,
    train_size: int = TRAIN_SIZE,
    on_epoch: Callable[[], None] | None = None,
    keep_probabilities: bool = False,
    tta: bool = False,
) -> SeedResult:
    """Train ``config`` on the first ``train_size`` training images and count what it gets right.

    Args:
        config: the run's configuration, seed included.
        data: MNIST, ideally loaded in ``config.dtype`` (as ``train_mnist.py`` does).
        train_size: how many of the training images to train on.
        on_epoch: called after every epoch.
        keep_probabilities: keep the served weights' test output probabilities (for an ensemble).
        tta: also count the served weights' validation and test answers with test-time augmentation
            (the copies ``TTA.for_training`` gives for the configuration's augmentation).

    Returns:
        The served and last epochs' validation and test counts.
    """
    start = time.perf_counter()
    run = Run.start(config)
    fit(
        run,
        data.train.images[:train_size],
        data.train.labels[:train_size],
        validation=(data.validation.images, data.validation.labels),
        monitor_cost=False,
        on_epoch=(lambda record, run: on_epoch()) if on_epoch is not None else None,
    )
    seconds = time.perf_counter() - start
    served = run.served_network()
    best, last = run.history.best(), run.history.epochs[-1]
    assert best is not None and best.validation_correct is not None and best.validation_total is not None
    assert last.validation_correct is not None
    tta_counts: dict[str, Any] = {}
    if tta:
        copies = TTA.for_training(config.augment)
        validation_probs = tta_probabilities(served, data.validation.images, copies)
        test_probs = tta_probabilities(served, data.test.images, copies).astype(np.float32)
        tta_counts = {
            "validation_correct_tta": _count(validation_probs, data.validation.labels),
            "test_correct_tta": _count(test_probs, data.test.labels),
            "test_probabilities_tta": test_probs if keep_probabilities else None,
        }
    return SeedResult(
        seed=config.seed,
        served_epoch=best.epoch,
        validation_correct=best.validation_correct,
        test_correct=served.count_correct(*data.test),
        last_epoch=last.epoch,
        last_validation_correct=last.validation_correct,
        last_test_correct=run.network.count_correct(*data.test),
        validation_total=best.validation_total,
        test_total=len(data.test),
        seconds=seconds,
        blas_threads=blas_threads(),
        test_probabilities=served.probabilities(data.test.images).astype(np.float32) if keep_probabilities else None,
        **tta_counts,
    )


def _count(probabilities: npt.NDArray[np.floating[Any]], labels: npt.ArrayLike) -> int:
    """How many rows' most probable class is their label."""
    return count_matches(np.argmax(probabilities, axis=1), np.asarray(labels))


def ensemble_count(probabilities: Sequence[npt.NDArray[np.float32] | None], labels: npt.ArrayLike) -> int:
    """How many labels the averaged probabilities' most probable class gets right."""
    if not probabilities or any(p is None for p in probabilities):
        raise ValueError("expected every run's test probabilities for the ensemble")
    return _count(np.mean([p for p in probabilities if p is not None], axis=0), labels)
