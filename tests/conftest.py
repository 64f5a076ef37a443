"""Shared fixtures: synthetic IDX files and the real MNIST data from the local mirror.

Real-data tests run whenever ``MNIST_NN_MIRROR`` is set (CI points it at
``../shared/mnist``), and those on Fashion-MNIST whenever
``MNIST_NN_FASHION_MNIST_MIRROR`` is (``../shared/fashion-mnist``). Without
it they are skipped with a reason that says so, except under ``CI=true``,
where a missing mirror is a failure.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import tqdm

from mnist_nn.config import MIRROR_ENV
from mnist_nn.data import MnistData, load_mnist

# No tqdm monitor thread in the test process, as in the commands (mnist_nn.cli.base): a bar shown
# by a test that fakes a terminal would otherwise start one, and tqdm 4.64 can deadlock joining it
# at exit (its thread waits for the lock the exiting thread holds), leaving pytest hung after the tests.
tqdm.tqdm.monitor_interval = 0


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx_pair(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, *, compress: bool) -> None:
    """Write images (n, 28, 28) and labels (n,) as ``prefix``'s two IDX files in MNIST's names, gzip or plain."""
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        payload = idx_bytes(array)
        name = f"{prefix}-{kind}-ubyte"
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(payload, 1))
        else:
            (folder / name).write_bytes(payload)


def write_synthetic_mnist(folder: Path, n_train: int = 60_000, n_test: int = 10_000, seed: int = 0) -> None:
    """Write four gzip IDX files in MNIST's names with random content of the given sizes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx_pair(folder, prefix, images, labels, compress=True)


def real_mirror(variable: str = MIRROR_ENV, example: str = "../shared/mnist") -> str:
    """The local mirror a variable names (MNIST's by default), or skip (fail under CI=true) when it is unset."""
    mirror = os.environ.get(variable, "")
    if not mirror:
        message = f"real data needs {variable} (e.g. {variable}={example})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {message}")
        pytest.skip(message)
    return mirror


@pytest.fixture(scope="session")
def mnist_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder filled and verified from the real mirror, shared by the session."""
    mirror = real_mirror()
    folder = tmp_path_factory.mktemp("mnist-cache")
    load_mnist(folder, mirror=mirror)
    return folder


@pytest.fixture(scope="session")
def mnist(mnist_cache: Path) -> MnistData:
    """Real MNIST in float32."""
    return load_mnist(mnist_cache)


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random [784, 10] network in a model file: enough for evaluate, show and predict."""
    from mnist_nn.models import save_model
    from mnist_nn.nn import Network

    path = tmp_path_factory.mktemp("model") / "m.npz"
    save_model(path, Network([784, 10], seed=1))
    return path


@pytest.fixture(scope="session")
def digit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A (28, 28) .npy digit: a bar of ink."""
    path = tmp_path_factory.mktemp("digit") / "bar.npy"
    image = np.zeros((28, 28), dtype=np.uint8)
    image[6:22, 12:16] = 255
    np.save(path, image)
    return path
