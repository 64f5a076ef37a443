"""Model files: exact round trips, atomic saves, and a clear refusal of every malformed or hostile file."""

from __future__ import annotations

import io
import json
import os
import tracemalloc
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mnist_nn
from mnist_nn.errors import ModelFileError
from mnist_nn.models import (
    FORMAT_NAME,
    FORMAT_VERSION,
    ResumeState,
    load_model,
    model_metadata_base,
    save_model,
)
from mnist_nn.nn.network import Network
from mnist_nn.nn.transforms import input_transform

MNIST_SIZES = (784, 30, 10)
SMALL_SIZES = (6, 5, 4, 3)


# --- helpers ---------------------------------------------------------------------------


def _dense(*sizes: Any, activation: str = "sigmoid") -> list[dict[str, Any]]:
    """Format 2's description of a stack of dense layers of these sizes (as ``Network.describe`` gives)."""
    return [{"kind": "dense", "size": n, "activation": activation} for n in sizes]


def _network(input_size: Any, *sizes: Any) -> dict[str, Any]:
    """Metadata describing a stack of dense layers, ``sizes`` consistent with ``layers`` as a writer would put it."""
    return {"input_size": input_size, "layers": _dense(*sizes), "sizes": [input_size, *sizes]}


def _resume_for(net: Network, rng: np.random.Generator, epochs: int = 7) -> ResumeState:
    """A resume state whose arrays all differ from the network's served weights."""
    return ResumeState(
        params=[(p * 0.5 + 1).astype(net.dtype) for p in net.params],
        optimizer={
            "velocity": [np.full_like(p, 0.25) for p in net.params],
            "second_moment": [(p * p).astype(net.dtype) for p in net.params],
        },
        rng_state=rng.bit_generator.state,
        epochs_completed=epochs,
    )


def _saved(tmp_path: Path, sizes: tuple[int, ...] = MNIST_SIZES, resume: bool = False) -> tuple[Path, Network]:
    """A real model file in tmp_path and the network it holds."""
    net = Network(sizes, seed=3)
    path = tmp_path / "model.npz"
    state = _resume_for(net, np.random.default_rng(1)) if resume else None
    save_model(path, net, {"epoch": 2}, resume=state)
    return path, net


def _members(path: Path) -> dict[str, np.ndarray]:
    """Every array of a good model file."""
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _metadata(path: Path) -> dict[str, Any]:
    metadata: dict[str, Any] = json.loads(_members(path)["metadata"].tobytes())
    return metadata


def _metadata_array(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)


def _write_npz(path: Path, arrays: dict[str, Any]) -> None:
    """Write arrays the way np.savez does, pickles allowed: how a careless or hostile writer might."""
    with path.open("wb") as f:
        np.savez(f, **arrays)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _bad(path: Path, fragment: str, *, require_mnist: bool = True) -> str:
    """Load ``path`` expecting a ModelFileError whose one-line message has the path and ``fragment``."""
    with pytest.raises(ModelFileError) as info:
        load_model(path, require_mnist=require_mnist)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{path}: "), message
    assert fragment in message, message
    return message


def _files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_gives_identical_params_and_predictions(tmp_path: Path, dtype: type) -> None:
    net = Network(MNIST_SIZES, seed=11, dtype=dtype)
    path = tmp_path / "nested" / "folder" / "model.npz"  # the folder is created
    save_model(path, net, {"epoch": 30})
    saved = load_model(path)
    assert saved.path == path
    assert saved.resume is None
    assert saved.network.sizes == net.sizes
    assert saved.network.dtype == np.dtype(dtype)
    assert saved.network.activation.name == net.activation.name
    assert saved.network.cost.name == net.cost.name
    for mine, theirs in zip(net.params, saved.network.params, strict=True):
        assert theirs.dtype == mine.dtype
        assert np.array_equal(theirs, mine)
    x: np.ndarray = np.random.default_rng(0).random((50, 784)).astype(dtype)
    assert np.array_equal(saved.network.feedforward(x), net.feedforward(x))
    assert _files_in(path.parent) == ["model.npz"]


