"""The components beyond chapter 1: costs, activations, initializations, L2, dropout, momentum, schedules."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import pytest

from mnist_nn.config import PRESETS, TrainConfig, config_from_dict, dense_sizes
from mnist_nn.data import MnistData
from mnist_nn.nn.activations import HIDDEN_ACTIVATIONS, Softmax
from mnist_nn.nn.costs import COSTS
from mnist_nn.nn.network import Network
from mnist_nn.train import EpochRecord, History, Run, fit
from mnist_nn.train.optimizers import SGD, Momentum, Nesterov
from mnist_nn.train.schedules import learning_rate
from mnist_nn.train.step import Step

COMBINATIONS = [(act, cost) for act in sorted(HIDDEN_ACTIVATIONS) for cost in sorted(COSTS)]


def _batch(seed: int, m: int, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((m, n_in)), np.eye(n_out)[rng.integers(0, n_out, size=m)]


def _batch_cost(net: Network, x: np.ndarray, y: np.ndarray, l2: float, n: int) -> float:
    # The mini-batch's share of C = 1/n sum_x C_x + lambda/(2n) sum w^2, times n.
    return net.cost.fn(net.feedforward(x), y) + float(x.shape[0]) * l2 / n * net.l2_penalty()


@pytest.mark.parametrize(("activation", "cost"), COMBINATIONS)
@pytest.mark.parametrize("l2", [0.0, 0.8])
def test_gradients_match_finite_differences(activation: str, cost: str, l2: float) -> None:
    net = Network((5, 4, 3, 3), seed=3, dtype=np.float64, activation=activation, cost=cost, init="glorot")
    if activation == "relu":
        # Keep pre-activations away from ReLU's kink, where finite differences are meaningless.
        for p in net.params:
            p[-1] += 0.3
    x, y = _batch(4, 6, 5, 3)
    n = 40
    grad_w, grad_b = net.backprop(x, y, l2=l2, n=n)
    eps = 1e-6
    for layer, p in enumerate(net.params):
        numeric = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            saved = p[idx]
            p[idx] = saved + eps
            up = _batch_cost(net, x, y, l2, n)
            p[idx] = saved - eps
            down = _batch_cost(net, x, y, l2, n)
            p[idx] = saved
            numeric[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grad_w[layer], numeric[:-1], rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(grad_b[layer], numeric[-1], rtol=1e-4, atol=1e-7)


def _one_fast_step(
    net: Network,
    x: np.ndarray,
    y: np.ndarray,
    eta: float,
    *,
    l2: float = 0.0,
    n: int = 1,
    optimizer: SGD | None = None,
) -> None:
    m = x.shape[0]
    optimizer = optimizer if optimizer is not None else SGD()
    optimizer.plan(net.params)
    step = Step(net, m, optimizer, dropout=0.0, rng=np.random.default_rng(0))
    xb = np.ones((m, x.shape[1] + 1))
    xb[:, :-1] = x
    step(xb, xb.T, y, -eta / m, 1.0 - eta * l2 / n)


@pytest.mark.parametrize(("activation", "cost"), COMBINATIONS)
def test_fast_step_is_the_textbook_update_with_l2(activation: str, cost: str) -> None:
    net = Network((6, 5, 4, 3), seed=5, dtype=np.float64, activation=activation, cost=cost, init="he")
    x, y = _batch(6, 8, 6, 3)
    eta, l2, n = 0.3, 2.0, 50
    grad_w, grad_b = net.backprop(x, y, l2=l2, n=n)
    expected = [p.copy() for p in net.params]
    for p, gw, gb in zip(expected, grad_w, grad_b, strict=True):
        p[:-1] -= eta / 8 * gw  # = (1 - eta*l2/n) w - eta/m sum grad C_x
        p[-1] -= eta / 8 * gb
    _one_fast_step(net, x, y, eta, l2=l2, n=n)
    for got, want in zip(net.params, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_steps_follow_their_equations(nesterov: bool) -> None:
    net = Network((4, 3, 2), seed=7, dtype=np.float64, activation="tanh", cost="log-likelihood")
    twin = Network((4, 3, 2), seed=7, dtype=np.float64, activation="tanh", cost="log-likelihood")
    x, y = _batch(8, 5, 4, 2)
    eta, mu = 0.2, 0.9
    optimizer = Nesterov(mu) if nesterov else Momentum(mu)
    v = [np.zeros_like(p) for p in twin.params]
    for _ in range(3):
        _one_fast_step(net, x, y, eta, optimizer=optimizer)
        gw, gb = twin.backprop(x, y)
        for i, p in enumerate(twin.params):
            g = -eta / 5 * np.vstack([gw[i], gb[i]])
            v[i] = mu * v[i] + g
            p += mu * v[i] + g if nesterov else v[i]
    for got, want in zip(net.params + optimizer.state["velocity"], twin.params + v, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_dropout_mask_rate_and_scaling_and_off_at_evaluation() -> None:
    p_drop = 0.3
    net = Network((20, 400, 10), seed=1, activation="relu", cost="log-likelihood", dtype=np.float64)
    net.params[0][:-1] = 0.01
    net.params[0][-1] = 1.0  # every hidden unit active (positive) before dropout
    m = 50
    step = Step(net, m, SGD(), dropout=p_drop, rng=np.random.default_rng(2))
    x, y = _batch(3, m, 20, 10)
    xb = np.ones((m, 21))
    xb[:, :-1] = x
    step(xb, xb.T, y, 0.0, 1.0)  # scale 0: no update, just the masks
    hidden: Any = step.steps[0]
    dropped = np.mean(hidden.output == 0)
    count = m * 400
    assert abs(dropped - p_drop) < 4 * np.sqrt(p_drop * (1 - p_drop) / count)
    kept = hidden.output != 0
    np.testing.assert_allclose(hidden.output[kept], hidden.pre[kept] / (1 - p_drop))
    # Evaluation never drops: two forward passes agree and match the plain math.
    out = net.feedforward(x)
    assert np.array_equal(out, net.feedforward(x))
    h = np.maximum(x @ net.weights[0] + net.biases[0], 0)
    np.testing.assert_allclose(out, Softmax().forward(h @ net.weights[1] + net.biases[1], np.empty((m, 10))))


def test_softmax_is_stable_and_normalized() -> None:
    z = np.array([[1e4, 0.0, -1e4], [0.0, 0.0, 0.0], [-800.0, -800.0, -801.0]], dtype=np.float32)
    # Underflow to 0 is the right answer for exp(-20000); overflow and NaN are not.
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        a = Softmax().forward(z, np.empty_like(z))
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-6)
    assert a[0, 0] == 1.0 and np.allclose(a[1], 1 / 3)


@pytest.mark.parametrize(
    ("init", "weight_std", "bias_std"),
    [
        ("normal", 1.0, 1.0),
        ("scaled", 1 / np.sqrt(400), 1.0),
        ("he", np.sqrt(2 / 400), 0.0),
        ("glorot", np.sqrt(2 / 700), 0.0),
    ],
)
def test_initializations_have_their_spread(init: str, weight_std: float, bias_std: float) -> None:
    net = Network((400, 300, 10), seed=0, init=init, dtype=np.float64)
    w, b = net.weights[0], net.biases[0]
    assert abs(w.std() / weight_std - 1) < 0.02
    assert abs(w.mean()) < 0.02 * weight_std
    assert (b.std() == 0.0) if bias_std == 0.0 else abs(b.std() / bias_std - 1) < 0.2


def test_normal_init_draws_what_chapter_one_always_drew() -> None:
    # The default must not change: the same standard-normal draws as before components existed.
    net = Network((784, 30, 10), seed=12345)
    rng = np.random.default_rng(12345)
    expected = [rng.standard_normal((785, 30)).astype(np.float32), rng.standard_normal((31, 10)).astype(np.float32)]
    for got, want in zip(net.params, expected, strict=True):
        assert np.array_equal(got, want)


def _history(counts: list[int]) -> History:
    return History([EpochRecord(i + 1, c, 100, None, 1.0, 0.1) for i, c in enumerate(counts)])


def test_learning_rate_schedules() -> None:
    assert learning_rate(_history([]), eta=0.5, schedule="constant", epochs=10) == 0.5
    assert learning_rate(_history([]), eta=0.5, schedule="cosine", epochs=10) == pytest.approx(0.5)
    assert learning_rate(_history([1] * 5), eta=0.5, schedule="cosine", epochs=10) == pytest.approx(0.25)
    # network2's rule: halve after `patience` epochs without improvement, stop below eta/128.
    assert learning_rate(_history([5, 6, 7]), eta=1.0, schedule="plateau", epochs=99, patience=2) == 1.0
    assert learning_rate(_history([5, 6, 6, 6]), eta=1.0, schedule="plateau", epochs=99, patience=2) == 0.5
    assert learning_rate(_history([5, 6, 6, 6, 7, 7]), eta=1.0, schedule="plateau", epochs=99, patience=2) == 0.5
    # 14 epochs without improvement: 7 halvings, eta/128, still going; 16: eta/256, stop.
    assert learning_rate(_history([5] + [4] * 14), eta=1.0, schedule="plateau", epochs=99, patience=2) == 1 / 128
    assert learning_rate(_history([5] + [4] * 16), eta=1.0, schedule="plateau", epochs=99, patience=2) is None
    with pytest.raises(ValueError, match="unknown schedule"):
        learning_rate(_history([]), eta=1.0, schedule="step", epochs=1)


def test_early_stopping_stops_and_the_best_epoch_is_served() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((200, 6)).astype(np.float32)
    labels = rng.integers(0, 3, size=200)  # random labels: validation cannot keep improving
    config = dataclasses.replace(
        PRESETS["nielsen-ch1"], layers=("dense20", "dense3"), inputs=6, epochs=40, early_stopping=3, eta=5.0
    )
    run = fit(Run.start(config), x, labels, validation=(x[:50], labels[:50]))
    history = run.history
    best = history.best()
    assert best is not None and run.best_epoch == best.epoch
    assert len(history.epochs) == best.epoch + 3 < 40
    served = run.served_network()
    assert served.count_correct(x[:50], labels[:50]) == best.validation_correct


def test_training_with_every_option_is_deterministic_and_resumable() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((120, 8)).astype(np.float32)
    labels = rng.integers(0, 4, size=120)
    config = dataclasses.replace(
        PRESETS["nielsen-ch1"],
        layers=("dense16", "dense12", "dense4"),
        inputs=8,
        epochs=4,
        batch_size=16,
        eta=0.2,
        activation="relu",
        cost="log-likelihood",
        init="he",
        l2=1.0,
        dropout=0.25,
        momentum=0.8,
        nesterov=True,
        schedule="cosine",
    )
    straight = fit(Run.start(config), x, labels, validation=(x, labels))

    class StopError(Exception):
        pass

    def stop_after_two(record: EpochRecord, run: Run) -> None:
        if record.epoch == 2:
            raise StopError

    resumed = Run.start(config)
    with pytest.raises(StopError):
        fit(resumed, x, labels, validation=(x, labels), on_epoch=stop_after_two)
    assert len(resumed.history.epochs) == 2
    fit(resumed, x, labels, validation=(x, labels))
    for a, b in zip(
        straight.network.params + straight.optimizer.state.get("velocity", []),
        resumed.network.params + resumed.optimizer.state.get("velocity", []),
        strict=True,
    ):
        assert np.array_equal(a, b)
    assert [r.validation_correct for r in straight.history.epochs] == [
        r.validation_correct for r in resumed.history.epochs
    ]


def test_bad_component_options_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown cost"):
        Network((4, 2), cost="hinge")
    with pytest.raises(ValueError, match="unknown init"):
        Network((4, 2), init="zeros")
    net = Network((4, 2))
    x = np.zeros((5, 4))
    labels = np.zeros(5, dtype=int)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"momentum": -0.1}, "momentum"),
        ({"l2": -1.0}, "l2 must be >= 0"),
        ({"schedule": "plateau"}, "need validation data"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            fit(Run.for_network(net, np.random.default_rng(0), epochs=1, batch_size=5, eta=1.0, **kwargs), x, labels)


@pytest.mark.real_data
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_trains_one_short_epoch(name: str, mnist: MnistData) -> None:
    config = dataclasses.replace(PRESETS[name], epochs=1)
    # Convolutional presets take a shorter epoch: what is checked is that they build and train.
    n = 1_000 if config.layers else 10_000
    run = fit(
        Run.start(config),
        mnist.train.images[:n],
        mnist.train.labels[:n],
        validation=(mnist.validation.images[:1000], mnist.validation.labels[:1000]),
    )
    record = run.history.epochs[0]
    assert record.validation_correct is not None and record.train_cost is not None, record
    assert np.isfinite(record.train_cost) and all(np.isfinite(p).all() for p in run.network.params)
    if not config.layers:  # the dense presets learn within 10,000 images; chapter 6's sigmoid CNNs start slower
        assert record.validation_correct > 500, record


# --- the configuration: a network by its layer specs --------------------------------------


def test_a_configuration_names_its_layers_and_reads_the_sizes_of_earlier_run_files() -> None:
    config = TrainConfig(layers=("dense100", "dense10"), epochs=2)
    again = config_from_dict(config.to_dict())
    assert again == config and "sizes" not in config.to_dict()
    assert config.describe().startswith("[784, 100, 10], sigmoid, quadratic cost")
    assert PRESETS["cnn"].describe().startswith("[conv24x5 pool2 conv48x5 pool2 dense200 dense10], relu")
    assert dense_sizes(("conv4x5", "dense10")) is None and dense_sizes(("dense8", "dense3"), 6) == (6, 8, 3)
    # earlier versions: sizes, with layers empty for a dense stack and given for any other network
    legacy = {"sizes": [784, 100, 10], "layers": [], "epochs": 2}
    assert config_from_dict(legacy) == config
    conv = {"sizes": [784, 2304, 576, 10], "layers": ["conv4x5", "pool2", "dense10"]}
    assert config_from_dict(conv).layers == ("conv4x5", "pool2", "dense10")
    with pytest.raises(ValueError, match=r"sizes \(earlier versions\) or inputs, not both"):
        config_from_dict({"sizes": [784, 10], "inputs": 784})
    with pytest.raises(ValueError, match="expected sizes as a list of at least 2 integers"):
        config_from_dict({"sizes": [784]})
    with pytest.raises(ValueError, match="must end with a dense layer"):
        TrainConfig(layers=("dense30", "pool2"))
