"""Convolutional networks through the command line: --layers, saving, evaluating, resuming; ensembles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mnist_nn.cli import evaluate_main, train_main
from mnist_nn.data import MnistData
from mnist_nn.metrics import count_matches
from mnist_nn.models import load_model

SMALL_CNN = ["--layers", "conv4x5", "pool2", "dense10", "--activation", "relu", "--cost", "log-likelihood"]


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (["conv20x5", "pool5", "dense10"], "--layers: a 5x5 pool does not divide its 24x24 input"),
        (["conv20x29", "dense10"], "--layers: a 29x29 kernel is larger than its 28x28 input"),
        (["conv20x5", "pool2", "dense100"], "--layers must end with dense10 (one output per digit), got dense100"),
        (["conv20x5", "fc100", "dense10"], "--layers: unknown layer 'fc100'; expected one of the forms"),
    ],
)
def test_bad_layer_specs_exit_2_with_one_line_before_training(
    layers: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The data folder does not exist: the specs are refused before any data is touched.
    assert train_main(["--data-dir", str(tmp_path / "none"), "--layers", *layers]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.real_data
def test_dense_layer_specs_are_the_hidden_shorthand(mnist_cache: Path, tmp_path: Path) -> None:
    by_layers, by_hidden = tmp_path / "a.json", tmp_path / "b.json"
    common = ["--data-dir", str(mnist_cache), "--epochs", "1", "--quiet"]
    assert train_main([*common, "--layers", "dense20", "dense10", "--json", str(by_layers)]) == 0
    assert train_main([*common, "--hidden", "20", "--json", str(by_hidden)]) == 0
    a, b = (json.loads(p.read_text()) for p in (by_layers, by_hidden))
    assert a["config"] == b["config"] and a["test_correct"] == b["test_correct"]


@pytest.mark.real_data
def test_a_cnn_trains_saves_evaluates_and_resumes(
    mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "cnn.npz"
    common = ["--data-dir", str(mnist_cache), "--quiet", "--eta", "0.05", *SMALL_CNN, "--save", str(model)]
    assert train_main([*common, "--epochs", "1", "--checkpoint-every", "1"]) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    saved = load_model(model)
    assert [d["kind"] for d in saved.metadata["layers"]] == ["conv2d", "maxpool2d", "dense"]
    correct = saved.metadata["test_correct"]
    assert first == f"Test: {correct} / 10000 correct ({correct / 100:.2f}%)" and correct > 9_000
    assert saved.metadata["config"]["init"] == "he"  # the default for convolutions with ReLU
    assert evaluate_main([str(model), "--data-dir", str(mnist_cache), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == first
    assert train_main([*common, "--epochs", "2", "--resume", str(model)]) == 0
    resumed = load_model(model)
    assert resumed.metadata["epochs_completed"] == 2 and resumed.metadata["config"]["layers"] == SMALL_CNN[1:4]


@pytest.mark.real_data
def test_evaluate_ensemble_averages_the_output_probabilities(
    mnist_cache: Path, mnist: MnistData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [tmp_path / f"m{seed}.npz" for seed in (1, 2, 3)]
    for seed, path in zip((1, 2, 3), paths, strict=True):
        args = ["--data-dir", str(mnist_cache), "--epochs", "1", "--hidden", "10", "--seed", str(seed)]
        assert train_main([*args, "--quiet", "--save", str(path)]) == 0
    capsys.readouterr()
    assert evaluate_main([*map(str, paths), "--ensemble", "--data-dir", str(mnist_cache), "--quiet"]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    nets = [load_model(p).network for p in paths]
    average = sum(net.probabilities(mnist.test.images) for net in nets) / 3
    expected = count_matches(np.argmax(average, axis=1), mnist.test.labels)
    assert head == f"Test (ensemble of 3): {expected} / 10000 correct ({expected / 100:.2f}%)"
    assert evaluate_main([str(paths[0]), "--ensemble", "--data-dir", str(mnist_cache)]) == 2
    assert "--ensemble needs at least 2 models, got 1" in capsys.readouterr().err


def test_the_speed_benchmark_takes_layer_specs() -> None:
    import argparse

    from mnist_nn.bench.speed import DEFAULT_SHAPES
    from mnist_nn.cli.benchmark import parse_shape

    shape = parse_shape("conv20x5-pool2-conv40x5-pool2-dense100-dense10@64")
    assert shape.layers[0] == "conv20x5" and shape.batch_size == 64 and shape.dtype == "float32"
    # Multiply-adds per image: 24*24*20*25 + 8*8*40*500 + 640*100 + 100*10.
    assert shape.macs == 288_000 + 1_280_000 + 64_000 + 1_000
    assert shape.label == "conv20x5 pool2 conv40x5 pool2 dense100 dense10 @ 64 float32"
    assert [s.batch_size for s in DEFAULT_SHAPES if s.layers] == [10, 64]  # the chapter-6 rows
    for bad, message in [
        ("conv20x5-pool5-dense10@10", "a 5x5 pool does not divide its 24x24 input"),
        ("conv20x5-dense11@10", "expected layers ending with dense10"),
        ("conv20x5-dense10@0", "expected SIZES@BATCH"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse_shape(bad)


@pytest.mark.real_data
def test_speed_benchmark_times_a_cnn(mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mnist_nn.cli.benchmark import benchmark_main

    out = tmp_path / "speed.json"
    args = ["speed", "--quick", "--config", "conv2x5-pool2-dense10@50", "--memory-epochs", "0"]
    assert benchmark_main([*args, "--data-dir", str(mnist_cache), "--json", str(out), "--quiet"]) == 0
    record = json.loads(out.read_text())
    (row,) = [t for t in record["training"] if t.get("layers")]
    assert row["layers"] == ["conv2x5", "pool2", "dense10"] and row["gflops"] > 0
    assert "| vectorized | conv2x5 pool2 dense10 | 50 |" in capsys.readouterr().out


def test_convolutions_from_the_chapter_1_defaults_get_defaults_that_train_and_say_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mnist_nn.cli.train import build_train_parser, config_from_args, convolution_defaults
    from mnist_nn.config import PRESETS

    parser = build_train_parser()
    args = parser.parse_args(["--layers", "conv20x5", "pool2", "dense10"])
    config = config_from_args(args, PRESETS["nielsen-ch1"])
    assert (config.activation, config.cost, config.eta, config.init) == ("relu", "log-likelihood", 0.03, "he")
    given = parser.parse_args(["--layers", "conv20x5", "dense10", "--activation", "sigmoid", "--eta", "0.1"])
    assert convolution_defaults(given, PRESETS["nielsen-ch1"]) == {"cost": "log-likelihood", "init": "scaled"}
    dense = parser.parse_args(["--layers", "dense30", "dense10"])
    assert convolution_defaults(dense, PRESETS["nielsen-ch1"]) == {}
    assert convolution_defaults(args, PRESETS["nielsen-ch6-conv"]) == {}  # a preset's own settings stand
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    assert "--init he, as in the book's chapter 6" in " ".join(capsys.readouterr().out.split())
