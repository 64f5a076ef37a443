"""Label smoothing: the soft targets' cost and delta, the setting's checks, and what it does to a trained network."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mnist_nn.config import TrainConfig
from mnist_nn.errors import ConfigError
from mnist_nn.nn.costs import COSTS
from mnist_nn.train import Run, fit
from tests.test_checkpoint import _data


def _soft(y: np.ndarray, s: float) -> np.ndarray:
    soft: np.ndarray = (1 - s) * y + s / y.shape[1]
    return soft


@pytest.mark.parametrize("cost", ["log-likelihood", "cross-entropy"])
def test_the_delta_of_a_soft_target_is_the_gradient_of_its_cost(cost: str) -> None:
    # dC/dz by finite differences through the output activation, against BP1's a - y.
    c = COSTS[cost]
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 10))
    y = _soft(np.eye(10)[rng.integers(0, 10, 4)], 0.1)

    def total() -> float:
        return c.fn(c.output.forward(z.copy(), out=np.empty_like(z)), y)

    numeric = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        saved = z[idx]
        z[idx] = saved + 1e-6
        up = total()
        z[idx] = saved - 1e-6
        numeric[idx] = (up - total()) / 2e-6
        z[idx] = saved
    delta = np.empty_like(z)
    a = c.output.forward(z.copy(), out=np.empty_like(z))
    c.output_delta(a, y, delta, np.empty_like(z))
    np.testing.assert_allclose(delta, numeric, rtol=1e-5, atol=1e-8)


def test_the_log_likelihood_of_soft_targets_is_their_cross_entropy() -> None:
    a = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    y = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert COSTS["log-likelihood"].fn(a, y) == pytest.approx(-np.log(0.7) - np.log(0.8), rel=1e-15)
    soft = _soft(y, 0.3)
    assert COSTS["log-likelihood"].fn(a, soft) == pytest.approx(-(soft * np.log(a)).sum(), rel=1e-15)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\), got 1.0"),
        ({"label_smoothing": -0.1}, r"label_smoothing must be in \[0, 1\)"),
        ({"label_smoothing": 0.1, "cost": "quadratic"}, "needs the log-likelihood or cross-entropy cost"),
    ],
)
def test_bad_settings_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes)  # type: ignore[arg-type]


def test_a_smoothed_network_is_less_sure_of_its_training_images() -> None:
    # The same run with and without smoothing: both learn the bands, but smoothing caps how
    # sure the network is of each answer near 1 - s + s/K = 0.91 rather than 1.
    data = _data()
    config = TrainConfig(
        layers=("dense30", "dense10"), cost="log-likelihood", epochs=30, batch_size=10, eta=0.5, seed=4
    )
    sure = {}
    for s in (0.0, 0.1):
        run = fit(Run.start(dataclasses.replace(config, label_smoothing=s)), *data.train, helper=False)
        images = data.train.images.astype(np.float32) / 255
        assert run.network.count_correct(images, data.train.labels) == data.train.labels.shape[0]
        sure[s] = float(np.median(run.network.probabilities(images).max(axis=1)))
    assert sure[0.0] > 0.99 and 0.85 < sure[0.1] < 0.95, sure
