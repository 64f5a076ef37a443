"""ONNX export of a network, and exported networks run back through ONNX Runtime.

ONNX is the exchange format that ONNX Runtime (in Python, C++, C#, Java,
JavaScript and the browser), OpenCV's dnn module and Netron read.
``onnx_model`` writes a network as an ONNX graph with the ``onnx`` package's
helper API, ``export_onnx`` writes it to a file, and ``load_onnx`` reads such
a file back into ONNX Runtime for ``mnist-nn predict``. Both packages are
optional: ``onnx`` is the ``export`` extra (``pip install 'mnist-nn[export]'``),
ONNX Runtime is installed apart (``pip install onnxruntime``); each is
imported when first needed.

The graph computes what ``Network.feedforward`` and ``Network.probabilities``
compute, in float32 (a float64 network's weights are rounded to float32):

    input          images_Nx784          (N, 784) float32 pixels in [0, 1], as ``load_data`` gives them,
                   or images_Nx1x28x28   (N, 1, 28, 28) for a network with a convolution or a pool
    output         activations           (N, K) the output layer's activations (``feedforward``)
                   probabilities         (N, K) softmax outputs as they are, sigmoid outputs divided
                                         by their sum (``probabilities``)

Every kind of layer is a node or two: ``Dense`` a ``Gemm``, ``Conv2D`` a
``Conv`` (with its padding), the pools ``MaxPool`` and ``AveragePool``,
``BatchNorm`` a ``BatchNormalization`` with its running mean and variance
and its epsilon, each followed by its activation (``Sigmoid``, ``Tanh``,
``Relu``, ``Softmax``); dropout is the identity outside training, so it is
no node at all. The deskewing transform (``mnist_nn.nn.transforms``) is part
of the graph too: its image moments in float64, its bilinear warp in float32,
as the package computes them, with ``GatherElements`` reading the four
neighbours of each source point.

Layouts: the package keeps one example's feature maps as (H, W, C),
flattened, and a convolution's kernels as a (K*K*C + 1, F) array in (K, K,
C) order with the biases as its last row; ONNX's ``Conv`` and pools work on
(N, C, H, W) and want kernels as (F, C, K, K). The graph keeps feature maps
in ONNX's layout, the kernels are transposed, and a dense layer reading
feature maps gets its weight rows permuted to ONNX's ``Flatten`` order
(C, H, W), so no activation is transposed but the output of a network
that ends in a convolution.

The model carries metadata properties (strings): ``dataset``, ``classes``
(a JSON list), ``input`` and ``probabilities`` (what they are), ``layers``
(the layers' JSON descriptions), ``cost``, ``preprocess``, ``model_file``, the recorded
counts of the model file (``test_correct``, ``test_total``,
``validation_correct``, ``validation_total`` and ``accuracy`` in words) and
``mnist_nn_version``. The graph uses opset 13 and IR version 7 (2020), old
enough for the runtimes in use (tested with ONNX Runtime 1.19 to 1.32). The
same model file exports to the same bytes.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mnist_nn._version import __version__
from mnist_nn.config import IMAGE_SIDE
from mnist_nn.errors import ExportError, ModelFileError
from mnist_nn.files import PathLike, write_output
from mnist_nn.models import SavedModel
from mnist_nn.nn.activations import Activation, FloatArray
from mnist_nn.nn.batchnorm import BatchNorm
from mnist_nn.nn.layers import AvgPool2D, Conv2D, Dense, Dropout, Layer, MaxPool2D, Shape
from mnist_nn.nn.network import Network
from mnist_nn.nn.warp import CENTER, PAD_MAX, PAD_OFFSET, PAD_SIDE
from mnist_nn.text import first_line, one_line, short

if TYPE_CHECKING:
    from onnx import ModelProto

OPSET = 13  # Softmax along one axis, ReduceSum's axes as an input
IR_VERSION = 7  # the IR of opset 13: older runtimes read the file too
ACTIVATIONS_OUTPUT = "activations"
PROBABILITIES_OUTPUT = "probabilities"
EXPORT_INSTALL = "pip install 'mnist-nn[export]'"
RUNTIME_INSTALL = "pip install onnxruntime"
MAX_ONNX_BYTES = 2**31 - 1  # protobuf's limit on one message: larger files keep weights outside, refused here
_FLOAT = np.dtype(np.float32)
_ONNX_ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}
_RECORDED = ("test_correct", "test_total", "validation_correct", "validation_total")


def _import_onnx() -> ModuleType:
    """The ``onnx`` package, or ExportError saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise ExportError(f"ONNX export needs the onnx package: {EXPORT_INSTALL}") from None
    return onnx


