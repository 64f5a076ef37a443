"""``--dataset idx:DIR``: a data set in MNIST's format from a folder, checked for structure, with its class names."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from mnist_nn.cli import download_main, evaluate_main, train_main
from mnist_nn.data import folder as folder_module
from mnist_nn.data import load_mnist
from mnist_nn.data import mnist as mnist_module
from mnist_nn.errors import DataFormatError
from mnist_nn.models import load_model
from tests.conftest import idx_bytes, write_synthetic_mnist

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _write_gzip(path: Path, payload: bytes) -> None:
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(payload))


def _write_plain(path: Path, payload: bytes) -> None:
    path.write_bytes(payload)


def _learnable(folder: Path, n_train: int = 1200, n_test: int = 200) -> None:
    """MNIST's four files (gzip for training, plain for test) of images whose class lights a band of rows."""
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label : 2 * label + 3] = 255
        write = _write_gzip if prefix == "train" else _write_plain
        write(folder / f"{prefix}-images-idx3-ubyte", idx_bytes(images))
        write(folder / f"{prefix}-labels-idx1-ubyte", idx_bytes(labels))
    (folder / "classes.txt").write_text("\n".join(NAMES) + "\n")


def test_a_folder_trains_evaluates_and_names_its_classes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(mnist_module, "_TOLD_UNVERIFIED", set())
    data_dir = tmp_path / "own"
    _learnable(data_dir)
    name = f"idx:{data_dir}"
    data = load_mnist(dataset=name, dtype="uint8")
    assert (len(data.train), len(data.validation), len(data.test)) == (1000, 200, 200)  # the last sixth validates
    assert data.classes == tuple(NAMES) and data.dataset == f"idx:{data_dir.resolve()}"
    assert capsys.readouterr().err == f"{data.dataset}: no pinned digests; the files are checked for structure only\n"

    model, record = tmp_path / "m.npz", tmp_path / "m.json"
    argv = ["--dataset", name, "--hidden", "20", "--epochs", "2", "--eta", "1.0", "--quiet"]
    assert train_main([*argv, "--save", str(model), "--json", str(record)]) == 0
    saved = load_model(model)
    assert saved.metadata["dataset"] == data.dataset and saved.metadata["classes"] == NAMES
    assert json.loads(record.read_text())["test_correct"] > 150  # of 200: the bands are easy
    capsys.readouterr()
    assert evaluate_main([str(model)]) == 0
    assert "Per class: zero: " in capsys.readouterr().out
    assert download_main(["--dataset", name]) == 2
    assert "a folder's files are read where they are; nothing to download" in capsys.readouterr().err


def _bad(folder: Path, message: str) -> None:
    with pytest.raises(DataFormatError, match=message):
        load_mnist(dataset=f"idx:{folder}")


def test_a_broken_folder_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _bad(tmp_path / "nowhere", "no such folder")
    write_synthetic_mnist(tmp_path / "a", n_train=60, n_test=10)
    (tmp_path / "a" / "t10k-labels-idx1-ubyte.gz").unlink()
    _bad(tmp_path / "a", r"t10k-labels-idx1-ubyte \(or t10k-labels-idx1-ubyte.gz\) is missing")

    write_synthetic_mnist(tmp_path / "b", n_train=60, n_test=10)
    labels = np.zeros(9, np.uint8)
    (tmp_path / "b" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    _bad(tmp_path / "b", "t10k-images-idx3-ubyte holds 10 images but t10k-labels-idx1-ubyte 9 labels")

    write_synthetic_mnist(tmp_path / "c", n_train=60, n_test=10)
    (tmp_path / "c" / "classes.txt").write_text("shoe\nshirt\n")
    _bad(tmp_path / "c", "classes.txt: expected 10 lines, one name per class .labels 0-9., got 2")
    (tmp_path / "c" / "classes.txt").write_bytes(b"\xff\xfe" * 10)
    _bad(tmp_path / "c", "classes.txt is not UTF-8 text")

    write_synthetic_mnist(tmp_path / "d", n_train=60, n_test=10)
    labels = np.full(10, 10, np.uint8)
    (tmp_path / "d" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    _bad(tmp_path / "d", "label 10 found, expected digits 0-9")

    write_synthetic_mnist(tmp_path / "e", n_train=60, n_test=10)
    whole = (tmp_path / "e" / "train-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "e" / "train-images-idx3-ubyte.gz").write_bytes(whole[: len(whole) // 2])
    _bad(tmp_path / "e", "train-images-idx3-ubyte.gz is a truncated gzip file")

    monkeypatch.setattr(folder_module, "MAX_FILE_BYTES", 10_000)  # 60 blank images: 47,056 bytes, 100 gzipped
    write_synthetic_mnist(tmp_path / "f", n_train=60, n_test=10)
    _write_gzip(tmp_path / "f" / "train-images-idx3-ubyte", idx_bytes(np.zeros((60, 28, 28), np.uint8)))
    _bad(tmp_path / "f", "train-images-idx3-ubyte.gz inflates to more than 10,000 bytes")
    _write_plain(tmp_path / "f" / "train-images-idx3-ubyte", idx_bytes(np.zeros((60, 28, 28), np.uint8)))
    _bad(tmp_path / "f", "train-images-idx3-ubyte is larger than 10,000 bytes")


def test_a_broken_folder_on_the_command_line_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train_main(["--dataset", f"idx:{tmp_path / 'nowhere'}", "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such folder" in err[0], err
