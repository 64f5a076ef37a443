"""Data sets by name: Fashion-MNIST verified like MNIST, from its own mirror, cache folder and system copy."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from mnist_nn.cli import download_main, evaluate_main, train_main
from mnist_nn.cli.benchmark import benchmark_main
from mnist_nn.cli.plot import plot_main
from mnist_nn.cli.predict import predict_main
from mnist_nn.cli.show import show_main
from mnist_nn.data import datasets, load_data_wrapper, load_mnist
from mnist_nn.data.datasets import DATASETS, FASHION_MNIST, MNIST, dataset
from mnist_nn.errors import DownloadError, ImageError
from mnist_nn.images import preparation, save_digit_png, to_fashion_mnist, to_mnist
from mnist_nn.models import load_model
from tests.conftest import real_mirror

FASHION_ENV = FASHION_MNIST.mirror_env


def _fashion_mirror() -> Path:
    return Path(real_mirror(FASHION_ENV, "../shared/fashion-mnist")).resolve()  # a relative variable works too


def test_fashion_mnist_loads_verified_into_its_own_cache_folder(tmp_path: Path) -> None:
    mirror = _fashion_mirror()
    data = load_mnist(tmp_path, dataset="fashion-mnist", dtype="uint8")
    assert data.dataset == "fashion-mnist" and data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    assert (len(data.train), len(data.validation), len(data.test)) == (50_000, 10_000, 10_000)
    # The facts its README gives: the first labels, and 6,000 training and 1,000 test images of each class.
    assert data.train.labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert data.test.labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    both = np.concatenate([data.train.labels, data.validation.labels])
    assert np.bincount(both).tolist() == [6000] * 10 and np.bincount(data.test.labels).tolist() == [1000] * 10
    assert data.digests == {f.name: f.sha256 for f in FASHION_MNIST.files}
    assert sorted(p.name for p in (tmp_path / "fashion-mnist").iterdir()) == sorted(f.name for f in FASHION_MNIST.files)
    assert not any(p.is_file() for p in tmp_path.iterdir())  # MNIST's place in the cache is left alone
    assert mirror.is_dir()


def test_the_book_loader_takes_the_data_sets_name(tmp_path: Path) -> None:
    _fashion_mirror()
    training, validation, test = load_data_wrapper(tmp_path, dataset="fashion-mnist")
    assert len(training) == 50_000 and training[0][0].shape == (784, 1) and int(training[0][1].argmax()) == 9
    assert validation[0][1] == load_mnist(tmp_path, dataset="fashion-mnist").validation.labels[0]
    assert test[0][1] == 9


def test_fashion_mnist_never_reads_mnists_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With only MNIST's mirror set, Fashion-MNIST says to set its own variable (and MNIST's files would not verify)."""
    monkeypatch.setenv(MNIST.mirror_env, real_mirror())
    monkeypatch.delenv(FASHION_ENV, raising=False)
    offline = dataclasses.replace(FASHION_MNIST, mirrors=(), system_copy=None)
    hint = f"point {FASHION_ENV} \\(or --mirror\\) at their folder \\(\\${MNIST.mirror_env} is MNIST's mirror only\\)$"
    with pytest.raises(DownloadError, match=f"no mirrors to try; .*{hint}"):
        load_mnist(tmp_path, dataset=offline)
    assert not (tmp_path / "fashion-mnist").exists()


def test_a_system_copy_is_an_offline_mirror_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror = _fashion_mirror()
    monkeypatch.delenv(FASHION_ENV, raising=False)
    monkeypatch.setattr(datasets, "_TOLD_SYSTEM_COPY", set())
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    system.mkdir()
    for f in FASHION_MNIST.files:
        (system / f"{f.name}.gz").symlink_to(mirror / f"{f.name}.gz")
    packaged = dataclasses.replace(FASHION_MNIST, mirrors=(), system_copy=system)
    data = load_mnist(tmp_path / "cache", dataset=packaged)
    assert data.test.labels[:3].tolist() == [9, 2, 1]
    assert capsys.readouterr().err == f"Fashion-MNIST: reading the system copy in {system}\n"
    load_mnist(tmp_path / "other-cache", dataset=packaged)
    assert capsys.readouterr().err == ""
    incomplete = dataclasses.replace(packaged, system_copy=tmp_path / "empty")
    assert incomplete.system_mirror() is None