def _import_onnxruntime() -> Any:
    """The ``onnxruntime`` package (untyped), or ExportError saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(f"running an ONNX model needs ONNX Runtime: {RUNTIME_INSTALL}") from None
    return onnxruntime


# --- the graph ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tensor:
    """A tensor of the graph and the shape of one example in the package's terms, (n,) or (H, W, C).

    ``nchw``: the tensor is (N, C, H, W), ONNX's layout of feature maps;
    otherwise it is (N, n), n values per example in the package's (H, W, C) order.
    """

    name: str
    shape: Shape
    nchw: bool


class _Graph:
    """The nodes and initializers of the graph being built, each under a name of its own."""

    def __init__(self, onnx: ModuleType) -> None:
        self.onnx = onnx
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._used: dict[str, int] = {}

    def name(self, stem: str) -> str:
        """A name not used yet: ``stem``, then ``stem_2``, ``stem_3``..."""
        n = self._used.get(stem, 0) + 1
        self._used[stem] = n
        return stem if n == 1 else f"{stem}_{n}"

    def constant(self, stem: str, array: npt.ArrayLike, dtype: npt.DTypeLike = _FLOAT) -> str:
        """An initializer holding ``array`` as ``dtype``; returns its name."""
        name = self.name(stem)
        values = np.ascontiguousarray(np.asarray(array, dtype=dtype))
        self.initializers.append(self.onnx.numpy_helper.from_array(values, name))
        return name

    def ints(self, stem: str, values: Sequence[int]) -> str:
        """An int64 vector initializer (a shape, axes, pads)."""
        return self.constant(stem, list(values), np.int64)

    def node(self, op: str, inputs: Sequence[str], stem: str | None = None, **attributes: Any) -> str:
        """Add a node of one output; returns the output's name (also the node's)."""
        out = self.name(stem or op.lower())
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [out], name=out, **attributes))
        return out


def _to_nchw(g: _Graph, t: _Tensor, image: tuple[int, int, int]) -> _Tensor:
    """``t`` as (N, C, H, W) feature maps of the package's (H, W, C) ``image``."""
    if t.nchw:
        return t
    h, w, c = image
    if c == 1:  # (H, W, 1) and (1, H, W) are the same values in the same order
        return _Tensor(g.node("Reshape", [t.name, g.ints("shape", (-1, 1, h, w))]), image, True)
    nhwc = g.node("Reshape", [t.name, g.ints("shape", (-1, h, w, c))])
    return _Tensor(g.node("Transpose", [nhwc], perm=[0, 3, 1, 2]), image, True)


def _to_flat(g: _Graph, t: _Tensor) -> _Tensor:
    """``t`` as (N, n) rows in the package's (H, W, C) order."""
    if not t.nchw:
        return t
    h, w, c = t.shape
    name = t.name if c == 1 else g.node("Transpose", [t.name], perm=[0, 2, 3, 1])
    return _Tensor(g.node("Flatten", [name], axis=1), (h * w * c,), False)


def _activate(g: _Graph, x: str, activation: Activation) -> str:
    """The activation applied to ``x``; softmax over axis 1 (a dense layer's neurons, or a map's channels)."""
    name = activation.name
    if name == "identity":
        return x
    if name == "softmax":
        return g.node("Softmax", [x], axis=1)
    if name not in _ONNX_ACTIVATIONS:
        raise ExportError(f"the {name} activation has no ONNX export")
    return g.node(_ONNX_ACTIVATIONS[name], [x])


