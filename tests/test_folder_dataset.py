"""``--dataset idx:DIR``: a data set in MNIST's format from a folder, checked for structure, with its class names."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from mnist_nn.cli import download_main, evaluate_main, train_main
from mnist_nn.cli.plot import plot_main
from mnist_nn.cli.predict import predict_main
from mnist_nn.cli.show import show_main
from mnist_nn.data import folder as folder_module
from mnist_nn.data import load_data_wrapper, load_mnist
from mnist_nn.data import mnist as mnist_module
from mnist_nn.data.folder import folder_classes
from mnist_nn.errors import DataFormatError, ModelFileError
from mnist_nn.images import save_digit_png
from mnist_nn.models import load_model, save_model
from mnist_nn.nn import Network
from tests.conftest import idx_bytes, write_synthetic_mnist

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
LETTERS = [chr(ord("a") + k) for k in range(26)]  # EMNIST letters' 26 classes


def _write_gzip(path: Path, payload: bytes) -> None:
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(payload))


def _write_plain(path: Path, payload: bytes) -> None:
    path.write_bytes(payload)


def _learnable(
    folder: Path, n_train: int = 1200, n_test: int = 200, names: list[str] | None = NAMES, classes: int = 10
) -> None:
    """MNIST's four files (gzip for training, plain for test) of images whose class lights a band of rows.

    Class k lights rows 2k to 2k + 2 (of up to ten classes), or row k (of more); every
    class is in the test file. ``names`` go into classes.txt (None: no classes.txt).
    """
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, classes, n).astype(np.uint8)
        labels[:classes] = np.arange(classes)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            rows = slice(2 * label, 2 * label + 3) if classes <= 10 else slice(label, label + 1)
            images[i, rows] = 255
        write = _write_gzip if prefix == "train" else _write_plain
        write(folder / f"{prefix}-images-idx3-ubyte", idx_bytes(images))
        write(folder / f"{prefix}-labels-idx1-ubyte", idx_bytes(labels))
    if names is not None:
        (folder / "classes.txt").write_text("\n".join(names) + "\n")


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
    (tmp_path / "c" / "classes.txt").write_text("shoe\nshirt\n")  # two classes, but labels up to 9
    _bad(tmp_path / "c", r"train-labels-idx1-ubyte: label 9 found, but classes.txt names 2 classes \(labels 0-1\)")
    (tmp_path / "c" / "classes.txt").write_bytes(b"\xff\xfe" * 10)
    _bad(tmp_path / "c", "classes.txt is not UTF-8 text")

    write_synthetic_mnist(tmp_path / "d", n_train=60, n_test=10)
    (tmp_path / "d" / "classes.txt").write_text("\n".join(NAMES))
    labels = np.full(10, 10, np.uint8)
    (tmp_path / "d" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    _bad(tmp_path / "d", r"t10k-labels-idx1-ubyte: label 10 found, but classes.txt names 10 classes \(labels 0-9\)")

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


# --- other numbers of classes ---------------------------------------------------------------


def _per_class_rows(out: str) -> list[str]:
    """The rows of evaluate's per-class table: the lines after "Per class:" up to the blank one."""
    lines = out.splitlines()
    start = lines.index("Per class:") + 1
    return lines[start : lines.index("", start)]


