"""Constants, default paths and the training configuration.

Everything that several modules agree on lives here: the image geometry, the
split sizes, where data and models go by default, and ``TrainConfig``, the
frozen record of one training run's hyperparameters.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from mnist_nn.errors import ConfigError

IMAGE_SIDE = 28
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE  # 784
NUM_CLASSES = 10
TRAIN_SIZE = 50_000  # first 50,000 images of the 60,000-image training file
VALIDATION_SIZE = 10_000  # the last 10,000 images of that file
TEST_SIZE = 10_000  # the t10k file

# The names TrainConfig accepts. The tables that turn them into objects live with
# the objects (mnist_nn.nn, mnist_nn.train); tests/test_config.py checks they agree.
ACTIVATION_NAMES = ("relu", "sigmoid", "tanh")  # hidden layers
COST_NAMES = ("cross-entropy", "log-likelihood", "quadratic")
INIT_NAMES = ("normal", "scaled", "he", "glorot", "fan-out")
SCHEDULE_NAMES = ("constant", "plateau", "cosine", "cosine-steps", "one-cycle")
PREPROCESS_NAMES = ("deskew",)  # besides "", no transform
DTYPE_NAMES = ("float32", "float64")

DATA_ENV = "MNIST_NN_DATA"
MIRROR_ENV = "MNIST_NN_MIRROR"

_PACKAGE_DIR = Path(__file__).resolve().parent
APP_NAME = "mnist-nn"  # the per-user folders' name


def project_root() -> Path | None:
    """The source checkout this package runs from, or None when it is installed.

    A checkout (a clone run in place, or installed with ``pip install -e``)
    has this project's ``pyproject.toml`` beside the package folder; an
    installed wheel's ``site-packages`` has none.
    """
    root = _PACKAGE_DIR.parent
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return root if f'name = "{APP_NAME}"' in text else None


def _xdg_dir(variable: str, fallback: str) -> Path:
    """``$variable`` when it is an absolute path (the XDG rule: relative ones are ignored), else ``~/fallback``."""
    value = os.environ.get(variable, "")
    return Path(value) if value and Path(value).is_absolute() else Path.home() / fallback


def user_cache_dir() -> Path:
    """The per-user cache of an installed tool: ``$XDG_CACHE_HOME/mnist-nn``, else ``~/.cache/mnist-nn``.

    Without ``$XDG_CACHE_HOME``, macOS uses ``~/Library/Caches/mnist-nn`` and
    Windows ``%LOCALAPPDATA%\\mnist-nn\\Cache``, each platform's convention.
    """
    if not os.environ.get("XDG_CACHE_HOME"):
        if sys.platform == "darwin":
            return Path.home() / "Library" / "Caches" / APP_NAME
        if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
            return Path(os.environ["LOCALAPPDATA"]) / APP_NAME / "Cache"
    return _xdg_dir("XDG_CACHE_HOME", ".cache") / APP_NAME


def user_data_dir() -> Path:
    """Per-user files worth keeping: ``$XDG_DATA_HOME/mnist-nn``, else ``~/.local/share/mnist-nn``.

    Without ``$XDG_DATA_HOME``, macOS uses ``~/Library/Application Support/mnist-nn``
    and Windows ``%LOCALAPPDATA%\\mnist-nn``.
    """
    if not os.environ.get("XDG_DATA_HOME"):
        if sys.platform == "darwin":
            return Path.home() / "Library" / "Application Support" / APP_NAME
        if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
            return Path(os.environ["LOCALAPPDATA"]) / APP_NAME
    return _xdg_dir("XDG_DATA_HOME", ".local/share") / APP_NAME


def default_data_dir() -> Path:
    """Where MNIST is cached: ``$MNIST_NN_DATA`` if set, else a checkout's ``data/``, else ``user_cache_dir()``.

    A source checkout keeps its files beside the code; an installed tool
    downloads once per user, wherever it is run from.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    root = project_root()
    return root / "data" if root is not None else user_cache_dir()


def default_models_dir() -> Path:
    """Where ``train --save`` without a path saves: a checkout's git-ignored ``models/``, else
    ``user_data_dir() / "models"`` (models are kept, unlike a cache)."""
    root = project_root()
    return root / "models" if root is not None else user_data_dir() / "models"