def _float32(array: FloatArray) -> npt.NDArray[np.float32]:
    return np.asarray(array, dtype=np.float32)


def _dense(g: _Graph, layer: Layer, t: _Tensor) -> _Tensor:
    """Gemm: x @ weights + biases, then the activation.

    Feature maps are flattened in ONNX's (C, H, W) order, so the weights'
    rows, which follow the package's (H, W, C) order, are permuted to match.
    """
    assert isinstance(layer, Dense)
    weights, biases = layer.weights_and_biases(layer.params)
    if t.nchw and t.shape[2] > 1:
        h, w, c = t.shape
        weights = weights[np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).ravel()]
        x = g.node("Flatten", [t.name], axis=1)
    else:
        x = _to_flat(g, t).name
    w_name, b_name = g.constant("dense_weights", _float32(weights)), g.constant("dense_biases", _float32(biases))
    z = g.node("Gemm", [x, w_name, b_name], "dense")
    return _Tensor(_activate(g, z, layer.activation), layer.output_shape, False)


def _conv(g: _Graph, layer: Layer, t: _Tensor) -> _Tensor:
    """Conv with the kernels as (F, C, K, K) and the layer's padding, then the activation."""
    assert isinstance(layer, Conv2D)
    k, p, c, f = layer.kernel, layer.padding, layer.image[2], layer.filters
    kernels, biases = layer.weights_and_biases(layer.params)
    w_name = g.constant("conv_kernels", _float32(kernels).reshape(k, k, c, f).transpose(3, 2, 0, 1))
    b_name = g.constant("conv_biases", _float32(biases))
    x = _to_nchw(g, t, layer.image).name
    z = g.node("Conv", [x, w_name, b_name], "conv", kernel_shape=[k, k], pads=[p, p, p, p], strides=[1, 1])
    h, w, _ = layer.output_shape
    return _Tensor(_activate(g, z, layer.activation), (h, w, f), True)


def _pool(g: _Graph, layer: Layer, t: _Tensor) -> _Tensor:
    """MaxPool or AveragePool over P x P blocks, stride P."""
    assert isinstance(layer, MaxPool2D | AvgPool2D)
    op = "MaxPool" if isinstance(layer, MaxPool2D) else "AveragePool"
    x = _to_nchw(g, t, layer.image).name
    h, w, c = layer.output_shape
    pooled = g.node(op, [x], op.lower(), kernel_shape=[layer.pool] * 2, strides=[layer.pool] * 2)
    return _Tensor(pooled, (h, w, c), True)


def _batch_norm(g: _Graph, layer: Layer, t: _Tensor) -> _Tensor:
    """BatchNormalization with the running mean and variance and the layer's epsilon, then the activation.

    The features are the channels of feature maps (axis 1 of NCHW), or a dense layer's neurons.
    """
    assert isinstance(layer, BatchNorm)
    shape = layer.input_shape
    x = _to_nchw(g, t, (shape[0], shape[1], shape[2])) if len(shape) == 3 else _to_flat(g, t)
    (gamma, beta), (mean, var) = layer.params
    arrays = {"gamma": gamma, "beta": beta, "mean": mean, "var": var}
    names = [g.constant(f"batchnorm_{what}", _float32(array)) for what, array in arrays.items()]
    y = g.node("BatchNormalization", [x.name, *names], "batchnorm", epsilon=layer.eps)
    return _Tensor(_activate(g, y, layer.activation), x.shape, x.nchw)


def _dropout(g: _Graph, layer: Layer, t: _Tensor) -> _Tensor:
    """Dropout passes its input through outside training: no node."""
    return t


_EXPORTS: dict[type[Layer], Callable[[_Graph, Layer, _Tensor], _Tensor]] = {
    Dense: _dense,
    Conv2D: _conv,
    MaxPool2D: _pool,
    AvgPool2D: _pool,
    BatchNorm: _batch_norm,
    Dropout: _dropout,
}


