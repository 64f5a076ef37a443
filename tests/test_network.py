"""The network's math: gradients against finite differences and the per-example reference."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from mnist_nn.nn.activations import sigmoid
from mnist_nn.nn.network import Network, as_arrays
from mnist_nn.nn.reference import backprop_example, update_mini_batch
from mnist_nn.train import Run, fit


def _batch(rng: np.random.Generator, m: int, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.random((m, n_in))
    labels = rng.integers(0, n_out, size=m)
    return x, np.eye(n_out)[labels]


def _batch_cost(net: Network, x: np.ndarray, y: np.ndarray) -> float:
    return net.cost.fn(net.feedforward(x), y)


@pytest.mark.parametrize("sizes", [(4, 3, 2), (5, 4, 3, 2)])
def test_backprop_matches_centered_finite_differences(sizes: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    net = Network(sizes, seed=2, dtype=np.float64)
    x, y = _batch(rng, 7, sizes[0], sizes[-1])
    grad_w, grad_b = net.backprop(x, y)
    eps = 1e-6
    for layer, p in enumerate(net.params):
        numeric = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            saved = p[idx]
            p[idx] = saved + eps
            up = _batch_cost(net, x, y)
            p[idx] = saved - eps
            down = _batch_cost(net, x, y)
            p[idx] = saved
            numeric[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grad_w[layer], numeric[:-1], rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(grad_b[layer], numeric[-1], rtol=1e-5, atol=1e-8)


def test_batch_gradient_is_sum_of_reference_per_example_gradients() -> None:
    rng = np.random.default_rng(3)
    net = Network((6, 5, 4, 3), seed=4, dtype=np.float64)
    x, y = _batch(rng, 9, 6, 3)
    grad_w, grad_b = net.backprop(x, y)
    sum_w = [np.zeros_like(w) for w in net.weights]
    sum_b = [np.zeros_like(b) for b in net.biases]
    for xi, yi in zip(x, y, strict=True):
        dw, db = backprop_example(net, xi, yi)
        sum_w = [s + d for s, d in zip(sum_w, dw, strict=True)]
        sum_b = [s + d for s, d in zip(sum_b, db, strict=True)]
    for g, s in zip(grad_w + grad_b, sum_w + sum_b, strict=True):
        np.testing.assert_allclose(g, s, rtol=1e-12, atol=1e-14)


def test_one_update_on_a_2_2_1_network_worked_by_hand() -> None:
    net = Network((2, 2, 1), dtype=np.float64)
    # Hidden layer: weights [[0.1, 0.2], [0.3, 0.4]] (rows = inputs), biases [0, 0].
    net.params[0][...] = [[0.1, 0.2], [0.3, 0.4], [0.0, 0.0]]
    # Output: weights [[0.5], [0.6]], bias 0.
    net.params[1][...] = [[0.5], [0.6], [0.0]]
    x = np.array([[1.0, 0.0]])
    y = np.array([[1.0]])
    # Forward: z1 = [0.1, 0.2], a1 = sigma(z1) = [0.524979, 0.549834];
    # z2 = 0.5 * 0.524979 + 0.6 * 0.549834 = 0.592390, a2 = sigma(z2) = 0.643913.
    # BP1: delta2 = (a2 - y) * a2 * (1 - a2) = -0.356087 * 0.229286 = -0.081647.
    # BP2: delta1 = delta2 * [0.5, 0.6] * a1 * (1 - a1)
    #            = [-0.040823 * 0.249376, -0.048988 * 0.247517] = [-0.010180, -0.012125].
    # BP4: grad_w2 = a1.T * delta2 = [[-0.042863], [-0.044892]]; grad_w1 = x.T @ delta1.
    grad_w, grad_b = net.backprop(x, y)
    np.testing.assert_allclose(grad_b[1], [-0.081647], atol=1e-6)
    np.testing.assert_allclose(grad_w[1], [[-0.042863], [-0.044892]], atol=1e-6)
    np.testing.assert_allclose(grad_b[0], [-0.010180, -0.012125], atol=1e-6)
    np.testing.assert_allclose(grad_w[0], [[-0.010180, -0.012125], [0.0, 0.0]], atol=1e-6)
    # With eta = 1 and m = 1 the update subtracts the gradient: w2 = [0.542863, 0.644892].
    fit(Run.for_network(net, np.random.default_rng(0), epochs=1, batch_size=1, eta=1.0), x, np.array([0]))
    np.testing.assert_allclose(net.weights[1].ravel(), [0.542863, 0.644892], atol=1e-6)
    np.testing.assert_allclose(net.biases[1], [0.081647], atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 4, 5])
def test_vectorized_sgd_equals_the_per_example_reference(batch_size: int) -> None:
    rng = np.random.default_rng(5)
    x = rng.random((23, 6))
    labels = rng.integers(0, 3, size=23)
    fast = Network((6, 5, 3), seed=7, dtype=np.float64)
    slow = Network((6, 5, 3), seed=7, dtype=np.float64)
    fit(
        Run.for_network(fast, np.random.default_rng(9), epochs=2, batch_size=batch_size, eta=0.7),
        x,
        labels,
        monitor_cost=False,
    )
    order_rng = np.random.default_rng(9)
    targets = slow.one_hot(labels)
    for _ in range(2):
        order = order_rng.permutation(23)
        for k in range(0, 23, batch_size):  # 23 is not a multiple: the last batch is smaller
            idx = order[k : k + batch_size]
            update_mini_batch(slow, x[idx], targets[idx], 0.7)
    for f, s in zip(fast.params, slow.params, strict=True):
        np.testing.assert_allclose(f, s, rtol=1e-10, atol=1e-12)


def test_one_sgd_step_lowers_the_cost_on_a_fixed_batch() -> None:
    rng = np.random.default_rng(11)
    x = rng.random((32, 8))
    labels = rng.integers(0, 4, size=32)
    net = Network((8, 6, 4), seed=12)
    before = net.total_cost(x, labels)
    fit(Run.for_network(net, rng, epochs=1, batch_size=32, eta=0.5), x, labels)
    assert net.total_cost(x, labels) < before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_seed_gives_bit_identical_weights_and_history(dtype: type) -> None:
    rng = np.random.default_rng(13)
    x: np.ndarray = rng.random((200, 10)).astype(dtype)
    labels = rng.integers(0, 3, size=200)
    runs = []
    for _ in range(2):
        net = Network((10, 7, 3), seed=21, dtype=dtype)
        history = fit(
            Run.for_network(net, np.random.default_rng(22), epochs=3, batch_size=10, eta=1.0),
            x,
            labels,
            validation=(x[:50], labels[:50]),
        ).history
        runs.append((net, [(r.validation_correct, r.train_cost) for r in history.epochs]))
    for a, b in zip(runs[0][0].params, runs[1][0].params, strict=True):
        assert a.dtype == dtype
        assert np.array_equal(a, b)
    assert runs[0][1] == runs[1][1]
    other = Network((10, 7, 3), seed=21, dtype=dtype)
    fit(Run.for_network(other, np.random.default_rng(23), epochs=3, batch_size=10, eta=1.0), x, labels)
    assert not np.array_equal(other.params[0], runs[0][0].params[0])


def test_sigmoid_is_stable_for_any_input() -> None:
    z = np.array([-1e30, -1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4, 1e30, np.finfo(np.float32).max])
    for dtype in (np.float32, np.float64):
        with warnings.catch_warnings(), np.errstate(all="raise"):
            warnings.simplefilter("error")
            s = sigmoid(z.astype(dtype))
        assert s.dtype == dtype
        assert np.all((s >= 0) & (s <= 1))
        assert s[0] == 0.0 and s[-1] == 1.0 and s[4] == 0.5
        # Within half an ulp of 1.0 of the exact value, in both tails.
        exact = 1 / (1 + np.exp(-z[2:8]))
        np.testing.assert_allclose(s[2:8], exact, rtol=0, atol=float(np.finfo(dtype).eps))


def test_feedforward_predict_and_evaluate_shapes() -> None:
    net = Network((784, 30, 10), seed=0)
    x = np.random.default_rng(0).random((25, 784), dtype=np.float32)
    out = net.feedforward(x)
    assert out.shape == (25, 10) and out.dtype == np.float32
    pred = net.predict(x)
    assert pred.shape == (25,) and pred.dtype == np.int64
    assert net.evaluate((x, pred)) == 25
    # Nielsen's tuples: x columns of (784, 1), integer or one-hot y.
    tuples = [(xi.reshape(784, 1), int(p)) for xi, p in zip(x, pred, strict=True)]
    assert net.evaluate(tuples) == 25
    one_hot = [(xi.reshape(784, 1), np.eye(10)[p].reshape(10, 1)) for xi, p in zip(x, pred, strict=True)]
    images, labels = as_arrays(one_hot, 784)
    assert images.shape == (25, 784) and np.array_equal(labels, pred)


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ([784], "at least 2 layer sizes"),
        ([784, 0, 10], "positive integer"),
        ([784, -3, 10], "positive integer"),
        ([784, 2.5, 10], "positive integer"),
        ("abc", "sequence of integers"),
    ],
)
def test_bad_sizes_are_refused(sizes: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Network(sizes)  # type: ignore[arg-type]


def test_bad_options_and_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="dtype float32 or float64"):
        Network((4, 2), dtype=np.int32)
    with pytest.raises(ValueError, match="unknown activation"):
        Network((4, 2), activation="swish")
    net = Network((4, 3, 2))
    with pytest.raises(ValueError, match=r"expected x of shape \(n, 4\), got \(5, 3\)"):
        net.feedforward(np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"expected images of shape \(n, 4\), got \(5, 2, 2\)"):
        net.count_correct(np.zeros((5, 2, 2)), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match=r"expected labels of shape \(5,\), got \(4,\)"):
        fit(
            Run.for_network(net, np.random.default_rng(0), epochs=1, batch_size=1, eta=1.0),
            np.zeros((5, 4)),
            np.zeros(4, dtype=int),
        )
    with pytest.raises(ValueError, match=r"labels in 0..1"):
        net.count_correct(np.zeros((2, 4)), np.array([0, 7]))
    with pytest.raises(ValueError, match="batch size between 1 and 5"):
        fit(
            Run.for_network(net, np.random.default_rng(0), epochs=1, batch_size=6, eta=1.0),
            np.zeros((5, 4)),
            np.zeros(5, dtype=int),
        )
    with pytest.raises(ValueError, match="eta must be a positive number"):
        fit(
            Run.for_network(net, np.random.default_rng(0), epochs=1, batch_size=1, eta=0.0),
            np.zeros((5, 4)),
            np.zeros(5, dtype=int),
        )
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        fit(
            Run.for_network(net, np.random.default_rng(0), epochs=-1, batch_size=1, eta=1.0),
            np.zeros((5, 4)),
            np.zeros(5, dtype=int),
        )


def test_repr_names_the_layers_their_activations_and_the_parameter_count() -> None:
    net = Network((784, 30, 10))
    assert net.num_params == 784 * 30 + 30 + 30 * 10 + 10  # 23,860
    assert repr(net) == (
        "<Network 784 -> Dense(30, 'sigmoid') -> Dense(10, 'sigmoid'), quadratic cost, float32, 23,860 parameters>"
    )
    small = Network((4, 3, 2), activation="relu", cost="log-likelihood", dtype=np.float64)
    assert repr(small) == (
        "<Network 4 -> Dense(3, 'relu') -> Dense(2, 'softmax'), log-likelihood cost, float64, 23 parameters>"
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_image_is_accepted_flat_or_square_and_answers_without_the_batch_axis(dtype: type) -> None:
    net = Network((784, 30, 10), seed=5, dtype=dtype)
    images: np.ndarray = np.random.default_rng(2).random((4, 784)).astype(dtype)
    labels, probabilities = net.predict(images), net.probabilities(images)
    assert labels.shape == (4,) and probabilities.shape == (4, 10)
    for i, image in enumerate(images):
        for one in (image, image.reshape(28, 28)):
            label = net.predict(one)
            assert label.shape == () and label.dtype == np.int64 and int(label) == labels[i]
            # One row and a batch may take different BLAS paths, so the last bits may differ.
            np.testing.assert_allclose(net.probabilities(one), probabilities[i], rtol=1e-5)
    # A batch of 28 x 28 images is a batch.
    np.testing.assert_array_equal(net.predict(images.reshape(4, 28, 28)), labels)
    np.testing.assert_allclose(net.probabilities(images.reshape(4, 28, 28)), probabilities, rtol=1e-5)


def test_single_image_shapes_do_not_change_what_a_batch_means() -> None:
    net = Network((28, 5, 3), seed=1, dtype=np.float64)
    assert net.predict(np.zeros((28, 28))).shape == (28,)  # 28 examples of 28 inputs, not one image
    assert net.predict(np.zeros(28)).shape == ()
    assert net.probabilities(np.zeros(28)).shape == (3,)
    with pytest.raises(ValueError, match=r"expected x of shape \(n, 28\) or \(28,\), got \(27,\)"):
        net.predict(np.zeros(27))
    mnist = Network((784, 10))
    expected = r"expected x of shape \(n, 784\) or \(784,\), \(28, 28\) or \(n, 28, 28\), got "
    for shape in [(783,), (5, 783), (2, 28, 27), (1, 1, 28, 28)]:
        with pytest.raises(ValueError, match=expected + re.escape(str(shape))):
            mnist.predict(np.zeros(shape))
    with pytest.raises(ValueError, match="expected x as floats"):
        mnist.probabilities(np.zeros((28, 28), dtype=np.uint8))
