"""Learning-rate schedules by name, and early stopping: functions of a run's history alone.

Because they read nothing but the history, a resumed run continues them exactly.
"""

from __future__ import annotations

import numpy as np

from mnist_nn.config import SCHEDULE_NAMES
from mnist_nn.train.history import History

SCHEDULES = SCHEDULE_NAMES


def learning_rate(history: History, *, eta: float, schedule: str, epochs: int, patience: int = 5) -> float | None:
    """The learning rate of the epoch after ``history``'s last, or None when the schedule says stop.

    - constant: eta throughout.
    - cosine: eta * (1 + cos(pi * t / epochs)) / 2 for the t-th epoch (t from 0).
    - plateau: network2's rule: halve eta whenever validation accuracy has not
      improved for ``patience`` epochs, and stop once it falls below eta / 128.

    Every schedule is a function of the history alone, so a resumed run
    continues it exactly.
    """
    if schedule == "constant":
        return eta
    if schedule == "cosine":
        t = len(history.epochs)
        return 0.5 * eta * (1.0 + float(np.cos(np.pi * t / max(epochs, 1))))
    if schedule == "plateau":
        current, best, since = eta, -1, 0
        for r in history.epochs:
            correct = r.validation_correct if r.validation_correct is not None else -1
            if correct > best:
                best, since = correct, 0
            else:
                since += 1
                if since >= patience:
                    current, since = current / 2, 0
        return current if current >= eta / 128 else None
    raise ValueError(f"unknown schedule {schedule!r}; expected one of: {', '.join(SCHEDULES)}")


def stalled(history: History, patience: int) -> bool:
    """Early stopping: no validation improvement in the last ``patience`` epochs."""
    best = history.best()
    return patience > 0 and best is not None and history.epochs[-1].epoch - best.epoch >= patience