def _deskew(g: _Graph, x: str) -> str:
    """``deskew_images`` as nodes, on (N, 784) float32 images: the same operations, in the same precisions.

    The moments, the slant and the offsets in float64; each output pixel's
    source point in float32, as ``Warper.coordinates`` adds its column and
    row terms; then ``Warper.sample``: clipped to the zero-bordered 32x32
    grid, its four neighbours gathered, interpolated in x, then in y.
    """
    side, double = IMAGE_SIDE, g.onnx.TensorProto.DOUBLE
    steps = np.arange(side, dtype=np.float64)

    def const(value: float, dtype: npt.DTypeLike = np.float64) -> str:
        return g.constant("deskew_constant", value, dtype)

    block = g.node("Cast", [g.node("Reshape", [x, g.ints("shape", (-1, side, side))])], "deskew_block", to=double)
    rows = g.node("ReduceSum", [block, g.ints("axes", [2])], "deskew_rows", keepdims=0)  # (N, 28): mass by row y
    cols = g.node("ReduceSum", [block, g.ints("axes", [1])], "deskew_cols", keepdims=0)  # (N, 28): by column x
    total = g.node("ReduceSum", [rows, g.ints("axes", [1])], "deskew_total", keepdims=0)
    inked = g.node("Greater", [total, const(0.0)])
    weight = g.node("Where", [inked, total, const(1.0)], "deskew_weight")
    by_step = g.constant("deskew_steps", steps, np.float64)
    by_square = g.constant("deskew_squares", steps**2, np.float64)
    my = g.node("Div", [g.node("MatMul", [rows, by_step]), weight], "deskew_my")
    mx = g.node("Div", [g.node("MatMul", [cols, by_step]), weight], "deskew_mx")
    var_y = g.node("Sub", [g.node("Div", [g.node("MatMul", [rows, by_square]), weight]), g.node("Mul", [my, my])])
    moment = g.node("MatMul", [g.node("MatMul", [block, by_step]), by_step])  # sum over y, x of y x pixel
    cov = g.node("Sub", [g.node("Div", [moment, weight]), g.node("Mul", [mx, my])], "deskew_cov")
    floor = const(1e-3)
    ratio = g.node("Div", [cov, g.node("Max", [var_y, floor])])
    slant = g.node("Where", [g.node("Greater", [var_y, floor]), ratio, const(0.0)], "deskew_slant")
    mx = g.node("Where", [inked, mx, const(CENTER)])  # a blank image is left where it is
    my = g.node("Where", [inked, my, const(CENTER)])
    center = const(CENTER)
    shift_x = g.node("Sub", [g.node("Sub", [mx, center]), g.node("Mul", [slant, center])])
    shift_x = g.node("Add", [shift_x, const(PAD_OFFSET)])
    shift_y = g.node("Add", [g.node("Sub", [my, center]), const(PAD_OFFSET)])
    axis1 = g.ints("axes", [1])
    row_x = g.node(
        "Add", [g.node("Mul", [g.node("Unsqueeze", [slant, axis1]), by_step]), g.node("Unsqueeze", [shift_x, axis1])]
    )
    row_y = g.node("Add", [by_step, g.node("Unsqueeze", [shift_y, axis1])])
    return _sample(g, x, row_x, row_y)


