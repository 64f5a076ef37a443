"""Average pooling, the layer kind that tests the layer contract: its math, the reference, the step, the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnist_nn import Conv2D, Dense, MaxPool2D, Network
from mnist_nn.models import load_model, save_model
from mnist_nn.nn.layers import AvgPool2D, layer_from_description
from mnist_nn.nn.reference import backprop_example, update_mini_batch
from mnist_nn.nn.specs import layer_from_spec, spec_of
from mnist_nn.train.optimizers import SGD
from mnist_nn.train.step import Step
from tests.test_conv import _batch, _numeric_gradient, _numeric_gradient_of
from tests.test_serialization import _members, _metadata


def test_average_pool_takes_block_means_and_shares_the_gradient() -> None:
    pool = AvgPool2D(2)
    pool.build((4, 4, 1))
    x = np.array([[1, 5, 2, 0], [3, 4, 8, 1], [0, 0, 7, 7], [9, 1, 6, 7]], dtype=np.float64).reshape(1, 16)
    assert pool.forward(x).ravel().tolist() == [3.25, 2.75, 2.5, 6.75]
    grads, dx = pool.backward(x, pool.forward(x), np.array([[10.0, 20.0, 30.0, 40.0]]), output=False)
    # Each block's delta goes to its four values in equal shares.
    expected = np.kron([[10.0, 20.0], [30.0, 40.0]], np.ones((2, 2))) / 4
    assert grads == []
    np.testing.assert_array_equal(dx.reshape(4, 4), expected)


@pytest.mark.parametrize("pool", [2, 3])
def test_average_pool_alone_passes_the_gradient_check(pool: int) -> None:
    # On 6x6 feature maps of 2 channels; C = sum(a * r) for a fixed random r, so dC/da = r.
    layer = AvgPool2D(pool)
    layer.build((6, 6, 2))
    layer.initialize(None, "normal", np.dtype(np.float64))
    x = np.random.default_rng(4).random((4, 72))
    r = np.random.default_rng(5).standard_normal(layer.forward(x).shape)
    _, dx = layer.backward(x, layer.forward(x), r, output=False)
    (numeric_dx,) = _numeric_gradient_of([x], lambda: float(np.sum(layer.forward(x) * r)))
    np.testing.assert_allclose(dx, numeric_dx, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(("activation", "cost"), [("tanh", "cross-entropy"), ("relu", "log-likelihood")])
def test_a_cnn_with_an_average_pool_passes_the_gradient_check(activation: str, cost: str) -> None:
    layers = [Conv2D(2, 3), AvgPool2D(2), Conv2D(3, 2), Dense(3)]
    net = Network(layers, input_size=64, dtype=np.float64, activation=activation, cost=cost, init="glorot", seed=1)
    x, y = _batch(2, 5, 64, 3)
    grad_w, grad_b = net.backprop(x, y)
    numeric = _numeric_gradient(net, lambda: net.cost.fn(net.feedforward(x), y))
    for gw, gb, g in zip(grad_w, grad_b, numeric, strict=True):
        np.testing.assert_allclose(gw, g[:-1], rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(gb, g[-1], rtol=1e-5, atol=1e-8)


# A pool on the input, and a pool between two sigmoid layers (its output feeds a dense layer's ones column).
REFERENCE_NETWORKS = [((AvgPool2D, 2), (Dense, 5), (Dense, 3)), ((Dense, 16), (AvgPool2D, 2), (Dense, 3))]


def _reference_network(kinds: tuple[tuple[type, int], ...]) -> Network:
    n_in = 36 if kinds[0][0] is AvgPool2D else 7
    return Network([kind(n) for kind, n in kinds], input_size=n_in, dtype=np.float64, seed=3)


@pytest.mark.parametrize("kinds", REFERENCE_NETWORKS)
def test_batch_gradient_is_the_sum_of_the_references_per_example_gradients(
    kinds: tuple[tuple[type, int], ...],
) -> None:
    net = _reference_network(kinds)
    x, y = _batch(6, 9, net.input_size, 3)
    grad_w, grad_b = net.backprop(x, y)
    sums = [np.zeros_like(g) for g in grad_w + grad_b]
    for xi, yi in zip(x, y, strict=True):
        dw, db = backprop_example(net, xi, yi)
        sums = [s + d for s, d in zip(sums, dw + db, strict=True)]
    for g, s in zip(grad_w + grad_b, sums, strict=True):
        np.testing.assert_allclose(g, s, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kinds", REFERENCE_NETWORKS)
@pytest.mark.parametrize("batch_size", [1, 4])
def test_the_fast_step_equals_the_per_example_reference(kinds: tuple[tuple[type, int], ...], batch_size: int) -> None:
    fast, slow = _reference_network(kinds), _reference_network(kinds)
    rng = np.random.default_rng(5)
    x = rng.random((13, fast.input_size))
    y = slow.one_hot(rng.integers(0, 3, size=13))
    optimizer = SGD()
    optimizer.plan(fast.params)
    steps = {m: Step(fast, m, optimizer, dropout=0.0, rng=rng) for m in {batch_size, 13 % batch_size or batch_size}}
    ones = fast.layers[0].ones_column
    for _ in range(2):
        order = rng.permutation(13)
        for k in range(0, 13, batch_size):  # 13 is not a multiple of 4: the last batch is smaller
            idx = order[k : k + batch_size]
            xb = np.hstack([x[idx], np.ones((len(idx), 1))]) if ones else x[idx]
            steps[len(idx)](xb, xb.T, y[idx], -0.7 / len(idx), 1.0)
            update_mini_batch(slow, x[idx], y[idx], 0.7)
    for f, s in zip(fast.params, slow.params, strict=True):
        np.testing.assert_allclose(f, s, rtol=1e-10, atol=1e-12)


def test_the_fast_step_is_the_textbook_update_for_a_cnn_with_an_average_pool() -> None:
    def cnn() -> Network:
        layers = [Conv2D(2, 3), AvgPool2D(2), Dense(4), Dense(3)]
        return Network(layers, input_size=64, dtype=np.float64, activation="relu", cost="log-likelihood", seed=2)

    net, twin = cnn(), cnn()
    x, y = _batch(8, 6, 64, 3)
    optimizer = SGD()
    optimizer.plan(net.params)
    step = Step(net, 6, optimizer, dropout=0.0, rng=np.random.default_rng(0))
    for _ in range(2):
        step(x, x.T, y, -0.4 / 6, 1.0)
        gw, gb = twin.backprop(x, y)
        for p, w, b in zip(twin.params, gw, gb, strict=True):
            p -= 0.4 / 6 * np.vstack([w, b[None]])
    for got, want in zip(net.params, twin.params, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_a_convolution_starts_alike_under_either_pool_with_fan_out() -> None:
    # Nielsen's fan-out counts F K^2 / P^2 outputs per input for a convolution and its pool, either pool.
    def first_params(pool: AvgPool2D | MaxPool2D) -> np.ndarray:
        return Network([Conv2D(4, 5), pool, Dense(10)], init="fan-out", seed=6).params[0]

    np.testing.assert_array_equal(first_params(AvgPool2D(2)), first_params(MaxPool2D(2)))
    alone = Network([Conv2D(4, 5), Dense(10)], init="fan-out", seed=6).params[0]
    # N(0, 1/25) weights after a 2x2 pool, N(0, 1/100) without: twice as large, from the same draws.
    np.testing.assert_allclose(first_params(AvgPool2D(2))[:-1], 2 * alone[:-1], rtol=1e-6)


def test_spec_description_and_model_file_round_trip(tmp_path: Path) -> None:
    layer = layer_from_spec("avgpool2")
    assert isinstance(layer, AvgPool2D) and layer.pool == 2 and spec_of(layer) == "avgpool2"
    assert layer.describe() == {"kind": "avgpool2d", "pool": 2}
    assert layer_from_description(layer.describe()).describe() == layer.describe()
    net = Network([Conv2D(3, 5), layer, Dense(10)], activation="relu", cost="log-likelihood", init="he", seed=8)
    assert repr(net).startswith("<Network 784 -> Conv2D(3, 5, 'relu') -> AvgPool2D(2) -> Dense(10, 'softmax')")
    path = tmp_path / "avgpool.npz"
    save_model(path, net)
    assert sorted(_members(path)) == ["layer0_b", "layer0_w", "layer2_b", "layer2_w", "metadata"]
    assert [d["kind"] for d in _metadata(path)["layers"]] == ["conv2d", "avgpool2d", "dense"]
    loaded = load_model(path).network
    x = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    np.testing.assert_array_equal(loaded.feedforward(x), net.feedforward(x))
    with pytest.raises(ValueError, match="a 5x5 pool does not divide its 24x24 input"):
        Network([Conv2D(3, 5), AvgPool2D(5), Dense(10)])
    assert not layer.activated and layer.params == []  # no activation of its own, no parameters
