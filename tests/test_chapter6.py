"""Chapter 6's remaining pieces: dropout as a layer, his expanded training set, his initialization, the presets."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mnist_nn import PRESETS, Conv2D, Dense, Dropout, MaxPool2D, Network, TrainConfig
from mnist_nn.cli import train_main
from mnist_nn.errors import ConfigError
from mnist_nn.models import load_model, save_model
from mnist_nn.nn.layers import layer_from_description
from mnist_nn.nn.network import layer_sizes
from mnist_nn.nn.specs import layer_from_spec
from mnist_nn.train import Run, fit
from mnist_nn.train.expand import expand_shifts
from mnist_nn.train.optimizers import SGD
from mnist_nn.train.step import Step
from tests.test_conv import _batch, _numeric_gradient
from tests.test_conv_models import _with_layers
from tests.test_serialization import _bad

# --- Dropout ---------------------------------------------------------------------------------


def test_dropout_specs_and_descriptions() -> None:
    layer = layer_from_spec("dropout0.5")
    assert isinstance(layer, Dropout) and layer.rate == 0.5
    assert layer_from_spec("dropout.25").describe() == {"kind": "dropout", "rate": 0.25}
    assert layer_from_description({"kind": "dropout", "rate": 0.3}).describe() == {"kind": "dropout", "rate": 0.3}
    for spec in ("dropout1.5", "dropout1", "dropout-0.1", "dropout"):
        with pytest.raises(ValueError, match="unknown layer"):
            layer_from_spec(spec)
    for rate in (1.0, -0.1, "0.5", True, float("nan")):
        with pytest.raises(ValueError, match="dropout rate in"):
            Dropout(rate)  # type: ignore[arg-type]


def test_dropout_in_the_step_masks_forward_and_backward_alike() -> None:
    layer = Dropout(0.25)
    layer.build((400,))
    layer.initialize(None, "normal", np.dtype(np.float64))  # no parameters: the dtype of its buffers
    step = layer.plan(50, ones_out=True)
    x = np.random.default_rng(1).random((50, 400)) + 0.5
    step.forward(x, np.random.default_rng(2))
    kept = step.output != 0
    assert step.out.shape == (50, 401) and np.all(step.out[:, -1] == 1.0)  # the next dense layer's ones column
    np.testing.assert_allclose(step.output[kept], x[kept] / 0.75)
    assert 0.72 < kept.mean() < 0.78  # each value kept with probability 0.75
    step.delta[...] = np.random.default_rng(3).standard_normal((50, 400))
    below = np.empty((50, 400))
    step.backward(x.T, below, False)
    np.testing.assert_allclose(below, np.where(kept, step.delta / 0.75, 0.0))
    # A fresh mask every step.
    first = kept.copy()
    step.forward(x, np.random.default_rng(4))
    assert not np.array_equal(first, step.output != 0)
    # Outside training the layer passes its input through.
    np.testing.assert_array_equal(layer.forward(x), x)


def test_dropout_inside_a_network_passes_the_gradient_check() -> None:
    # The step's update equals -eta/m times the finite-difference gradient of the cost
    # computed with the same mask (drawn from a generator in the same state).
    net = Network(
        [Dense(6), Dropout(0.4), Dense(3)],
        input_size=5,
        dtype=np.float64,
        activation="tanh",
        cost="log-likelihood",
        init="glorot",
        seed=2,
    )
    x, y = _batch(5, 4, 5, 3)
    mask = (np.random.default_rng(9).random((4, 6)) < 0.6) / 0.6

    def total() -> float:
        hidden = net.layers[0].forward(x)
        return net.cost.fn(net.layers[2].forward(hidden * mask), y)

    numeric = _numeric_gradient(net, total)
    before = net.copy_params()
    optimizer = SGD()
    optimizer.plan(net.params)
    step = Step(net, 4, optimizer, dropout=0.0, rng=np.random.default_rng(9))
    xb = np.hstack([x, np.ones((4, 1))])
    eta = 0.3
    step(xb, xb.T, y, -eta / 4, 1.0)
    for after, start, g in zip(net.params, before, numeric, strict=True):
        np.testing.assert_allclose(after - start, -eta / 4 * g, rtol=1e-6, atol=1e-10)


def test_a_network_with_dropout_round_trips_and_bad_rates_are_refused(tmp_path: Path) -> None:
    layers = [Conv2D(4, 5), MaxPool2D(2), Dropout(0.5), Dense(20), Dropout(0.5), Dense(10)]
    net = Network(layers, activation="relu", cost="log-likelihood", init="fan-out", seed=3)
    path = tmp_path / "drop.npz"
    save_model(path, net, {"epoch": 1})
    loaded = load_model(path).network
    assert loaded.describe() == net.describe()
    x = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    np.testing.assert_array_equal(loaded.feedforward(x), net.feedforward(x))
    dense10 = {"kind": "dense", "size": 10, "activation": "softmax"}
    for rate, fragment in ((1.5, "dropout rate in [0, 1)"), ("0.5", "dropout rate in [0, 1)")):
        bad: list[dict[str, Any]] = [
            {"kind": "conv2d", "filters": 4, "kernel": 5, "activation": "relu"},
            {"kind": "dropout", "rate": rate},
        ]
        _bad(_with_layers(tmp_path, [*bad, dense10]), fragment)


def test_bad_dropout_specs_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--data-dir", str(tmp_path / "none"), "--layers", "conv4x5", "dropout2", "dense10"]
    assert train_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--layers: unknown layer 'dropout2'" in err[0], err


# --- Nielsen's initialization ------------------------------------------------------------------


def test_fan_out_initialization_is_nielsens() -> None:
    layers = [Conv2D(20, 5), MaxPool2D(2), Conv2D(40, 5), MaxPool2D(2), Dense(100), Dense(10)]
    net = Network(layers, cost="log-likelihood", activation="relu", init="fan-out", seed=0, dtype=np.float64)
    conv1, conv2, dense, softmax = (net.layers[i].params[0] for i in (0, 2, 4, 5))
    # n_out = F K^2 / P^2 for a convolution and its pool: 125 and 250; 100 for the dense layer.
    for p, n_out in ((conv1, 125), (conv2, 250), (dense, 100)):
        assert abs(p[:-1].std() * np.sqrt(n_out) - 1.0) < 0.1, (p.shape, p[:-1].std())
        assert abs(p[-1].std() - 1.0) < 0.35  # biases N(0, 1)
    assert not softmax.any()  # his softmax layer starts at 0
    # Without a pool after it, a convolution counts F K^2.
    alone = Network([Conv2D(8, 3), Dense(10)], cost="log-likelihood", init="fan-out", seed=0, dtype=np.float64)
    assert abs(alone.layers[0].params[0][:-1].std() * np.sqrt(72) - 1.0) < 0.25


# --- the expanded training set ---------------------------------------------------------------


def test_expansion_adds_the_four_one_pixel_shifts() -> None:
    x = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    labels = np.array([7, 1, 4])
    big, big_labels = expand_shifts(x, labels)
    assert big.shape == (15, 784) and big_labels.tolist() == [7, 1, 4] * 5
    img = x[1].reshape(28, 28)
    np.testing.assert_array_equal(big[1], x[1])
    up, down, left, right = (big[k * 3 + 1].reshape(28, 28) for k in range(1, 5))
    np.testing.assert_array_equal(up[:-1], img[1:])
    np.testing.assert_array_equal(down[1:], img[:-1])
    np.testing.assert_array_equal(left[:, :-1], img[:, 1:])
    np.testing.assert_array_equal(right[:, 1:], img[:, :-1])
    assert not up[-1].any() and not down[0].any() and not left[:, -1].any() and not right[:, 0].any()
    with pytest.raises(ValueError, match=r"expected images of shape \(n, 784\)"):
        expand_shifts(np.zeros((2, 100), np.float32), labels[:2])


def test_an_expanded_epoch_is_five_times_the_training_set() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((40, 784), dtype=np.float32)
    labels = rng.integers(0, 10, 40)
    config = TrainConfig(layers=("dense8", "dense10"), epochs=1, batch_size=10, eta=0.1, expand=True, seed=1)
    seen: list[tuple[int, int]] = []
    run = fit(Run.start(config), x, labels, on_progress=lambda done, n: seen.append((done, n)))
    assert seen[-1] == (200, 200) and len(run.history.epochs) == 1
    with pytest.raises(ConfigError, match="expand"):
        TrainConfig(expand=1)  # type: ignore[arg-type]


# --- the presets -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_names_layers_that_chain_into_ten_outputs(name: str) -> None:
    config = PRESETS[name]
    assert config.inputs == 784 and layer_sizes([layer_from_spec(s) for s in config.layers], 784)[-1] == 10


def test_the_chapter6_presets_are_his_settings() -> None:
    relu = PRESETS["nielsen-ch6-relu"]
    expected: dict[str, Any] = {"epochs": 60, "batch_size": 10, "eta": 0.03, "l2": 1.0, "init": "fan-out"}
    assert {k: getattr(relu, k) for k in expected} == expected
    assert dataclasses.replace(relu, expand=True) == PRESETS["nielsen-ch6-expanded"]
    dropout = PRESETS["nielsen-ch6-dropout"]
    assert dropout.expand and dropout.epochs == 40 and dropout.l2 == 0.0
    assert dropout.layers[4:] == ("dropout0.5", "dense1000", "dropout0.5", "dense1000", "dropout0.5", "dense10")