def _sample(g: _Graph, x: str, row_x: str, row_y: str) -> str:
    """``Warper.sample``: (N, 784) images read bilinearly at source x = column + row_x[y], y = row_y[y]."""
    side, flt = IMAGE_SIDE, g.onnx.TensorProto.FLOAT
    axis2, flat_shape = g.ints("axes", [2]), g.ints("shape", (-1, side * side))
    columns = g.constant("deskew_columns", np.arange(side))  # the column term (1 x) of the source x; 0 x of y
    zeros = g.constant("deskew_zeros", np.zeros(side))
    low, high = g.constant("warp_low", 0.0), g.constant("warp_high", PAD_MAX)
    coordinates = []
    for row, column in ((row_x, columns), (row_y, zeros)):
        q = g.node("Add", [g.node("Unsqueeze", [g.node("Cast", [row], to=flt), axis2]), column])  # (N, 28, 28)
        coordinates.append(g.node("Clip", [g.node("Reshape", [q, flat_shape]), low, high], "warp_source"))
    qx, qy = coordinates
    fx_floor, fy_floor = g.node("Floor", [qx]), g.node("Floor", [qy])
    fx, fy = g.node("Sub", [qx, fx_floor], "warp_fx"), g.node("Sub", [qy, fy_floor], "warp_fy")
    offset = g.node("Add", [fx_floor, g.node("Mul", [fy_floor, g.constant("warp_side", PAD_SIDE)])])
    index = g.node("Cast", [offset], "warp_index", to=g.onnx.TensorProto.INT64)
    before, after = int(PAD_OFFSET), PAD_SIDE - side - int(PAD_OFFSET)
    square = g.node("Reshape", [x, g.ints("shape", (-1, side, side))])
    padded = g.node("Pad", [square, g.ints("pads", (0, before, before, 0, after, after))], "warp_padded")
    grid = g.node("Reshape", [padded, g.ints("shape", (-1, PAD_SIDE * PAD_SIDE))])
    corners = []
    for step in (0, 1, PAD_SIDE, PAD_SIDE + 1):
        at = index if step == 0 else g.node("Add", [index, g.constant("warp_step", step, np.int64)])
        corners.append(g.node("GatherElements", [grid, at], "warp_corner", axis=1))
    top_left, top_right, bottom_left, bottom_right = corners

    def lerp(a: str, b: str, t: str) -> str:
        return g.node("Add", [a, g.node("Mul", [g.node("Sub", [b, a]), t])], "warp_lerp")

    top, bottom = lerp(top_left, top_right, fx), lerp(bottom_left, bottom_right, fx)
    one = g.constant("warp_one", 1.0)
    return g.node("Clip", [lerp(top, bottom, fy), g.constant("warp_zero", 0.0), one], "deskewed")


# --- the model ---------------------------------------------------------------------------


def _image_input(network: Network) -> bool:
    """Whether the graph takes (N, 1, side, side) images: the network has a convolution or a pool."""
    return any(isinstance(layer, Conv2D | MaxPool2D | AvgPool2D) for layer in network.layers)


def check_exportable(network: Network) -> None:
    """Raise ExportError (one line) unless every part of ``network`` has an ONNX export.

    Raises:
        ExportError: a kind of layer, an activation or an input transform that the export does not know.
    """
    for i, layer in enumerate(network.layers):
        if type(layer) not in _EXPORTS:
            known = ", ".join(kind.kind for kind in _EXPORTS)
            raise ExportError(f"layer {i + 1} ({layer.kind}) has no ONNX export; the export knows {known}")
        name = layer.activation.name
        if name not in _ONNX_ACTIVATIONS and name not in ("identity", "softmax"):
            raise ExportError(f"layer {i + 1}'s activation {name} has no ONNX export")
    transform = network.transform.name if network.transform is not None else ""
    if transform not in ("", "deskew"):
        raise ExportError(f"the input transform {transform!r} has no ONNX export")
    if transform and network.input_size != IMAGE_SIDE * IMAGE_SIDE:
        raise ExportError(f"deskewing needs {IMAGE_SIDE}x{IMAGE_SIDE} images, not {network.input_size} inputs")
    if _image_input(network) and math.isqrt(network.input_size) ** 2 != network.input_size:
        raise ExportError(f"a convolutional network's {network.input_size} inputs are no square image")


