"""Timed measurements, one kind each: training epochs, the per-example reference, inference, GEMM, data load.

Training is timed as whole epochs of ``mnist_nn.train.fit`` and, for
comparison, of the per-example reference ``mnist_nn.nn.reference.sgd_reference``,
of the floor of the step's math (``mnist_nn.bench.floor.FloorSGD``) and of a
plain NumPy port of Nielsen's network (``NielsenPort``);
a large matrix product gives the BLAS ceiling that the training step is
compared with. Timings take the minimum over repeats (the least disturbed by
other work on the machine) and also report the median. The calls into
``mnist_nn.nn`` and ``mnist_nn.train`` are the four private helpers below.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnist_nn.bench.common import DataSource
from mnist_nn.bench.floor import FloorSGD, NielsenPort
from mnist_nn.config import IMAGE_PIXELS, NUM_CLASSES, TRAIN_SIZE, TrainConfig
from mnist_nn.data import MnistData
from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.network import IntArray, Network, layer_sizes
from mnist_nn.nn.reference import sgd_reference
from mnist_nn.nn.specs import layer_from_spec
from mnist_nn.train import Run, fit

SPEED_ETA = TrainConfig().eta  # the speed runs need some learning rate; it does not change the cost of a step


@dataclass(frozen=True)
class TrainingShape:
    """A network's layer sizes, mini-batch size and dtype: what the cost of a training step depends on."""

    sizes: tuple[int, ...]
    batch_size: int
    dtype: str = "float32"
    layers: tuple[str, ...] = ()  # layer specs such as "conv20x5"; () is the dense stack of ``sizes``

    @classmethod
    def of_layers(cls, specs: tuple[str, ...], batch_size: int, dtype: str = "float32") -> TrainingShape:
        """The shape of a network given by layer specs; ValueError if they do not chain."""
        layers = [layer_from_spec(s) for s in specs]
        return cls(layer_sizes(layers, IMAGE_PIXELS), batch_size, dtype, specs)

    @property
    def weights(self) -> int:
        """P, the number of weights (biases not counted) of a dense stack; of a CNN, its ``macs``."""
        return self.macs

    @property
    def macs(self) -> int:
        """Multiply-adds per example of the forward pass: P for a dense stack."""
        if not self.layers:
            return sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True))
        layers = [layer_from_spec(s) for s in self.layers]
        layer_sizes(layers, IMAGE_PIXELS)  # builds them
        return sum(layer.macs() for layer in layers)

    @property
    def label(self) -> str:
        """'[784, 30, 10] @ 10 float32', or 'conv20x5 pool2 dense10 @ 10 float32'."""
        what = " ".join(self.layers) if self.layers else f"[{', '.join(map(str, self.sizes))}]"
        return f"{what} @ {self.batch_size} {self.dtype}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d: dict[str, Any] = {"sizes": list(self.sizes), "batch_size": self.batch_size, "dtype": self.dtype}
        if self.layers:
            d["layers"] = list(self.layers)
        return d


_NIELSEN = TrainConfig()
REFERENCE_SIZES = (
    IMAGE_PIXELS,
    30,
    NUM_CLASSES,
)  # Nielsen's chapter-1 network (_NIELSEN): the per-example reference is timed on Nielsen's chapter-1 network
REFERENCE_BATCH_SIZE = _NIELSEN.batch_size


# --- the calls into mnist_nn.nn and mnist_nn.train ------------------------------------------


def _network(sizes: tuple[int, ...], dtype: str, layers: tuple[str, ...] = ()) -> Network:
    """A network of ``sizes`` (or of ``layers``) in ``dtype``; seed 0: a step's cost does not depend on the weights."""
    if layers:
        return Network([layer_from_spec(s) for s in layers], seed=0, dtype=dtype, init="he", activation="relu")
    return Network(sizes, seed=0, dtype=dtype)


def _sgd_epoch_seconds(shape: TrainingShape, images: FloatArray, labels: IntArray, epochs: int) -> list[float]:
    """Seconds of every epoch of one ``fit`` call, from its ``History`` (shuffle and steps only)."""
    network = _network(shape.sizes, shape.dtype, shape.layers)
    run = Run.for_network(network, np.random.default_rng(0), epochs=epochs, batch_size=shape.batch_size, eta=SPEED_ETA)
    return [r.seconds for r in fit(run, images, labels, monitor_cost=False).history.epochs]


def _reference_epoch(
    network: Network, images: FloatArray, labels: IntArray, batch_size: int, rng: np.random.Generator
) -> None:
    """One epoch of the per-example reference."""
    sgd_reference(network, images, labels, epochs=1, batch_size=batch_size, eta=SPEED_ETA, rng=rng)


def _count_correct(network: Network, images: FloatArray, labels: IntArray) -> int:
    """Inference: the forward pass over ``images`` and the count of right answers."""
    return network.count_correct(images, labels)


# --- results ------------------------------------------------------------------------------


