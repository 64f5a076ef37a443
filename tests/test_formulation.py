"""The fast training path gives exactly what the plain formulation of the same math gives.

``fit`` keeps uint8 training pixels as pixels (floats go into one training
buffer), gathers each epoch's mini-batches a few hundred rows at a time
(scaling pixels there), and sums the running cost once an epoch from what
BP1 kept; the formulation it replaced scaled the pixels into floats first,
shuffled the whole training set into a second buffer every epoch and summed
the cost batch by batch. Same seed, same weights, bit for bit; the same
cost, to rounding. The benchmark's floor (the step's math and nothing else)
must give the real step's weights too, or its ratio would
compare different work.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest

from mnist_nn.bench.floor import FloorSGD, NielsenPort
from mnist_nn.config import TrainConfig
from mnist_nn.data import as_floats, scale_pixels
from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.costs import COSTS
from mnist_nn.nn.layers import Conv2D, Dense
from mnist_nn.nn.network import IntArray, Network
from mnist_nn.train import Run, fit
from mnist_nn.train.history import EpochRecord
from mnist_nn.train.optimizers import SGD
from mnist_nn.train.schedules import learning_rate
from mnist_nn.train.step import Step


def _pixels(n: int, n_in: int = 784, seed: int = 0) -> tuple[np.ndarray, IntArray]:
    """Random uint8 'images' with labels that depend on them, so that training learns something."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, n_in), dtype=np.uint8)
    labels = (pixels[:, :10].argmax(axis=1)).astype(np.int64)
    return pixels, labels


