"""The moving average of the weights (--ema): its update, what a run validates and serves, saving and resuming."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from mnist_nn.config import TrainConfig
from mnist_nn.errors import ConfigError
from mnist_nn.models import load_model
from mnist_nn.train import Run, fit
from mnist_nn.train.checkpoint import resume_run, save_run
from mnist_nn.train.optimizers import Momentum, Nesterov
from tests.test_checkpoint import _data, _records


@pytest.mark.parametrize("optimizer", [Momentum(0.9, average=0.8), Nesterov(0.5, average=0.8)])
def test_the_average_follows_the_weights_step_by_step(optimizer: Momentum) -> None:
    w = np.array([1.0, -2.0, 3.0])
    optimizer.plan([w])
    step = optimizer.bind([(0, w, g := np.zeros(3))])
    expected = w.copy()
    for k in range(4):
        g[...] = [0.1 * k, -0.2, 0.05]
        step()
        expected = 0.8 * expected + 0.2 * w
    np.testing.assert_allclose(optimizer.state["average"][0], expected, rtol=1e-12)
    assert optimizer.state_keys()[-1] == "average" and not np.allclose(expected, w)


def _config(epochs: int, **changes: object) -> TrainConfig:
    settings = {"layers": ("dense12", "dense10"), "epochs": epochs, "batch_size": 10, "eta": 0.5}
    settings |= {"momentum": 0.9, "seed": 3, "ema": 0.95}
    return dataclasses.replace(TrainConfig(**settings), **changes)  # type: ignore[arg-type]


def test_a_run_validates_and_serves_the_average(tmp_path: Path) -> None:
    data = _data()
    run = fit(Run.start(_config(3), keep_last=True), *data.train, validation=data.validation, helper=False)
    average = run.optimizer.state["average"]
    served = run.served_network()
    for got, want, raw in zip(served.params, average, run.network.params, strict=True):
        np.testing.assert_array_equal(got, want)
        assert not np.array_equal(got, raw)
    images = data.validation.images.astype(np.float32) / 255
    assert run.history.epochs[-1].validation_correct == served.count_correct(images, data.validation.labels)
    save_run(tmp_path / "run.npz", run, data)
    for got, want in zip(load_model(tmp_path / "run.npz").network.params, average, strict=True):
        np.testing.assert_array_equal(got, want)


def test_the_best_epoch_kept_is_the_averages(tmp_path: Path) -> None:
    data = _data()
    run = fit(Run.start(_config(4)), *data.train, validation=data.validation, helper=False)
    assert run.best_params is not None
    best = run.network.clone(run.best_params)
    images = data.validation.images.astype(np.float32) / 255
    assert best.count_correct(images, data.validation.labels) == run.history.best().validation_correct  # type: ignore[union-attr]


def test_a_resumed_averaging_run_continues_as_if_never_stopped(tmp_path: Path) -> None:
    data = _data()
    conv: dict[str, object] = {"layers": ("conv4x5", "bn", "pool2", "dense12", "dense10"), "activation": "relu"}
    conv |= {"cost": "log-likelihood", "init": "he", "eta": 0.05}
    straight = fit(Run.start(_config(3, **conv)), *data.train, validation=data.validation, helper=False)
    first = fit(Run.start(_config(2, **conv)), *data.train, validation=data.validation, helper=False)
    save_run(tmp_path / "run.npz", first, data)
    resumed = resume_run(tmp_path / "run.npz", _config(3, **conv))
    fit(resumed, *data.train, validation=data.validation, helper=False)
    assert _records(resumed) == _records(straight)
    for got, want in zip(resumed.optimizer.state["average"], straight.optimizer.state["average"], strict=True):
        np.testing.assert_array_equal(got, want)
    assert resumed.best_params is not None and straight.best_params is not None
    for got, want in zip(resumed.best_params, straight.best_params, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad", [1.0, -0.5, float("nan")])
def test_bad_averages_are_refused(bad: float) -> None:
    with pytest.raises(ConfigError, match=r"ema must be in \[0, 1\)"):
        TrainConfig(ema=bad)
