"""Model files of convolutional networks: round trips, and hostile descriptions refused before allocation."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mnist_nn import Conv2D, Dense, MaxPool2D, Network
from mnist_nn.models import ResumeState, load_model, save_model
from tests.test_serialization import _bad, _members, _metadata, _metadata_array, _write_npz

CH6 = [Conv2D(4, 5), MaxPool2D(2), Conv2D(6, 5), MaxPool2D(2), Dense(20), Dense(10)]


def _saved_cnn(tmp_path: Path, resume: bool = False) -> tuple[Path, Network]:
    net = Network(CH6, activation="relu", cost="log-likelihood", init="he", seed=4)
    path = tmp_path / "cnn.npz"
    state = None
    if resume:
        rng = np.random.default_rng(2)
        state = ResumeState(
            params=[p + 1 for p in net.params],
            optimizer={"velocity": [np.full_like(p, 0.5) for p in net.params]},
            rng_state=dict(rng.bit_generator.state),
            epochs_completed=3,
        )
    save_model(path, net, {"epoch": 3}, resume=state)
    return path, net


def test_a_cnn_round_trips_with_identical_predictions_and_state(tmp_path: Path) -> None:
    path, net = _saved_cnn(tmp_path, resume=True)
    arrays = _members(path)
    assert arrays["layer0_w"].shape == (5, 5, 1, 4) and arrays["layer0_b"].shape == (4,)
    assert arrays["layer2_w"].shape == (5, 5, 4, 6) and arrays["layer4_w"].shape == (96, 20)
    assert not any(name.startswith("layer1_") or name.startswith("layer3_") for name in arrays)  # pools
    assert arrays["opt_velocity_layer2_w"].shape == (5, 5, 4, 6)
    metadata = _metadata(path)
    assert [d["kind"] for d in metadata["layers"]] == ["conv2d", "maxpool2d", "conv2d", "maxpool2d", "dense", "dense"]
    loaded = load_model(path)
    x = np.random.default_rng(0).random((7, 784), dtype=np.float32)
    np.testing.assert_array_equal(loaded.network.feedforward(x), net.feedforward(x))
    assert loaded.resume is not None
    for mine, theirs in zip(loaded.resume.params, net.params, strict=True):
        np.testing.assert_array_equal(mine, theirs + 1)
    assert all(np.all(v == 0.5) for v in loaded.resume.optimizer["velocity"])


def _with_layers(tmp_path: Path, layers: list[dict[str, Any]], sizes: list[int] | None = None) -> Path:
    path, _ = _saved_cnn(tmp_path)
    arrays = _members(path)
    metadata = _metadata(path) | {"layers": layers}
    if sizes is None:
        metadata.pop("sizes")
    else:
        metadata["sizes"] = sizes
    arrays["metadata"] = _metadata_array(metadata)
    _write_npz(path, arrays)
    return path


def _conv(filters: Any, kernel: Any) -> dict[str, Any]:
    return {"kind": "conv2d", "filters": filters, "kernel": kernel, "activation": "relu"}


def _pool(pool: Any) -> dict[str, Any]:
    return {"kind": "maxpool2d", "pool": pool}


DENSE10 = {"kind": "dense", "size": 10, "activation": "softmax"}


@pytest.mark.parametrize(
    ("layers", "fragment"),
    [
        ([_conv(4, 29), DENSE10], "a 29x29 kernel is larger than its 28x28 input"),
        ([_conv(4, 5), _pool(5), DENSE10], "a 5x5 pool does not divide its 24x24 input"),
        ([_conv(4, 5), _conv(6, 25), DENSE10], "a 25x25 kernel is larger than its 24x24 input"),
        ([_conv(4, 5), _pool(2), _pool(7), _conv(2, 2), DENSE10], "does not divide its 12x12 input"),
        ([_conv(10**6, 5), DENSE10], "exceed the 100000 values allowed per layer"),
        ([_conv(2**62, 1), DENSE10], "exceed the 100000 values allowed per layer"),
        ([_conv(150, 1), _conv(100_000, 1), DENSE10], "exceed the 100000 values allowed per layer"),
        ([_conv(4, 0), DENSE10], "positive integer kernel size"),
        ([_conv("4", 5), DENSE10], "positive integer number of feature maps"),
        ([_conv(4, 5), _pool(True), DENSE10], "positive integer pool size"),
        ([_conv(4, 5), _pool(2)], "the last layer gives the outputs"),
        ([_conv(4, 5) | {"stride": 2}, DENSE10], "unknown stride"),
        ([_pool(2) | {"activation": "relu"}, DENSE10], "unknown activation"),
    ],
)
def test_hostile_cnn_descriptions_are_refused_before_allocating(
    tmp_path: Path, layers: list[dict[str, Any]], fragment: str
) -> None:
    path = _with_layers(tmp_path, layers)
    tracemalloc.start()
    try:
        _bad(path, fragment)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


def test_a_cnn_whose_arrays_do_not_fit_its_layers_is_refused(tmp_path: Path) -> None:
    # Layers that chain, but 5 maps instead of the file's 4: every member's shape is checked.
    layers = [
        _conv(5, 5),
        _pool(2),
        _conv(6, 5),
        _pool(2),
        {"kind": "dense", "size": 20, "activation": "relu"},
        DENSE10,
    ]
    _bad(_with_layers(tmp_path, layers), "member 'layer0_w' has shape (5, 5, 1, 4), expected (5, 5, 1, 5)")


def test_sizes_that_disagree_with_the_cnn_layers_are_refused(tmp_path: Path) -> None:
    path, _ = _saved_cnn(tmp_path)
    layers = _metadata(path)["layers"]
    _bad(_with_layers(tmp_path, layers, sizes=[784, 30, 10]), "do not match its layers")


def test_plot_draws_the_first_convolutions_kernels(tmp_path: Path) -> None:
    from PIL import Image

    from mnist_nn.plots import FILTER_CELL, plot_model

    path, _ = _saved_cnn(tmp_path)
    rng = np.random.default_rng(3)
    images, labels = rng.random((40, 784), dtype=np.float32), rng.integers(0, 10, size=40)
    written = plot_model(path, images, labels, tmp_path / "plots")
    assert [p.name for p in written][-1] == "filters.png"
    with Image.open(written[-1]) as picture:  # 4 kernels in one row of FILTER_CELL-inch cells, and a title
        assert picture.format == "PNG" and picture.size[0] == round(4 * FILTER_CELL * 100)
    dense_path = tmp_path / "dense.npz"
    save_model(dense_path, Network([784, 10, 10]), {})
    assert "filters.png" not in [p.name for p in plot_model(dense_path, images, labels, tmp_path / "dense")]
