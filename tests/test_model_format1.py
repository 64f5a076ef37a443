"""Format 1 model files, written by mnist_nn 0.1.0: they still load, evaluate and resume exactly.

The fixture was written by that release's own trainer (commit 81b1782, the last before
layers and format 2); ``tests/fixtures/README.md`` gives the commands. Format 1 stores a
dense stack as ``sizes`` with arrays ``w{l}``, ``b{l}``, ``current_w{l}``, ``current_b{l}``
and the optimizer state fused, ``opt_{key}_{l}`` of shape (n_in + 1, n_out) with the
biases' entries in the last row.
"""

from __future__ import annotations

import json
import re
import shutil
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mnist_nn.bench.machine import blas_info
from mnist_nn.cli import evaluate_main, train_main
from mnist_nn.data import MnistData
from mnist_nn.errors import ModelFileError
from mnist_nn.models import FORMAT_VERSION, load_model, save_model
from mnist_nn.nn.layers import Dense

FIXTURE = Path(__file__).parent / "fixtures" / "format1-784-4-10.npz"
SIZES = (784, 4, 10)

# The release at commit 81b1782, run without interruption for 2 epochs in the fixture's configuration:
#   MNIST_NN_MIRROR=/work/shared/mnist .venv/bin/python scripts/train_mnist.py --hidden 4 --epochs 2 \
#       --momentum 0.5 --seed 7 --data-dir /tmp/f1-mnist --json /tmp/f1-2epochs.json --quiet
# (see tests/fixtures/README.md), on an AMD EPYC with OpenBLAS's Haswell kernels. float32 sums differ
# between BLAS kernels, so these counts hold exactly only there: elsewhere, resuming the fixture must
# match an uninterrupted run that the test makes on the same machine.
OLD_RELEASE_VALIDATION_CORRECT = [6352, 6551]  # epochs 1 and 2
OLD_RELEASE_TEST_CORRECT = 6419  # the served (best validation) epoch, 2
OLD_RELEASE_KERNEL = "Haswell"  # threadpoolctl's "architecture" of the BLAS that recorded them
RUN = ["--hidden", "4", "--momentum", "0.5", "--seed", "7", "--epochs", "2"]  # the old release's 2-epoch run


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _metadata(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    metadata: dict[str, Any] = json.loads(arrays["metadata"].tobytes())
    return metadata


def _rewritten(tmp_path: Path, change: dict[str, Any], members: dict[str, np.ndarray]) -> Path:
    """A copy of the fixture with metadata keys changed and members replaced, written as np.savez writes."""
    arrays: dict[str, Any] = _arrays(FIXTURE) | members  # Any: np.savez's stubs type **kwargs as its bool
    metadata = _metadata(arrays) | change
    arrays["metadata"] = np.frombuffer(json.dumps(metadata).encode("utf-8"), dtype=np.uint8)
    path = tmp_path / "format1.npz"
    with path.open("wb") as f:
        np.savez(f, **arrays)  # not allow_pickle=False, which old numpy stores as an array
    return path


# --- without MNIST ---------------------------------------------------------------------


def test_fixture_is_a_format1_file_with_a_fused_optimizer_state() -> None:
    arrays = _arrays(FIXTURE)
    metadata = _metadata(arrays)
    assert metadata["format_version"] == 1 and metadata["package_version"] == "0.1.0"
    assert "layers" not in metadata and metadata["sizes"] == list(SIZES)
    assert set(arrays) == {
        "metadata",
        *(f"{prefix}{kind}{layer}" for prefix in ("", "current_") for kind in "wb" for layer in (0, 1)),
        "opt_velocity_0",
        "opt_velocity_1",
    }
    assert arrays["opt_velocity_0"].shape == (785, 4) and arrays["opt_velocity_1"].shape == (5, 10)
    assert FIXTURE.stat().st_size < 60_000


def test_format1_fixture_loads() -> None:
    saved = load_model(FIXTURE)
    net = saved.network
    assert net.sizes == SIZES and net.input_size == 784
    assert net.dtype == np.float32
    assert net.activation.name == "sigmoid" and net.cost.name == "quadratic"
    assert all(isinstance(layer, Dense) for layer in net.layers)
    assert net.describe() == [
        {"kind": "dense", "size": 4, "activation": "sigmoid"},
        {"kind": "dense", "size": 10, "activation": "sigmoid"},
    ]
    assert net.transform is None
    assert saved.metadata["format_version"] == 1
    assert saved.metadata["epoch"] == 1 and saved.metadata["test_correct"] == 6241
    assert saved.resume is not None
    assert saved.resume.epochs_completed == 1
    assert list(saved.resume.optimizer) == ["velocity"]


def test_format1_arrays_map_onto_the_network_and_the_fused_optimizer_state_is_split() -> None:
    arrays = _arrays(FIXTURE)
    saved = load_model(FIXTURE)
    net = saved.network
    assert saved.resume is not None
    for layer in (0, 1):
        assert np.array_equal(net.weights[layer], arrays[f"w{layer}"])
        assert np.array_equal(net.biases[layer], arrays[f"b{layer}"])
    current = net.named_arrays(saved.resume.params)
    velocity = net.named_arrays(saved.resume.optimizer["velocity"])
    for layer in (0, 1):
        assert np.array_equal(current[f"layer{layer}_w"], arrays[f"current_w{layer}"])
        assert np.array_equal(current[f"layer{layer}_b"], arrays[f"current_b{layer}"])
        fused = arrays[f"opt_velocity_{layer}"]
        assert np.array_equal(velocity[f"layer{layer}_w"], fused[:-1])
        assert np.array_equal(velocity[f"layer{layer}_b"], fused[-1])
        assert saved.resume.optimizer["velocity"][layer].dtype == np.float32
    assert not np.array_equal(arrays["opt_velocity_0"][:-1], 0)  # a real state, not zeros that would match anything


def test_format1_round_trip_through_format2(tmp_path: Path) -> None:
    saved = load_model(FIXTURE)
    assert saved.resume is not None
    path = tmp_path / "format2.npz"
    save_model(path, saved.network, {"epoch": saved.metadata["epoch"]}, resume=saved.resume)

    arrays, old = _arrays(path), _arrays(FIXTURE)
    assert _metadata(arrays)["format_version"] == FORMAT_VERSION == 2
    for layer in (0, 1):
        assert np.array_equal(arrays[f"layer{layer}_w"], old[f"w{layer}"])
        assert np.array_equal(arrays[f"current_layer{layer}_b"], old[f"current_b{layer}"])
        assert np.array_equal(arrays[f"opt_velocity_layer{layer}_w"], old[f"opt_velocity_{layer}"][:-1])
        assert np.array_equal(arrays[f"opt_velocity_layer{layer}_b"], old[f"opt_velocity_{layer}"][-1])

    again = load_model(path)
    assert again.resume is not None
    for mine, theirs in zip(saved.network.params, again.network.params, strict=True):
        assert np.array_equal(mine, theirs)
    assert list(again.resume.optimizer) == ["velocity"]
    for mine, theirs in zip(saved.resume.optimizer["velocity"], again.resume.optimizer["velocity"], strict=True):
        assert np.array_equal(mine, theirs)
    assert again.resume.rng_state == saved.resume.rng_state
    x = np.random.default_rng(0).random((20, 784)).astype(np.float32)
    assert np.array_equal(again.network.feedforward(x), saved.network.feedforward(x))


# Format 1's ``sizes`` is the network's description: the same refusals as format 2's ``layers``.
@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"sizes": [784, -4, 10]}, "'sizes' should be a list"),
        ({"sizes": [784, 4.0, 10]}, "'sizes' should be a list"),
        ({"sizes": [784, True, 10]}, "'sizes' should be a list"),
        ({"sizes": [784]}, "'sizes' should be a list"),
        ({"sizes": "784,4,10"}, "'sizes' should be a list"),
        ({"sizes": [784, 100_001, 10]}, "'sizes' should be a list"),
        ({"sizes": [784, *[4] * 1000, 10]}, "'sizes' should be a list"),
        ({"sizes": [784, 100_000, 100_000, 10]}, "parameters, more than"),
        ({"sizes": None}, "'sizes' should be a list"),
        ({"sizes": [784, 20, 10]}, "member 'w0' has shape (784, 4), expected (784, 20)"),
        ({"format_version": 3}, "this mnist_nn reads format versions 1 and 2"),
        ({"activation": "swish"}, "unknown activation 'swish'"),
    ],
)
def test_hostile_format1_metadata_is_refused_without_allocating(
    tmp_path: Path, change: dict[str, Any], fragment: str
) -> None:
    path = _rewritten(tmp_path, change, {})
    with pytest.raises(ModelFileError) as info:
        load_model(path, require_mnist=False)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and fragment in message, message
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError):
            load_model(path, require_mnist=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < path.stat().st_size + 2**20


@pytest.mark.parametrize(
    ("members", "fragment"),
    [
        (
            {"opt_velocity_0": np.zeros((784, 4), np.float32)},
            "member 'opt_velocity_0' has shape (784, 4), expected (785, 4)",
        ),
        ({"opt_velocity_1": np.full((5, 10), np.nan, np.float32)}, "non-finite values in member 'opt_velocity_1'"),
        ({"current_w1": np.zeros((4, 10), np.float64)}, "member 'current_w1' has dtype float64, expected float32"),
    ],
)
def test_bad_format1_members_are_refused(tmp_path: Path, members: dict[str, np.ndarray], fragment: str) -> None:
    path = _rewritten(tmp_path, {}, members)
    with pytest.raises(ModelFileError, match=re.escape(fragment)):
        load_model(path)


def test_format1_without_its_fused_optimizer_member(tmp_path: Path) -> None:
    arrays: dict[str, Any] = _arrays(FIXTURE)
    del arrays["opt_velocity_1"]
    path = tmp_path / "format1.npz"
    with path.open("wb") as f:
        np.savez(f, **arrays)  # not allow_pickle=False, which old numpy stores as an array
    with pytest.raises(ModelFileError, match="missing array member 'opt_velocity_1'"):
        load_model(path)


# --- with real MNIST -------------------------------------------------------------------


@pytest.mark.real_data
def test_format1_fixture_counts_what_its_metadata_records(mnist: MnistData) -> None:
    saved = load_model(FIXTURE)
    assert saved.network.count_correct(*mnist.test) == saved.metadata["test_correct"] == 6241
    assert saved.network.count_correct(*mnist.validation) == saved.metadata["validation_correct"] == 6352


@pytest.mark.real_data
def test_evaluate_prints_the_format1_fixtures_count(mnist_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate_main([str(FIXTURE), "--data-dir", str(mnist_cache)]) == 0
    out = capsys.readouterr().out
    assert "Test: 6241 / 10000 correct (62.41%)" in out


def _blas_kernel() -> str | None:
    """The core type of the first BLAS library NumPy uses (threadpoolctl), None if unknown."""
    kernels = [entry.get("architecture") for entry in blas_info()]
    return str(kernels[0]) if kernels and kernels[0] else None


def _as_format1(path: Path, out: Path) -> None:
    """Rewrite a format 2 file of a resumable (784, 4, 10) run as the old release wrote it: format 1."""
    arrays = _arrays(path)
    metadata = _metadata(arrays)
    old = _metadata(_arrays(FIXTURE))
    old_keys = set(old["config"])  # the old release's configuration: sizes, no layers or inputs
    for key in ("config", "history", "epoch", "epochs_completed", "validation_correct", "test_correct", "resume"):
        old[key] = metadata[key]
    old["config"] = {k: v for k, v in metadata["config"].items() if k in old_keys} | {"sizes": list(SIZES)}
    members: dict[str, Any] = {"metadata": np.frombuffer(json.dumps(old).encode("utf-8"), dtype=np.uint8)}
    for layer in (0, 1):
        for prefix in ("", "current_"):
            for kind in "wb":
                members[f"{prefix}{kind}{layer}"] = arrays[f"{prefix}layer{layer}_{kind}"]
        w, b = arrays[f"opt_velocity_layer{layer}_w"], arrays[f"opt_velocity_layer{layer}_b"]
        members[f"opt_velocity_{layer}"] = np.vstack([w, b[np.newaxis]])  # fused: the biases as the last row
    with out.open("wb") as f:
        np.savez(f, **members)


@pytest.mark.real_data
def test_resuming_a_format1_file_matches_an_uninterrupted_run_on_this_machine(
    tmp_path: Path, mnist_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--data-dir", str(mnist_cache), "--quiet"]
    straight_json, results = tmp_path / "straight.json", tmp_path / "run.json"
    assert train_main([*RUN, *common, "--json", str(straight_json)]) == 0
    straight = json.loads(straight_json.read_text())
    one_epoch, path = tmp_path / "one.npz", tmp_path / "format1.npz"
    assert train_main([*RUN, *common, "--epochs", "1", "--save", str(one_epoch)]) == 0  # the later --epochs wins
    _as_format1(one_epoch, path)
    assert load_model(path).metadata["format_version"] == 1
    capsys.readouterr()

    argv = ["--resume", str(path), "--epochs", "2", "--save", str(path)]
    assert train_main([*argv, *common, "--json", str(results)]) == 0
    assert f"Test: {straight['test_correct']} / 10000 correct" in capsys.readouterr().out
    run = json.loads(results.read_text())
    keys = ("epoch", "validation_correct", "train_cost")
    assert [[r[k] for k in keys] for r in run["history"]] == [[r[k] for k in keys] for r in straight["history"]]
    assert run["test_correct"] == straight["test_correct"]

    arrays = _arrays(path)  # the resumed run is saved in format 2
    assert _metadata(arrays)["format_version"] == 2
    assert {"layer0_w", "current_layer1_b", "opt_velocity_layer0_w"} <= set(arrays)
    assert not {"w0", "opt_velocity_0"} & set(arrays)
    saved = load_model(path)
    assert saved.network.sizes == SIZES
    assert saved.resume is not None and saved.resume.epochs_completed == 2
    assert saved.metadata["test_correct"] == straight["test_correct"]


@pytest.mark.real_data
def test_resuming_the_format1_fixture_gives_the_old_releases_uninterrupted_run(
    tmp_path: Path, mnist_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "format1.npz"
    shutil.copyfile(FIXTURE, path)
    results = tmp_path / "run.json"
    argv = ["--resume", str(path), "--epochs", "2", "--data-dir", str(mnist_cache), "--quiet"]
    assert train_main([*argv, "--json", str(results)]) == 0
    run = json.loads(results.read_text())
    validation = [epoch["validation_correct"] for epoch in run["history"]]
    assert f"Test: {run['test_correct']} / 10000 correct" in capsys.readouterr().out
    assert validation[0] == OLD_RELEASE_VALIDATION_CORRECT[0]  # the fixture's own epoch, as it was stored
    # Its second epoch: exact on the kernel that recorded it; within 1% on any other.
    if _blas_kernel() == OLD_RELEASE_KERNEL:
        assert (validation[1], run["test_correct"]) == (OLD_RELEASE_VALIDATION_CORRECT[1], OLD_RELEASE_TEST_CORRECT)
    else:
        assert abs(validation[1] - OLD_RELEASE_VALIDATION_CORRECT[1]) <= 100, validation
        assert abs(run["test_correct"] - OLD_RELEASE_TEST_CORRECT) <= 100, run["test_correct"]