def test_file_is_a_plain_npz_with_the_documented_members(tmp_path: Path) -> None:
    path, net = _saved(tmp_path, resume=True)
    arrays = _members(path)  # np.load with allow_pickle=False
    prefixes = ("", "current_", "opt_velocity_", "opt_second_moment_")
    assert set(arrays) == {
        "metadata",
        *(f"{prefix}layer{layer}_{kind}" for prefix in prefixes for kind in "wb" for layer in (0, 1)),
    }
    assert arrays["metadata"].dtype == np.uint8
    assert arrays["layer0_w"].shape == (784, 30) and arrays["layer0_b"].shape == (30,)
    assert arrays["layer1_w"].shape == (30, 10) and arrays["layer1_b"].shape == (10,)
    assert arrays["opt_velocity_layer1_w"].shape == (30, 10) and arrays["opt_velocity_layer1_b"].shape == (10,)
    assert np.array_equal(arrays["layer1_w"], net.params[1][:-1])
    assert np.array_equal(arrays["layer1_b"], net.params[1][-1])
    assert np.array_equal(arrays["current_layer1_w"], net.params[1][:-1] * 0.5 + 1)
    assert np.array_equal(arrays["opt_second_moment_layer1_b"], net.params[1][-1] ** 2)
    with zipfile.ZipFile(path) as archive:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resume_state_round_trips_exactly(tmp_path: Path, dtype: type) -> None:
    net = Network(SMALL_SIZES, seed=5, dtype=dtype)
    rng = np.random.default_rng(2024)
    rng.random(17)  # move the generator away from its seeded state
    resume = _resume_for(net, rng, epochs=12)
    path = tmp_path / "model.npz"
    save_model(path, net, {}, resume=resume)
    saved = load_model(path, require_mnist=False)

    assert saved.resume is not None
    for mine, theirs in zip(net.params, saved.network.params, strict=True):
        assert np.array_equal(theirs, mine)  # the served weights, not the current ones
    for mine, theirs in zip(resume.params, saved.resume.params, strict=True):
        assert theirs.dtype == np.dtype(dtype) and np.array_equal(theirs, mine)
    assert list(saved.resume.optimizer) == ["velocity", "second_moment"]
    for key, arrays in resume.optimizer.items():
        for mine, theirs in zip(arrays, saved.resume.optimizer[key], strict=True):
            assert theirs.dtype == np.dtype(dtype) and np.array_equal(theirs, mine)
    assert saved.resume.epochs_completed == 12
    assert saved.resume.rng_state == resume.rng_state

    restored = np.random.default_rng()
    restored.bit_generator.state = saved.resume.rng_state
    assert np.array_equal(restored.random(10), rng.random(10))
    assert np.array_equal(restored.permutation(100), rng.permutation(100))

    section = saved.metadata["resume"]
    assert section["epochs_completed"] == 12 and section["optimizer"] == ["velocity", "second_moment"]
    assert isinstance(section["rng_state"]["state"]["state"], str)  # 128 bits: a decimal string in JSON


def test_resume_state_without_optimizer_and_with_another_bit_generator(tmp_path: Path) -> None:
    net = Network(SMALL_SIZES, seed=5)
    rng = np.random.Generator(np.random.MT19937(9))
    rng.random(3)
    resume = ResumeState(net.copy_params(), {}, rng.bit_generator.state, 0)
    path = tmp_path / "model.npz"
    save_model(path, net, {}, resume=resume)
    saved = load_model(path, require_mnist=False)
    assert saved.resume is not None and saved.resume.optimizer == {}
    restored = np.random.Generator(np.random.MT19937())
    restored.bit_generator.state = saved.resume.rng_state
    assert np.array_equal(restored.random(10), rng.random(10))


