"""The feeds: every way of feeding an epoch gives the rows of a direct gather in the epoch's order, bit for bit.

Each feed is checked against ``x[order]`` of the float buffer the loader's
scaling gives (the first layer's column of ones included), chunk by chunk
while the chunk is current, over two epochs; with the mini-batches' views,
their steps and the targets. ``fit`` itself is checked in
``test_formulation.py`` and ``test_prefetch.py``.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from mnist_nn.config import TrainConfig
from mnist_nn.data import as_floats
from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.network import IntArray
from mnist_nn.train.feeds import (
    ArrayFeed,
    Feed,
    PixelFeed,
    Prefetched,
    WholeEpochFeed,
    _training_buffer,
    open_feed,
    prepared_images,
    training_set,
)
from mnist_nn.train.run import Run

N = 1234  # with mini-batches of 7: chunks of 497 rows, the last one partial, and a last mini-batch of 2


def _pixels(n: int, seed: int = 0) -> tuple[np.ndarray[Any, Any], IntArray]:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, 784), dtype=np.uint8)
    pixels[0, :3] = (0, 255, 1)
    return pixels, (pixels[:, :10].argmax(axis=1)).astype(np.int64)


def _run(dtype: str, conv: bool) -> Run:
    settings: dict[str, Any] = {"layers": ("dense16", "dense10")}
    if conv:  # a first layer without a column of ones
        settings = {"layers": ("conv4x5", "pool2", "dense10"), "activation": "relu"}
    run = Run.start(TrainConfig(**settings, epochs=2, batch_size=7, eta=1.0, seed=5, dtype=dtype))
    run.optimizer.plan(run.network.params)
    return run


def _check_epochs(feed: Feed, want: FloatArray, labels: IntArray, run: Run) -> None:
    """Two epochs of ``feed`` against ``want[order]``, each chunk while it is the current one."""
    batching, rng = feed.batching, np.random.default_rng(3)
    for _ in range(2):
        order = rng.permutation(N)
        stops: list[int] = []
        for chunk in feed.epoch(order):
            assert chunk.start == (stops[-1] if stops else 0)
            assert chunk.rows.tobytes() == want[order[chunk.start : chunk.stop]].tobytes()
            assert np.concatenate([xb for _, xb, _, _, _ in chunk.batches]).tobytes() == chunk.rows.tobytes()
            for step, xb, xb_t, yb, kept in chunk.batches:
                assert np.shares_memory(xb, chunk.rows) and np.shares_memory(xb_t, xb)
                assert np.array_equal(xb_t, xb.T)
                assert step is (batching.full if xb.shape[0] == 7 else batching.tail)
                assert kept is not None and kept.shape == yb.shape == (xb.shape[0], 10)
            stops.append(chunk.stop)
        assert stops == [497, 994, N]
        assert np.array_equal(batching.targets, run.network.one_hot(labels[order]))
    assert batching.tail is not batching.full
    steps = -(-N // 7)
    assert feed.factors(3.5, 2.0) == [(-3.5 / 7, 1.0 - 3.5 * 2.0 / N)] * (steps - 1) + [(-3.5 / 2, 1.0 - 7.0 / N)]
    rates = np.linspace(1.0, 2.0, steps)
    assert feed.factors(rates, 0.0)[-1] == (-2.0 / 2, 1.0) and feed.factors(rates, 0.0)[0] == (-1.0 / 7, 1.0)


@pytest.mark.parametrize("source", ["pixels", "floats"])
@pytest.mark.parametrize("conv", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_gathering_feed_gives_the_rows_of_a_direct_gather(dtype: str, conv: bool, source: str) -> None:
    pixels, labels = _pixels(N)
    run = _run(dtype, conv)
    extra = 1 if run.network.layers[0].ones_column else 0
    assert extra == (0 if conv else 1)
    images = pixels if source == "pixels" else as_floats(pixels, dtype)
    data = training_set(run.network, run.config, images, labels)
    with open_feed(run, data, monitor_cost=True, helper=False, count=None) as feed:
        assert type(feed) is (PixelFeed if source == "pixels" else ArrayFeed)
        assert feed.helper is None
        _check_epochs(feed, _training_buffer(run.network, pixels, extra), labels, run)


@pytest.mark.parametrize("conv", [False, True])
def test_the_whole_epoch_feed_gives_the_rows_of_a_direct_gather(conv: bool) -> None:
    pixels, labels = _pixels(N, seed=1)
    run = _run("float32", conv)
    network = run.network
    extra = 1 if network.layers[0].ones_column else 0
    plain = open_feed(
        run, training_set(network, run.config, pixels, labels), monitor_cost=True, helper=False, count=None
    )
    x = prepared_images(network, pixels)
    with WholeEpochFeed(
        x, plain.batching, extra=extra, dtype=network.dtype, rng=run.rng, augment=None, input_dropout=0.0
    ) as feed:
        _check_epochs(feed, _training_buffer(network, pixels, extra), labels, run)


@pytest.mark.skipif(sys.platform != "linux", reason="the helper is forked, on Linux only")
@pytest.mark.parametrize("source", ["pixels", "floats"])
def test_a_helper_gathers_the_rows_its_feed_would(source: str) -> None:
    pixels, labels = _pixels(N, seed=2)
    run = _run("float32", conv=False)
    images = pixels if source == "pixels" else as_floats(pixels)
    data = training_set(run.network, run.config, images, labels)
    with open_feed(run, data, monitor_cost=True, helper=True, count=None) as feed:
        assert isinstance(feed, Prefetched) and feed.helper is feed.prefetcher
        _check_epochs(feed, _training_buffer(run.network, pixels, 1), labels, run)


def test_a_run_that_changes_whole_epochs_is_fed_whole_epochs_without_a_helper() -> None:
    pixels, labels = _pixels(N, seed=4)
    for settings in ({"input_dropout": 0.2}, {"augment": "shift=1"}, {"expand": True}):
        run = Run.start(TrainConfig(layers=("dense16", "dense10"), epochs=1, batch_size=7, seed=5, **settings))
        run.optimizer.plan(run.network.params)
        data = training_set(run.network, run.config, pixels, labels)
        with open_feed(run, data, monitor_cost=False, helper=True, count=None) as feed:
            assert type(feed) is WholeEpochFeed and feed.helper is None
            assert feed.n == (5 * N if settings.get("expand") else N)
            assert feed.batching.kept is None
