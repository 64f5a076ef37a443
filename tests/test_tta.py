"""Test-time augmentation: the copies of an image, their averaged probabilities, and --tta in evaluate and predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mnist_nn import Network
from mnist_nn.cli import evaluate_main
from mnist_nn.cli.base import model_tta
from mnist_nn.cli.predict import predict_main
from mnist_nn.config import TrainConfig
from mnist_nn.data import MnistData
from mnist_nn.models import load_model, save_model
from mnist_nn.train import Run, fit
from mnist_nn.tta import TTA, tta_probabilities


def _moved(images: np.ndarray, down: int, right: int, mirror: bool = False) -> np.ndarray:
    """An independent shift: np.roll, then the rolled-in row or column set to background."""
    square = images.reshape(-1, 28, 28)
    if mirror:
        square = square[:, :, ::-1]
    out = np.roll(square, (down, right), axis=(1, 2))
    if down:
        out[:, 0 if down > 0 else -1, :] = 0
    if right:
        out[:, :, 0 if right > 0 else -1] = 0
    return out.reshape(images.shape)


def _expected(network: Network, images: np.ndarray, mirror: bool) -> np.ndarray:
    moves = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]
    copies = [_moved(images, d, r, m) for m in ([False, True] if mirror else [False]) for d, r in moves]
    mean: np.ndarray = np.mean([network.probabilities(c) for c in copies], axis=0)
    return mean


@pytest.mark.parametrize("mirror", [False, True])
def test_the_copies_are_the_image_and_its_one_pixel_shifts(mirror: bool) -> None:
    images = np.random.default_rng(0).random((3, 784)).astype(np.float32)
    views = list(TTA(mirror=mirror).views(images))
    assert len(views) == TTA(mirror=mirror).copies == (10 if mirror else 5)
    np.testing.assert_array_equal(views[0], images)
    down = views[2].reshape(3, 28, 28)
    np.testing.assert_array_equal(down[:, 1:], images.reshape(3, 28, 28)[:, :-1])
    np.testing.assert_array_equal(down[:, 0], 0)
    if mirror:
        np.testing.assert_array_equal(views[5].reshape(3, 28, 28), images.reshape(3, 28, 28)[:, :, ::-1])
    network = Network([784, 20, 10], seed=2, cost="log-likelihood")
    np.testing.assert_allclose(
        tta_probabilities(network, images, TTA(mirror=mirror)), _expected(network, images, mirror), rtol=1e-6
    )


def test_a_network_of_other_inputs_is_refused() -> None:
    with pytest.raises(ValueError, match="moves 28x28 images; this network takes 64 inputs"):
        tta_probabilities(Network([64, 10]), np.zeros((1, 64)), TTA())


def test_a_model_trained_on_mirrored_images_answers_mirrored_copies_too(tmp_path: Path) -> None:
    for spec, mirror in (("", False), ("none,shift=2", False), ("none,flip=0.5", True)):
        save_model(tmp_path / "m.npz", Network([784, 10]), {"config": TrainConfig(augment=spec).to_dict()})
        assert model_tta(load_model(tmp_path / "m.npz")).mirror is mirror


@pytest.mark.real_data
def test_evaluate_and_predict_tta_answer_with_the_averaged_copies(
    mnist: MnistData, mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = TrainConfig(layers=("dense30", "dense10"), epochs=1, eta=3.0, seed=1)
    run = fit(Run.start(config), *mnist.train, helper=False)
    save_model(tmp_path / "m.npz", run.network, {"config": config.to_dict()})
    capsys.readouterr()
    assert evaluate_main([str(tmp_path / "m.npz"), "--data-dir", str(mnist_cache), "--tta", "--json", "-"]) == 0
    out, err = capsys.readouterr()
    answers = np.argmax(_expected(run.network, mnist.test.images, False), axis=1)
    expected = int(np.count_nonzero(answers == mnist.test.labels))
    assert json.loads(out)[0]["correct"] == expected != run.network.count_correct(*mnist.test)
    assert f"Test: {expected} / 10000" in err and "averaged over 5 copies" in err
    np.save(tmp_path / "digit.npy", (mnist.test.images[0].reshape(28, 28) * 255).astype(np.uint8))
    assert predict_main([str(tmp_path / "m.npz"), str(tmp_path / "digit.npy"), "--tta", "--json", "-"]) == 0
    out, err = capsys.readouterr()
    assert "test-time augmentation" in err and "test-time augmentation" in json.loads(out)[0]["tta"]