def _rate(items: float, seconds: float) -> float:
    return items / max(seconds, 1e-12)  # perf_counter never gives 0 for real work, but JSON forbids inf


@dataclass(frozen=True)
class Timing:
    """Repeated timings of one measurement of ``items`` units (examples, images, runs) each."""

    items: int
    seconds: tuple[float, ...]

    @property
    def best(self) -> float:
        """The shortest time: the least disturbed by other work on the machine."""
        return min(self.seconds)

    @property
    def median(self) -> float:
        """The median time."""
        return statistics.median(self.seconds)

    @property
    def best_rate(self) -> float:
        """Items per second in the best repeat."""
        return _rate(self.items, self.best)

    @property
    def median_rate(self) -> float:
        """Items per second at the median time."""
        return _rate(self.items, self.median)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "items": self.items,
            "seconds": list(self.seconds),
            "best_seconds": self.best,
            "median_seconds": self.median,
            "best_per_second": self.best_rate,
            "median_per_second": self.median_rate,
        }


@dataclass(frozen=True)
class TrainingSpeed:
    """Timed training epochs of one shape by one implementation.

    ``timing.items`` is the examples per timed epoch; seconds per epoch are
    scaled to a 50,000-example epoch. ``gflops`` counts about 6 * m * P flops
    per step of m examples (2 m P each for the forward pass, BP2 and BP4),
    so 6 * P per example, at the best rate. ``gemm_fraction`` divides it by
    the large matrix product's GFLOP/s in the same dtype; ``speedup`` is the
    best rate over the reference's for the same shape (None where there is none);
    ``floor_ratio`` the best time per epoch over the floor's for the same shape;
    ``pytorch_ratio`` the best time per epoch over PyTorch's (``mnist_nn.bench.pytorch``).
    """

    # "vectorized", "floor", "plain port", "plain port, his lists", "reference" or "pytorch"
    implementation: str
    shape: TrainingShape
    timing: Timing
    gemm_fraction: float | None = None
    speedup: float | None = None
    floor_ratio: float | None = None
    pytorch_ratio: float | None = None
    version: str | None = None  # of the implementation, where it is not this package (PyTorch's)

    @property
    def gflops(self) -> float:
        """Achieved GFLOP/s at the best rate."""
        return 6.0 * self.shape.macs * self.timing.best_rate / 1e9

    def epoch_seconds(self, median: bool = False) -> float:
        """Seconds per 50,000-example epoch at the best (or median) rate."""
        return TRAIN_SIZE / (self.timing.median_rate if median else self.timing.best_rate)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "implementation": self.implementation,
            **self.shape.to_dict(),
            "weights": self.shape.weights,
            "examples_per_second_best": self.timing.best_rate,
            "examples_per_second_median": self.timing.median_rate,
            "epoch_seconds_best": self.epoch_seconds(),
            "epoch_seconds_median": self.epoch_seconds(median=True),
            "gflops": self.gflops,
            "gemm_fraction": self.gemm_fraction,
            "speedup": self.speedup,
            "floor_ratio": self.floor_ratio,
            "pytorch_ratio": self.pytorch_ratio,
            "version": self.version,
            "timing": self.timing.to_dict(),
        }


@dataclass(frozen=True)
class InferenceSpeed:
    """Timed ``count_correct`` over the test images by a network of some sizes and dtype."""

    sizes: tuple[int, ...]
    dtype: str
    timing: Timing  # items: test images
    layers: tuple[str, ...] = ()  # layer specs, when not a dense stack

    @property
    def label(self) -> str:
        """The layer specs, or the sizes of a dense stack."""
        return " ".join(self.layers) if self.layers else f"[{', '.join(map(str, self.sizes))}]"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            **({"layers": list(self.layers)} if self.layers else {}),
            "sizes": list(self.sizes),
            "dtype": self.dtype,
            "images_per_second_best": self.timing.best_rate,
            "timing": self.timing.to_dict(),
        }


@dataclass(frozen=True)
class GemmSpeed:
    """Timed n x n @ n x n products: 2 n^3 flops each."""

    n: int
    dtype: str
    timing: Timing  # items: products

    @property
    def gflops(self) -> float:
        """GFLOP/s of the best repeat."""
        return 2.0 * self.n**3 * self.timing.best_rate / 1e9

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"n": self.n, "dtype": self.dtype, "gflops": self.gflops, "timing": self.timing.to_dict()}


# --- measurements -------------------------------------------------------------------------


def _time(call: Callable[[], object], repeats: int) -> tuple[float, ...]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return tuple(times)


def measure_load(source: DataSource, repeats: int) -> Timing:
    """Seconds of ``load_mnist`` from a warm cache (call it once before, so the cache is warm)."""
    return Timing(1, _time(source.load, repeats))


