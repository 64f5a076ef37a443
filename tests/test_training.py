"""Training end to end: a tiny separable problem, Nielsen's calling convention, real MNIST."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from mnist_nn import Network
from mnist_nn.data import MnistData
from mnist_nn.errors import NonFiniteError, TrainingError
from mnist_nn.train import EpochRecord, Run, fit


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated clusters in 5 dimensions, values in [0, 1]."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    centers = np.array([[0.1] * 5, [0.9] * 5, [0.1, 0.9, 0.1, 0.9, 0.1]])
    x = np.clip(centers[labels] + rng.normal(0, 0.05, size=(n, 5)), 0, 1)
    return x.astype(np.float32), labels


def test_learns_a_tiny_separable_problem_and_records_every_epoch() -> None:
    x, labels = _blobs(300, seed=1)
    vx, vlabels = _blobs(100, seed=2)
    net = Network((5, 8, 3), seed=3)
    seen: list[EpochRecord] = []
    progress: list[tuple[int, int]] = []
    history = fit(
        Run.for_network(net, np.random.default_rng(4), epochs=20, batch_size=10, eta=3.0),
        x,
        labels,
        validation=(vx, vlabels),
        on_epoch=lambda record, run: seen.append(record),
        on_progress=lambda done, n: progress.append((done, n)),
    ).history
    assert [r.epoch for r in history.epochs] == list(range(1, 21))
    assert seen == history.epochs
    last = history.epochs[-1]
    assert last.validation_correct == 100 and last.validation_total == 100
    assert last.validation_accuracy == 1.0
    assert last.train_cost is not None and last.train_cost < history.epochs[0].train_cost  # type: ignore[operator]
    assert all(r.seconds > 0 for r in history.epochs)
    assert progress[-1] == (300, 300)
    assert history.best() is not None


def test_nielsen_style_call_with_lists_of_tuples(capsys: pytest.CaptureFixture[str]) -> None:
    x, labels = _blobs(200, seed=5)
    training = [(xi.reshape(5, 1), np.eye(3)[y].reshape(3, 1)) for xi, y in zip(x, labels, strict=True)]
    test = [(xi.reshape(5, 1), int(y)) for xi, y in zip(x[:50], labels[:50], strict=True)]
    net = Network([5, 8, 3], seed=6)
    history = net.SGD(training, 15, 10, 3.0, test_data=test)
    assert len(history.epochs) == 15
    assert net.evaluate(test) == history.epochs[-1].validation_correct == 50
    # As the book's code prints: epochs from 0, the count on the test data.
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"Epoch {r.epoch - 1}: {r.validation_correct} / 50" for r in history.epochs]
    best = history.best()
    assert best is not None and repr(history) == f"History(15 epochs, best epoch {best.epoch}: 50 / 50)"


def test_nielsen_style_call_without_test_data_says_each_epoch_is_complete_or_nothing_when_quiet(
    capsys: pytest.CaptureFixture[str],
) -> None:
    x, labels = _blobs(60, seed=5)
    net = Network([5, 8, 3], seed=6)
    net.SGD((x, labels), 3, 10, 3.0)
    assert capsys.readouterr().out.splitlines() == ["Epoch 0 complete", "Epoch 1 complete", "Epoch 2 complete"]
    net.SGD((x, labels), 3, 10, 3.0, quiet=True)
    assert capsys.readouterr().out == ""


def test_diverging_weights_stop_training_with_a_clear_error() -> None:
    x, labels = _blobs(50, seed=7)
    net = Network((5, 4, 3), seed=8)
    net.params[0][0, 0] = np.inf
    with pytest.raises(TrainingError, match="epoch 1; try a lower learning rate"):
        fit(Run.for_network(net, np.random.default_rng(0), epochs=2, batch_size=10, eta=1.0), x, labels)


def _huge(net: Network, value: float = 1e28) -> Network:
    """``net`` with every weight and bias ``value``: finite, yet large enough for a product to overflow float32."""
    for p in net.params:
        p[...] = value
    return net


@pytest.mark.parametrize(("activation", "value"), [("relu", 1e28), ("sigmoid", 1e38)])
def test_an_overflowing_forward_pass_raises_instead_of_answering_and_warns_nothing(
    activation: str, value: float
) -> None:
    # relu: z2 of about 1e28 * 8 * 1e28 is inf in float32, and the sigmoid output would make it a plain 1.0;
    # sigmoid: z1 of about 6e38 is already inf, and the hidden sigmoid would make it 1.0.
    net = _huge(Network((5, 8, 3), seed=1, activation=activation, dtype="float32"), value)
    x, _ = _blobs(20, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NumPy RuntimeWarning fails the test
        with pytest.raises(NonFiniteError, match="weights are too large"):
            net.predict(x)


def test_finite_weights_whose_outputs_overflow_stop_training_in_one_clear_error() -> None:
    x, labels = _blobs(50, seed=7)
    net = _huge(Network((5, 4, 3), seed=8, activation="relu", dtype="float32"))
    run = Run.for_network(net, np.random.default_rng(0), epochs=2, batch_size=10, eta=1e-30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TrainingError, match=r"outputs became infinite or NaN in epoch 1 \(its weights are too"):
            fit(run, x, labels, validation=(x, labels))
    assert all(np.isfinite(p).all() for p in net.params)  # the weights alone would not have told


@pytest.mark.real_data
def test_one_epoch_of_nielsens_network_reaches_90_percent(mnist: MnistData) -> None:
    net = Network([784, 30, 10], seed=0)
    history = fit(
        Run.for_network(net, np.random.default_rng(0), epochs=1, batch_size=10, eta=3.0),
        *mnist.train,
        validation=mnist.validation,
    ).history
    correct = history.epochs[0].validation_correct
    assert correct is not None and correct >= 9_000, correct


def test_the_package_example_trains_on_splits() -> None:
    from mnist_nn import Network as PublicNetwork
    from mnist_nn.data import Split

    x, labels = _blobs(120, seed=9)
    train, validation = Split(x[:100], labels[:100]), Split(x[100:], labels[100:])
    net = PublicNetwork([5, 8, 3], seed=1)
    history = net.SGD(train, 10, 10, 3.0, test_data=validation)
    assert history.epochs[-1].validation_total == 20
    assert net.evaluate(validation) == history.epochs[-1].validation_correct


def test_one_network_class_and_a_loaded_model_trains_with_sgd(tmp_path: Path) -> None:
    import mnist_nn
    from mnist_nn.nn.network import Network as NetworkInNn

    assert mnist_nn.Network is NetworkInNn
    x, labels = _blobs(120, seed=4)
    net = mnist_nn.Network([5, 8, 3], seed=1)
    mnist_nn.save_model(tmp_path / "net.npz", net)
    loaded = mnist_nn.load_model(tmp_path / "net.npz", require_mnist=False).network
    assert type(loaded) is NetworkInNn
    costs = [[e.train_cost for e in n.SGD((x, labels), 2, 10, 3.0, quiet=True).epochs] for n in (loaded, net)]
    assert costs[0] == costs[1] and len(costs[0]) == 2
    for got, want in zip(loaded.params, net.params, strict=True):
        np.testing.assert_array_equal(got, want)
