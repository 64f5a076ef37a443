"""Convolutional layers: gradients against finite differences, im2col against a plain loop, pooling, shapes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from mnist_nn import Conv2D, Dense, MaxPool2D, Network
from mnist_nn.config import TrainConfig
from mnist_nn.nn import layers as layers_module
from mnist_nn.nn.activations import ACTIVATIONS
from mnist_nn.nn.costs import COSTS
from mnist_nn.nn.layers import Layer, layer_from_description
from mnist_nn.nn.network import layer_sizes
from mnist_nn.nn.specs import layer_from_spec
from mnist_nn.train import Run, fit
from mnist_nn.train.optimizers import SGD, Momentum
from mnist_nn.train.step import Step


def _small_cnn(activation: str, cost: str, dtype: type = np.float64) -> Network:
    """8x8 images -> 2 maps of 3x3 -> 2x2 pool -> 3 maps of 2x2 -> dense 4 -> dense 3."""
    layers = [Conv2D(2, 3), MaxPool2D(2), Conv2D(3, 2), Dense(4), Dense(3)]
    return Network(layers, input_size=64, dtype=dtype, activation=activation, cost=cost, init="glorot", seed=1)


def _batch(seed: int, m: int, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((m, n_in)), np.eye(n_out)[rng.integers(0, n_out, size=m)]


def _numeric_gradient(net: Network, cost: object, eps: float = 1e-6) -> list[np.ndarray]:
    return _numeric_gradient_of(net.params, cost, eps)


def _numeric_gradient_of(arrays: list[np.ndarray], cost: object, eps: float = 1e-6) -> list[np.ndarray]:
    grads = []
    for p in arrays:
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            saved = p[idx]
            p[idx] = saved + eps
            up = cost()  # type: ignore[operator]
            p[idx] = saved - eps
            down = cost()  # type: ignore[operator]
            p[idx] = saved
            g[idx] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


@pytest.mark.parametrize(
    ("activation", "cost"), [("sigmoid", "quadratic"), ("tanh", "cross-entropy"), ("relu", "log-likelihood")]
)
@pytest.mark.parametrize("l2", [0.0, 0.7])
def test_cnn_gradients_match_finite_differences(activation: str, cost: str, l2: float) -> None:
    net = _small_cnn(activation, cost)
    x, y = _batch(2, 5, 64, 3)
    n = 30
    grad_w, grad_b = net.backprop(x, y, l2=l2, n=n)

    def total() -> float:
        return net.cost.fn(net.feedforward(x), y) + 5 * l2 / n * net.l2_penalty()

    for gw, gb, numeric in zip(grad_w, grad_b, _numeric_gradient(net, total), strict=True):
        np.testing.assert_allclose(gw, numeric[:-1], rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(gb, numeric[-1], rtol=1e-5, atol=1e-8)


def check_layer_gradients(layer: Layer, shape: tuple[int, ...], x: np.ndarray) -> None:
    """A layer alone, built on ``shape`` with tanh for an activation of its own, against finite differences.

    C = sum(a * r) for a fixed random r, so dC/da = r: every parameter
    gradient and the delta passed below are checked, the output computed as
    training computes it (``forward_training``).
    """
    layer.build(shape)
    layer.initialize(np.random.default_rng(3), "glorot", np.dtype(np.float64))
    if layer.activated:
        layer.activation = ACTIVATIONS["tanh"]
    r = np.random.default_rng(5).standard_normal(layer.forward_training(x).shape)
    grads, dx = layer.backward(x, layer.forward_training(x), r, output=False)

    def total() -> float:
        return float(np.sum(layer.forward_training(x) * r))

    for g, numeric in zip(grads, _numeric_gradient_of(layer.params, total), strict=True):
        np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-8)
    (numeric_dx,) = _numeric_gradient_of([x], total)
    np.testing.assert_allclose(dx, numeric_dx, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("layer", [Conv2D(3, 3, "tanh"), MaxPool2D(2)])
def test_each_new_layer_alone_passes_the_gradient_check(layer: Conv2D | MaxPool2D) -> None:
    check_layer_gradients(layer, (6, 6, 2), np.random.default_rng(4).random((4, 72)))


def test_im2col_convolution_equals_a_plain_loop_over_positions() -> None:
    rng = np.random.default_rng(6)
    conv = Conv2D(4, 3)
    conv.build((7, 7, 2))  # feature maps of 2 channels
    conv.initialize(np.random.default_rng(7), "normal", np.dtype(np.float64))
    conv.activation = ACTIVATIONS["relu"]
    x = rng.standard_normal((3, 98))
    kernels = conv.file_arrays(conv.params)["w"]  # (K, K, C, F)
    biases = conv.params[0][-1]
    images = x.reshape(3, 7, 7, 2)
    expected = np.zeros((3, 5, 5, 4))
    for n in range(3):
        for i in range(5):
            for j in range(5):
                for f in range(4):
                    expected[n, i, j, f] = np.sum(images[n, i : i + 3, j : j + 3, :] * kernels[..., f]) + biases[f]
    np.testing.assert_allclose(conv.forward(x).reshape(3, 5, 5, 4), np.maximum(expected, 0), rtol=1e-12)


def test_max_pool_takes_block_maxima_and_routes_the_gradient_to_them() -> None:
    pool = MaxPool2D(2)
    pool.build((4, 4, 1))
    x = np.array([[1, 5, 2, 0], [3, 4, 8, 1], [0, 0, 7, 7], [9, 1, 6, 7]], dtype=np.float64).reshape(1, 16)
    assert pool.forward(x).ravel().tolist() == [5, 8, 9, 7]
    _, dx = pool.backward(x, pool.forward(x), np.array([[10.0, 20.0, 30.0, 40.0]]), output=False)
    # Each block's delta goes to its maximum only; the tie of 7s in the last block goes to the first.
    expected = np.zeros((4, 4))
    expected[0, 1], expected[1, 2], expected[3, 0], expected[2, 2] = 10, 20, 30, 40
    np.testing.assert_array_equal(dx.reshape(4, 4), expected)


@pytest.mark.parametrize(("activation", "cost"), [("sigmoid", "quadratic"), ("relu", "log-likelihood")])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("blocked", [False, True], ids=["one-product", "per-offset"])
def test_fast_step_is_the_textbook_update_for_a_cnn(
    activation: str, cost: str, momentum: float, blocked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The delta below a convolution as one product, or one per kernel offset (the step of many rows).
    monkeypatch.setattr(layers_module, "BLOCKED_SHARES_ROWS", 1 if blocked else 10**9)
    net = _small_cnn(activation, cost)
    twin = _small_cnn(activation, cost)
    x, y = _batch(8, 6, 64, 3)
    eta, l2, n = 0.4, 2.0, 40
    optimizer = Momentum(momentum) if momentum else SGD()
    optimizer.plan(net.params)
    step = Step(net, 6, optimizer, dropout=0.0, rng=np.random.default_rng(0))
    velocity = [np.zeros_like(p) for p in twin.params]
    for _ in range(2):
        step(x, x.T, y, -eta / 6, 1.0 - eta * l2 / n)
        gw, gb = twin.backprop(x, y)
        for v, p, w, b in zip(velocity, twin.params, gw, gb, strict=True):
            p[:-1] *= 1.0 - eta * l2 / n  # L2 decays the weights (the kernels), never the biases
            v *= momentum
            v -= eta / 6 * np.vstack([w, b[None]])
            p += v
    for got, want in zip(net.params, twin.params, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_shapes_through_nielsens_chapter_6_network() -> None:
    layers = [layer_from_spec(s) for s in ("conv20x5", "pool2", "conv40x5", "pool2", "dense100", "dense10")]
    assert layer_sizes(layers, 784) == (784, 24 * 24 * 20, 12 * 12 * 20, 8 * 8 * 40, 4 * 4 * 40, 100, 10)
    net = Network(layers, activation="relu", cost="log-likelihood")
    assert [tuple(p.shape) for p in net.params] == [(26, 20), (501, 40), (641, 100), (101, 10)]
    out = net.feedforward(np.random.default_rng(0).random((3, 784), dtype=np.float32))
    assert out.shape == (3, 10) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    for layer in layers:
        again = layer_from_description(layer.describe())
        assert again.describe() == layer.describe()


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["conv20x30", "dense10"], "a 30x30 kernel is larger than its 28x28 input"),
        (["conv20x5", "pool5", "dense10"], "a 5x5 pool does not divide its 24x24 input"),
        (["conv20x5", "blob3", "dense10"], "unknown layer 'blob3'"),
        (["conv0x5", "dense10"], "positive integer number of feature maps"),
    ],
)
def test_bad_layer_specs_are_refused(specs: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        layer_sizes([layer_from_spec(s) for s in specs], 784)


def bars() -> tuple[np.ndarray, np.ndarray]:
    """200 8x8 images of a vertical (label 1) or horizontal (label 0) bar with noise, (200, 64) float32, and labels."""
    rng = np.random.default_rng(9)
    images = np.zeros((200, 8, 8))
    labels = rng.integers(0, 2, size=200)
    for k, label in enumerate(labels):
        where = rng.integers(1, 7)
        if label:
            images[k, :, where] = 1.0
        else:
            images[k, where, :] = 1.0
    return (images + 0.1 * rng.random(images.shape)).reshape(200, 64).astype(np.float32), labels


def test_a_cnn_learns_a_tiny_problem_through_fit() -> None:
    # Vertical against horizontal bars on 8x8 images: a convolution sees it at once.
    x, labels = bars()
    net = Network([Conv2D(4, 3), MaxPool2D(2), Dense(2)], input_size=64, activation="relu", cost="log-likelihood")
    run = fit(Run.for_network(net, np.random.default_rng(1), epochs=5, batch_size=10, eta=0.1), x, labels)
    assert net.count_correct(x, labels) >= 195, run.history.epochs
    assert COSTS["log-likelihood"] is net.cost


def test_train_config_layers_build_the_network_they_name() -> None:
    specs = ("conv4x5", "pool2", "dense10")
    run = Run.start(TrainConfig(layers=specs, activation="relu", cost="log-likelihood", epochs=1))
    assert [layer.describe()["kind"] for layer in run.network.layers] == ["conv2d", "maxpool2d", "dense"]
    assert run.network.sizes == layer_sizes([layer_from_spec(s) for s in specs], 784) == (784, 2304, 576, 10)
    with pytest.raises(ValueError, match="layers must end with a dense layer"):
        TrainConfig(layers=("conv4x5", "pool2"))


def test_a_convolutional_network_evaluates_in_passes_of_bounded_patches() -> None:
    from mnist_nn.nn import network as network_module

    specs = ("conv20x5", "pool2", "conv40x5", "bn", "pool2", "dense100", "dense10")
    net = Network([layer_from_spec(s) for s in specs], seed=3, dtype=np.float32, activation="relu", init="he")
    patch_bytes = 8 * 8 * 500 * 4  # conv40x5's patches of one image, the largest
    assert net.eval_rows == network_module.EVAL_SCRATCH_BYTES // patch_bytes < 2000
    assert Network([784, 30, 10], seed=3).eval_rows == network_module.EVAL_CHUNK  # no patches: one pass
    x = np.random.default_rng(4).random((3 * net.eval_rows + 7, 784), dtype=np.float32)
    seen: list[int] = []
    conv, dense = net.layers[0], net.layers[-2]

    def counted(forward: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
        def counting(a: np.ndarray) -> np.ndarray:
            seen.append(a.shape[0])
            return forward(a)

        return counting

    for layer in (conv, dense):
        layer.forward = counted(layer.forward)  # type: ignore[method-assign,assignment]
    chunked = net.feedforward(x)
    assert seen == [net.eval_rows] * 3 + [7] + [x.shape[0]]  # the dense layers above take the chunk at once
    for layer in (conv, dense):
        del layer.forward
    whole = x
    for layer in net.layers:
        whole = layer.forward(whole)
    np.testing.assert_array_equal(chunked, whole)
