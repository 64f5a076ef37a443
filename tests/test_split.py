"""Steps split across two threads: the one-thread step's update within float32 rounding, its dropout masks exactly.

A split step adds its halves' gradients where the one-thread step sums the
whole mini-batch in one product, and its halves' products have fewer rows, so
the weights differ in the last bits: within float32 rounding after a few
steps (checked here step by step), and, since training amplifies any rounding,
as much as running the one-thread step with another number of BLAS threads
after epochs (checked on two epochs of real MNIST). Its dropout masks are the
one-thread step's bit for bit, and a split run repeats itself bit for bit.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import threadpoolctl  # type: ignore[import-untyped]

from mnist_nn.config import PRESETS
from mnist_nn.data import MnistData
from mnist_nn.nn.network import Network
from mnist_nn.nn.specs import layer_from_spec
from mnist_nn.train import Run, feeds, fit, split
from mnist_nn.train.optimizers import Momentum
from mnist_nn.train.split import SplitStep
from mnist_nn.train.step import Step

CNN = ["conv6x5", "pool2", "conv8x3", "pool2", "dense30", "dense10"]
CNN_BN = ["conv6x5", "bn", "pool2", "conv8x3", "bn", "pool2", "dense30", "bn", "dense10"]
# Its second convolution steps by Winograd's F(2x2, 3x3) (32 channels, 14x14 maps).
PADDED = ["conv32x3p1", "pool2", "conv8x3p1", "bn", "pool2", "dense30", "bn", "dense10"]


def _network(specs: list[str], dtype: str = "float32") -> Network:
    return Network([layer_from_spec(s) for s in specs], seed=0, dtype=dtype, init="he", activation="relu")


def _pair(specs: list[str], m: int, dropout: float, dtype: str = "float32") -> Iterator[tuple[Network, Any]]:
    """The same network twice, one with a one-thread step and one with a split step, same generator seed."""
    for kind in (Step, SplitStep):
        net = _network(specs, dtype)
        optimizer = Momentum(0.9)
        optimizer.plan(net.params)
        yield net, kind(net, m, optimizer, dropout=dropout, rng=np.random.default_rng(7))


def _split_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mnist_nn-split-step"]


@pytest.mark.parametrize("m", [8, 11, 64])
@pytest.mark.parametrize("dropout", [0.0, 0.5])
@pytest.mark.parametrize("specs", [CNN, CNN_BN, PADDED], ids=["cnn", "cnn-bn", "padded"])
def test_a_split_step_moves_the_weights_as_the_one_thread_step_within_rounding(
    m: int, dropout: float, specs: list[str]
) -> None:
    """Weights, running averages (batch norm) and BP1's terms within float32 rounding, step after step."""
    (one_net, one), (two_net, two) = _pair(specs, m, dropout)
    rng = np.random.default_rng(1)
    # Sparse, as digits are: a batch norm of nearly constant maps (uniform noise through a convolution)
    # would amplify any rounding by its cancellation, in the one-thread step as much as here.
    xb = (rng.random((m, 784)) * (rng.random((m, 784)) < 0.2)).astype(np.float32)
    yb = np.eye(10, dtype=np.float32)[rng.integers(0, 10, m)]
    kept = np.zeros((2, m, 10), np.float32)
    start = [p.copy() for p in one_net.params]
    try:
        for _ in range(3):
            one(xb, xb.T, yb, -0.5 / m, 0.999, kept[0])
            two(xb, xb.T, yb, -0.5 / m, 0.999, kept[1])
            for p, q in zip(one_net.params, two_net.params, strict=True):
                np.testing.assert_allclose(q, p, rtol=0, atol=1e-5 * float(np.abs(p).max()))
            np.testing.assert_allclose(kept[1], kept[0], rtol=1e-5, atol=1e-6)  # BP1's terms, row by row
        assert all(not np.array_equal(p, p0) for p, p0 in zip(one_net.params, start, strict=True))
        if dropout:  # the dense layer's masks: the halves' rows of the one-thread step's, bit for bit
            i = specs.index("dense30")
            i, name = (i + 1, "mask3") if specs[i + 1] == "bn" else (i, "mask")  # a batch norm above drops out
            mask = getattr(one.steps[i], name)
            halves = getattr(two.first.steps[i], name), getattr(two.second.steps[i], name)
            np.testing.assert_array_equal(np.concatenate(halves), mask)
            assert 0 < np.count_nonzero(mask) < mask.size
    finally:
        two.close()
    assert not _split_threads()


