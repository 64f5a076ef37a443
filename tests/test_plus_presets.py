"""The presets past the book: a resumed cnn-plus run is the uninterrupted one, and its parts work in every command.

``cnn-plus`` and ``fashion-cnn-plus`` bring batch norms, label smoothing,
mini-batches of 64 with distortions or mirroring, and Winograd's 3x3 step
together; these tests run them on real MNIST, shortened (fewer images, or a
smaller network through ``--layers`` with the preset's other settings).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from mnist_nn.cli import evaluate_main, train_main
from mnist_nn.cli.plot import plot_main
from mnist_nn.cli.predict import predict_main
from mnist_nn.cli.show import show_main
from mnist_nn.config import PRESET_DATASETS, PRESETS
from mnist_nn.data import MnistData, load_mnist
from mnist_nn.metrics import count_matches
from mnist_nn.models import load_model
from mnist_nn.train import Run, fit
from mnist_nn.train.checkpoint import resume_run, save_run
from mnist_nn.train.history import EpochRecord
from mnist_nn.tta import TTA, tta_probabilities
from tests.conftest import write_idx_pair
from tests.test_app import _mnist_png

pytestmark = pytest.mark.real_data

# Winograd's step takes the second 3x3 convolution (32 maps in, an even output).
LAYERS = ("conv8x3p1", "bn", "pool2", "conv32x3", "bn", "conv8x3", "pool2", "bn", "dense32", "bn", "dense10")
SMALL = ["--layers", *LAYERS]


def test_the_plus_presets_are_their_bases_with_what_validation_chose() -> None:
    plus, fashion, fashion_plus = PRESETS["cnn-plus"], PRESETS["fashion-cnn"], PRESETS["fashion-cnn-plus"]
    assert fashion_plus == dataclasses.replace(fashion, epochs=25)
    assert plus.augment == PRESETS["cnn"].augment and plus.label_smoothing == 0.1 and plus.layers.count("bn") == 4
    assert "cnn-plus" not in PRESET_DATASETS and PRESET_DATASETS["fashion-cnn-plus"] == "fashion-mnist"


def test_a_resumed_cnn_plus_run_equals_an_uninterrupted_one(mnist: MnistData, tmp_path: Path) -> None:
    n = 1_000
    images, labels = mnist.train.images[:n], mnist.train.labels[:n]
    validation = (mnist.validation.images[:1_000], mnist.validation.labels[:1_000])

    config = dataclasses.replace(PRESETS["cnn-plus"], epochs=3, seed=5)
    checkpoint = tmp_path / "run.npz"

    def stop_here(record: EpochRecord, run: Run) -> None:  # a checkpoint after epoch 1, as --checkpoint-every 1
        if record.epoch == 1:
            save_run(checkpoint, run, mnist)

    straight = fit(Run.start(config), images, labels, validation=validation, on_epoch=stop_here, helper=False)
    resumed = resume_run(checkpoint, config)
    assert len(resumed.history.epochs) == 1
    fit(resumed, images, labels, validation=validation, helper=False)
    assert [r.validation_correct for r in resumed.history.epochs] == [
        r.validation_correct for r in straight.history.epochs
    ]
    for got, want in zip(resumed.network.params, straight.network.params, strict=True):
        np.testing.assert_array_equal(got, want)


def _real_folder(cache: Path, folder: Path, n_train: int = 6_000, n_test: int = 1_000) -> str:
    """The first real MNIST images as a data set of MNIST's four files (5,000 train, 1,000 validate, 1,000 test)."""
    raw = load_mnist(cache, dtype=np.uint8)
    folder.mkdir()
    for prefix, split, n in (("train", raw.train, n_train), ("t10k", raw.test, n_test)):
        write_idx_pair(folder, prefix, split.images[:n].reshape(-1, 28, 28), split.labels[:n], compress=False)
    return f"idx:{folder}"


def test_a_cnn_plus_model_checkpoints_resumes_evaluates_predicts_shows_and_plots(
    mnist_cache: Path, mnist: MnistData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib", reason="plot comes with the plot extra")
    dataset = _real_folder(mnist_cache, tmp_path / "digits")
    test = load_mnist(dataset=dataset).test
    model, data = tmp_path / "plus.npz", ["--quiet"]
    common = ["--preset", "cnn-plus", *SMALL, "--seed", "2", "--dataset", dataset, *data]
    assert train_main([*common, "--epochs", "1", "--checkpoint-every", "1", "--save", str(model)]) == 0
    assert train_main([*common, "--epochs", "2", "--resume", str(model)]) == 0  # equal to a straight run: above
    saved = load_model(model)
    assert saved.metadata["test_correct"] > 900  # of 1,000, after two epochs of 5,000 images
    assert saved.metadata["config"]["label_smoothing"] == 0.1 and saved.metadata["epochs_completed"] == 2
    network = saved.network
    copies = tta_probabilities(network, test.images, TTA())
    tta_correct = count_matches(np.argmax(copies, axis=1), test.labels)
    capsys.readouterr()
    assert evaluate_main([str(model), "--tta", *data]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Test: {tta_correct} / 1000") and "averaged over 5 copies" in out
    png = _mnist_png(mnist.test.images[0], tmp_path / "seven.png")
    assert predict_main([str(model), str(png), "--tta", "--json", str(tmp_path / "p.json")]) == 0
    answer = json.loads((tmp_path / "p.json").read_text())[0]
    assert answer["prediction"] == 7 and "averaged over 5 copies" in answer["tta"]
    assert show_main(["--mistakes", str(model), "--count", "2", *data]) == 0
    heads = [line for line in capsys.readouterr().out.splitlines() if line.startswith("test #")]
    assert len(heads) == 2 and all(", predicted " in h and h.endswith("<- wrong") for h in heads)
    out_dir = tmp_path / "figures"
    assert plot_main([str(model), "--out", str(out_dir), *data]) == 0
    figures = list(out_dir.iterdir())
    assert figures and all(p.suffix == ".png" and p.stat().st_size > 1_000 for p in figures)