def _input(g: _Graph, network: Network) -> tuple[Any, _Tensor]:
    """The graph's input (its value info) and the tensor the first layer reads, through the input transform."""
    helper, n = g.onnx.helper, network.input_size
    if _image_input(network):
        side = math.isqrt(n)
        name, dims = f"images_Nx1x{side}x{side}", ["N", 1, side, side]
        doc = f"float32 pixels in [0, 1] of N {side}x{side} grayscale images, as (N, 1, {side}, {side}) (NCHW)"
        t = _Tensor(name, (side, side, 1), True)
    else:
        name, dims = f"images_Nx{n}", ["N", n]
        doc = f"float32 pixels in [0, 1] of N images, one row of {n} values each (row by row)"
        t = _Tensor(name, (n,), False)
    doc += ", as mnist_nn.data.load_data gives them"
    info = helper.make_tensor_value_info(name, g.onnx.TensorProto.FLOAT, dims, doc_string=doc)
    if network.transform is not None:  # deskew (check_exportable refuses the others)
        t = _Tensor(_deskew(g, _to_flat(g, t).name), (n,), False)
    return info, t


def _outputs(g: _Graph, network: Network, t: _Tensor) -> list[Any]:
    """Identity nodes naming the outputs, "activations" and "probabilities", and their value infos."""
    helper, k = g.onnx.helper, network.sizes[-1]
    activations = g.node("Identity", [_to_flat(g, t).name], ACTIVATIONS_OUTPUT)
    if network.cost.output.name == "softmax":
        g.node("Identity", [activations], PROBABILITIES_OUTPUT)
    else:  # sigmoid outputs divided by their sum, a sum of 0 by 1 (Network.probabilities)
        total = g.node("ReduceSum", [activations, g.ints("axes", [1])], "output_sum", keepdims=1)
        zero, one = g.constant("output_zero", 0.0), g.constant("output_one", 1.0)
        total = g.node("Where", [g.node("Equal", [total, zero]), one, total], "output_total")
        g.node("Div", [activations, total], PROBABILITIES_OUTPUT)
    docs = {
        ACTIVATIONS_OUTPUT: f"the output layer's {network.cost.output.name} activations, (N, {k}) float32",
        PROBABILITIES_OUTPUT: f"each image's probability of each class, (N, {k}) float32 "
        f"({network.probability_kind}); its argmax is the prediction",
    }
    return [
        helper.make_tensor_value_info(name, g.onnx.TensorProto.FLOAT, ["N", k], doc_string=doc)
        for name, doc in docs.items()
    ]


def onnx_model(network: Network, properties: Mapping[str, str] | None = None) -> ModelProto:
    """``network`` as a checked ONNX model (see the module docstring for its inputs and outputs).

    Args:
        network: any network of Dense, Conv2D, MaxPool2D, AvgPool2D, BatchNorm and Dropout
            layers, with or without the deskewing transform.
        properties: metadata properties to store in the model, besides ``mnist_nn_version``.

    Returns:
        The ``onnx.ModelProto``, checked by ``onnx.checker.check_model`` (with shape inference).

    Raises:
        ExportError: the onnx package is missing, or a part of the network has no ONNX export.
    """
    onnx = _import_onnx()
    check_exportable(network)
    g = _Graph(onnx)
    inputs, t = _input(g, network)
    for layer in network.layers:
        t = _EXPORTS[type(layer)](g, layer, t)
    outputs = _outputs(g, network, t)
    helper = onnx.helper
    graph = helper.make_graph(
        g.nodes, "mnist_nn", [inputs], outputs, g.initializers, doc_string=f"mnist_nn network: {network!r}"
    )
    model: ModelProto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="mnist_nn",
        producer_version=__version__,
        doc_string="A network trained with mnist_nn (a from-scratch NumPy network), exported by mnist-nn export",
    )
    helper.set_model_props(model, {**(properties or {}), "mnist_nn_version": __version__})
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx's ValidationError, or shape inference's error: a bug here, said in one line
        raise ExportError(f"the exported graph does not pass onnx.checker: {first_line(exc)}") from exc
    return model