def test_a_split_step_in_float64_agrees_to_float64_rounding() -> None:
    (one_net, one), (two_net, two) = _pair(CNN, 10, 0.5, "float64")
    rng = np.random.default_rng(2)
    xb = rng.random((10, 784))
    yb = np.eye(10)[rng.integers(0, 10, 10)]
    try:
        one(xb, xb.T, yb, -0.05, 1.0)
        two(xb, xb.T, yb, -0.05, 1.0)
    finally:
        two.close()
    for p, q in zip(one_net.params, two_net.params, strict=True):
        np.testing.assert_allclose(q, p, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("specs", [CNN, CNN_BN], ids=["cnn", "cnn-bn"])
@pytest.mark.parametrize("failing", ["first", "second"])
def test_an_error_in_either_half_reaches_the_caller_and_the_next_step_still_works(
    specs: list[str], failing: str
) -> None:
    """With batch norms the other half waits at a barrier for the failed one's sums: it must be let go.

    The failing half's last layer raises in its backward pass, after the batch
    norms' forward exchanges and before their backward ones. The error is the
    failing half's own, and the next step moves the weights as the one-thread step does.
    """
    (one_net, one), (two_net, two) = _pair(specs, 10, 0.0)
    half = getattr(two, failing)
    top = half.backwards[0]
    calls = {"n": 0}

    def broken(*args: Any) -> None:
        calls["n"] += 1
        raise RuntimeError(f"the {failing} half failed")

    half.backwards[0] = (broken, *top[1:])
    rng = np.random.default_rng(3)
    xb = (rng.random((10, 784)) * (rng.random((10, 784)) < 0.2)).astype(np.float32)
    yb = np.eye(10, dtype=np.float32)[np.arange(10)]
    try:
        with pytest.raises(RuntimeError, match=f"the {failing} half failed"):
            two(xb, xb.T, yb, -0.1, 1.0)
        assert calls["n"] == 1
        half.backwards[0] = top
        for p, q in zip(two_net.params, one_net.params, strict=True):  # back to where both start
            p[...] = q
        one(xb, xb.T, yb, -0.1, 1.0)
        two(xb, xb.T, yb, -0.1, 1.0)
        for p, q in zip(one_net.params, two_net.params, strict=True):
            np.testing.assert_allclose(q, p, rtol=0, atol=1e-5 * float(np.abs(p).max()))
    finally:
        two.close()
        two.close()  # closing twice is harmless
    assert not _split_threads()


def test_which_networks_split() -> None:
    conv, dense = _network(CNN), _network(["dense30", "dense10"])
    with_bn = _network(["conv6x5", "bn", "pool2", "dense10"])
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        assert split.wanted(conv, 64) is (len(os.sched_getaffinity(0)) >= 2)
        assert not split.wanted(conv, split.MIN_ROWS - 1)
        assert not split.wanted(dense, 64)  # the chapter-1 step stays as it is
        assert split.wanted(with_bn, 64) is split.wanted(conv, 64)  # its sums are exchanged between halves
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        assert not split.wanted(conv, 64)  # one BLAS thread: the caller wants one core


def test_without_threadpoolctl_steps_stay_in_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(split, "threadpoolctl_module", lambda: None)
    assert not split.wanted(_network(CNN), 64)
    before = threadpoolctl.threadpool_info()[0]["num_threads"]
    with split.one_thread_blas(True):  # nothing to limit with: nothing changes
        assert threadpoolctl.threadpool_info()[0]["num_threads"] == before
    monkeypatch.undo()
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"), split.one_thread_blas(True):
        assert threadpoolctl.threadpool_info()[0]["num_threads"] == 1  # with it, one thread


def _fit(mnist: MnistData, monkeypatch: pytest.MonkeyPatch, *, splits: bool, limit: int | None = None) -> Run:
    monkeypatch.setattr(split, "wanted", lambda network, m: splits)
    config = dataclasses.replace(PRESETS["cnn"], epochs=2, seed=1)
    run = Run.start(config)
    threads: list[int] = []

    def progress(done: int, n: int) -> None:
        threads.append(threadpoolctl.threadpool_info()[0]["num_threads"])

    with threadpoolctl.threadpool_limits(limits=limit, user_api="blas"):
        before = threadpoolctl.threadpool_info()[0]["num_threads"]
        fit(
            run,
            mnist.train.images[:2000],
            mnist.train.labels[:2000],
            validation=(mnist.validation.images[:1000], mnist.validation.labels[:1000]),
            on_progress=progress,
        )
        assert threadpoolctl.threadpool_info()[0]["num_threads"] == before  # restored after the epochs
    assert set(threads) == ({1} if splits else {before})  # one BLAS thread while the halves run
    return run


def test_a_split_run_repeats_itself_and_ends_where_the_one_thread_runs_do(
    mnist: MnistData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two epochs of the ``cnn`` preset on 2,000 images: split twice, then one-thread with 2 and with 1 BLAS threads.

    The one-thread step's own results change with the BLAS threads (the
    products sum in another order); the split run's counts must be as close
    to them as they are to each other, plus a margin of 0.5% of the set.
    """
    a = _fit(mnist, monkeypatch, splits=True)
    b = _fit(mnist, monkeypatch, splits=True)
    for p, q in zip(a.network.params, b.network.params, strict=True):
        np.testing.assert_array_equal(p, q)
    assert [(r.validation_correct, r.train_cost) for r in a.history.epochs] == [
        (r.validation_correct, r.train_cost) for r in b.history.epochs
    ]
    one2 = _fit(mnist, monkeypatch, splits=False, limit=2)
    one1 = _fit(mnist, monkeypatch, splits=False, limit=1)
    counts = [[r.validation_correct or 0 for r in run.history.epochs] for run in (a, one2, one1)]
    spread = max(abs(x - y) for x, y in zip(counts[1], counts[2], strict=True))
    for got, want in zip(counts[0], counts[1], strict=True):
        assert abs(got - want) <= spread + 10, counts
    assert min(counts[0]) > 800, counts  # it learned: 80% of 1,000 after one epoch on 2,000 images
    assert not _split_threads()


def test_open_feed_splits_the_steps_it_is_told_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(split, "wanted", lambda network, m: m == 10)
    config = dataclasses.replace(PRESETS["cnn"], epochs=1, augment="none")
    run = Run.start(config)
    data = feeds.training_set(run.network, config, np.zeros((25, 784), np.uint8), np.arange(25) % 10)
    run.optimizer.plan(run.network.params)
    with feeds.open_feed(run, data, monitor_cost=True, helper=False, count=None) as feed:
        assert isinstance(feed.batching.full, SplitStep) and isinstance(feed.batching.tail, Step)
        assert not _split_threads()  # none yet: a helper process may still be forked
        for chunk in feed.epoch(np.arange(25)):
            with feed.stepping():
                for step, xb, xb_t, yb, kept in chunk.batches:
                    step(xb, xb_t, yb, -0.001, 1.0, kept)
        assert len(_split_threads()) == 1
    assert not _split_threads()


def test_a_validation_count_splits_where_the_steps_do_and_counts_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The chunks after ``split`` are counted in a thread; the count equals the one-thread count."""
    from mnist_nn.train import validation

    net = _network(CNN)
    rng = np.random.default_rng(4)
    pixels = (rng.integers(0, 256, (5000, 784)) * (rng.random((5000, 784)) < 0.2)).astype(np.uint8)
    labels = rng.integers(0, 10, 5000)
    monkeypatch.setattr(validation, "wanted", lambda network, m: True)
    val = validation.Validation(net, pixels, labels)
    assert val.images_rest is not None and val.split == 4000  # chunks of 2,000: two here, one in the thread
    want = int(np.count_nonzero(net.predict(pixels.astype(np.float32) / 255) == labels))
    threads: list[str] = []
    counted = validation._count_pixels

    def spy(*args: Any) -> int:
        threads.append(threading.current_thread().name)
        return counted(*args)

    monkeypatch.setattr(validation, "_count_pixels", spy)
    assert val.count() == want
    assert sorted(threads) == ["MainThread", "mnist_nn-split-count"]

    def broken(network: Network, pixels: Any, labels: Any, buffer: Any) -> int:
        if threading.current_thread().name != "MainThread":
            raise RuntimeError("the thread's count failed")
        return counted(network, pixels, labels, buffer)

    monkeypatch.setattr(validation, "_count_pixels", broken)
    with pytest.raises(RuntimeError, match="thread's count failed"):
        val.count()
    monkeypatch.setattr(validation, "wanted", lambda network, m: False)
    assert validation.Validation(net, pixels, labels).images_rest is None
