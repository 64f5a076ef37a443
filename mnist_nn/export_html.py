"""The single-file page: a saved model as one HTML file that classifies drawings with no server.

``page_html`` builds it and ``export_html`` writes it (atomically). The page is
the one ``mnist-nn serve`` serves (``mnist_nn/web``: index.html, style.css,
app.js) in one file, with three blocks before app.js:

    <script type="application/json" id="mnist-nn-model">   the model: what /api/model answers, the layers,
                                                          the preprocessing's constants, and every weight
                                                          as float32, little-endian, in base64
    <script> web/standalone.js </script>                   window.mnistNN: the preprocessing and the network
    <script> web/app.js </script>                          the draw pad, asking window.mnistNN instead of a server

``standalone.js`` does in JavaScript what the server does in Python: a drawing's
gray levels become the network's input as ``images.to_mnist`` (or
``to_fashion_mnist``, by the model's data set) makes it, photo steps included,
then the model's input transform (deskewing) and its layers run, in float64
with the float32 weights, and the probabilities are those of
``Network.probabilities``. The layers keep the package's layouts: feature maps
(H, W, C) flattened, a convolution's kernels (K*K*C + 1, F) with the biases last,
a dense layer's (n_in + 1, n_out); a batch norm's running averages, gamma and
beta are folded into a scale and a shift per feature, as its ``forward``
computes them. Dropout is the identity outside training: it has no weights.

The page fetches nothing: a Content-Security-Policy in its head allows its own
inline style and scripts (by their SHA-256) and data: images, and nothing else,
so the page can connect nowhere. Every model the package trains has a page:
dense, convolutional (with padding), max- and average-pooling, batch norm and
dropout layers, sigmoid, tanh, ReLU and softmax, the deskewing transform, float32
or float64 (whose weights the page holds as float32). Refused, in one line: a
kind of layer from outside the package, and a model that does not take 28x28
images (the page draws those).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mnist_nn import images
from mnist_nn.config import IMAGE_PIXELS, IMAGE_SIDE
from mnist_nn.errors import ExportError
from mnist_nn.files import PathLike, write_output
from mnist_nn.models import SavedModel
from mnist_nn.nn import warp
from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.batchnorm import BatchNorm
from mnist_nn.nn.layers import AvgPool2D, Conv2D, Dense, Dropout, Layer, MaxPool2D
from mnist_nn.nn.network import Network
from mnist_nn.serve import model_info

PAGE_FORMAT = 1  # the model block's layout, for the page's script
MODEL_BLOCK_ID = "mnist-nn-model"
PAGE_LAYERS = (Dense, Conv2D, MaxPool2D, AvgPool2D, BatchNorm, Dropout)
PAGE_ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "softmax")
# images.preparation's functions by the names the page's script knows them by.
PAGE_PREPARATIONS = {images.to_mnist: "mnist", images.to_fashion_mnist: "fashion-mnist"}
# The constants of images.to_mnist, to_fashion_mnist and photo_ink, and of the deskewing warp, as the script reads them.
PAGE_CONSTANTS = {
    "IMAGE_SIDE": IMAGE_SIDE,
    "DIGIT_BOX": images.DIGIT_BOX,
    "FIELD_CENTER": images.FIELD_CENTER,
    "INK_THRESHOLD": images.INK_THRESHOLD,
    "BORDER_LIGHT": images.BORDER_LIGHT,
    "RING_INK_RUN": images.RING_INK_RUN,
    "RING_FAINT": list(images.RING_FAINT),
    "RING_WINDOW": images.RING_WINDOW,
    "RING_FAINT_FRACTION": images.RING_FAINT_FRACTION,
    "PHOTO_SIDE": images.PHOTO_SIDE,
    "PHOTO_MIN_OPENING": images.PHOTO_MIN_OPENING,
    "PHOTO_NOISE_SPREADS": images.PHOTO_NOISE_SPREADS,
    "PHOTO_FLOOR_SPREADS": images.PHOTO_FLOOR_SPREADS,
    "PHOTO_EDGE_PIXELS": images.PHOTO_EDGE_PIXELS,
    "PHOTO_MIN_DIGIT": images.PHOTO_MIN_DIGIT,
    "PHOTO_JOIN_SIZE": images.PHOTO_JOIN_SIZE,
    "PHOTO_JOIN_REACH": images.PHOTO_JOIN_REACH,
    "CENTER": warp.CENTER,
    "PAD_SIDE": warp.PAD_SIDE,
    "PAD_OFFSET": int(warp.PAD_OFFSET),  # an index offset in the script
    "PAD_MAX": warp.PAD_MAX,
}
# What the page may use: its own inline style and scripts (their hashes are added), data: images (the favicon).
PAGE_POLICY = "default-src 'none'; img-src data:; base-uri 'none'; form-action 'none'"
_FLOAT32_LE = np.dtype("<f4")


def check_page_exportable(network: Network) -> None:
    """Raise ExportError (one line) unless the page can run ``network``.

    Raises:
        ExportError: a kind of layer or an activation the page's script does not know, an input
            transform other than deskewing, or a network that does not take 28x28 images.
    """
    for i, layer in enumerate(network.layers):
        if type(layer) not in PAGE_LAYERS:
            known = ", ".join(kind.kind for kind in PAGE_LAYERS)
            raise ExportError(f"layer {i + 1} ({layer.kind}) has no single-file page; the page knows {known}")
        if layer.activation.name not in PAGE_ACTIVATIONS:
            raise ExportError(f"layer {i + 1}'s activation {layer.activation.name} has no single-file page")
    transform = network.transform.name if network.transform is not None else ""
    if transform not in ("", "deskew"):
        raise ExportError(f"the input transform {transform!r} has no single-file page")
    if network.input_size != IMAGE_PIXELS:
        raise ExportError(
            f"the page draws {IMAGE_SIDE}x{IMAGE_SIDE} images ({IMAGE_PIXELS} inputs); "
            f"this model takes {network.input_size} inputs"
        )


class _Weights:
    """The page's weights: float32 arrays laid end to end, each layer told its offset."""

    def __init__(self) -> None:
        self.arrays: list[npt.NDArray[np.float32]] = []
        self.count = 0

    def add(self, *arrays: FloatArray) -> int:
        """Append the arrays (flattened, as float32); returns the offset of the first."""
        offset = self.count
        for array in arrays:
            flat = np.ascontiguousarray(array, dtype=_FLOAT32_LE).ravel()
            self.arrays.append(flat)
            self.count += flat.size
        return offset

    def base64(self) -> str:
        """Every weight as float32, little-endian, in base64."""
        data = b"".join(array.tobytes() for array in self.arrays)
        return base64.b64encode(data).decode("ascii")