def test_a_folder_of_26_classes_trains_evaluates_shows_predicts_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "letters"
    _learnable(data_dir, n_train=1200, n_test=130, names=LETTERS, classes=26)
    name = f"idx:{data_dir}"
    data = load_mnist(dataset=name, dtype="uint8")
    assert data.classes == tuple(LETTERS) and folder_classes(name) == tuple(LETTERS)
    assert int(data.test.labels.max()) == 25

    model, record = tmp_path / "letters.npz", tmp_path / "letters.json"
    argv = ["--dataset", name, "--hidden", "30", "--epochs", "3", "--cost", "log-likelihood", "--eta", "0.5", "--quiet"]
    assert train_main([*argv, "--save", str(model), "--json", str(record)]) == 0
    saved = load_model(model)
    assert saved.network.sizes == (784, 30, 26) and saved.classes == tuple(LETTERS)
    assert saved.metadata["classes"] == LETTERS and saved.metadata["config"]["layers"] == ["dense30", "dense26"]
    assert json.loads(record.read_text())["test_correct"] > 120  # of 130; chance is 5
    capsys.readouterr()

    assert evaluate_main([str(model)]) == 0
    out = capsys.readouterr().out
    rows = _per_class_rows(out)
    assert len(rows) == 26 and rows[0].split()[:2] == ["0", "a"] and rows[25].split()[:2] == ["25", "z"]
    assert "Confusion matrix (rows: true class, columns: predicted class, numbered as above):" in out
    matrix = out.split("numbered as above):\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(matrix) == 27 and matrix[0].split() == [str(k) for k in range(26)]  # the header, 26 rows

    assert show_main(["--model", str(model), "--index", "25"]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert head.startswith("test #25: label 25 z, predicted "), head

    png, answers = tmp_path / "letter.png", tmp_path / "answers.json"
    save_digit_png(data.test.images[3] / 255.0, png)  # a "d": row 3 lit
    assert predict_main([str(model), str(png), "--json", str(answers)]) == 0
    said = capsys.readouterr().out.splitlines()
    (answer,) = json.loads(answers.read_text())
    assert len(answer["probabilities"]) == 26 and answer["class"] == LETTERS[answer["prediction"]]
    assert said[1].startswith(f"{png}: {answer['prediction']} {answer['class']} (")
    assert said[2].endswith("(the 10 most probable of 26 classes)")

    pytest.importorskip("matplotlib")
    plots = tmp_path / "plots"
    assert plot_main([str(model), "--out", str(plots), "--quiet"]) == 0
    assert (plots / "confusion.png").is_file()


def test_a_preset_ends_with_one_output_per_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _learnable(tmp_path / "letters", n_train=120, n_test=30, names=LETTERS, classes=26)
    name = f"idx:{tmp_path / 'letters'}"
    model = tmp_path / "m.npz"
    assert train_main(["--dataset", name, "--epochs", "1", "--save", str(model), "--no-helper"]) == 0
    err = capsys.readouterr().err
    said = f"{name} has 26 classes: the network ends with dense26 in place of the preset's dense10"
    assert err.count(said) == 1, err
    assert load_model(model).network.sizes == (784, 30, 26)
    assert train_main(["--resume", str(model), "--epochs", "2", "--quiet", "--no-helper"]) == 0
    assert load_model(model).metadata["epochs_completed"] == 2
    capsys.readouterr()

    # MNIST-like folders keep ten outputs, and say nothing about them.
    _learnable(tmp_path / "digits", n_train=120, n_test=30, names=None)
    assert train_main(["--dataset", f"idx:{tmp_path / 'digits'}", "--epochs", "1", "--no-helper"]) == 0
    assert "classes: the network ends with" not in capsys.readouterr().err


def test_without_classes_txt_the_labels_number_the_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _learnable(tmp_path / "n", n_train=240, n_test=60, names=None, classes=26)
    name = f"idx:{tmp_path / 'n'}"
    numbers = tuple(str(k) for k in range(26))
    assert folder_classes(name) == numbers and load_mnist(dataset=name).classes == numbers
    _learnable(tmp_path / "ten", n_train=120, n_test=30, names=None, classes=3)  # labels 0-2: still 0-9
    assert folder_classes(f"idx:{tmp_path / 'ten'}") == tuple(str(k) for k in range(10))
    training, _, _ = load_data_wrapper(dataset=name)
    assert training[0][1].shape == (26, 1)

    model = tmp_path / "n.npz"
    layers = ["--layers", "dense20", "dense26", "--epochs", "1", "--quiet", "--no-helper"]
    assert train_main(["--dataset", name, *layers, "--save", str(model)]) == 0
    assert load_model(model).classes == numbers
    capsys.readouterr()
    assert evaluate_main([str(model)]) == 0
    assert len(_per_class_rows(capsys.readouterr().out)) == 26

    for argv in (["--layers", "dense20", "dense10"], ["--layers", "conv8x5", "pool2", "dense10"]):
        assert train_main(["--dataset", name, *argv, "--epochs", "1", "--quiet"]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err == [
            f"train_mnist.py: error: --layers must end with dense26 (one output per class of {name}), got dense10"
        ]


def test_a_folder_refuses_labels_beyond_its_classes_and_a_bad_number_of_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_synthetic_mnist(tmp_path / "a", n_train=60, n_test=10)
    (tmp_path / "a" / "classes.txt").write_text("\n".join(LETTERS))
    labels = np.arange(10, dtype=np.uint8) + 17  # 17..26: 26 is no class of 26
    (tmp_path / "a" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    _bad(tmp_path / "a", r"t10k-labels-idx1-ubyte: label 26 found, but classes.txt names 26 classes \(labels 0-25\)")
    assert train_main(["--dataset", f"idx:{tmp_path / 'a'}", "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "label 26 found, but classes.txt names 26 classes" in err[0], err

    many = [f"class {k}" for k in range(300)]
    for lines, count in ((["alone"], 1), (many, 300), (many[:257], 257), ([], 0)):
        (tmp_path / "a" / "classes.txt").write_text("\n".join(lines))
        _bad(tmp_path / "a", rf"classes.txt: expected 2 to 256 lines, one name per class .*, got {count}$")
        with pytest.raises(DataFormatError, match=f"got {count}$"):
            folder_classes(f"idx:{tmp_path / 'a'}")
    (tmp_path / "a" / "classes.txt").write_text("\n".join(many[:256]))  # 256 classes: every byte a label
    assert len(load_mnist(dataset=f"idx:{tmp_path / 'a'}").classes) == 256

    # A hostile classes.txt is read no further than the longest valid one (256 names of 40 four-byte characters).
    (tmp_path / "a" / "classes.txt").write_bytes(b"x\n" * 2_500_000)
    tracemalloc.start()
    try:
        with pytest.raises(DataFormatError, match=r"classes.txt is larger than 41,472 bytes \(at most 256 names"):
            folder_classes(f"idx:{tmp_path / 'a'}")  # reads classes.txt alone
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _bad(tmp_path / "a", r"classes.txt is larger than 41,472 bytes \(at most 256 names of at most 40 characters\)")
    assert peak < 1_000_000  # the file holds 5,000,000 bytes


def test_a_model_has_one_output_per_class_it_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.npz"
    save_model(path, Network([784, 26], seed=1), {"classes": LETTERS})
    assert load_model(path).classes == tuple(LETTERS)
    save_model(path, Network([784, 10], seed=1), {"classes": LETTERS})
    with pytest.raises(ModelFileError, match=r"expected a network with 784 inputs and 26 outputs, one per class its"):
        load_model(path)
    save_model(path, Network([784, 26], seed=1))  # no classes: MNIST's ten
    with pytest.raises(ModelFileError, match=r"784 inputs and 10 outputs for MNIST, got sizes \[784, 26\]$"):
        load_model(path)
    assert load_model(path, require_mnist=False).classes == tuple(str(k) for k in range(26))


def test_a_model_of_ten_outputs_is_not_counted_on_26_classes(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _learnable(tmp_path / "letters", n_train=120, n_test=30, names=LETTERS, classes=26)
    name = f"idx:{tmp_path / 'letters'}"
    resolved = f"idx:{(tmp_path / 'letters').resolve()}"
    assert evaluate_main([str(model), "--dataset", name, "--other-dataset"]) == 2
    err = capsys.readouterr().err.splitlines()
    said = f"{model} has 10 outputs, but {resolved} has 26 classes: its answers cannot be counted there"
    assert err[-1] == f"evaluate.py: error: {said}"