def describe_data_dir() -> str:
    """The default data folder as ``--help`` says it, e.g. "$MNIST_NN_DATA, else /home/u/.cache/mnist-nn"."""
    root = project_root()
    where = (
        f"this checkout's data/ folder, {root / 'data'}"
        if root is not None
        else f"the per-user cache {user_cache_dir()}"
    )
    return f"${DATA_ENV}, else {where}"


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (Nielsen's chapter-1 defaults).

    ``layers`` describes the network by its layers' specs, input side first,
    e.g. ``("dense30", "dense10")`` (Nielsen's [784, 30, 10]) or ``("conv20x5",
    "pool2", "dense100", "dense10")``; the last one gives the outputs.
    ``mnist_nn.nn.specs`` reads them; a built network gives its ``sizes``.
    """

    layers: tuple[str, ...] = ("dense30", f"dense{NUM_CLASSES}")  # one hidden layer of 30
    inputs: int = IMAGE_PIXELS  # values per example entering the first layer: MNIST's 784 pixels
    epochs: int = 30  # passes over the 50,000 training images
    batch_size: int = 10  # examples per gradient step
    eta: float = 3.0  # learning rate; gradients are batch means
    seed: int = 12345  # one seed drives initialization and every shuffle
    dtype: str = "float32"  # training dtype; same accuracy as float64, faster
    activation: str = "sigmoid"  # activation of the hidden layers: sigmoid, tanh or relu
    cost: str = "quadratic"  # quadratic or cross-entropy (sigmoid outputs), log-likelihood (softmax)
    init: str = "normal"  # weights and biases N(0, 1), as Nielsen's chapter 1; or scaled, he, glorot, fan-out
    l2: float = 0.0  # lambda of L2 regularization, Nielsen's convention: w -> (1 - eta lambda / n) w
    dropout: float = 0.0  # probability of dropping a hidden neuron in training (0 = off)
    input_dropout: float = 0.0  # probability of dropping an input pixel in training (0 = off)
    momentum: float = 0.0  # mu of momentum SGD (0 = plain SGD)
    nesterov: bool = False  # Nesterov's momentum instead of the classical one
    schedule: str = "constant"  # constant, plateau (halve on a plateau), cosine; per step: cosine-steps, one-cycle
    schedule_patience: int = 5  # epochs without validation improvement before "plateau" halves eta
    early_stopping: int = 0  # stop after this many epochs without validation improvement (0 = never)
    preprocess: str = ""  # input transform of every image, train and test alike: "" or "deskew"
    augment: str = ""  # distortions of the training images each epoch, e.g. "shift=2,rotate=10" ("" = none)
    expand: bool = False  # train on each image and its 4 one-pixel shifts (Nielsen's expand_mnist: 250,000)
    ema: float = 0.0  # d of a moving average of the weights, a -> d a + (1 - d) w each step, validated and served
    label_smoothing: float = 0.0  # train towards (1 - s) y + s / K, not the one-hot y (0 = off; not quadratic)

    def __post_init__(self) -> None:
        """Check every value once, here, so every entry point refuses the same bad value the same way.

        Raises:
            ConfigError: naming the setting, what it must be and what it got.
        """
        if not isinstance(self.layers, tuple) or not all(isinstance(s, str) and s for s in self.layers):
            raise ConfigError("layers", f"must be a tuple of layer specs such as 'conv20x5', got {self.layers!r}")
        if not self.layers or not self.layers[-1].startswith("dense"):
            got = " ".join(self.layers) or "none"
            raise ConfigError("layers", f"must end with a dense layer, the outputs; got {got}")
        _at_least("inputs", self.inputs, 1)
        _at_least("epochs", self.epochs, 1)
        if not _is_int(self.batch_size) or not 1 <= self.batch_size <= TRAIN_SIZE:
            raise ConfigError("batch_size", f"must be between 1 and {TRAIN_SIZE}, got {self.batch_size!r}")
        if not _is_real(self.eta) or self.eta <= 0:
            raise ConfigError("eta", f"must be a positive number, got {self.eta!r}")
        _at_least("seed", self.seed, 0)
        _one_of("dtype", self.dtype, DTYPE_NAMES)
        _one_of("activation", self.activation, ACTIVATION_NAMES)
        _one_of("cost", self.cost, COST_NAMES)
        _one_of("init", self.init, INIT_NAMES)
        if not _is_real(self.l2) or self.l2 < 0:
            raise ConfigError("l2", f"must be >= 0, got {self.l2!r}")
        for name in ("dropout", "input_dropout", "momentum"):
            value = getattr(self, name)
            if not _is_real(value) or not 0 <= value < 1:
                raise ConfigError(name, f"must be in [0, 1), got {value!r}")
        if not _is_real(self.ema) or not 0 <= self.ema < 1:
            raise ConfigError("ema", f"must be in [0, 1) (0 = off; 0.999 is usual), got {self.ema!r}")
        if not _is_real(self.label_smoothing) or not 0 <= self.label_smoothing < 1:
            raise ConfigError("label_smoothing", f"must be in [0, 1), got {self.label_smoothing!r}")
        if self.label_smoothing and self.cost == "quadratic":
            raise ConfigError("label_smoothing", "needs the log-likelihood or cross-entropy cost, not quadratic")
        for name in ("nesterov", "expand"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"must be True or False, got {getattr(self, name)!r}")
        _one_of("schedule", self.schedule, SCHEDULE_NAMES)
        _at_least("schedule_patience", self.schedule_patience, 1)
        _at_least("early_stopping", self.early_stopping, 0)
        if self.preprocess != "":
            _one_of("preprocess", self.preprocess, PREPROCESS_NAMES)
        if not isinstance(self.augment, str):
            raise ConfigError("augment", f"must be a string such as 'shift=2,rotate=10', got {self.augment!r}")

    def describe(self) -> str:
        """One line: '[784, 30, 10], sigmoid, quadratic cost, mini-batch 10, eta 3, 30 epochs, float32'.

        A stack of dense layers shows its sizes, any other network its layer
        specs. Settings beyond those are named where they differ from the defaults.
        """
        shown = {"layers", "inputs", "activation", "cost", "batch_size", "eta", "epochs", "dtype", "seed"}
        defaults = asdict(TrainConfig())
        extra = "".join(f", {k} {v}" for k, v in asdict(self).items() if k not in shown and v != defaults[k])
        sizes = dense_sizes(self.layers, self.inputs)
        network = ", ".join(map(str, sizes)) if sizes is not None else " ".join(self.layers)
        return (
            f"[{network}], {self.activation}, {self.cost} cost, mini-batch {self.batch_size}, "
            f"eta {self.eta:g}, {self.epochs} epochs, {self.dtype}{extra}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d


def dense_sizes(layers: tuple[str, ...], inputs: int = IMAGE_PIXELS) -> tuple[int, ...] | None:
    """(784, 30, 10) for the layers ("dense30", "dense10"): the sizes of a stack of dense layers, else None."""
    sizes = [s[len("dense") :] for s in layers if s.startswith("dense")]
    if len(sizes) != len(layers) or not all(n.isascii() and n.isdigit() for n in sizes):
        return None
    return (inputs, *map(int, sizes))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _at_least(name: str, value: Any, low: int) -> None:
    if not _is_int(value) or value < low:
        raise ConfigError(name, f"must be {'at least 1' if low == 1 else f'>= {low}'}, got {value!r}")


def _one_of(name: str, value: Any, names: tuple[str, ...]) -> None:
    if value not in names:
        raise ConfigError(name, f"must be one of {', '.join(names)}; got {value!r}")


def config_from_dict(d: Any) -> TrainConfig:
    """The inverse of ``TrainConfig.to_dict``; raises ValueError naming what is wrong."""
    if not isinstance(d, dict):
        raise ValueError(f"expected a configuration object, got {type(d).__name__}")
    names = {f.name for f in fields(TrainConfig)} | {"sizes"}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown configuration keys: {', '.join(unknown)}")
    values = dict(d)
    # Run files of earlier versions hold "sizes" beside "layers" (empty for a stack of dense layers).
    sizes = values.pop("sizes", None)
    if sizes is not None:
        if not isinstance(sizes, list | tuple) or len(sizes) < 2 or not all(_is_int(n) for n in sizes):
            raise ValueError(f"expected sizes as a list of at least 2 integers, got {sizes!r}")
        if "inputs" in values:
            raise ValueError("expected sizes (earlier versions) or inputs, not both")
        values["inputs"] = sizes[0]
        if not values.get("layers"):
            values["layers"] = [f"dense{n}" for n in sizes[1:]]
    if "layers" in values:
        if not isinstance(values["layers"], list | tuple) or not all(isinstance(s, str) for s in values["layers"]):
            raise ValueError(f"expected layers as a list of layer specs, got {values['layers']!r}")
        values["layers"] = tuple(values["layers"])
    defaults = TrainConfig()
    for name, value in values.items():
        expected = type(getattr(defaults, name))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            values[name] = float(value)
        elif not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise ValueError(f"expected {name} of type {expected.__name__}, got {value!r}")
    return TrainConfig(**values)


# The data set each preset was chosen on where it is not MNIST: a run of the preset trains on it
# unless --dataset names another.
PRESET_DATASETS: dict[str, str] = {
    "fashion-mlp": "fashion-mnist",
    "fashion-cnn": "fashion-mnist",
    "fashion-cnn-plus": "fashion-mnist",
}


# Nielsen's chapter-6 ReLU network, also the base of his expanded-data run.
_CH6_RELU = TrainConfig(
    layers=("conv20x5", "pool2", "conv40x5", "pool2", "dense100", "dense10"),
    epochs=60,
    batch_size=10,
    eta=0.03,
    activation="relu",
    cost="log-likelihood",
    init="fan-out",
    l2=1.0,  # his lmbda 0.1 at mini-batch 10
)


# Named configurations for ``train_mnist.py --preset`` and the benchmark; README
# gives each one's measured accuracy and time.
PRESETS: dict[str, TrainConfig] = {
    # Nielsen's chapter 1: [784, 30, 10], sigmoid, quadratic cost, mini-batch 10, eta 3.0, 30 epochs.
    "nielsen-ch1": TrainConfig(),
    # Nielsen's chapter 3 (network2): cross-entropy, L2 with lambda 5.0, scaled initialization.
    "nielsen-ch3": TrainConfig(
        layers=("dense100", "dense10"),
        epochs=30,
        batch_size=10,
        eta=0.5,
        cost="cross-entropy",
        init="scaled",
        l2=5.0,
    ),
    # The fastest route found here past 98.6% without augmentation: deskewed digits, one wide
    # ReLU layer, dropout of hidden neurons and input pixels, L2, momentum and a cosine schedule.
    "best": TrainConfig(
        layers=("dense1024", "dense10"),
        epochs=40,
        batch_size=128,
        eta=0.1,
        activation="relu",
        cost="log-likelihood",
        init="he",
        l2=50.0,
        dropout=0.5,
        input_dropout=0.2,
        momentum=0.9,
        schedule="cosine",
        preprocess="deskew",
    ),
    # Two hidden layers and deskewed digits, distorted afresh every epoch (shifts, small
    # rotations and scalings), past 99.2%.
    "best-augmented": TrainConfig(
        layers=("dense800", "dense800", "dense10"),
        epochs=80,
        batch_size=128,
        eta=0.1,
        activation="relu",
        cost="log-likelihood",
        init="he",
        l2=25.0,
        dropout=0.3,
        momentum=0.9,
        schedule="cosine",
        preprocess="deskew",
        augment="none,shift=2,rotate=8,scale=0.1",
    ),
    # The best single network found here that trains in at most 15 minutes: chapter 6's two
    # convolution-pool layers widened to 24 and 48 maps, with ReLU, a dense layer of 200 with
    # dropout, distortions redrawn every epoch, momentum and a cosine schedule over 25 epochs.
    "cnn": TrainConfig(
        layers=("conv24x5", "pool2", "conv48x5", "pool2", "dense200", "dense10"),
        epochs=25,
        batch_size=10,
        eta=0.005,
        activation="relu",
        cost="log-likelihood",
        init="he",
        l2=5.0,
        dropout=0.5,
        momentum=0.9,
        schedule="cosine",
        augment="none,shift=2,rotate=10,scale=0.1",
    ),
    # Fashion-MNIST (--dataset fashion-mnist): one wide ReLU layer with dropout, L2, momentum and a
    # cosine schedule, chosen on validation (seed 1: 90.37% against 90.17% for two layers of 512 and
    # 256 with dropout 0.2, and 88.83% for the "best" preset without deskewing).
    "fashion-mlp": TrainConfig(
        layers=("dense1024", "dense10"),
        epochs=40,
        batch_size=128,
        eta=0.05,
        activation="relu",
        cost="log-likelihood",
        init="he",
        l2=5.0,
        dropout=0.3,
        momentum=0.9,
        schedule="cosine",
    ),
    # Fashion-MNIST: three 3x3 convolutions padded to keep their maps' size, each batch-normalized, two
    # pools, a dense layer of 256 normalized and dropped out, mirrored clothes, label smoothing; chosen on
    # validation (docs/results.md, Fashion-MNIST, has what was tried).
    "fashion-cnn": TrainConfig(
        layers=(
            "conv32x3p1",
            "bn",
            "pool2",
            "conv64x3p1",
            "bn",
            "conv64x3p1",
            "bn",
            "pool2",
            "dense256",
            "bn",
            "dense10",
        ),
        epochs=20,
        batch_size=64,
        eta=0.05,
        activation="relu",
        cost="log-likelihood",
        init="he",
        l2=25.0,
        dropout=0.5,
        momentum=0.9,
        schedule="cosine",
        augment="none,flip=0.5",
        label_smoothing=0.1,
    ),
    # Nielsen's chapter 6 (network3.py, conv.py): softmax outputs with the log-likelihood cost,
    # mini-batch 10, his learning rates and epochs, and his initialization ("fan-out": weights
    # N(0, 1/n_out), biases N(0, 1), the softmax layer 0). His L2 term 0.5 lmbda sum w^2 / (n/m)
    # on a batch mean is our lambda = lmbda * m; we shuffle every epoch where he does not.
    "nielsen-ch6-shallow": TrainConfig(
        layers=("dense100", "dense10"),
        epochs=60,
        batch_size=10,
        eta=0.1,
        cost="log-likelihood",
        init="fan-out",
    ),
    "nielsen-ch6-conv": TrainConfig(
        layers=("conv20x5", "pool2", "dense100", "dense10"),
        epochs=60,
        batch_size=10,
        eta=0.1,
        cost="log-likelihood",
        init="fan-out",
    ),
    "nielsen-ch6-dbl-conv": TrainConfig(
        layers=("conv20x5", "pool2", "conv40x5", "pool2", "dense100", "dense10"),
        epochs=60,
        batch_size=10,
        eta=0.1,
        cost="log-likelihood",
        init="fan-out",
    ),
    "nielsen-ch6-relu": _CH6_RELU,
    # The same on his expanded training set: 250,000 images an epoch.
    "nielsen-ch6-expanded": replace(_CH6_RELU, expand=True),
    # Two fully connected layers of 1000 whose inputs (and the softmax layer's) drop out with
    # probability 0.5, on the expanded set, 40 epochs, no L2.
    "nielsen-ch6-dropout": TrainConfig(
        layers=(
            "conv20x5",
            "pool2",
            "conv40x5",
            "pool2",
            "dropout0.5",
            "dense1000",
            "dropout0.5",
            "dense1000",
            "dropout0.5",
            "dense10",
        ),
        epochs=40,
        batch_size=10,
        eta=0.03,
        activation="relu",
        cost="log-likelihood",
        init="fan-out",
        expand=True,
    ),
}

# Past the book on MNIST: fashion-cnn's training (batch norms, a dense layer of 256 normalized and
# dropped out, label smoothing, mini-batch 64, a cosine schedule) with the cnn preset's distortions and
# a 5x5 convolution of 32 maps before two 3x3 ones of 64; the best found on validation (docs/results.md,
# "Past the cnn preset", has what was tried).
PRESETS["cnn-plus"] = replace(
    PRESETS["fashion-cnn"],
    layers=("conv32x5", "pool2", "bn", "conv64x3", "bn", "conv64x3", "pool2", "bn", "dense256", "bn", "dense10"),
    augment=PRESETS["cnn"].augment,
)
# Past fashion-cnn: the same network and training for 25 epochs, under 20 minutes with its 3x3
# convolutions stepping by Winograd's F(2x2, 3x3); chosen on validation (94.05% against 93.87%, seed 1).
PRESETS["fashion-cnn-plus"] = replace(PRESETS["fashion-cnn"], epochs=25)