def model_properties(model: SavedModel) -> dict[str, str]:
    """The metadata properties of a model file's export: data set, classes, what the graph is, recorded counts."""
    network, metadata = model.network, model.metadata
    properties = {
        "dataset": model.dataset,
        "classes": json.dumps(list(model.classes)),
        "input": "float32 pixels in [0, 1] as mnist_nn.data.load_data gives them, "
        + ("(N, 1, 28, 28)" if _image_input(network) else f"(N, {network.input_size})"),
        "probabilities": network.probability_kind,
        "layers": json.dumps(network.describe()),
        "cost": network.cost.name,
        "preprocess": network.transform.name if network.transform is not None else "",
        "model_file": model.path.name,
    }
    counts = {key: metadata[key] for key in _RECORDED if _is_count(metadata.get(key))}
    properties.update({key: str(value) for key, value in counts.items()})
    words = []
    for split in ("test", "validation"):
        correct, total = counts.get(f"{split}_correct"), counts.get(f"{split}_total")
        if correct is not None and total:
            words.append(f"{split} {correct} / {total} ({100.0 * correct / total:.2f}%)")
    if words:
        properties["accuracy"] = ", ".join(words)
    return properties


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def export_onnx(model: SavedModel | Network, path: PathLike) -> int:
    """Write ``model`` as an ONNX file at ``path``, atomically (``mnist_nn.files.write_output``).

    Args:
        model: a loaded model file (its data set, class names and recorded
            counts become metadata properties), or a network alone.
        path: the ``.onnx`` file to write; an earlier file there is replaced whole, or kept if writing fails.

    Returns:
        The number of bytes written.

    Raises:
        ExportError: the onnx package is missing, or a part of the network has no ONNX export.
        OSError: the file cannot be written.
    """
    network, properties = (model.network, model_properties(model)) if isinstance(model, SavedModel) else (model, None)
    data: bytes = onnx_model(network, properties).SerializeToString()
    write_output(Path(path), data)
    return len(data)


# --- running an exported model -----------------------------------------------------------


@dataclass(frozen=True)
class OnnxModel:
    """An ONNX model in an ONNX Runtime session, as ``mnist-nn predict`` uses it.

    ``input_shape`` is one example's, (784,) or (1, 28, 28); ``classes``,
    ``dataset`` and ``probability_kind`` come from the metadata properties
    (the outputs' numbers, "mnist" and the output's name for a model that
    has none).
    """

    path: Path
    session: Any
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    classes: tuple[str, ...]
    dataset: str
    probability_kind: str
    properties: dict[str, str]
    runtime: str  # "ONNX Runtime 1.20.1"

    def probabilities(self, images: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """(m, K) float64: the model's output for (m, 784) images (reshaped to its input's shape).

        Raises:
            ValueError: images that are not (m, 784) values.
            ExportError: ONNX Runtime failed to run the model, or its output is not (m, K).
        """
        x = np.asarray(images, dtype=np.float32)
        n_in = math.prod(self.input_shape)
        if x.ndim != 2 or x.shape[1] != n_in:
            raise ValueError(f"expected images of shape (n, {n_in}), got {x.shape}")
        feed = {self.input_name: np.ascontiguousarray(x.reshape(-1, *self.input_shape))}
        try:
            (out,) = self.session.run([self.output_name], feed)
        except Exception as exc:  # onnxruntime's own exception types: the model could not run
            raise ExportError(f"{one_line(str(self.path))}: ONNX Runtime failed: {first_line(exc)}") from exc
        probs = np.asarray(out, dtype=np.float64)
        if probs.shape != (x.shape[0], len(self.classes)):
            raise ExportError(
                f"{one_line(str(self.path))}: expected an output of shape {(x.shape[0], len(self.classes))}, "
                f"got {probs.shape}"
            )
        return probs


def load_onnx(path: PathLike) -> OnnxModel:
    """Read an ONNX file into an ONNX Runtime session (CPU) for prediction.

    The file is read whole and given to ONNX Runtime as bytes, so a model
    that keeps its weights in other files (ONNX's external data) is refused
    rather than read from wherever it points. It must take one float input of
    shape (N, 784) or (N, 1, 28, 28) and give (N, K) outputs; the one named
    "probabilities" is used where there is one, else the first.

    Raises:
        ExportError: ONNX Runtime is not installed.
        ModelFileError: a missing, unreadable or invalid file, or a model of other inputs or outputs;
            the one-line message starts with the path.
    """
    ort = _import_onnxruntime()
    path = Path(path)
    where = one_line(str(path))
    data = _read_onnx_file(path, where)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ONNX Runtime's warnings are not the user's business
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types for a file it cannot take
        raise ModelFileError(f"{where}: not a model ONNX Runtime can run ({first_line(exc)})") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].type != "tensor(float)" or _example_shape(inputs[0].shape) is None:
        got = ", ".join(f"{i.name} {i.type} {short(i.shape)}" for i in inputs) or "none"
        raise ModelFileError(f"{where}: expected one float input of shape (N, 784) or (N, 1, 28, 28), got {got}")
    by_name = {o.name: o for o in outputs}
    output = by_name.get(PROBABILITIES_OUTPUT, outputs[0] if outputs else None)
    if output is None or len(output.shape) != 2:
        got = ", ".join(f"{o.name} {short(o.shape)}" for o in outputs) or "none"
        raise ModelFileError(f"{where}: expected an output of shape (N, K), got {got}")
    properties = dict(session.get_modelmeta().custom_metadata_map)
    classes = _classes(properties.get("classes"), output.shape[1], where)
    return OnnxModel(
        path=path,
        session=session,
        input_name=inputs[0].name,
        input_shape=_example_shape(inputs[0].shape) or (),
        output_name=output.name,
        classes=classes,
        dataset=one_line(properties.get("dataset", "mnist"), 40),
        probability_kind=one_line(properties.get("probabilities", f"the model's output {output.name!r}"), 80),
        properties=properties,
        runtime=f"ONNX Runtime {ort.__version__}",
    )


