"""ONNX export: every kind of layer, activation and output, and the deskewing transform, run by ONNX Runtime on
the 10,000 test images, answers as NumPy does; ``mnist-nn export`` and ``mnist-nn predict OUT.onnx`` end to end;
what cannot be exported or run is refused in one line.

The models train for one epoch on 500 real images: their accuracy does not matter, their agreement does. Their
learning rates keep the outputs away from saturation, where sigmoid outputs round to exactly 1.0 in float32 and
tie, and two float32 libraries may break such a tie differently (docs/export.md says so).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from mnist_nn import AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, MaxPool2D, Network, __version__
from mnist_nn.cli import main
from mnist_nn.config import PRESETS, TrainConfig
from mnist_nn.data import MnistData
from mnist_nn.errors import ExportError, ModelFileError
from mnist_nn.export import export_onnx, load_onnx, onnx_model
from mnist_nn.models import load_model, save_model
from mnist_nn.nn.layers import LAYER_KINDS
from mnist_nn.nn.specs import layer_from_spec
from mnist_nn.train import Run, fit

ROOT = Path(__file__).resolve().parents[1]
TRAIN = 500  # images each model trains on, for one epoch
TOLERANCE = 1e-5  # ONNX Runtime's probabilities against NumPy's

# One model per kind of layer, activation and output (hidden activations: sigmoid unless named).
MODELS: dict[str, dict[str, Any]] = {
    "dense-sigmoid-quadratic": {"layers": ("dense30", "dense10"), "eta": 3.0},
    "dense-relu-softmax": {
        "layers": ("dense30", "dense10"),
        "activation": "relu",
        "cost": "log-likelihood",
        "init": "he",
        "eta": 0.1,
    },
    "conv-maxpool": {
        "layers": ("conv6x5", "pool2", "conv8x3", "pool2", "dense10"),
        "activation": "relu",
        "cost": "log-likelihood",
        "init": "he",
        "eta": 0.05,
    },
    "conv-padding-avgpool-tanh-cross-entropy": {
        "layers": ("conv4x3p1", "avgpool2", "dense10"),
        "activation": "tanh",
        "cost": "cross-entropy",
        "init": "glorot",
        "eta": 0.1,
    },
    "batchnorm-after-dense": {
        "layers": ("dense30", "bn", "dense10"),
        "activation": "relu",
        "cost": "log-likelihood",
        "init": "he",
        "eta": 0.1,
    },
    "batchnorm-after-conv": {
        "layers": ("conv6x5", "bn", "pool2", "dense10"),
        "activation": "relu",
        "cost": "log-likelihood",
        "init": "he",
        "eta": 0.05,
    },
    "dropout": {
        "layers": ("dropout0.2", "dense30", "dropout0.5", "dense10"),
        "activation": "relu",
        "cost": "log-likelihood",
        "init": "he",
        "eta": 0.1,
        "dropout": 0.3,
    },
    "deskew-dense": {
        "layers": ("dense30", "dense10"),
        "activation": "relu",
        "cost": "log-likelihood",
        "init": "he",
        "eta": 0.1,
        "preprocess": "deskew",
    },
    "deskew-conv-sigmoid": {
        "layers": ("conv4x5", "pool2", "dense10"),
        "cost": "cross-entropy",
        "eta": 0.5,
        "preprocess": "deskew",
    },
    "float64-tanh": {
        "layers": ("dense20", "dense10"),
        "activation": "tanh",
        "cost": "cross-entropy",
        "eta": 0.5,
        "dtype": "float64",
    },
}


@pytest.fixture(scope="module")
def saved(mnist: MnistData, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The model file of one of MODELS, trained at its first use."""
    folder = tmp_path_factory.mktemp("models")
    files: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in files:
            run = Run.start(TrainConfig(epochs=1, batch_size=10, seed=1, **MODELS[name]))
            fit(run, mnist.train.images[:TRAIN], mnist.train.labels[:TRAIN], helper=False)
            files[name] = folder / f"{name}.npz"
            save_model(files[name], run.network, {"dataset": mnist.dataset, "classes": list(mnist.classes)})
        return files[name]

    return get