def _layer_spec(layer: Layer, weights: _Weights) -> dict[str, Any]:
    """What the page's script needs to run one layer (see ``standalone.js``)."""
    spec: dict[str, Any] = {"kind": layer.kind, "activation": layer.activation.name}
    if isinstance(layer, Dense):
        (fused,) = layer.params  # (n_in + 1, n_out): weights, then the biases' row
        spec.update(inputs=layer.n_in, outputs=layer.size, offset=weights.add(fused))
    elif isinstance(layer, Conv2D):
        (fused,) = layer.params  # (K*K*C + 1, F): kernels in (K, K, C) order, then the biases' row
        h, w, c = layer.image
        spec.update(height=h, width=w, channels=c, filters=layer.filters, kernel=layer.kernel)
        spec.update(padding=layer.padding, offset=weights.add(fused))
    elif isinstance(layer, MaxPool2D | AvgPool2D):
        h, w, c = layer.image
        spec.update(height=h, width=w, channels=c, pool=layer.pool)
    elif isinstance(layer, BatchNorm):
        (gamma, beta), (mean, var) = layer.params
        # The network's dtype and BatchNorm.forward's expressions: the same scale and shift.
        scale = gamma / np.sqrt(var + layer.eps)
        shift = beta - mean * scale
        spec.update(features=layer.features, offset=weights.add(scale, shift))
    return spec