def _old_fit(run: Run, x: FloatArray, labels: IntArray) -> list[float]:
    """The replaced loop: the whole epoch shuffled into a second buffer, the cost summed batch by batch.

    Plain configurations only (no augmentation, input dropout or expansion); returns each epoch's cost.
    """
    config, network, rng = run.config, run.network, run.rng
    n, m = x.shape[0], config.batch_size
    run.optimizer.plan(network.params)
    x_shuf = np.ones((n, x.shape[1] + 1), network.dtype)
    y_src = network.one_hot(labels)
    y_shuf = y_src.copy()
    full = Step(network, m, run.optimizer, dropout=config.dropout, rng=rng)
    rest = n % m
    tail = Step(network, rest, run.optimizer, dropout=config.dropout, rng=rng) if rest else full
    costs = []
    for _ in range(config.epochs):
        rate = learning_rate(run.history, eta=config.eta, schedule=config.schedule, epochs=config.epochs)
        assert rate is not None
        order = rng.permutation(n)
        x_shuf[:, :-1] = x[order]
        np.take(y_src, order, axis=0, out=y_shuf)
        decay = 1.0 - rate * config.l2 / n
        total = 0.0
        for k in range(0, n, m):
            xb, yb = x_shuf[k : k + m], y_shuf[k : k + m]
            step = full if xb.shape[0] == m else tail
            step(xb, xb.T, yb, -rate / xb.shape[0], decay)
            total += network.cost.fn(step.steps[-1].output, yb)  # the outputs it trained on, still in place
        costs.append(total / n + (config.l2 / n * network.l2_penalty() if config.l2 else 0.0))
        run.history.epochs.append(
            EpochRecord(
                epoch=len(run.history.epochs) + 1,
                validation_correct=None,
                validation_total=None,
                train_cost=None,
                seconds=0.0,
                eta=rate,
            )
        )
    return costs


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(layers=("dense12", "dense10"), epochs=2, batch_size=10, eta=3.0, seed=3),
        TrainConfig(
            layers=("dense12", "dense10"), epochs=2, batch_size=7, eta=0.5, l2=5.0, cost="cross-entropy", seed=4
        ),
        TrainConfig(
            layers=("dense16", "dense8", "dense10"),
            epochs=2,
            batch_size=9,
            eta=0.1,
            activation="relu",
            cost="log-likelihood",
            init="he",
            dropout=0.3,
            momentum=0.9,
            seed=5,
        ),
    ],
    ids=["nielsen-ch1", "cross-entropy-l2-tail", "relu-softmax-dropout-momentum"],
)
def test_fit_gives_the_replaced_formulations_weights_bit_for_bit(config: TrainConfig) -> None:
    pixels, labels = _pixels(303, seed=config.seed)
    new = fit(Run.start(config), pixels, labels)
    old = Run.start(config)
    _old_fit(old, as_floats(pixels), labels)
    for got, want in zip(new.network.params, old.network.params, strict=True):
        assert np.array_equal(got, want)
    # Floats in, instead of pixels: the same buffer, the same weights.
    again = fit(Run.start(config), as_floats(pixels, config.dtype), labels)
    for got, want in zip(again.network.params, new.network.params, strict=True):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("cost", sorted(COSTS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_running_cost_is_the_batch_by_batch_sum_to_rounding(cost: str, dtype: str) -> None:
    config = TrainConfig(
        layers=("dense12", "dense10"), epochs=3, batch_size=10, eta=0.5, l2=1.0, cost=cost, seed=6, dtype=dtype
    )
    pixels, labels = _pixels(205, seed=6)
    new = fit(Run.start(config), pixels, labels)
    old = Run.start(config)
    costs = _old_fit(old, as_floats(pixels, dtype), labels)
    assert [r.train_cost for r in new.history.epochs] == pytest.approx(costs, rel=1e-12)
    for got, want in zip(new.network.params, old.network.params, strict=True):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("cost", sorted(COSTS))
def test_bp1_keeping_the_cost_terms_is_bp1_bit_for_bit(cost: str) -> None:
    rng = np.random.default_rng(7)
    c = COSTS[cost]
    z = rng.standard_normal((9, 10)).astype(np.float32)
    a = np.empty_like(z)
    c.output.forward(z, out=a)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 9)]
    want, got, kept = np.empty_like(a), np.empty_like(a), np.empty_like(a)
    c.output_delta(a, y, want, np.empty_like(a))
    c.output_delta_kept(a, y, got, np.empty_like(a), kept)
    assert np.array_equal(got, want)
    assert c.running_cost(kept, y) == pytest.approx(c.fn(a, y), rel=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_training_buffer_holds_the_loaders_floats_bit_for_bit(dtype: str) -> None:
    from mnist_nn.train.feeds import _training_buffer

    pixels, _ = _pixels(50)
    pixels[0, :3] = (0, 255, 1)
    network = Network((784, 5, 10), seed=0, dtype=dtype)
    buffer = _training_buffer(network, pixels, 1)
    old = np.empty((50, 784), dtype)
    np.divide(pixels, 255.0, out=old, casting="unsafe")  # the loader's scaling before this change
    assert buffer.dtype == np.dtype(dtype) and np.array_equal(buffer[:, :-1], old)
    assert np.all(buffer[:, -1] == 1.0)
    out = np.empty((50, 784), dtype)
    scale_pixels(pixels, out)
    assert np.array_equal(out, old) and np.array_equal(as_floats(pixels, dtype), old)


@pytest.mark.parametrize("extra", [1, 0])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mini_batches_staged_from_pixels_are_the_training_buffers_rows_bit_for_bit(dtype: str, extra: int) -> None:
    from mnist_nn.train.feeds import _gather_scaled, _training_buffer, _training_pixels

    pixels, _ = _pixels(1234, seed=9)
    pixels[0, :3] = (0, 255, 1)
    network = Network((784, 5, 10), seed=0, dtype=dtype)
    buffer = _training_buffer(network, pixels, extra)  # the float buffer the epochs gathered from before
    scaled = np.empty((1234, 784), dtype)
    np.divide(pixels, 255.0, out=scaled, casting="unsafe")  # the loader's scaling before scale_pixels
    assert buffer[:, :784].tobytes() == scaled.tobytes()
    kept = _training_pixels(network, pixels)
    assert kept is pixels  # the caller's pixels, not a copy
    order = np.random.default_rng(9).permutation(1234)
    staged = np.empty((500, 784 + extra), np.uint8)
    staged[:, 784:] = 255  # the ones column as 255s, written once when the staging buffers are made
    taken = np.empty((500, 784), np.uint8) if extra else staged
    rows = np.full((500, 784 + extra), np.nan, dtype)
    for k in range(0, 1234, 500):  # the last chunk is partial, as an epoch's may be
        chunk = order[k : k + 500]
        m = chunk.shape[0]
        _gather_scaled(pixels, chunk, taken[:m], staged[:m], rows[:m])
        assert rows[:m].tobytes() == buffer[chunk].tobytes()
    if extra:
        assert np.all(rows[:, -1] == 1.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pixels_counted_a_chunk_at_a_time_give_the_count_of_their_floats(dtype: str) -> None:
    from mnist_nn.train import count_in_chunks

    pixels, labels = _pixels(4321, seed=3)  # two full chunks of 2,000 rows and a partial one
    network = Network((784, 20, 10), seed=1, dtype=dtype)
    floats = as_floats(pixels, dtype)
    want = network.count_correct(floats, labels)
    assert 0 < want < 4321  # a count the chunks could get wrong either way
    assert count_in_chunks(network, pixels, labels) == want
    assert count_in_chunks(network, floats, labels) == want
    per_row = network.predict(floats) == labels
    assert count_in_chunks(network, pixels[:7], labels[:7]) == int(per_row[:7].sum())
    assert count_in_chunks(network, pixels[:0], labels[:0]) == 0
    with pytest.raises(ValueError, match=r"expected images of shape \(n, 784\), got \(20, 783\)"):
        count_in_chunks(network, pixels[:20, :783], labels[:20])


def test_floats_and_transformed_networks_keep_the_float_buffer() -> None:
    from mnist_nn.train.feeds import _training_pixels

    pixels, _ = _pixels(20)
    network = Network((784, 5, 10), seed=0)
    assert _training_pixels(network, as_floats(pixels)) is None
    with pytest.raises(ValueError, match=r"expected images of shape \(n, 784\), got \(20, 783\)"):
        _training_pixels(network, pixels[:, :783])


@pytest.mark.parametrize(
    ("sizes", "activation", "cost"),
    [((784, 30, 10), "sigmoid", "quadratic"), ((784, 20, 12, 10), "relu", "log-likelihood")],
)
def test_the_floor_and_the_real_step_give_the_same_weights(sizes: tuple[int, ...], activation: str, cost: str) -> None:
    pixels, labels = _pixels(200, seed=8)
    x = np.ones((200, 785), np.float32)
    x[:, :-1] = as_floats(pixels)
    floor_net = Network(sizes, seed=1, activation=activation, cost=cost)
    step_net = Network(sizes, seed=1, activation=activation, cost=cost)
    y = floor_net.one_hot(labels)
    FloorSGD(floor_net, x, y, 10).epoch(0.5)
    optimizer = SGD()
    optimizer.plan(step_net.params)
    step = Step(step_net, 10, optimizer, dropout=0.0, rng=np.random.default_rng(0))
    for k in range(0, 200, 10):
        step(x[k : k + 10], x[k : k + 10].T, y[k : k + 10], -0.5 / 10, 1.0)
    for got, want in zip(floor_net.params, step_net.params, strict=True):
        assert np.array_equal(got, want)


def test_the_floor_is_for_dense_networks_and_whole_batches() -> None:
    x = np.ones((20, 785), np.float32)
    y = np.zeros((20, 10), np.float32)
    with pytest.raises(ValueError, match="divides 20"):
        FloorSGD(Network((784, 5, 10), seed=0), x, y, 3)
    cnn = Network([Conv2D(2, 5), Dense(10)], seed=0)
    with pytest.raises(ValueError, match="dense networks"):
        FloorSGD(cnn, x, y, 10)


def test_the_plain_port_learns() -> None:
    pixels, labels = _pixels(400, seed=9)
    images = as_floats(pixels)
    port = NielsenPort((784, 20, 10), "float32", seed=1)
    before = [w.copy() for w in port.weights]
    port.epoch(images, labels, 10, 3.0)
    assert all(w.dtype == np.float32 and not np.array_equal(w, b) for w, b in zip(port.weights, before, strict=True))
    # His data layout: the same update on the same mini-batches gives the same weights.
    arrays, lists = NielsenPort((784, 20, 10), "float32", seed=2), NielsenPort((784, 20, 10), "float32", seed=2)
    eye = np.eye(10, dtype=np.float32)
    arrays.epoch(images, labels, 10, 3.0)
    lists.epoch_lists(
        [(x.reshape(784, 1), eye[y].reshape(10, 1)) for x, y in zip(images, labels, strict=True)], 10, 3.0
    )
    for got, want in zip(lists.weights + lists.biases, arrays.weights + arrays.biases, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_the_plain_port_saturates_without_a_warning() -> None:
    """Nielsen's sigmoid overflows exp(-z) for very negative z: the answer (0) is right and nothing is printed."""
    pixels, labels = _pixels(40, seed=11)
    port = NielsenPort((784, 20, 10), "float32", seed=1)
    port.weights[0] *= 100  # z far below -88 for some units
    eye = np.eye(10, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        port.epoch(as_floats(pixels), labels, 10, 3.0)
        port.epoch_lists(
            [(x.reshape(784, 1), eye[y].reshape(10, 1)) for x, y in zip(as_floats(pixels), labels, strict=True)],
            10,
            3.0,
        )
    assert all(np.isfinite(w).all() for w in port.weights)


def test_a_preset_with_augmentation_still_trains_through_the_whole_epoch_buffer() -> None:
    pixels, labels = _pixels(60, seed=10)
    config = replace(
        TrainConfig(layers=("dense8", "dense10"), epochs=1, batch_size=10, eta=0.1),
        augment="shift=1",
        input_dropout=0.2,
    )
    a = fit(Run.start(config), pixels, labels)
    b = fit(Run.start(config), as_floats(pixels), labels)
    for got, want in zip(a.network.params, b.network.params, strict=True):
        assert np.array_equal(got, want)


def test_validation_pixels_are_counted_as_their_floats() -> None:
    pixels, labels = _pixels(400, seed=11)
    vpixels, vlabels = _pixels(4100, seed=12)  # more than one counting chunk, and a part of one
    config = TrainConfig(layers=("dense12", "dense10"), epochs=3, batch_size=10, eta=3.0, seed=13)
    a = fit(Run.start(config), pixels, labels, validation=(vpixels, vlabels))
    b = fit(Run.start(config), pixels, labels, validation=(as_floats(vpixels), vlabels))
    assert [r.validation_correct for r in a.history.epochs] == [r.validation_correct for r in b.history.epochs]
    assert all(r.validation_total == 4100 for r in a.history.epochs)
    with pytest.raises(ValueError, match="validation images of shape"):
        fit(Run.start(config), pixels, labels, validation=(vpixels[:, :100], vlabels))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scaling_in_the_target_dtype_rounds_every_pixel_value_as_float64_division_did(dtype: str) -> None:
    values = np.arange(256, dtype=np.uint8)
    wide = np.divide(values, 255.0)  # float64, the loader's original division
    out = np.empty(256, dtype)
    scale_pixels(values, out)
    assert np.array_equal(out, wide.astype(dtype))