def _one_error_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    """The command's stderr, which must be one line holding each of ``words``."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for word in words:
        assert word in err[0], err[0]
    return err[0]


# --- the graph computes what the package computes ------------------------------------------


@pytest.mark.real_data
@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_runtime_answers_every_test_image_as_numpy_does(
    name: str, saved: Callable[[str], Path], mnist: MnistData, tmp_path: Path
) -> None:
    model = load_model(saved(name))
    network = model.network
    out = tmp_path / f"{name}.onnx"
    assert export_onnx(model, out) == out.stat().st_size

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (images_input,) = session.get_inputs()
    convolutional = any(isinstance(layer, Conv2D | MaxPool2D | AvgPool2D) for layer in network.layers)
    shape = (1, 28, 28) if convolutional else (784,)
    assert images_input.name == "images_Nx" + "x".join(map(str, shape))
    assert images_input.type == "tensor(float)" and images_input.shape == ["N", *shape]
    images = mnist.test.images
    activations, probabilities = session.run(
        ["activations", "probabilities"], {images_input.name: images.reshape(-1, *shape)}
    )

    want = network.probabilities(images)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), want.argmax(axis=1))
    np.testing.assert_allclose(probabilities, want, rtol=0, atol=TOLERANCE)
    some = slice(0, 1000)  # the output layer's activations too (a second forward pass: on a tenth of the set)
    np.testing.assert_allclose(activations[some], network.feedforward(images[some]), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(
    ("layers", "cost"),
    [
        # The output is 2x2 positions of 3 maps, a softmax over the 3 maps at each position, flattened in the
        # package's (H, W, C) order.
        (lambda: [Conv2D(5, 5), MaxPool2D(2), Conv2D(3, 11)], "log-likelihood"),
        # A batch norm over a pool's maps, the convolution below it linear; a dense layer reading 5 maps.
        (lambda: [Conv2D(5, 5, padding=2), MaxPool2D(2), BatchNorm(), Dense(10)], "log-likelihood"),
        # A convolution reading a dense layer's 100 outputs as a 10x10 image, dropout between.
        (lambda: [Dense(100), Dropout(0.5), Conv2D(4, 3), AvgPool2D(2), BatchNorm(), Dense(10)], "quadratic"),
    ],
    ids=["conv-output", "conv-pool-bn", "dense-then-conv"],
)
def test_untrained_networks_of_other_shapes_run_as_in_numpy(layers: Callable[[], list[Any]], cost: str) -> None:
    network = Network(layers(), cost=cost, activation="tanh", init="glorot")
    rng = np.random.default_rng(3)
    for layer in network.layers:
        if isinstance(layer, BatchNorm):  # statistics and scales away from 0 and 1, so that each matters
            layer.params[0][...] = rng.uniform(0.5, 1.5, layer.params[0].shape)
            layer.params[1][0] = rng.normal(0.0, 0.5, layer.params[1].shape[1])
            layer.params[1][1] = rng.uniform(0.5, 2.0, layer.params[1].shape[1])
    session = ort.InferenceSession(onnx_model(network).SerializeToString(), providers=["CPUExecutionProvider"])
    images = rng.random((200, 784), dtype=np.float32)
    (images_input,) = session.get_inputs()
    activations, probabilities = session.run(None, {images_input.name: images.reshape(-1, 1, 28, 28)})
    np.testing.assert_allclose(activations, network.feedforward(images), rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(probabilities, network.probabilities(images), rtol=0, atol=TOLERANCE)


def test_a_model_file_exports_to_the_same_bytes_every_time(saved: Callable[[str], Path], tmp_path: Path) -> None:
    model = load_model(saved("batchnorm-after-conv"))
    export_onnx(model, tmp_path / "a.onnx")
    export_onnx(model, tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_a_cnn_preset_model_exports_within_5_percent_of_its_weights_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = PRESETS["cnn"]
    network = Network(
        [layer_from_spec(spec) for spec in config.layers],
        activation=config.activation,
        cost=config.cost,
        init=config.init,
    )
    save_model(tmp_path / "cnn.npz", network)
    assert main(["export", str(tmp_path / "cnn.npz"), "--onnx", str(tmp_path / "cnn.onnx")]) == 0
    weights_bytes = 4 * network.num_params
    size = (tmp_path / "cnn.onnx").stat().st_size
    assert weights_bytes <= size <= 1.05 * weights_bytes, (size, weights_bytes)
    assert capsys.readouterr().out == (
        f"Wrote {tmp_path / 'cnn.onnx'}: {size:,} bytes (ONNX opset 13; "
        f"{network.num_params:,} weights, {weights_bytes:,} bytes as float32)\n"
    )


# --- the command --------------------------------------------------------------------------


@pytest.mark.real_data
def test_export_writes_a_checked_file_carrying_the_models_metadata(
    mnist: MnistData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Run.start(TrainConfig(layers=("dense20", "dense10"), epochs=1, activation="relu", cost="log-likelihood"))
    fit(run, mnist.train.images[:TRAIN], mnist.train.labels[:TRAIN], helper=False)
    correct = run.network.count_correct(*mnist.test)
    metadata = {"dataset": "mnist", "classes": list(mnist.classes), "test_correct": correct, "test_total": 10000}
    save_model(tmp_path / "m.npz", run.network, metadata)

    assert main(["export", str(tmp_path / "m.npz"), "--onnx", str(tmp_path / "m.onnx")]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    size = (tmp_path / "m.onnx").stat().st_size
    assert line.startswith(f"Wrote {tmp_path / 'm.onnx'}: {size:,} bytes (ONNX opset 13; ")

    model = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert (model.producer_name, model.producer_version) == ("mnist_nn", __version__)
    assert "load_data" in model.graph.input[0].doc_string and "[0, 1]" in model.graph.input[0].doc_string
    properties = {p.key: p.value for p in model.metadata_props}
    assert properties["dataset"] == "mnist"
    assert json.loads(properties["classes"]) == [str(d) for d in range(10)]
    assert properties["test_correct"] == str(correct) and properties["test_total"] == "10000"
    assert properties["accuracy"] == f"test {correct} / 10000 ({correct / 100:.2f}%)"
    assert properties["probabilities"] == "softmax" and properties["preprocess"] == ""
    assert properties["mnist_nn_version"] == __version__


class _Noise(Dropout):
    """A kind of layer the export does not know (registered for one test)."""

    kind = "noise"


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("missing model", ("no such file",)),
        ("not a model", ("not a model file",)),
        ("missing folder", ("does not exist",)),
        ("output is a folder", ("is a directory",)),
        ("output is the model", ("is the model file itself",)),
        ("output is standard output", ("not written to standard output",)),
        ("no output", ("--onnx OUT.onnx",)),
        ("unknown layer", ("layer 1 (noise) has no ONNX export",)),
    ],
)
def test_export_refuses_what_it_cannot_do_in_one_line(
    case: str,
    words: tuple[str, ...],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model, out = tmp_path / "m.npz", tmp_path / "m.onnx"
    save_model(model, Network([784, 10], seed=1))
    args = {
        "missing model": [str(tmp_path / "missing.npz"), "--onnx", str(out)],
        "not a model": [str(tmp_path / "notes.npz"), "--onnx", str(out)],
        "missing folder": [str(model), "--onnx", str(tmp_path / "no" / "m.onnx")],
        "output is a folder": [str(model), "--onnx", str(tmp_path)],
        "output is the model": [str(model), "--onnx", str(model)],
        "output is standard output": [str(model), "--onnx", "-"],
        "no output": [str(model)],
        "unknown layer": [str(tmp_path / "noise.npz"), "--onnx", str(out)],
    }[case]
    (tmp_path / "notes.npz").write_text("not a model")
    monkeypatch.setitem(LAYER_KINDS, "noise", _Noise)
    save_model(tmp_path / "noise.npz", Network([_Noise(0.1), Dense(10)]))
    before = model.read_bytes()
    monkeypatch.chdir(tmp_path)

    assert main(["export", *args]) == 2
    _one_error_line(capsys, *words)
    assert not (tmp_path / "-").exists()
    assert not out.exists() and not (tmp_path / "no").exists()
    assert model.read_bytes() == before


def test_without_the_onnx_package_export_says_what_to_install(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now fails, as where the extra is missing
    assert main(["export", str(model), "--onnx", str(tmp_path / "m.onnx")]) == 2
    _one_error_line(capsys, "pip install 'mnist-nn[export]'")
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(ExportError, match="needs the onnx package"):
        onnx_model(Network([784, 10]))


# --- predict reads an exported model back -------------------------------------------------


def _digit_png(image: np.ndarray, path: Path) -> Path:
    """A test digit as a user would have it: dark ink on white paper, enlarged."""
    ink = (255 - image.reshape(28, 28) * 255).astype(np.uint8)
    Image.fromarray(ink).resize((112, 112), Image.Resampling.BILINEAR).save(path)
    return path


@pytest.mark.real_data
@pytest.mark.parametrize("name", ["conv-maxpool", "deskew-dense", "dense-sigmoid-quadratic"])
def test_predict_gives_the_same_answers_from_the_onnx_file(
    name: str, saved: Callable[[str], Path], mnist: MnistData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, exported = saved(name), tmp_path / "m.onnx"
    assert main(["export", str(model), "--onnx", str(exported)]) == 0
    pngs = [str(_digit_png(mnist.test.images[i], tmp_path / f"digit{i}.png")) for i in range(8)]
    capsys.readouterr()

    answers = []
    for path in (model, exported):
        assert main(["predict", str(path), *pngs, "--json", str(tmp_path / f"{path.suffix[1:]}.json")]) == 0
        answers.append(capsys.readouterr().out.splitlines())
    kind = load_model(model).network.probability_kind
    assert answers[0][0] == f"Probabilities: {kind}"
    assert answers[1][0] == f"Probabilities: {kind}, by ONNX Runtime {ort.__version__}"
    digits = [re.sub(r" \(.*", "", line) for line in answers[0][1::2]]
    assert digits == [re.sub(r" \(.*", "", line) for line in answers[1][1::2]]
    assert digits == [
        f"{path}: {line.split(': ')[1].split(' ')[0]}" for path, line in zip(pngs, answers[0][1::2], strict=True)
    ]
    npz, onnx_json = (json.loads((tmp_path / f"{s}.json").read_text()) for s in ("npz", "onnx"))
    assert [r["prediction"] for r in npz] == [r["prediction"] for r in onnx_json]
    for a, b in zip(npz, onnx_json, strict=True):
        np.testing.assert_allclose(a["probabilities"], b["probabilities"], rtol=0, atol=TOLERANCE)


@pytest.mark.real_data
def test_the_docs_onnxruntime_snippet_prints_the_digits_predict_prints(
    saved: Callable[[str], Path],
    mnist: MnistData,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    page = (ROOT / "docs" / "export.md").read_text(encoding="utf-8")
    (snippet,) = [block for block in re.findall(r"```python\n(.*?)```", page, re.S) if "onnxruntime" in block]
    assert len([line for line in snippet.splitlines() if line.strip()]) == 5
    exported = tmp_path / "cnn.onnx"
    assert main(["export", str(saved("conv-maxpool")), "--onnx", str(exported)]) == 0
    pictures = ["docs/digit-7.png", *(str(_digit_png(mnist.test.images[i], tmp_path / f"{i}.png")) for i in range(5))]
    monkeypatch.chdir(ROOT)  # the snippet names its picture under docs/
    capsys.readouterr()
    assert main(["predict", str(exported), *pictures]) == 0
    printed = capsys.readouterr().out.splitlines()
    digits = [int(line.split(": ")[1].split(" ")[0]) for line in printed[1::2]]

    mine = snippet.replace("/tmp/cnn.onnx", str(exported)).replace('["docs/digit-7.png"]', repr(pictures))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(mine, {})
    assert out.getvalue().strip() == str(np.array(digits))


def test_predict_refuses_a_bad_onnx_file_in_one_line(
    digit: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.onnx").write_text("not a model")
    helper = onnx.helper
    other = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "other",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 10])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 10])],
        ),
        opset_imports=[helper.make_opsetid("", 13)],
        ir_version=7,
    )
    (tmp_path / "other.onnx").write_bytes(other.SerializeToString())
    os.mkfifo(tmp_path / "pipe.onnx")  # never opened: reading it would wait for a writer
    cases = {
        "pipe.onnx": "not a regular file",
        "missing.onnx": "no such file",
        "notes.onnx": "not a model ONNX Runtime can run",
        "other.onnx": "expected one float input of shape (N, 784) or (N, 1, 28, 28)",
    }
    for name, words in cases.items():
        assert main(["predict", str(tmp_path / name), str(digit)]) == 2
        _one_error_line(capsys, str(tmp_path / name), words)
    with pytest.raises(ModelFileError, match="is a directory"):
        load_onnx(tmp_path)

    export_onnx(Network([784, 10]), tmp_path / "m.onnx")
    assert main(["predict", str(tmp_path / "m.onnx"), str(digit), "--tta"]) == 2
    _one_error_line(capsys, "--tta needs a model file (.npz)")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as where ONNX Runtime is not installed
    assert main(["predict", str(tmp_path / "m.onnx"), str(digit)]) == 2
    _one_error_line(capsys, "pip install onnxruntime")


def test_predict_names_the_classes_the_onnx_files_metadata_names(
    digit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    save_model(tmp_path / "f.npz", Network([784, 10], seed=2), {"dataset": "fashion-mnist", "classes": names})
    assert main(["export", str(tmp_path / "f.npz"), "--onnx", str(tmp_path / "f.onnx")]) == 0
    capsys.readouterr()
    answers = []
    for suffix in ("npz", "onnx"):
        assert main(["predict", str(tmp_path / f"f.{suffix}"), str(digit)]) == 0
        answers.append(capsys.readouterr().out.splitlines()[1:])
    assert answers[0] == answers[1]
    assert re.fullmatch(rf"{re.escape(str(digit))}: \d ({'|'.join(map(re.escape, names))}) \(.*", answers[1][0])
