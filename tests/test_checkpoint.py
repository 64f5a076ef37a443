"""The run file from Python: ``save_run`` and ``resume_run`` continue a run exactly, and refuse what does not fit."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from mnist_nn.config import TrainConfig
from mnist_nn.data import MnistData, Split, as_floats
from mnist_nn.errors import ModelFileError
from mnist_nn.models import load_model, save_model
from mnist_nn.train import Run, fit
from mnist_nn.train.checkpoint import changed_settings, resume_run, save_run, saved_config


def _data(seed: int = 0) -> MnistData:
    """Learnable pixels: each class lights its own band of rows, with noise."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> Split:
        labels = rng.integers(0, 10, n).astype(np.int64)
        pixels = rng.integers(0, 60, (n, 784)).astype(np.uint8)
        for i, label in enumerate(labels):
            pixels[i, label * 78 : label * 78 + 78] = 255
        return Split(pixels, labels)

    return MnistData(split(300), split(100), split(100), {"train-images-idx3-ubyte": "0" * 64})


def _config(epochs: int) -> TrainConfig:
    return TrainConfig(layers=("dense12", "dense10"), epochs=epochs, batch_size=10, eta=0.5, momentum=0.9, seed=3)


def _records(run: Run) -> list[dict[str, object]]:
    """The run's history without the seconds each epoch took."""
    return [{k: v for k, v in record.items() if k != "seconds"} for record in run.history.to_list()]


def _train(run: Run, data: MnistData) -> Run:
    return fit(run, *data.train, validation=data.validation, helper=False)


def test_a_saved_run_resumed_in_two_lines_continues_as_if_never_stopped(tmp_path: Path) -> None:
    data = _data()
    straight = _train(Run.start(_config(4)), data)

    first = _train(Run.start(_config(2)), data)
    count = save_run(tmp_path / "run.npz", first, data)
    resumed = resume_run(tmp_path / "run.npz", dataclasses.replace(_config(2), epochs=4))
    _train(resumed, data)

    assert count == load_model(tmp_path / "run.npz").metadata["test_correct"]
    assert _records(resumed) == _records(straight) and len(_records(resumed)) == 4
    for got, want in zip(resumed.network.params, straight.network.params, strict=True):
        np.testing.assert_array_equal(got, want)
    assert resumed.best_epoch == straight.best_epoch


def test_the_saved_file_serves_the_best_epoch_and_counts_it_on_test(tmp_path: Path) -> None:
    data = _data(1)
    run = _train(Run.start(_config(3)), data)
    count = save_run(tmp_path / "run.npz", run, data, status="checkpoint")
    saved = load_model(tmp_path / "run.npz")
    params, epoch = run.served()
    assert saved.metadata["epoch"] == epoch and saved.metadata["served"] == "best"
    assert saved.metadata["status"] == "checkpoint" and saved.metadata["mnist_sha256"] == data.digests
    assert count == run.served_network().count_correct(as_floats(data.test.images), data.test.labels)
    for got, want in zip(saved.network.params, params, strict=True):
        np.testing.assert_array_equal(got, want)
    assert saved_config(saved) == run.config


def test_resume_refuses_a_changed_configuration_and_fewer_epochs(tmp_path: Path) -> None:
    data = _data(2)
    save_run(tmp_path / "run.npz", _train(Run.start(_config(2)), data), data)
    changed = dataclasses.replace(_config(2), eta=0.1, l2=1.0)
    assert changed_settings(_config(2), changed) == ["eta", "l2"]
    with pytest.raises(ValueError, match="only the epochs and the epoch it serves may change, not eta, l2"):
        resume_run(tmp_path / "run.npz", changed)
    with pytest.raises(ValueError, match="has already trained 2 epochs, more than 1"):
        resume_run(tmp_path / "run.npz", dataclasses.replace(_config(2), epochs=1))


def test_a_file_serving_its_last_epoch_keeps_the_best_beside_it(tmp_path: Path) -> None:
    data = _data(3)
    run = Run.start(_config(3), keep_last=True)
    _train(run, data)
    save_run(tmp_path / "last.npz", run, data)
    resumed = resume_run(tmp_path / "last.npz", keep_last=False)
    assert not resumed.keep_last and resumed.best_epoch == run.best_epoch
    assert run.best_params is not None and resumed.best_params is not None
    for got, want in zip(resumed.best_params, run.best_params, strict=True):
        np.testing.assert_array_equal(got, want)


def test_weights_only_and_unknown_statuses_are_refused(tmp_path: Path) -> None:
    data = _data(4)
    run = _train(Run.start(_config(1)), data)
    with pytest.raises(ValueError, match="expected a status among complete, checkpoint, interrupted, diverged"):
        save_run(tmp_path / "run.npz", run, data, status="paused")
    assert not (tmp_path / "run.npz").exists()
    save_model(tmp_path / "weights.npz", run.network)
    with pytest.raises(ModelFileError, match="holds the weights only"):
        resume_run(tmp_path / "weights.npz")


def test_the_user_guides_python_example_runs_as_written(
    mnist_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The save-and-resume block of docs/user-guide/train.md, run on real MNIST in a scratch folder."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "user-guide" / "train.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "resume_run" in b]
    assert len(blocks) == 1
    monkeypatch.setenv("MNIST_NN_DATA", str(mnist_cache))
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "train.md", "exec"), namespace)
    run = namespace["run"]
    assert isinstance(run, Run) and run.epochs_completed == 2 and run.config.epochs == 2
    assert load_model(tmp_path / "models" / "two-epochs.npz").metadata["test_correct"] > 8000