def test_metadata_round_trips_beside_the_base_keys(tmp_path: Path) -> None:
    net = Network(MNIST_SIZES, seed=1, dtype=np.float64)
    caller = {
        "config": {"sizes": [784, 30, 10], "epochs": 30, "batch_size": 10, "eta": 3.0, "seed": 12345},
        "history": [{"epoch": 1, "validation_correct": 9012, "seconds": 1.5}],
        "epoch": 1,
        "validation_correct": np.int64(9012),  # numpy scalars are stored as numbers
        "test_correct": 8999,
        "mnist": {"train-images-idx3-ubyte.gz": "ab" * 32},
        "note": "naïve ✓",
        "sizes": (784, 30, 10),  # repeating a describing key with the same value is fine
    }
    path = tmp_path / "model.npz"
    save_model(path, net, caller)
    metadata = load_model(path).metadata
    expected = json.loads(json.dumps({k: v for k, v in caller.items() if k != "sizes"}, default=int))
    assert {k: metadata[k] for k in expected} == expected
    assert metadata["format"] == FORMAT_NAME and metadata["format_version"] == FORMAT_VERSION
    assert metadata["sizes"] == [784, 30, 10]
    assert metadata["input_size"] == 784 and metadata["layers"] == _dense(30, 10)
    assert metadata["dtype"] == "float64"
    assert metadata["activation"] == "sigmoid" and metadata["cost"] == "quadratic"
    assert metadata["package_version"] == mnist_nn.__version__
    created = datetime.fromisoformat(metadata["created"])
    assert created.utcoffset() == timedelta(0)
    assert "resume" not in metadata


def test_model_metadata_base_describes_the_network() -> None:
    base = model_metadata_base(Network((5, 4, 3), dtype=np.float64))
    assert set(base) == {
        "format",
        "format_version",
        "input_size",
        "layers",
        "sizes",
        "activation",
        "cost",
        "preprocess",
        "dtype",
        "package_version",
        "created",
    }
    assert base["input_size"] == 5 and base["layers"] == _dense(4, 3)
    assert base["sizes"] == [5, 4, 3] and base["dtype"] == "float64" and base["preprocess"] == ""
    json.dumps(base, allow_nan=False)


# --- saving fails cleanly --------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({"bad": object()}, "not JSON-serializable"),
        ({"history": [1.0, float("nan")]}, "not JSON-serializable"),
        ({"weights": np.zeros(3)}, "not JSON-serializable"),
        ({1: "x"}, "keys to be strings"),
        ({"sizes": [784, 100, 10]}, "'sizes'"),
        ({"layers": _dense(100, 10)}, "'layers'"),
        ({"input_size": 100}, "'input_size'"),
        ({"format_version": 1}, "'format_version'"),
        ({"resume": {}}, "resume=ResumeState"),
    ],
)
def test_bad_metadata_raises_before_anything_is_written(tmp_path: Path, metadata: dict[Any, Any], match: str) -> None:
    path, _ = _saved(tmp_path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=match):
        save_model(path, Network(MNIST_SIZES, seed=9), metadata)
    assert path.read_bytes() == before
    assert _files_in(tmp_path) == ["model.npz"]


