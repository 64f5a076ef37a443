"""The PyTorch yardstick: the network it builds from layer specs, and how the speed benchmark runs and reads it.

PyTorch is no dependency, so the network is built here with a recording
stand-in for ``torch.nn``, and the benchmark's subprocess is an interpreter
stand-in that answers as the yardstick does (or fails as it may).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mnist_nn.bench.pytorch import YARDSTICK, measure_pytorch
from mnist_nn.bench.speed import _compared
from mnist_nn.bench.timings import Timing, TrainingShape, TrainingSpeed
from mnist_nn.bench.yardstick import build
from mnist_nn.errors import BenchmarkError


def _recording_torch() -> Any:
    """A stand-in for ``torch`` whose ``nn`` classes return (name, args) tuples."""

    def module(name: str) -> Any:
        return lambda *args, **kwargs: (name, args, kwargs) if kwargs else (name, args)

    names = ("Conv2d", "ReLU", "MaxPool2d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Dropout", "Flatten", "Linear")
    nn = SimpleNamespace(**{name: module(name) for name in names}, Sequential=lambda *modules: list(modules))
    return SimpleNamespace(nn=nn)


def test_the_yardstick_builds_the_network_the_specs_name() -> None:
    specs = ["conv32x5", "bn", "pool2", "conv64x3p1", "dropout0.25", "avgpool2", "dense256", "bn", "dense10"]
    assert build(specs, _recording_torch()) == [
        ("Conv2d", (1, 32, 5), {"padding": 0}),
        ("BatchNorm2d", (32,)),
        ("ReLU", ()),
        ("MaxPool2d", (2,)),
        ("Conv2d", (32, 64, 3), {"padding": 1}),
        ("ReLU", ()),
        ("Dropout", (0.25,)),
        ("AvgPool2d", (2,)),
        ("Flatten", ()),
        ("Linear", (64 * 6 * 6, 256)),  # 28 -> 24 -> 12 -> 12 (padded) -> 6
        ("BatchNorm1d", (256,)),
        ("ReLU", ()),
        ("Linear", (256, 10)),  # the outputs: softmax is in the loss
    ]
    with pytest.raises(ValueError, match="unknown layer 'fc10'"):
        build(["fc10"], _recording_torch())


def _interpreter(tmp_path: Path, body: str) -> str:
    """An executable that stands in for a Python with PyTorch: it runs ``body`` with the yardstick's arguments."""
    script = tmp_path / "python"
    script.write_text(f"#!{sys.executable}\nimport json, sys\nargs = sys.argv[2:]\n{body}\n")
    script.chmod(0o755)
    return str(script)


SHAPE = TrainingShape.of_layers(("conv20x5", "pool2", "dense10"), 64, "float32")


def test_the_benchmark_passes_the_shape_and_reads_the_epochs(tmp_path: Path) -> None:
    answer = (
        "assert sys.argv[1].endswith('yardstick.py')\n"
        "json.dump(args, open(sys.argv[0] + '.args', 'w'))\n"
        "print('noise on stdout first')\n"
        "print(json.dumps({'seconds': [9.0, 2.0, 3.0, 2.5], 'images': 5000, 'torch': '0', 'threads': 2}))"
    )
    row = measure_pytorch(_interpreter(tmp_path, answer), SHAPE, 5000, 3, threads=2)
    assert row.implementation == "pytorch" and row.timing == Timing(5000, (2.0, 3.0, 2.5)) and row.version == "0"
    args = json.loads((tmp_path / "python.args").read_text())
    assert args == [
        *("--layers", "conv20x5", "pool2", "dense10", "--batch-size", "64"),
        *("--images", "5000", "--epochs", "4", "--threads", "2"),
    ]
    assert YARDSTICK.is_file()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("sys.stderr.write('ModuleNotFoundError: No module named torch\\n'); sys.exit(1)", "No module named torch"),
        ("print('not json')", "failed: Expecting value"),
        ("print(json.dumps({'seconds': [1.0], 'images': 5000}))", "expected 4 epochs of 5000 images"),
    ],
)
def test_a_failing_yardstick_is_one_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(BenchmarkError, match=message) as raised:
        measure_pytorch(_interpreter(tmp_path, body), SHAPE, 5000, 3)
    assert "\n" not in str(raised.value)
    with pytest.raises(BenchmarkError, match="failed"):
        measure_pytorch(str(tmp_path / "no-such-python"), SHAPE, 5000, 3)


def test_each_convolutional_row_is_set_beside_pytorchs_epoch() -> None:
    ours = TrainingSpeed("vectorized", SHAPE, Timing(50_000, (12.0, 10.0)))
    theirs = TrainingSpeed("pytorch", SHAPE, Timing(50_000, (8.0,)))
    compared = _compared([ours, theirs], [])
    assert compared[0].pytorch_ratio == pytest.approx(10.0 / 8.0) and compared[1].pytorch_ratio is None
    assert json.loads(json.dumps(compared[0].to_dict()))["pytorch_ratio"] == pytest.approx(1.25)
