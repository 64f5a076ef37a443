"""The layer contract and the spec parser: what a new kind of layer implements, and its command-line form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mnist_nn import BatchNorm, Conv2D, Dense, Dropout, MaxPool2D, Network
from mnist_nn.models import load_model, save_model
from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.layers import LAYER_KINDS, AvgPool2D, Layer, LayerStep, Shape, StoredArray
from mnist_nn.nn.specs import FORMS, SPEC_FORMS, layer_from_spec, spec_of
from mnist_nn.train.optimizers import SGD
from mnist_nn.train.step import Step
from tests.test_conv import _batch, _numeric_gradient

# --- the spec parser -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "layer", "written"),
    [
        ("dense30", Dense(30), "dense30"),
        ("conv20x5", Conv2D(20, 5), "conv20x5"),
        ("pool2", MaxPool2D(2), "pool2"),
        ("avgpool3", AvgPool2D(3), "avgpool3"),
        ("dropout0.5", Dropout(0.5), "dropout0.5"),
        ("dropout.25", Dropout(0.25), "dropout0.25"),
        ("dropout0", Dropout(0.0), "dropout0.0"),
        ("bn", BatchNorm(), "bn"),
    ],
)
def test_each_form_parses_and_is_written_back(spec: str, layer: Layer, written: str) -> None:
    parsed = layer_from_spec(spec)
    assert type(parsed) is type(layer) and parsed.describe() == layer.describe()
    assert spec_of(parsed) == written and layer_from_spec(written).describe() == layer.describe()


def test_every_kind_of_layer_has_a_spec_form() -> None:
    assert sorted(row.kind for row in SPEC_FORMS) == sorted(LAYER_KINDS)
    assert FORMS == "dense<N>, conv<F>x<K>[p<P>], pool<P>, avgpool<P>, dropout<rate>, bn"


@pytest.mark.parametrize("spec", ["fc100", "dense", "dense-3", "conv20", "pool2x2", "Dense30", "dropout1", 30])
def test_a_spec_of_no_form_is_refused_with_the_forms(spec: Any) -> None:
    with pytest.raises(ValueError, match=rf"^unknown layer {spec!r}; expected one of the forms dense<N>, "):
        layer_from_spec(spec)


def test_a_spec_of_a_form_whose_values_no_layer_takes_is_refused_by_the_layer() -> None:
    with pytest.raises(ValueError, match="positive integer pool size"):
        layer_from_spec("avgpool0")
    with pytest.raises(ValueError, match="positive integer layer size"):
        layer_from_spec("dense0")


# --- the layer contract: a kind without parameters implements five methods ---------------------


class _Negate(Layer):
    """a = -x, for the contract: only ``build``, ``forward``, ``backward``, ``plan`` and ``describe``."""

    kind = "negate"

    def build(self, input_shape: Shape) -> Shape:
        self.input_shape = self.output_shape = tuple(input_shape)
        return self.output_shape

    def forward(self, x: FloatArray) -> FloatArray:
        return np.negative(x)

    def backward(
        self, x: FloatArray, a: FloatArray, delta: FloatArray, *, output: bool
    ) -> tuple[list[FloatArray], FloatArray]:
        return [], np.negative(delta)

    def plan(self, m: int, *, ones_out: bool) -> LayerStep:
        return _NegateStep(self, m, ones_out)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}


class _NegateStep(LayerStep):
    def __init__(self, layer: _Negate, m: int, ones_out: bool) -> None:
        n = layer.output_shape[0]
        self.out = np.ones((m, n + 1), layer.dtype) if ones_out else np.empty((m, n), layer.dtype)
        self.output, self.out_t = self.out[:, :n], self.out.T
        self.delta = np.empty((m, n), layer.dtype)
        self.grads = []

    def forward(self, x: FloatArray, rng: np.random.Generator) -> None:
        np.negative(x, out=self.output)

    def backward(self, x_t: FloatArray, below: FloatArray | None, output: bool) -> None:
        if below is not None:
            np.negative(self.delta, out=below)


def _negated(seed: int) -> Network:
    layers = [Dense(4), _Negate(), Dense(3)]
    return Network(layers, input_size=5, dtype=np.float64, activation="tanh", cost="log-likelihood", seed=seed)


def test_a_kind_without_parameters_needs_only_the_five_methods() -> None:
    net = _negated(1)
    assert net.sizes == (5, 4, 4, 3) and len(net.params) == 2 and net.layers[1].file_shapes() == {}
    assert net.layers[1].activation.name == "identity"  # the network gives it no activation
    assert _Negate.from_description({"kind": "negate"}).describe() == {"kind": "negate"}
    with pytest.raises(ValueError, match="expected a negate layer with keys kind; unknown rate"):
        _Negate.from_description({"kind": "negate", "rate": 0.5})
    x, y = _batch(3, 6, 5, 3)
    grad_w, grad_b = net.backprop(x, y)
    numeric = _numeric_gradient(net, lambda: net.cost.fn(net.feedforward(x), y))
    for gw, gb, g in zip(grad_w, grad_b, numeric, strict=True):
        np.testing.assert_allclose(gw, g[:-1], rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(gb, g[-1], rtol=1e-5, atol=1e-8)
    # The fast step takes it, and the run's dropout does not reach it (it has no neurons).
    optimizer = SGD()
    optimizer.plan(net.params)
    step = Step(net, 6, optimizer, dropout=0.5, rng=np.random.default_rng(0))
    assert isinstance(step.steps[1], _NegateStep)
    xb = np.hstack([x, np.ones((6, 1))])
    step(xb, xb.T, y, 0.0, 1.0)  # scale 0: the output as trained, no update
    hidden = step.steps[0].output
    np.testing.assert_array_equal(step.steps[1].output, -hidden)
    assert np.any(hidden == 0)  # the dense layer below it dropped some neurons


# --- the model file's arrays, from each kind's declaration -------------------------------------


class _Scale(_Negate):
    """a = x * s, one parameter s (n,) stored whole as ``s``: the default declaration of stored arrays."""

    kind = "scale"
    param_names = ("s",)

    def param_shapes(self) -> list[Shape]:
        return [self.output_shape]

    def initialize(self, rng: np.random.Generator | None, init: str, dtype: np.dtype[Any]) -> None:
        self.dtype = dtype
        self.params = [np.arange(1.0, 1.0 + self.output_shape[0], dtype=dtype)]


def test_stored_arrays_map_params_to_file_arrays_and_back() -> None:
    scale = _Scale()
    scale.build((3,))
    scale.initialize(None, "normal", np.dtype(np.float32))
    assert scale.stored_arrays() == [StoredArray("s", 0, slice(None), (3,))]
    assert scale.file_arrays(scale.params)["s"].tolist() == [1.0, 2.0, 3.0]
    (again,) = scale.params_from_file(scale.file_arrays(scale.params), np.dtype(np.float32))
    np.testing.assert_array_equal(again, scale.params[0])
    conv = Conv2D(4, 3)
    conv.build((6, 6, 2))
    conv.initialize(np.random.default_rng(0), "he", np.dtype(np.float64))
    arrays = conv.file_arrays(conv.params)
    assert {k: v.shape for k, v in arrays.items()} == conv.file_shapes() == {"w": (3, 3, 2, 4), "b": (4,)}
    assert np.shares_memory(arrays["w"], conv.params[0])  # views: saving copies nothing extra
    (fused,) = conv.params_from_file(arrays, np.dtype(np.float64))
    np.testing.assert_array_equal(fused, conv.params[0])


def test_model_files_of_every_kind_round_trip(tmp_path: Path) -> None:
    layers = [Conv2D(2, 5), MaxPool2D(2), Conv2D(3, 3), AvgPool2D(2), Dropout(0.5), Dense(8), Dense(10)]
    net = Network(layers, activation="relu", cost="log-likelihood", init="he", seed=3)
    path = tmp_path / "kinds.npz"
    save_model(path, net)
    loaded = load_model(path).network
    assert loaded.describe() == net.describe()
    for mine, theirs in zip(loaded.params, net.params, strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_the_layers_flag_help_names_every_spec_form() -> None:
    from mnist_nn.cli.train import build_train_parser

    help_text = " ".join(build_train_parser().format_help().split())
    assert all(row.form in help_text for row in SPEC_FORMS)