def test_bad_resume_state_or_weights_raise_value_error(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    before = path.read_bytes()
    net = Network(MNIST_SIZES, seed=9)
    rng = np.random.default_rng(0)
    good = _resume_for(net, rng)
    bad_states = [
        ResumeState(good.params[:1], {}, good.rng_state, 1),
        ResumeState([p.astype(np.float64) for p in good.params], {}, good.rng_state, 1),
        ResumeState(good.params, {"velocity": good.params[:1]}, good.rng_state, 1),
        ResumeState(good.params, {"bad key": good.params}, good.rng_state, 1),
        ResumeState(good.params, {}, {"bit_generator": "Nope"}, 1),
        ResumeState(good.params, {}, {"bit_generator": "PCG64", "state": {}}, 1),
        ResumeState(good.params, {}, good.rng_state, -1),
    ]
    for state in bad_states:
        with pytest.raises(ValueError):
            save_model(path, net, {}, resume=state)
    net.params[1][0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        save_model(path, net, {})
    assert path.read_bytes() == before
    assert _files_in(tmp_path) == ["model.npz"]


def test_a_write_that_fails_midway_keeps_the_earlier_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = _saved(tmp_path, resume=True)
    before = path.read_bytes()
    real_write_array = np.lib.format.write_array
    calls = []

    def failing_write_array(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 4:  # metadata, layer0_w, layer0_b written; fail inside layer1_w
            raise OSError(28, "No space left on device (injected)")
        real_write_array(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing_write_array)
    net = Network(MNIST_SIZES, seed=9)
    with pytest.raises(OSError, match="injected"):
        save_model(path, net, {"epoch": 5}, resume=_resume_for(net, np.random.default_rng(0)))
    assert len(calls) == 4
    assert path.read_bytes() == before
    assert _files_in(tmp_path) == ["model.npz"]


def test_a_failed_sync_keeps_the_earlier_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = _saved(tmp_path)
    before = path.read_bytes()

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error (injected)")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="injected"):
        save_model(path, Network(MNIST_SIZES, seed=9), {})
    assert path.read_bytes() == before
    assert _files_in(tmp_path) == ["model.npz"]


# --- loading refuses bad files -----------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    _bad(tmp_path / "nope.npz", "no such file")


def test_directory(tmp_path: Path) -> None:
    _bad(tmp_path, "is a directory")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    _bad(path, "empty file")


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.npz"
    path.write_text("these are not the weights you are looking for\n")
    _bad(path, "not a model file (not an .npz archive)")


def test_other_zip_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    _write_npz(path, {"w0": np.zeros((784, 30), np.float32)})
    _bad(path, "no 'metadata' member")


@pytest.mark.parametrize("keep", [0.0001, 0.1, 0.5, 0.9, 0.999, -22, -1])
def test_truncated_file(tmp_path: Path, keep: float) -> None:
    path, _ = _saved(tmp_path, resume=True)
    data = path.read_bytes()
    cut = len(data) + int(keep) if keep < 0 else max(1, int(len(data) * keep))
    path.write_bytes(data[:cut])
    _bad(path, "")


def test_flipped_byte_in_the_weights_fails_the_checksum(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    w_start = data.index(b"\x93NUMPY", data.index(b"\x93NUMPY") + 1)  # second member: layer0_w
    data[w_start + 1000] ^= 0xFF
    path.write_bytes(bytes(data))
    _bad(path, "CRC")


unpickled: list[str] = []


def _record_unpickling() -> str:
    unpickled.append("oops")
    return "oops"


class _Trap:
    """Unpickling this would call _record_unpickling."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_record_unpickling, ())


def test_pickled_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    arrays = _members(path)
    arrays["layer0_w"] = np.array([_Trap(), {"a": 1}], dtype=object)
    _write_npz(path, arrays)
    _bad(path, "Python objects")
    assert unpickled == []


def test_pickled_metadata_is_refused_without_unpickling(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    arrays = _members(path)
    arrays["metadata"] = np.array([_Trap()], dtype=object)
    _write_npz(path, arrays)
    _bad(path, "Python objects")
    assert unpickled == []


@pytest.mark.parametrize(
    ("name", "array", "fragment"),
    [
        ("layer0_w", np.zeros((30, 784), np.float32), "has shape (30, 784), expected (784, 30)"),
        ("layer1_b", np.zeros((10, 1), np.float32), "has shape (10, 1), expected (10,)"),
        ("layer1_w", np.zeros((30, 10), np.float64), "has dtype float64, expected float32"),
        ("layer0_b", np.zeros(30, np.int32), "has dtype int32, expected float32"),
        ("layer1_w", np.asfortranarray(np.zeros((30, 10), np.float32)), "Fortran order"),
    ],
)
def test_wrong_member_shape_dtype_or_order(tmp_path: Path, name: str, array: np.ndarray, fragment: str) -> None:
    path, _ = _saved(tmp_path)
    arrays = _members(path)
    arrays[name] = array
    _write_npz(path, arrays)
    message = _bad(path, fragment)
    assert repr(name) in message


def test_missing_array_member(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    arrays = _members(path)
    del arrays["layer1_b"]
    _write_npz(path, arrays)
    _bad(path, "missing array member 'layer1_b'")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights(tmp_path: Path, value: float) -> None:
    path, _ = _saved(tmp_path)
    arrays = _members(path)
    arrays["layer1_w"][3, 4] = value
    _write_npz(path, arrays)
    _bad(path, "non-finite weights in member 'layer1_w'")


def test_extra_members_are_ignored(tmp_path: Path) -> None:
    path, net = _saved(tmp_path)
    arrays = _members(path)
    arrays["notes"] = np.array([_Trap()], dtype=object)  # never read, so never unpickled
    _write_npz(path, arrays)
    assert np.array_equal(load_model(path).network.params[0], net.params[0])
    assert unpickled == []


def test_compressed_members_are_refused(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    arrays: dict[str, Any] = _members(path)
    with path.open("wb") as f:
        np.savez_compressed(f, **arrays)
    _bad(path, "compressed")


def _with_metadata(tmp_path: Path, change: dict[str, Any], drop: tuple[str, ...] = ()) -> Path:
    path, _ = _saved(tmp_path)
    arrays = _members(path)
    metadata = {k: v for k, v in _metadata(path).items() if k not in drop} | change
    arrays["metadata"] = _metadata_array(metadata)
    _write_npz(path, arrays)
    return path


@pytest.mark.parametrize(
    ("change", "drop", "fragment"),
    [
        (
            {"format_version": 3},
            (),
            "unsupported format_version 3 (written by a newer mnist_nn?); this mnist_nn reads format versions 1 and 2",
        ),
        ({"format_version": 0}, (), "unsupported format_version 0"),
        ({"format_version": "1"}, (), "'format_version' should be an integer"),
        ({}, ("format_version",), "'format_version' should be an integer"),
        ({"format": "keras"}, (), "not an mnist_nn model file (format 'keras'"),
        ({}, ("format",), "no 'format' key"),
        (_network(784, -30, 10), (), "expected a positive integer layer size, got -30"),
        (_network(784, 30.0, 10), (), "expected a dense layer's size to be an integer, got 30.0"),
        (_network(784, True, 10), (), "expected a dense layer's size to be an integer, got True"),
        (_network(784), (), "'layers' should be a list of 1 to 999 layers, got []"),
        ({"layers": "dense,dense"}, (), "'layers' should be a list"),
        (_network(784, *[30] * 999, 10), (), "'layers' should be a list of 1 to 999 layers"),
        (_network(784, 100_001, 10), (), "layers of sizes [784, 100001, 10] exceed the 100000 values allowed"),
        (_network(784, 2**63, 10), (), "exceed the 100000 values allowed per layer"),
        (_network(784, 100_000, 100_000, 10), (), "parameters, more than"),
        ({}, ("layers",), "'layers' should be a list"),
        ({"layers": [{"kind": "lstm", "size": 30, "activation": "sigmoid"}, *_dense(10)]}, (), "unknown layer kind"),
        ({"layers": [{"size": 30, "activation": "sigmoid"}, *_dense(10)]}, (), "unknown layer kind None"),
        ({"layers": [30, *_dense(10)]}, (), "expected a layer description (a JSON object), got int"),
        ({"layers": [{"kind": "dense", "size": 30}, *_dense(10)]}, (), "missing activation"),
        ({"layers": [{**_dense(30)[0], "weights": [1]}, *_dense(10)]}, (), "unknown weights"),
        ({"layers": [*_dense(30, activation="swish"), *_dense(10)]}, (), "unknown activation 'swish'"),
        ({"layers": _dense(30, 10, activation="relu")}, (), "needs sigmoid outputs"),
        ({"input_size": 100_001}, (), "'input_size' should be an integer in 1..100000, got 100001"),
        ({"input_size": 784.0}, (), "'input_size' should be an integer"),
        ({"input_size": True}, (), "'input_size' should be an integer"),
        ({}, ("input_size",), "'input_size' should be an integer"),
        ({"sizes": [784, 20, 10]}, (), "'sizes' [784, 20, 10] do not match its layers ([784, 30, 10])"),
        ({"sizes": "784,30,10"}, (), "do not match its layers"),
        ({"dtype": "float16"}, (), "unsupported dtype 'float16'"),
        ({"dtype": ["float32"]}, (), "unsupported dtype"),
        ({"activation": "swish"}, (), "unknown activation 'swish'"),
        ({"cost": "hinge"}, (), "unknown cost 'hinge'"),
        ({"cost": None}, (), "'cost' should be a name"),
        ({"resume": []}, (), "malformed resume section"),
    ],
)
def test_bad_metadata_fields(tmp_path: Path, change: dict[str, Any], drop: tuple[str, ...], fragment: str) -> None:
    _bad(_with_metadata(tmp_path, change, drop), fragment)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b'{"format": "mnist_nn-model"', "not valid JSON"),
        (b'{"format": NaN}', "not valid JSON"),
        (b"[1, 2, 3]", "not a JSON object, got an array"),
        (b"", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_unreadable_metadata(tmp_path: Path, raw: bytes, fragment: str) -> None:
    path, _ = _saved(tmp_path)
    arrays = _members(path)
    arrays["metadata"] = np.frombuffer(raw, dtype=np.uint8)
    _write_npz(path, arrays)
    _bad(path, fragment)


def test_metadata_of_the_wrong_dtype(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    arrays = _members(path)
    arrays["metadata"] = np.array(json.dumps(_metadata(path)))  # a unicode string array
    _write_npz(path, arrays)
    _bad(path, "member 'metadata' has dtype <U")


def test_network_of_the_wrong_size_for_mnist(tmp_path: Path) -> None:
    path, net = _saved(tmp_path, sizes=(10, 5, 10))
    _bad(path, "expected a network with 784 inputs and 10 outputs for MNIST, got sizes [10, 5, 10]")
    saved = load_model(path, require_mnist=False)
    assert np.array_equal(saved.network.params[1], net.params[1])


def test_metadata_layers_that_disagree_with_the_arrays(tmp_path: Path) -> None:
    path = _with_metadata(tmp_path, _network(784, 20, 10))
    _bad(path, "member 'layer0_w' has shape (784, 30), expected (784, 20)")
    path = _with_metadata(tmp_path, _network(100, 30, 10))
    _bad(path, "member 'layer0_w' has shape (784, 30), expected (100, 30)", require_mnist=False)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"epochs_completed": -1}, "epochs_completed should be a non-negative integer"),
        ({"epochs_completed": "3"}, "epochs_completed should be a non-negative integer"),
        ({"optimizer": ["velocity", "velocity"]}, "optimizer should be a list"),
        ({"optimizer": ["../etc"]}, "optimizer should be a list"),
        ({"optimizer": ["velocity", "momentum"]}, "missing array member 'opt_momentum_layer0_w'"),
        ({"rng_state": "PCG64"}, "rng_state should be a JSON object"),
        ({"rng_state": {"bit_generator": "os.system"}}, "expected rng_state of one of numpy's bit generators"),
        ({"rng_state": {"bit_generator": "PCG64", "state": {"state": "x", "inc": 1}}}, "not a valid PCG64 state"),
        ({"rng_state": {"bit_generator": "PCG64"}}, "not a valid PCG64 state: missing key 'state'"),
    ],
)
def test_malformed_resume_section(tmp_path: Path, change: dict[str, Any], fragment: str) -> None:
    path, _ = _saved(tmp_path, resume=True)
    arrays = _members(path)
    metadata = _metadata(path)
    metadata["resume"] |= change
    arrays["metadata"] = _metadata_array(metadata)
    _write_npz(path, arrays)
    _bad(path, fragment)


def test_resume_section_without_its_arrays(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path, resume=True)
    arrays = _members(path)
    del arrays["current_layer1_w"]
    _write_npz(path, arrays)
    _bad(path, "missing array member 'current_layer1_w'")


def _hand_built_zip(path: Path, members: dict[str, bytes]) -> None:
    """A stored zip with exactly these member bytes, as a hostile writer might build it."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.mark.parametrize("data_bytes", [16, 784 * 30 * 4])
def test_hostile_header_claiming_a_huge_shape_is_refused_without_allocating(tmp_path: Path, data_bytes: int) -> None:
    good, _ = _saved(tmp_path)
    arrays = _members(good)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**40,)})
    members = {f"{name}.npy": _npy_bytes(array) for name, array in arrays.items()}
    members["layer0_w.npy"] = header.getvalue() + bytes(data_bytes)  # the header starts with the .npy magic
    path = tmp_path / "hostile.npz"
    _hand_built_zip(path, members)
    tracemalloc.start()
    try:
        _bad(path, "member 'layer0_w' has shape (1099511627776,), expected (784, 30)")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20


@pytest.mark.parametrize(
    ("claim", "fragment"), [(2**31, "more than the file holds"), (784 * 30 * 4 + 192, "bytes of data")]
)
def test_zip_entry_claiming_the_wrong_size(tmp_path: Path, claim: int, fragment: str) -> None:
    good, _ = _saved(tmp_path)
    members = {f"{name}.npy": _npy_bytes(array) for name, array in _members(good).items()}
    path = tmp_path / "hostile.npz"
    _hand_built_zip(path, members)
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")  # central directory entries: signature, ..., name at offset 46
    while data[entry + 46 : entry + 58] != b"layer0_w.npy":
        entry = data.index(b"PK\x01\x02", entry + 1)
    claimed = claim.to_bytes(4, "little")
    data[entry + 20 : entry + 28] = claimed + claimed  # compressed and uncompressed sizes
    path.write_bytes(bytes(data))
    _bad(path, f"member 'layer0_w' {'claims' if claim > 2**30 else 'holds'}")
    _bad(path, fragment)


def test_malformed_npy_header(tmp_path: Path) -> None:
    good, _ = _saved(tmp_path)
    members = {f"{name}.npy": _npy_bytes(array) for name, array in _members(good).items()}
    w0 = members["layer0_w.npy"]
    members["layer0_w.npy"] = w0[:10] + b"{'descr': __import__('os')}".ljust(118) + w0[128:]
    path = tmp_path / "hostile.npz"
    _hand_built_zip(path, members)
    _bad(path, "not a valid .npy array")


def test_member_that_is_not_npy_at_all(tmp_path: Path) -> None:
    good, _ = _saved(tmp_path)
    members = {f"{name}.npy": _npy_bytes(array) for name, array in _members(good).items()}
    members["layer0_b.npy"] = b"hello" * 30
    path = tmp_path / "hostile.npz"
    _hand_built_zip(path, members)
    _bad(path, "member 'layer0_b' is not a valid .npy array")


def test_duplicate_members(tmp_path: Path) -> None:
    good, _ = _saved(tmp_path)
    members = {f"{name}.npy": _npy_bytes(array) for name, array in _members(good).items()}
    path = tmp_path / "hostile.npz"
    _hand_built_zip(path, members)
    with (
        pytest.warns(UserWarning, match="Duplicate name"),
        zipfile.ZipFile(path, "a", compression=zipfile.ZIP_STORED) as archive,
    ):
        archive.writestr("layer0_w.npy", _npy_bytes(np.zeros((784, 30), np.float32)))
    _bad(path, "duplicate archive member 'layer0_w.npy'")


def test_path_with_a_newline_still_gives_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "odd\nname"
    folder.mkdir()
    with pytest.raises(ModelFileError) as info:
        load_model(folder / "model.npz")
    assert "\n" not in str(info.value) and "no such file" in str(info.value)


def test_input_transform_round_trips_and_unknown_ones_are_refused(tmp_path: Path) -> None:
    net = Network((784, 6, 10), seed=1, transform=input_transform("deskew"))
    path = tmp_path / "deskew.npz"
    save_model(path, net, {})
    loaded = load_model(path).network
    assert loaded.transform is not None and loaded.transform.name == "deskew"
    x = np.random.default_rng(0).random((5, 784)).astype(np.float32)
    assert np.array_equal(loaded.feedforward(x), net.feedforward(x))
    assert not np.array_equal(net.feedforward(x), net.feedforward(x, prepared=True))
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    meta = json.loads(np.lib.format.read_array(io.BytesIO(members["metadata.npy"])).tobytes())
    meta["preprocess"] = "sharpen"
    raw = io.BytesIO()
    np.lib.format.write_array(raw, np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    members["metadata.npy"] = raw.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(ModelFileError, match="unknown input transform 'sharpen'"):
        load_model(path)


def test_save_and_load_take_plain_strings_and_need_no_metadata(tmp_path: Path) -> None:
    import mnist_nn

    path = str(tmp_path / "m.npz")  # a str, as a script or a notebook passes it; mypy --strict accepts it
    mnist_nn.save_model(path, mnist_nn.Network([784, 10], seed=1))
    saved: mnist_nn.SavedModel = mnist_nn.load_model(path)
    assert saved.network.sizes == (784, 10) and saved.resume is None
    assert saved.metadata["format_version"] == 2 and "SavedModel" in mnist_nn.__all__
