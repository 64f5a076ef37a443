"""Winograd's F(2x2, 3x3) in the fast step: the transforms, which layers take it, and the update it gives."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_nn import BatchNorm, Conv2D, Dense, MaxPool2D, Network
from mnist_nn.nn import layers as layers_module
from mnist_nn.nn.specs import layer_from_spec
from mnist_nn.nn.winograd import Tiles, TilesBackward, kernels_gradient, transform_kernels
from mnist_nn.train.optimizers import Momentum
from mnist_nn.train.step import Step
from tests.test_conv import _batch


def _direct(images: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """A 3x3 convolution (cross-correlation) of padded images (m, H, W, C) by a loop over the 9 offsets."""
    m, h, w, _ = images.shape
    out = np.zeros((m, h - 2, w - 2, kernels.shape[3]))
    for i in range(3):
        for j in range(3):
            out += images[:, i : i + h - 2, j : j + w - 2, :] @ kernels[i, j]
    return out


@pytest.mark.parametrize(("h", "w", "padding"), [(6, 6, 1), (4, 10, 0), (2, 2, 1), (2, 4, 0), (6, 4, 2)])
def test_the_tiles_compute_the_convolution_and_their_backward_pass_is_its_adjoint(h: int, w: int, padding: int) -> None:
    """Output h x w; the input (h + 2 - 2P) x (w + 2 - 2P), 5 channels, 4 maps."""
    rng = np.random.default_rng(3)
    hi, wi = h + 2 - 2 * padding, w + 2 - 2 * padding
    x = rng.standard_normal((3, hi * wi * 5))
    images = np.pad(x.reshape(3, hi, wi, 5), ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    kernels = rng.standard_normal((3, 3, 5, 4))
    biases = rng.standard_normal(4)
    tiles = Tiles(3, (hi, wi, 5), padding, 4, np.dtype(np.float64))
    tiles.load(x)
    u = np.empty((16, 5, 4))
    transform_kernels(kernels, u)
    tiles.transform_input()
    np.matmul(tiles.v, u, out=tiles.products)
    tiles.transform_output(biases)
    z = np.empty((3, h * w * 4))
    np.copyto(tiles.tiled(z), tiles.z)
    np.testing.assert_allclose(z.reshape(3, h, w, 4), _direct(images, kernels) + biases, rtol=1e-12, atol=1e-12)

    # The backward pass: for a cost sum(delta * z), the kernels' and the input's gradients.
    delta = rng.standard_normal((3, h, w, 4))
    back = TilesBackward(tiles)
    back.transform_delta(delta.reshape(3, -1))
    d_u = np.matmul(tiles.v.transpose(0, 2, 1), back.d_products)
    grad_kernels = np.empty_like(kernels)
    kernels_gradient(d_u, grad_kernels)
    want_kernels = np.array(
        [[np.einsum("mhwc,mhwf->cf", images[:, i : i + h, j : j + w], delta) for j in range(3)] for i in range(3)]
    )
    np.testing.assert_allclose(grad_kernels, want_kernels, rtol=1e-12, atol=1e-12)
    np.matmul(back.d_products, u.transpose(0, 2, 1), out=back.d_v)
    below = np.full_like(x, np.nan)  # every value must be written
    back.delta_below(below)
    want_below = np.zeros_like(images)
    for i in range(3):
        for j in range(3):
            want_below[:, i : i + h, j : j + w] += delta @ kernels[i, j].T
    want_below = want_below[:, padding : padding + hi, padding : padding + wi]
    np.testing.assert_allclose(below.reshape(want_below.shape), want_below, rtol=1e-12, atol=1e-12)


def test_odd_outputs_are_refused() -> None:
    with pytest.raises(ValueError, match="even output size, got 5x6"):
        Tiles(1, (5, 6, 2), 1, 3, np.dtype(np.float32))


def _step_kinds(specs: list[str], m: int) -> list[str]:
    net = Network([layer_from_spec(s) for s in specs], seed=0, init="he", activation="relu")
    return [type(s).__name__ for s in Step(net, m, Momentum(0.9), dropout=0.0, rng=np.random.default_rng(0)).steps]


def test_3x3_convolutions_of_many_channels_with_even_outputs_take_winograd() -> None:
    kinds = _step_kinds(["conv32x3p1", "pool2", "conv32x3p1", "conv8x3", "conv8x3p1", "conv8x5p2", "dense10"], 4)
    # 1 channel; 32 channels, 14x14; 32 channels, 12x12; 8 channels (fewer than the threshold); 5x5.
    assert kinds == [
        "_ConvStep",
        "_MaxPoolStep",
        "_WinogradConvStep",
        "_WinogradConvStep",
        "_ConvStep",
        "_ConvStep",
        "_DenseStep",
    ]
    # 25x25 maps: an odd output keeps im2col.
    assert _step_kinds(["conv32x2", "conv16x3", "dense10"], 4)[1] == "_ConvStep"


def _padded_bn_cnn(dtype: type) -> Network:
    """8x8 images -> 4 maps -> norm -> 2x2 pool -> 6 maps, same size -> norm -> 4 maps of 2x2 -> dense 3."""
    layers = [
        Conv2D(4, 3, padding=1),
        BatchNorm(),
        MaxPool2D(2),
        Conv2D(6, 3, padding=1),
        BatchNorm(),
        Conv2D(4, 3),
        Dense(3),
    ]
    return Network(layers, input_size=64, dtype=dtype, activation="relu", cost="log-likelihood", init="he", seed=2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_winograd_step_moves_the_weights_as_the_im2col_step(dtype: type, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _batch(5, 6, 64, 3)
    x, y = x.astype(dtype), y.astype(dtype)
    params = []
    for threshold in (1, 10**9):  # every 3x3 convolution by Winograd, then none
        monkeypatch.setattr(layers_module, "WINOGRAD_MIN_CHANNELS", threshold)
        net = _padded_bn_cnn(dtype)
        optimizer = Momentum(0.9)
        optimizer.plan(net.params)
        step = Step(net, 6, optimizer, dropout=0.0, rng=np.random.default_rng(0))
        kinds = {type(s).__name__ for s in step.steps}
        assert ("_WinogradConvStep" in kinds) == (threshold == 1)
        for _ in range(3):
            step(x, x.T, y, -0.2 / 6, 0.999)
        params.append(net.params)
    tolerance = 1e-12 if dtype is np.float64 else 1e-5
    for got, want in zip(*params, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=tolerance * float(np.abs(want).max()))
