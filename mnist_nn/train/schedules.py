"""Learning-rate schedules by name, and early stopping: functions of a run's history alone.

Because they read nothing but the history, a resumed run continues them exactly.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mnist_nn.config import SCHEDULE_NAMES
from mnist_nn.train.history import History

SCHEDULES = SCHEDULE_NAMES


def learning_rate(history: History, *, eta: float, schedule: str, epochs: int, patience: int = 5) -> float | None:
    """The learning rate of the epoch after ``history``'s last, or None when the schedule says stop.

    - constant: eta throughout.
    - cosine: eta * (1 + cos(pi * t / epochs)) / 2 for the t-th epoch (t from 0).
    - cosine-steps and one-cycle change the rate every step (``step_rates``);
      this is the rate of the epoch's first step.
    - plateau: network2's rule: halve eta whenever validation accuracy has not
      improved for ``patience`` epochs, and stop once it falls below eta / 128.

    Every schedule is a function of the history alone, so a resumed run
    continues it exactly.
    """
    if schedule == "constant":
        return eta
    rates = step_rates(schedule, eta, len(history.epochs) + 1, epochs, 1)
    if rates is not None:  # a per-step schedule: the rate of the epoch's first step
        return float(rates[0])
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


PER_STEP = ("cosine-steps", "one-cycle")  # the schedules whose rate changes every step
ONE_CYCLE_WARMUP = 0.3  # the share of the steps in which one-cycle warms up (PyTorch's pct_start)
ONE_CYCLE_START = 25.0  # one-cycle starts at eta / 25 (PyTorch's div_factor)
ONE_CYCLE_END = 25.0 * 1e4  # and ends at eta / 250,000 (div_factor times final_div_factor)


def step_rates(schedule: str, eta: float, epoch: int, epochs: int, steps: int) -> npt.NDArray[np.float64] | None:
    """The learning rate of each of epoch ``epoch``'s ``steps`` steps (epochs from 1), or None for a per-epoch schedule.

    With t = (steps done before this one) / (all the run's steps), in [0, 1):

    - cosine-steps: eta (1 + cos(pi t)) / 2, the cosine schedule step by step.
    - one-cycle (Smith and Topin 2017, as PyTorch's ``OneCycleLR``): a
      half cosine up from eta / 25 to eta over the first 30% of the steps,
      then a half cosine down to eta / 250,000.

    A function of the epoch's number alone, so a resumed run continues it exactly.
    """
    if schedule not in PER_STEP:
        return None
    t = ((epoch - 1) * steps + np.arange(steps, dtype=np.float64)) / (max(epochs, 1) * steps)
    if schedule == "cosine-steps":
        return 0.5 * eta * (1.0 + np.cos(np.pi * t))
    low, end = eta / ONE_CYCLE_START, eta / ONE_CYCLE_END
    up = t < ONE_CYCLE_WARMUP
    phase = np.where(up, t / ONE_CYCLE_WARMUP, (t - ONE_CYCLE_WARMUP) / (1.0 - ONE_CYCLE_WARMUP))
    rising = low + (eta - low) * 0.5 * (1.0 - np.cos(np.pi * phase))
    falling = end + (eta - end) * 0.5 * (1.0 + np.cos(np.pi * phase))
    return np.where(up, rising, falling)


def stalled(history: History, patience: int) -> bool:
    """Early stopping: no validation improvement in the last ``patience`` epochs."""
    best = history.best()
    return patience > 0 and best is not None and history.epochs[-1].epoch - best.epoch >= patience
