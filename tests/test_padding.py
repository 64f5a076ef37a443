"""Convolutions with zero padding: shapes, the plain loop, gradients, the fast step, specs and descriptions."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_nn import BatchNorm, Conv2D, Dense, MaxPool2D, Network
from mnist_nn.nn import layers as layers_module
from mnist_nn.nn.activations import ACTIVATIONS
from mnist_nn.nn.layers import layer_from_description
from mnist_nn.nn.specs import layer_from_spec, spec_of
from mnist_nn.train.optimizers import Momentum
from mnist_nn.train.step import Step
from tests.test_conv import _batch, check_layer_gradients


def test_same_padding_keeps_the_size_and_equals_a_loop_over_a_zero_bordered_image() -> None:
    conv = Conv2D(4, 3, padding=1)
    assert conv.build((7, 7, 2)) == (7, 7, 4)
    conv.initialize(np.random.default_rng(7), "normal", np.dtype(np.float64))
    conv.activation = ACTIVATIONS["relu"]
    x = np.random.default_rng(6).standard_normal((3, 98))
    kernels = conv.file_arrays(conv.params)["w"]  # (K, K, C, F)
    biases = conv.params[0][-1]
    images = np.zeros((3, 9, 9, 2))
    images[:, 1:8, 1:8, :] = x.reshape(3, 7, 7, 2)
    expected = np.zeros((3, 7, 7, 4))
    for n in range(3):
        for i in range(7):
            for j in range(7):
                for f in range(4):
                    expected[n, i, j, f] = np.sum(images[n, i : i + 3, j : j + 3, :] * kernels[..., f]) + biases[f]
    np.testing.assert_allclose(conv.forward(x).reshape(3, 7, 7, 4), np.maximum(expected, 0), rtol=1e-12)
    assert Conv2D(2, 5, padding=1).build((28, 28, 1)) == (26, 26, 2)


@pytest.mark.parametrize("padding", [1, 2])
def test_a_padded_convolution_passes_the_gradient_check(padding: int) -> None:
    check_layer_gradients(Conv2D(3, 3, padding=padding), (5, 5, 2), np.random.default_rng(4).random((4, 50)))


def _padded_cnn() -> Network:
    """8x8 images -> 3 maps, same size, normalized -> 2x2 pool -> 4 maps, same size -> dense 3."""
    layers = [Conv2D(3, 3, padding=1), BatchNorm(), MaxPool2D(2), Conv2D(4, 3, padding=1), Dense(3)]
    return Network(layers, input_size=64, dtype=np.float64, activation="relu", cost="log-likelihood", init="he")


@pytest.mark.parametrize("mode", ["one-product", "per-offset", "winograd"])
def test_the_fast_step_of_padded_convolutions_is_the_textbook_update(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layers_module, "BLOCKED_SHARES_ROWS", 1 if mode == "per-offset" else 10**9)
    monkeypatch.setattr(layers_module, "WINOGRAD_MIN_CHANNELS", 1 if mode == "winograd" else 10**9)
    net, twin = _padded_cnn(), _padded_cnn()
    x, y = _batch(8, 6, 64, 3)
    optimizer = Momentum(0.9)
    optimizer.plan(net.params)
    step = Step(net, 6, optimizer, dropout=0.0, rng=np.random.default_rng(0))
    velocity = [np.zeros_like(p) for p in twin.params]
    for _ in range(3):
        bn = twin.layers[1]
        values = twin.layers[0].forward(x).reshape(-1, 3)
        running = 0.9 * bn.params[1] + 0.1 * np.stack([values.mean(axis=0), values.var(axis=0, ddof=1)])
        step(x, x.T, y, -0.2 / 6, 1.0)
        for v, p, g in zip(velocity, twin.params, twin.gradients(x, y), strict=True):
            v *= 0.9
            v -= 0.2 / 6 * g
            p += v
        bn.params[1][...] = running
    for got, want in zip(net.params, twin.params, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_specs_and_descriptions_of_padding() -> None:
    conv = layer_from_spec("conv32x3p1")
    assert isinstance(conv, Conv2D) and conv.padding == 1 and spec_of(conv) == "conv32x3p1"
    assert spec_of(layer_from_spec("conv32x3")) == "conv32x3" and "padding" not in Conv2D(2, 3).describe()
    described = Conv2D(2, 5, "relu", padding=2).describe()
    assert described["padding"] == 2 and layer_from_description(described).describe() == described
    for bad in ("conv8x3p3", "conv8x1p1"):
        with pytest.raises(ValueError, match=r"expected a padding from 0 to \d \(less than the kernel\)"):
            layer_from_spec(bad)
    with pytest.raises(ValueError, match="padding"):
        Conv2D(2, 3, padding=-1)