def _read_onnx_file(path: Path, where: str) -> bytes:
    """The bytes of a regular file of at most ``MAX_ONNX_BYTES``, or ModelFileError (never opens a FIFO or device)."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise ModelFileError(f"{where}: is a directory, expected an ONNX model (.onnx)")
        if not stat.S_ISREG(mode):
            raise ModelFileError(f"{where}: not a regular file, expected an ONNX model (.onnx)")
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise ModelFileError(f"{where}: empty file, expected an ONNX model (.onnx)")
            if size > MAX_ONNX_BYTES:
                raise ModelFileError(f"{where}: {size:,} bytes, more than an ONNX model holds ({MAX_ONNX_BYTES:,})")
            return f.read(MAX_ONNX_BYTES + 1)
    except FileNotFoundError:
        raise ModelFileError(f"{where}: no such file") from None
    except OSError as exc:
        raise ModelFileError(f"{where}: cannot read the ONNX model: {exc.strerror or exc}") from None


def _example_shape(dims: Sequence[Any]) -> tuple[int, ...] | None:
    """One example's shape from an input's dims, (784,) or (1, 28, 28), whatever the batch dim; else None."""
    shape = tuple(dims[1:])
    side = IMAGE_SIDE
    if shape in ((side * side,), (1, side, side)):
        return tuple(int(d) for d in shape)
    return None


def _classes(text: str | None, outputs: Any, where: str) -> tuple[str, ...]:
    """The class names of the ``classes`` property (a JSON list), else the outputs' numbers."""
    if not isinstance(outputs, int) or outputs < 1:
        raise ModelFileError(f"{where}: expected a fixed number of outputs, got {short(outputs)}")
    try:
        names = json.loads(text) if text is not None else None
    except ValueError:
        names = None
    if not isinstance(names, list) or len(names) != outputs or not all(isinstance(n, str) and n for n in names):
        return tuple(str(k) for k in range(outputs))
    return tuple(one_line(n, 40) for n in names)