def test_data_sets_by_name() -> None:
    assert dataset("mnist") is MNIST and dataset("fashion-mnist") is FASHION_MNIST
    assert sorted(DATASETS) == ["fashion-mnist", "mnist"]
    assert MNIST.cache_dir(Path("/c")) == Path("/c") and FASHION_MNIST.cache_dir(Path("/c")) == Path("/c/fashion-mnist")
    with pytest.raises(ValueError, match="unknown data set 'fashion'; did you mean fashion-mnist"):
        dataset("fashion")
    with pytest.raises(ValueError, match="unknown data set 'cifar10'; expected one of mnist, fashion-mnist"):
        dataset("cifar10")
    assert len(FASHION_MNIST.classes) == len(set(FASHION_MNIST.classes)) == 10


# --- the commands ----------------------------------------------------------------------------


def test_train_evaluate_and_download_take_the_data_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fashion_mirror()
    data_dir, model, record = tmp_path / "data", tmp_path / "f.npz", tmp_path / "f.json"
    common = ["--data-dir", str(data_dir), "--quiet"]
    argv = ["--dataset", "fashion-mnist", "--hidden", "30", "--epochs", "1", "--save", str(model)]
    argv += ["--json", str(record)]
    assert train_main([*common, *argv]) == 0
    trained = json.loads(record.read_text())
    assert trained["dataset"] == "fashion-mnist" and trained["test_total"] == 10_000
    saved = load_model(model)
    assert saved.metadata["dataset"] == "fashion-mnist" and saved.classes == FASHION_MNIST.classes
    assert saved.metadata["test_correct"] == trained["test_correct"]
    capsys.readouterr()

    assert evaluate_main([str(model), *common]) == 0
    out = capsys.readouterr().out
    assert f"Test: {trained['test_correct']} / 10000 correct" in out
    assert "Per class: T-shirt/top: " in out and "9 Ankle boot" in out

    assert show_main(["--mistakes", str(model), "--count", "1", *common]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    label, guess = (int(part.split()[1]) for part in head.split(": ", 1)[1].split(", "))
    names = FASHION_MNIST.classes
    assert head.endswith(f"label {label} {names[label]}, predicted {guess} {names[guess]}  <- wrong"), head

    plots = tmp_path / "plots"
    assert plot_main([str(model), "--out", str(plots), *common]) == 0
    assert (plots / "confusion.png").is_file()
    assert plot_main([str(model), "--out", str(plots), "--dataset", "mnist", *common]) == 2
    capsys.readouterr()

    assert evaluate_main([str(model), "--dataset", "mnist", *common]) == 2
    assert f"--dataset mnist: {model} was trained on fashion-mnist" in capsys.readouterr().err
    real_mirror()  # MNIST too, for counting the model on it on purpose
    assert evaluate_main([str(model), "--dataset", "mnist", "--other-dataset", *common]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Test: ") and "Per digit: 0: " in out  # MNIST's test set, whatever the count
    assert train_main([*common, "--resume", str(model), "--epochs", "2", "--dataset", "mnist"]) == 2
    assert "trains on fashion-mnist; resume it without --dataset" in capsys.readouterr().err

    boot = tmp_path / "boot.png"  # the first test image, an ankle boot
    save_digit_png(load_mnist(data_dir, dataset="fashion-mnist").test.images[0], boot)
    answers = tmp_path / "answers.json"
    assert predict_main([str(model), str(boot), "--json", str(answers)]) == 0
    said = capsys.readouterr().out.splitlines()
    (answer,) = json.loads(answers.read_text())
    assert answer["class"] == FASHION_MNIST.classes[answer["prediction"]]
    assert said[1].startswith(f"{boot}: {answer['prediction']} {answer['class']} (")
    assert said[2].split()[:2] == ["T-shirt/top:", f"{100 * answer['probabilities'][0]:.1f}%"]

    assert download_main(["--dataset", "fashion-mnist", "--data-dir", str(data_dir)]) == 0
    assert f"Fashion-MNIST is in {data_dir / 'fashion-mnist'}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        download_main(["--dataset", "fashoin-mnist"])
    assert exit_info.value.code == 2
    assert "unknown data set 'fashoin-mnist'; did you mean fashion-mnist" in capsys.readouterr().err


def test_benchmark_accuracy_runs_on_the_data_set_and_keeps_its_results_apart(
    tmp_path: Path, mnist_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fashion_mirror()
    results, report = tmp_path / "results", tmp_path / "report.json"
    common = ["accuracy", "--quick", "--seeds", "1", "--results", str(results)]
    assert benchmark_main([*common, "--data-dir", str(mnist_cache), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["dataset"] == "mnist"
    capsys.readouterr()
    common += ["--data-dir", str(tmp_path / "data")]  # the session's MNIST cache stays MNIST's alone
    assert benchmark_main([*common, "--dataset", "fashion-mnist", "--json", str(report)]) == 0
    fashion = json.loads(report.read_text())
    assert fashion["dataset"] == "fashion-mnist" and fashion["from_results"] == 0  # MNIST's result is not reused
    assert "training images of fashion-mnist; " in capsys.readouterr().out
    assert len(list(results.glob("*.json"))) == 2
    assert benchmark_main([*common, "--dataset", "fashion-mnist", "--json", str(report)]) == 0
    again = json.loads(report.read_text())
    assert again["from_results"] == 1 and again["runs"] == fashion["runs"]


def test_a_preset_chosen_on_fashion_mnist_trains_on_it_unless_told_otherwise(tmp_path: Path, mnist_cache: Path) -> None:
    _fashion_mirror()
    record = tmp_path / "run.json"
    argv = ["--preset", "fashion-mlp", "--layers", "dense32", "dense10", "--epochs", "1", "--quiet"]
    argv += ["--json", str(record)]
    assert train_main([*argv, "--data-dir", str(tmp_path / "data")]) == 0
    assert json.loads(record.read_text())["dataset"] == "fashion-mnist"
    assert train_main([*argv, "--data-dir", str(mnist_cache), "--dataset", "mnist"]) == 0
    assert json.loads(record.read_text())["dataset"] == "mnist"


def test_a_garment_picture_is_prepared_as_fashion_mnist_was(tmp_path: Path) -> None:
    _fashion_mirror()
    images = load_mnist(tmp_path, dataset="fashion-mnist").validation.images[:200]
    prepared = np.stack([to_fashion_mnist(image.reshape(28, 28)) for image in images])
    assert prepared.shape == (200, 784) and prepared.dtype == np.float32
    assert float(np.abs(prepared - images).mean()) < 0.1  # a Fashion-MNIST image comes back nearly as it was
    # The same garment photographed dark on white, five times larger, off centre on a bigger page.
    page = np.ones((200, 180))
    page[30:170, 20:160] = np.kron(1.0 - images[0].reshape(28, 28), np.ones((5, 5)))
    again = to_fashion_mnist(page).reshape(28, 28)
    assert float(np.abs(again - images[0].reshape(28, 28)).mean()) < 0.1
    rows, cols = np.flatnonzero(again.any(axis=1)), np.flatnonzero(again.any(axis=0))
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 == 28  # its longest side fills the field
    assert preparation("fashion-mnist") is to_fashion_mnist and preparation("mnist") is to_mnist
    with pytest.raises(ImageError, match="no garment found"):
        to_fashion_mnist(np.ones((40, 40)))
