"""Schedules that change the learning rate every step (one-cycle, cosine-steps): shape, wiring and resumption."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mnist_nn.config import TrainConfig
from mnist_nn.train import Run, fit
from mnist_nn.train.checkpoint import resume_run, save_run
from mnist_nn.train.schedules import learning_rate, step_rates
from mnist_nn.train.step import Step
from tests.test_checkpoint import _data, _records


def _whole(schedule: str, eta: float, epochs: int, steps: int) -> np.ndarray:
    parts = [step_rates(schedule, eta, e, epochs, steps) for e in range(1, epochs + 1)]
    return np.concatenate([p for p in parts if p is not None])


def test_one_cycle_warms_up_for_30_percent_of_the_steps_then_anneals() -> None:
    rates = _whole("one-cycle", 0.5, 10, 100)
    assert rates[0] == pytest.approx(0.5 / 25) and rates.max() == pytest.approx(0.5)
    assert int(np.argmax(rates)) == 300
    assert np.all(np.diff(rates[:301]) > 0) and np.all(np.diff(rates[300:]) < 0)
    assert rates[-1] == pytest.approx(0.5 / 25e4, rel=0.05, abs=1e-5)
    whole = step_rates("one-cycle", 0.5, 1, 1, 1000)
    assert whole is not None
    np.testing.assert_allclose(rates, whole)  # epochs only cut it


def test_cosine_steps_is_the_cosine_schedule_step_by_step() -> None:
    rates = _whole("cosine-steps", 0.2, 4, 50)
    for epoch in range(4):  # each epoch's first step has the per-epoch cosine's rate
        assert rates[epoch * 50] == pytest.approx(0.5 * 0.2 * (1 + np.cos(np.pi * epoch / 4)))
    assert np.all(np.diff(rates) < 0) and step_rates("cosine", 0.2, 1, 4, 50) is None


def test_every_step_of_a_run_gets_its_own_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _data()
    config = TrainConfig(layers=("dense12", "dense10"), epochs=2, batch_size=40, eta=0.5, schedule="one-cycle", l2=3.0)
    seen: list[tuple[float, float]] = []
    call = Step.__call__

    def spy(
        self: Step, xb: np.ndarray, xb_t: np.ndarray, yb: np.ndarray, scale: float, decay: float, kept: Any = None
    ) -> None:
        seen.append((scale, decay))
        call(self, xb, xb_t, yb, scale, decay, kept)

    monkeypatch.setattr(Step, "__call__", spy)
    run = fit(Run.start(config), *data.train, validation=data.validation, helper=False)
    rates = _whole("one-cycle", 0.5, 2, 8)  # 300 images: 7 batches of 40 and one of 20 an epoch
    sizes = np.array([40] * 7 + [20] * 1 + [40] * 7 + [20])
    np.testing.assert_allclose([s for s, _ in seen], -rates / sizes, rtol=1e-12)
    np.testing.assert_allclose([d for _, d in seen], 1 - rates * 3.0 / 300, rtol=1e-12)
    assert [r.eta for r in run.history.epochs] == pytest.approx([rates[0], rates[8]])
    assert learning_rate(run.history, eta=0.5, schedule="one-cycle", epochs=3) == pytest.approx(
        step_rates("one-cycle", 0.5, 3, 3, 1)[0]  # type: ignore[index]
    )


def test_a_resumed_one_cycle_run_continues_as_if_never_stopped(tmp_path: Path) -> None:
    data = _data()
    config = TrainConfig(
        layers=("dense12", "dense10"), epochs=4, batch_size=10, eta=0.5, momentum=0.9, schedule="one-cycle", seed=3
    )
    straight = fit(Run.start(config), *data.train, validation=data.validation, helper=False)
    first = Run.start(config)
    with pytest.raises(_StopError):  # stopped by force after 2 of the 4 epochs, as a crash would
        fit(first, *data.train, validation=data.validation, helper=False, on_epoch=_stop_after(2))
    save_run(tmp_path / "run.npz", first, data)
    resumed = resume_run(tmp_path / "run.npz", config)
    fit(resumed, *data.train, validation=data.validation, helper=False)
    assert _records(resumed) == _records(straight)
    for got, want in zip(resumed.network.params, straight.network.params, strict=True):
        np.testing.assert_array_equal(got, want)


class _StopError(Exception):
    pass


def _stop_after(epochs: int) -> Callable[[object, Run], None]:
    def on_epoch(record: object, run: Run) -> None:
        if len(run.history.epochs) == epochs:
            raise _StopError

    return on_epoch


def test_config_accepts_the_new_schedules() -> None:
    for schedule in ("cosine-steps", "one-cycle"):
        assert dataclasses.replace(TrainConfig(), schedule=schedule).schedule == schedule