def measure_gemm(n: int, dtype: str, repeats: int) -> GemmSpeed:
    """Time ``a @ b`` for random n x n matrices, after one untimed product."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype)
    np.matmul(a, b, out=out)  # the first call pays for BLAS's thread start-up and page faults
    return GemmSpeed(n, dtype, Timing(1, _time(lambda: np.matmul(a, b, out=out), repeats)))


def measure_training(shape: TrainingShape, data: MnistData, train_size: int, repeats: int) -> TrainingSpeed:
    """Epochs 2..repeats+1 of one ``fit`` call on the first ``train_size`` training images.

    The first epoch is left out because it pays for first touches of
    memory; the per-epoch seconds come from the ``History`` (shuffle and
    steps only: no cost monitoring, no validation).
    """
    seconds = _sgd_epoch_seconds(shape, data.train.images[:train_size], data.train.labels[:train_size], repeats + 1)
    return TrainingSpeed("vectorized", shape, Timing(train_size, tuple(seconds[1:])))


def _floor_seconds(shape: TrainingShape, images: FloatArray, labels: IntArray, epochs: int) -> tuple[int, list[float]]:
    """Examples per epoch and the seconds of each of ``epochs`` floor epochs on whole mini-batches of the images."""
    network = _network(shape.sizes, shape.dtype)
    n = images.shape[0] // shape.batch_size * shape.batch_size
    x = np.ones((n, images.shape[1] + 1), shape.dtype)
    x[:, :-1] = images[:n]
    floor = FloorSGD(network, x, network.one_hot(labels[:n]), shape.batch_size)
    return n, list(_time(lambda: floor.epoch(SPEED_ETA), epochs))


def measure_floor(shape: TrainingShape, data: MnistData, train_size: int, repeats: int) -> TrainingSpeed | None:
    """Epochs 2..repeats+1 of the floor (``FloorSGD``) for a dense shape, as ``measure_training``; None for others."""
    if shape.layers:
        return None
    n, seconds = _floor_seconds(shape, data.train.images[:train_size], data.train.labels[:train_size], repeats + 1)
    return TrainingSpeed("floor", shape, Timing(n, tuple(seconds[1:])))


def measure_port(shape: TrainingShape, data: MnistData, train_size: int, repeats: int) -> TrainingSpeed | None:
    """Epochs 2..repeats+1 of the plain NumPy port of Nielsen's network for a dense shape; None for others."""
    if shape.layers:
        return None
    port = NielsenPort(shape.sizes, shape.dtype)
    images = data.train.images[:train_size].astype(shape.dtype)
    labels = data.train.labels[:train_size]
    seconds = _time(lambda: port.epoch(images, labels, shape.batch_size, SPEED_ETA), repeats + 1)
    return TrainingSpeed("plain port", shape, Timing(train_size, seconds[1:]))


def measure_port_lists(shape: TrainingShape, data: MnistData, train_size: int, repeats: int) -> TrainingSpeed | None:
    """As ``measure_port``, on Nielsen's data layout (a list of (784, 1) columns, stacked per mini-batch)."""
    if shape.layers:
        return None
    port = NielsenPort(shape.sizes, shape.dtype)
    eye = np.eye(shape.sizes[-1], dtype=shape.dtype)
    images = data.train.images[:train_size].astype(shape.dtype)
    pairs = [
        (x.reshape(-1, 1), eye[y].reshape(-1, 1)) for x, y in zip(images, data.train.labels[:train_size], strict=True)
    ]
    seconds = _time(lambda: port.epoch_lists(pairs, shape.batch_size, SPEED_ETA), repeats + 1)
    return TrainingSpeed("plain port, his lists", shape, Timing(train_size, seconds[1:]))


def measure_reference(dtype: str, data: MnistData, size: int, repeats: int) -> TrainingSpeed:
    """Epochs 2..repeats+1 of ``sgd_reference`` on Nielsen's network, over the first ``size`` images.

    The images are cast to ``dtype`` up front, so the reference is timed on
    its arithmetic, not on casts the vectorized code does not do either.
    """
    shape = TrainingShape(REFERENCE_SIZES, REFERENCE_BATCH_SIZE, dtype)
    network = _network(shape.sizes, dtype)
    images = data.train.images[:size].astype(dtype)
    labels = data.train.labels[:size]
    rng = np.random.default_rng(0)
    seconds = _time(lambda: _reference_epoch(network, images, labels, shape.batch_size, rng), repeats + 1)
    return TrainingSpeed("reference", shape, Timing(size, seconds[1:]))  # the first left out, as for fit


def measure_inference(
    sizes: tuple[int, ...], dtype: str, data: MnistData, repeats: int, layers: tuple[str, ...] = ()
) -> InferenceSpeed:
    """Time ``count_correct`` on the test images, after one untimed call."""
    network = _network(sizes, dtype, layers)
    images = data.test.images.astype(dtype)  # cast once: the forward pass is what is timed
    labels = data.test.labels
    _count_correct(network, images, labels)
    timing = Timing(len(labels), _time(lambda: _count_correct(network, images, labels), repeats))
    return InferenceSpeed(sizes, dtype, timing, layers)
