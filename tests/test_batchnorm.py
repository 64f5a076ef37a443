"""Batch normalization: gradients against finite differences, the fast step against the textbook, and its life cycle."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from mnist_nn import BatchNorm, Conv2D, Dense, MaxPool2D, Network
from mnist_nn.config import TrainConfig
from mnist_nn.models import load_model, save_model
from mnist_nn.nn.activations import IDENTITY
from mnist_nn.nn.layers import layer_from_description
from mnist_nn.nn.specs import layer_from_spec, spec_of
from mnist_nn.train import Run, fit
from mnist_nn.train.checkpoint import resume_run, save_run
from mnist_nn.train.optimizers import Momentum
from mnist_nn.train.step import Step
from tests.test_checkpoint import _data, _records
from tests.test_conv import _batch, _numeric_gradient_of, bars, check_layer_gradients


def _bn_cnn(activation: str = "relu", cost: str = "log-likelihood", dtype: type = np.float64) -> Network:
    """8x8 images -> 3 maps of 3x3, normalized -> 2x2 pool -> dense 5, normalized -> dense 3."""
    layers = [Conv2D(3, 3), BatchNorm(), MaxPool2D(2), Dense(5), BatchNorm(), Dense(3)]
    net = Network(layers, input_size=64, dtype=dtype, activation=activation, cost=cost, init="glorot", seed=1)
    rng = np.random.default_rng(2)
    for layer in net.layers:
        if isinstance(layer, BatchNorm):  # away from gamma 1, beta 0, so that they matter
            layer.params[0][...] = rng.uniform(0.5, 1.5, layer.params[0].shape)
    return net


def _training_cost(net: Network, x: np.ndarray, y: np.ndarray) -> float:
    a = x
    for layer in net.layers:
        a = layer.forward_training(a)
    return net.cost.fn(a, y)


@pytest.mark.parametrize("shape", [(4, 4, 3), (6,)])
def test_batch_norm_alone_passes_the_gradient_check(shape: tuple[int, ...]) -> None:
    # The batch's statistics depend on x, so the delta below has the two terms of the mean and the
    # variance besides the direct one; the running averages do not change the output in training.
    x = np.random.default_rng(4).standard_normal((5, int(np.prod(shape))))
    check_layer_gradients(BatchNorm(), shape, x)


@pytest.mark.parametrize(("activation", "cost"), [("relu", "log-likelihood"), ("tanh", "cross-entropy")])
def test_a_network_with_batch_norms_passes_the_gradient_check(activation: str, cost: str) -> None:
    net = _bn_cnn(activation, cost)
    x, y = _batch(6, 7, 64, 3)
    grads = net.gradients(x, y, l2=0.5, n=20)

    def total() -> float:
        return _training_cost(net, x, y) + 7 * 0.5 / 20 * net.l2_penalty()

    trained = [g for g, p in zip(grads, net.params, strict=True) if np.any(g)]
    numeric = _numeric_gradient_of([p for g, p in zip(grads, net.params, strict=True) if np.any(g)], total)
    assert len(trained) == 5  # two convolution/dense arrays, two gamma-beta pairs, the output layer
    for got, want in zip(trained, numeric, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_the_fast_step_is_the_textbook_update_and_keeps_the_running_averages() -> None:
    net, twin = _bn_cnn(), _bn_cnn()
    x, y = _batch(8, 6, 64, 3)
    eta, mu = 0.3, 0.9
    optimizer = Momentum(mu)
    optimizer.plan(net.params)
    step = Step(net, 6, optimizer, dropout=0.0, rng=np.random.default_rng(0))
    velocity = [np.zeros_like(p) for p in twin.params]
    for _ in range(3):
        # The running averages the step should keep, from the batch it sees before its update.
        expected = []
        a = x
        for layer in twin.layers:
            if isinstance(layer, BatchNorm):
                values = a.reshape(-1, layer.features)
                mean, var = values.mean(axis=0), values.var(axis=0, ddof=1)
                expected.append(0.9 * layer.params[1] + 0.1 * np.stack([mean, var]))
            a = layer.forward_training(a)
        step(x, x.T, y, -eta / 6, 1.0)
        for v, p, g in zip(velocity, twin.params, twin.gradients(x, y), strict=True):
            v *= mu
            v -= eta / 6 * g
            p += v
        for layer, running in zip([la for la in twin.layers if isinstance(la, BatchNorm)], expected, strict=True):
            layer.params[1][...] = running
    for got, want in zip(net.params, twin.params, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_evaluation_normalizes_with_the_running_averages_so_each_answer_stands_alone() -> None:
    net = _bn_cnn()
    bn = net.layers[1]
    bn.params[1][...] = [[0.2, -0.1, 0.3], [2.0, 0.5, 1.5]]
    x = np.random.default_rng(7).random((4, 64))
    conv = net.layers[0].forward(x).reshape(-1, 3)
    (gamma, beta), (mean, var) = bn.params
    expected = np.maximum(gamma * (conv - mean) / np.sqrt(var + 1e-5) + beta, 0.0)
    np.testing.assert_allclose(bn.forward(net.layers[0].forward(x)).reshape(-1, 3), expected, rtol=1e-12)
    together = net.feedforward(x)
    for i in range(4):
        np.testing.assert_allclose(net.feedforward(x[i : i + 1])[0], together[i], rtol=1e-12)


def test_the_layer_below_a_batch_norm_stays_linear_unless_it_names_an_activation() -> None:
    net = _bn_cnn()
    assert net.layers[0].activation is IDENTITY and net.layers[3].activation is IDENTITY
    assert net.layers[1].activation.name == "relu" and net.layers[-1].activation.name == "softmax"
    named = Network([Conv2D(3, 3, "tanh"), BatchNorm(), Dense(3)], input_size=64, activation="relu")
    assert named.layers[0].activation.name == "tanh"
    with pytest.raises(ValueError, match="needs an activation"):
        Network([Dense(4), BatchNorm()], input_size=64)


def test_a_convolution_pooled_then_normalized_stays_linear_and_its_step_sends_a_tie_to_one_maximum() -> None:
    # conv pool bn: the pool commutes with the norm's increasing map, so the convolution stays linear.
    # Over the blank top half every window gives the bias alone: each pooled block there is a 4-way tie,
    # which the step routes to the first maximum, as the textbook (MaxPool2D.backward) does.
    def build() -> Network:
        layers = [Conv2D(3, 3), MaxPool2D(2), BatchNorm(), Dense(4), BatchNorm(), Dense(3)]
        net = Network(layers, input_size=64, dtype=np.float64, activation="relu", cost="log-likelihood", seed=3)
        net.params[0][-1] = [0.3, -0.2, 0.1]  # the biases, which the tied blocks take
        return net

    net, twin = build(), build()
    assert [layer.activation.name for layer in net.layers] == [
        "identity",
        "identity",
        "relu",
        "identity",
        "relu",
        "softmax",
    ]
    pool = net.layers[1]
    assert isinstance(pool, MaxPool2D) and pool.first_maximum_only
    x, y = _batch(8, 6, 64, 3)
    x[:, :32] = 0.0
    eta = 0.5
    optimizer = Momentum(0.0)
    optimizer.plan(net.params)
    step = Step(net, 6, optimizer, dropout=0.0, rng=np.random.default_rng(0))
    for _ in range(2):
        step(x, x.T, y, -eta / 6, 1.0)
        for p, g in zip(twin.params, twin.gradients(x, y), strict=True):
            p -= eta / 6 * g
        for layer, mine in zip(twin.layers, net.layers, strict=True):
            if isinstance(layer, BatchNorm):
                layer.params[1][...] = mine.params[1]  # the running averages, checked elsewhere
    for got, want in zip(net.params, twin.params, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_descriptions_specs_and_bad_arguments() -> None:
    net = _bn_cnn()
    rebuilt = Network.from_description(net.describe(), input_size=64, activation="relu", cost="log-likelihood")
    assert rebuilt.describe() == net.describe()
    assert [spec_of(layer) for layer in net.layers] == ["conv3x3", "bn", "pool2", "dense5", "bn", "dense3"]
    assert isinstance(layer_from_spec("bn"), BatchNorm)
    assert layer_from_description({"kind": "batchnorm", "momentum": 0.01, "eps": 1e-3}).describe()["momentum"] == 0.01
    for bad in ({"momentum": 0.0}, {"momentum": 1.5}, {"eps": -1.0}, {"momentum": float("nan")}, {"eps": True}):
        with pytest.raises(ValueError, match="batch norm"):
            BatchNorm(**bad)


def test_a_model_file_keeps_the_running_averages(tmp_path: Path) -> None:
    net = _bn_cnn(dtype=np.float32)
    net.layers[4].params[1][...] = np.arange(10, dtype=np.float32).reshape(2, 5) + 1
    save_model(tmp_path / "bn.npz", net)
    loaded = load_model(tmp_path / "bn.npz", require_mnist=False).network
    for got, want in zip(loaded.params, net.params, strict=True):
        np.testing.assert_array_equal(got, want)
    x = np.random.default_rng(1).random((5, 64)).astype(np.float32)
    np.testing.assert_array_equal(loaded.feedforward(x), net.feedforward(x))


def test_a_cnn_with_batch_norms_learns_a_tiny_problem_with_dropout_after_its_dense_norm() -> None:
    x, labels = bars()
    layers = [Conv2D(4, 3), BatchNorm(), MaxPool2D(2), Dense(8), BatchNorm(), Dense(2)]
    net = Network(layers, input_size=64, activation="relu", cost="log-likelihood", init="he")
    fit(Run.for_network(net, np.random.default_rng(1), epochs=5, batch_size=10, eta=0.1, dropout=0.2), x, labels)
    assert net.count_correct(x, labels) >= 195
    assert not np.allclose(net.layers[1].params[1], [[0.0] * 4, [1.0] * 4])  # the running averages moved


def test_a_resumed_batch_norm_run_continues_as_if_never_stopped(tmp_path: Path) -> None:
    data = _data()

    def config(epochs: int) -> TrainConfig:
        return TrainConfig(
            layers=("conv4x5", "bn", "pool2", "dense12", "bn", "dense10"),
            activation="relu",
            cost="log-likelihood",
            init="he",
            epochs=epochs,
            batch_size=10,
            eta=0.05,
            momentum=0.9,
            seed=3,
        )

    straight = fit(Run.start(config(3)), *data.train, validation=data.validation, helper=False)
    first = fit(Run.start(config(2)), *data.train, validation=data.validation, helper=False)
    save_run(tmp_path / "run.npz", first, data)
    resumed = resume_run(tmp_path / "run.npz", dataclasses.replace(config(2), epochs=3))
    fit(resumed, *data.train, validation=data.validation, helper=False)
    assert _records(resumed) == _records(straight)
    for got, want in zip(resumed.network.params, straight.network.params, strict=True):
        np.testing.assert_array_equal(got, want)