def page_model(model: SavedModel) -> dict[str, Any]:
    """The model as the page's script reads it (the JSON of its model block).

    Raises:
        ExportError: the page cannot run the network (``check_page_exportable``), or its data set
            prepares pictures in a way the page does not know.
    """
    network = model.network
    check_page_exportable(network)
    preparation = PAGE_PREPARATIONS.get(images.preparation(model.dataset))
    if preparation is None:
        raise ExportError(f"the single-file page cannot prepare pictures of the data set {model.dataset!r}")
    weights = _Weights()
    layers = [_layer_spec(layer, weights) for layer in network.layers]
    return {
        "format": PAGE_FORMAT,
        "info": model_info(model),
        "dtype": network.dtype.name,
        "transform": network.transform.name if network.transform is not None else "",
        "preparation": preparation,
        "output": network.cost.output.name,
        "probability_kind": network.probability_kind,
        "constants": PAGE_CONSTANTS,
        "layers": layers,
        "weights": weights.base64(),
    }


def _web_file(name: str) -> str:
    """A file of serve's page, from the package."""
    return resources.files("mnist_nn").joinpath("web").joinpath(name).read_text(encoding="utf-8")


def _replace_once(text: str, old: str, new: str) -> str:
    """``text`` with ``old``, which must occur exactly once (serve's page as this module knows it), as ``new``."""
    if text.count(old) != 1:
        raise ValueError(f"expected {old!r} once in serve's page, found it {text.count(old)} times")
    return text.replace(old, new)


def _sha256(text: str) -> str:
    """The CSP source of an inline block: 'sha256-' and its digest in base64."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _inline(tag: str, code: str) -> str:
    """``code`` as an inline <script> or <style> block (our own files: they never close the tag early)."""
    if f"</{tag}" in code.lower():
        raise ValueError(f"the inline {tag} would end early: it holds '</{tag}'")
    return f"<{tag}>{code}</{tag}>"


def page_html(model: SavedModel) -> str:
    """The single-file page of ``model``: serve's page with its style, its scripts and the model inline.

    Raises:
        ExportError: the page cannot run the model (see ``page_model``).
    """
    data = json.dumps(page_model(model), separators=(",", ":"), allow_nan=False)
    data = data.replace("<", "\\u003c")  # a class name cannot end the block: "<" only ever in JSON strings
    style, standalone, app = _web_file("style.css"), _web_file("standalone.js"), _web_file("app.js")
    policy = f"{PAGE_POLICY}; style-src {_sha256(style)}; script-src {_sha256(standalone)} {_sha256(app)}"
    meta = f'<meta http-equiv="Content-Security-Policy" content="{html.escape(policy, quote=False)}">'
    page = _replace_once(_web_file("index.html"), '<meta charset="utf-8">\n', f'<meta charset="utf-8">\n  {meta}\n')
    page = _replace_once(page, '<link rel="stylesheet" href="style.css">', _inline("style", style))
    page = _replace_once(page, '  <script src="app.js" defer></script>\n', "")
    scripts = (
        f'<script type="application/json" id="{MODEL_BLOCK_ID}">{data}</script>\n'
        f"{_inline('script', standalone)}\n{_inline('script', app)}\n"
    )
    return _replace_once(page, "</body>", scripts + "</body>")


def export_html(model: SavedModel, path: PathLike) -> int:
    """Write the single-file page of ``model`` at ``path``, atomically (``mnist_nn.files.write_output``).

    Args:
        model: a loaded model file (its name, data set, class names and test count show on the page).
        path: the ``.html`` file to write; an earlier file there is replaced whole, or kept if writing fails.

    Returns:
        The number of bytes written.

    Raises:
        ExportError: the page cannot run the model (see ``page_model``).
        OSError: the file cannot be written.
    """
    data = page_html(model).encode("utf-8")
    write_output(Path(path), data)
    return len(data)
