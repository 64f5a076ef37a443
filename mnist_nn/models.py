"""Saving and loading trained networks: one ``.npz`` model file per network.

File format ``mnist_nn-model``, version 2
-----------------------------------------
A model file is an ordinary, uncompressed NumPy ``.npz`` archive (a zip of
``.npy`` members, as ``np.savez`` writes it), so ``np.load(path,
allow_pickle=False)`` opens it. Nothing in it is pickled. The metadata lists
the network's layers; the arrays are named per layer, each layer declaring its
own (``Layer.stored_arrays``; a dense layer: ``w`` (n_in, n_out) and ``b`` (n_out,)):

    metadata                      uint8 (k,)   UTF-8 bytes of one JSON object (below)
    layer{i}_{name}               dtype        served arrays of layer i: layer0_w, layer0_b, ...

and, only in a file saved with a resume state (to continue training later):

    current_layer{i}_{name}       dtype        the arrays after the last epoch trained
    opt_{key}_layer{i}_{name}     dtype        optimizer state, e.g. opt_velocity_layer0_w,
                                               shaped like the array it belongs to
    best_layer{i}_{name}          dtype        the best validation epoch's arrays, in a file
                                               that serves other weights (the last epoch's)

``dtype`` is the network's float32 or float64 (little-endian, C order as written).
The served weights are the ones a loaded network predicts with (for example the
best validation epoch); the current ones are where training stopped. Every
array is finite.

The metadata object always has the keys of ``model_metadata_base``:

    format            "mnist_nn-model"
    format_version    2
    input_size        values per input example, 784
    layers            the layers' descriptions, input side first, e.g.
                      [{"kind": "dense", "size": 30, "activation": "sigmoid"}, ...]
                      (``mnist_nn.nn.layers.layer_from_description`` rebuilds each)
    sizes             values entering the network and leaving each layer, e.g. [784, 30, 10]
    activation        the hidden layers' default activation, e.g. "sigmoid"
    cost              cost name, e.g. "quadratic" (a key of ``mnist_nn.nn.costs.COSTS``)
    preprocess        the input transform's name, or ""
    dtype             "float32" or "float64"
    package_version   ``mnist_nn.__version__`` of the writer
    created           UTC time of writing, ISO 8601, e.g. "2024-05-01T12:00:00+00:00"

plus whatever the caller passes (training config, history, epoch,
validation_correct, test_correct, MNIST digests, ...), stored as given. Of
those, ``classes`` (the name of each class, a list) is read back: a network
loaded as an MNIST-format classifier has one output per name (10 without it).
A file with a resume state also has

    resume            {"rng_state": numpy's ``Generator.bit_generator.state``, with every
                                    integer of magnitude 2**53 or more (PCG64's 128-bit
                                    state) written as a decimal string,
                       "epochs_completed": number of epochs trained so far,
                       "optimizer": the optimizer keys, e.g. ["velocity"],
                       "best_epoch": the epoch of the best_ arrays (only with them)}

Format version 1 (written by mnist_nn 0.1.0 before layers existed) is read
too: it has no ``layers`` and describes a stack of dense layers by ``sizes``
and ``activation``; its arrays are ``w{l}``, ``b{l}``, ``current_w{l}``,
``current_b{l}`` and ``opt_{key}_{l}`` of shape (n_in + 1, n_out), the biases
in the last row.

Version policy: ``format_version`` goes up whenever a reader of the old
version would misread a new file (a member renamed or reshaped, a key whose
meaning changes). Adding metadata keys, or members an old reader can ignore,
does not change it; readers ignore members they do not know. ``load_model``
reads the versions in ``SUPPORTED_FORMAT_VERSIONS`` and refuses the others by
name.

Reading is defensive because a model file may come from anywhere: the archive
is opened with ``zipfile`` rather than ``np.load``, and each member's zip entry,
``.npy`` header (dtype, shape, C order) and size are checked against what the
metadata's layers imply before a byte of its data is read, so a hostile
header cannot make NumPy allocate a huge array. Members must be stored
uncompressed, as ``np.savez`` writes them. Every problem is a
``ModelFileError`` with a one-line message ``"{path}: <what is wrong>"``.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import re
import stat
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from mnist_nn._version import __version__
from mnist_nn.config import IMAGE_PIXELS, NUM_CLASSES
from mnist_nn.errors import BadModelFileError, ModelFileError
from mnist_nn.files import PathLike, atomic_write
from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.costs import COSTS, Cost
from mnist_nn.nn.layers import Dense, Layer, layer_from_description
from mnist_nn.nn.network import Network, build_layers
from mnist_nn.nn.transforms import input_transform
from mnist_nn.text import first_line, json_type, one_line, short

FORMAT_NAME = "mnist_nn-model"
FORMAT_VERSION = 2
SUPPORTED_FORMAT_VERSIONS = (1, 2)

MAX_LAYER_SIZE = 100_000  # neurons in any one layer
MAX_LAYERS = 1_000  # entries in sizes
MAX_PARAMETERS = 200_000_000  # weights and biases over all layers
MAX_METADATA_BYTES = 16 * 2**20  # the JSON member
MAX_OPTIMIZER_KEYS = 16

_NPY_HEADER_MAX = 16_384  # magic, header length and header dict of one .npy member
_JSON_SAFE_INT = 2**53  # integers from here on lose precision in many JSON readers
_MAX_STATE_DEPTH = 16
_DTYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}
_BIT_GENERATORS = ("MT19937", "PCG64", "PCG64DXSM", "Philox", "SFC64")
_OPTIMIZER_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_DECIMAL = re.compile(r"-?[0-9]{1,64}")
_DESCRIBING_KEYS = ("format", "format_version", "input_size", "layers", "sizes", "activation", "cost", "dtype")
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class ResumeState:
    """What training needs to continue where it stopped.

    Args:
        params: the current weights (last epoch trained), shaped and typed like ``Network.params``.
        optimizer: optimizer state by name, e.g. ``{"velocity": [...]}``, each a list shaped
            like ``params``; may be empty. Names match ``[A-Za-z][A-Za-z0-9_]*``.
        rng_state: ``Generator.bit_generator.state`` of the training generator.
        epochs_completed: epochs trained so far.
        best_params: the best validation epoch's weights, where the file serves others; or None.
        best_epoch: the epoch of ``best_params`` (1 to ``epochs_completed``); None without them.
    """

    params: list[FloatArray]
    optimizer: dict[str, list[FloatArray]]
    rng_state: Mapping[str, Any]
    epochs_completed: int
    best_params: list[FloatArray] | None = None
    best_epoch: int | None = None


@dataclass(frozen=True)
class SavedModel:
    """A loaded model file: the network with its served weights, its metadata and resume state."""

    network: Network
    metadata: dict[str, Any]
    resume: ResumeState | None
    path: Path

    @property
    def dataset(self) -> str:
        """The data set the file says it was trained on: "mnist" when it does not say; a value that is no
        name comes back as its short repr, which names no data set (the commands refuse it)."""
        name = self.metadata.get("dataset", "mnist")
        return name if isinstance(name, str) else short(name)

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names the file records, one per output (at most 40 characters, one line each);
        the output's numbers ("0" to "9") for files that record none or something else."""
        names = self.metadata.get("classes")
        outputs = self.network.sizes[-1]
        if not isinstance(names, list) or len(names) != outputs or not all(isinstance(n, str) and n for n in names):
            return tuple(str(k) for k in range(outputs))
        return tuple(one_line(n, 40) for n in names)


# --- saving --------------------------------------------------------------------------


def model_metadata_base(network: Network) -> dict[str, Any]:
    """The metadata every model file carries: format, version and what the network is."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "input_size": network.input_size,
        "layers": network.describe(),
        "sizes": list(network.sizes),
        "activation": network.activation.name,
        "cost": network.cost.name,
        "preprocess": network.transform.name if network.transform is not None else "",
        "dtype": network.dtype.name,
        "package_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def save_model(
    path: PathLike,
    network: Network,
    metadata: Mapping[str, Any] | None = None,
    *,
    resume: ResumeState | None = None,
) -> None:
    """Write ``network`` and ``metadata`` to ``path`` as a model file, atomically.

    Args:
        path: the ``.npz`` file to write; its folder is created if missing.
        network: the network whose current ``params`` are the served weights.
        metadata: JSON-serializable values to store beside the base metadata
            (config, history, accuracy counts, ...), or None for none. NumPy scalars are stored as
            Python numbers. Keys of ``model_metadata_base`` that describe the
            network may be repeated only with the same value; ``resume`` is reserved.
        resume: the state to continue training from, or None.

    Raises:
        ValueError: metadata that is not JSON (NaN, ``object()``, ...), a resume
            state that does not fit the network, or non-finite weights. Nothing
            is written then.
        OSError: the file cannot be written; any earlier file at ``path`` is kept.
    """
    path = Path(path)
    text = _metadata_json(network, metadata or {}, resume)
    arrays: dict[str, npt.NDArray[Any]] = {"metadata": np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
    _check_param_list(network, network.params, "network weights")

    def add(prefix: str, params: Sequence[FloatArray]) -> None:
        for name, array in network.named_arrays(params).items():
            arrays[prefix + name] = np.ascontiguousarray(array)

    add("", network.params)
    if resume is not None:
        add("current_", resume.params)
        for key, state in resume.optimizer.items():
            add(f"opt_{key}_", state)
        if resume.best_params is not None:
            add("best_", resume.best_params)

    atomic_write(path, lambda f: _write_npz(f, arrays))


def _write_npz(f: IO[bytes], arrays: Mapping[str, npt.NDArray[Any]]) -> None:
    """Write ``arrays`` as an uncompressed ``.npz``, member by member as ``np.savez`` does, pickling refused.

    Written here rather than by ``np.savez(f, allow_pickle=False, ...)``: older numpy (1.24
    for one) takes that keyword for one more array and stores an ``allow_pickle.npy`` member.
    """
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _metadata_json(network: Network, metadata: Mapping[str, Any], resume: ResumeState | None) -> str:
    """The metadata member's JSON text; ValueError if anything in it is not JSON."""
    merged = model_metadata_base(network)
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise ValueError(f"expected metadata keys to be strings, got {key!r}")
        if key == "resume":
            raise ValueError("metadata key 'resume' is written by save_model; pass resume=ResumeState(...) instead")
        if key in _DESCRIBING_KEYS:
            if _dumps(value) != _dumps(merged[key]):
                raise ValueError(f"metadata {key!r} is {value!r}, but the network's is {merged[key]!r}")
            continue
        merged[key] = value
    if resume is not None:
        _check_resume(network, resume)
        merged["resume"] = {
            "rng_state": _encode_state(resume.rng_state, 0),
            "epochs_completed": resume.epochs_completed,
            "optimizer": list(resume.optimizer),
        }
        if resume.best_params is not None:
            merged["resume"]["best_epoch"] = resume.best_epoch
    text = _dumps(merged)
    if len(text.encode("utf-8")) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is too large: {len(text)} characters of JSON, at most {MAX_METADATA_BYTES} bytes")
    return text


def _dumps(value: Any) -> str:
    """Strict JSON (no NaN or infinity); ValueError for anything JSON cannot hold."""
    try:
        return json.dumps(value, allow_nan=False, default=_json_default)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"metadata is not JSON-serializable: {exc}") from exc


def _json_default(value: Any) -> Any:
    """NumPy scalars become Python numbers; everything else JSON cannot encode is refused."""
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    raise TypeError(f"object of type {type(value).__name__} is not JSON serializable")


def _check_param_list(network: Network, params: Sequence[Any], what: str) -> None:
    """ValueError unless ``params`` are finite arrays shaped and typed like ``network.params``."""
    if len(params) != len(network.params):
        raise ValueError(f"expected {len(network.params)} arrays in {what}, got {len(params)}")
    for layer, (mine, theirs) in enumerate(zip(network.params, params, strict=True)):
        if not isinstance(theirs, np.ndarray):
            raise ValueError(f"expected arrays in {what}, got {type(theirs).__name__} for layer {layer}")
        if theirs.shape != mine.shape or theirs.dtype != network.dtype:
            raise ValueError(
                f"expected {what}[{layer}] of shape {mine.shape} and dtype {network.dtype}, "
                f"got {theirs.shape} and {theirs.dtype}"
            )
        if not np.isfinite(theirs).all():
            raise ValueError(f"refusing to save non-finite values in {what}[{layer}]")


def _check_resume(network: Network, resume: ResumeState) -> None:
    """ValueError unless ``resume`` fits ``network`` and can be written."""
    _check_param_list(network, resume.params, "resume params")
    if len(resume.optimizer) > MAX_OPTIMIZER_KEYS:
        raise ValueError(f"expected at most {MAX_OPTIMIZER_KEYS} optimizer entries, got {len(resume.optimizer)}")
    for key, state in resume.optimizer.items():
        if not isinstance(key, str) or not _OPTIMIZER_KEY.fullmatch(key):
            raise ValueError(f"expected optimizer keys matching [A-Za-z][A-Za-z0-9_]*, got {key!r}")
        _check_param_list(network, state, f"optimizer {key!r}")
    epochs = resume.epochs_completed
    if isinstance(epochs, bool) or not isinstance(epochs, int | np.integer) or epochs < 0:
        raise ValueError(f"expected epochs_completed to be a non-negative integer, got {epochs!r}")
    if (resume.best_params is None) != (resume.best_epoch is None):
        raise ValueError("expected best_params and best_epoch together, or neither")
    if resume.best_params is not None:
        best = resume.best_epoch
        if isinstance(best, bool) or not isinstance(best, int | np.integer) or not 1 <= best <= epochs:
            raise ValueError(f"expected best_epoch to be an epoch from 1 to {epochs}, got {best!r}")
        _check_param_list(network, resume.best_params, "best params")
    _restore_rng_state(resume.rng_state)


def _encode_state(value: Any, depth: int) -> Any:
    """A bit generator state as JSON values: big integers as decimal strings, arrays as lists."""
    if depth > _MAX_STATE_DEPTH:
        raise ValueError("rng_state is nested too deeply")
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"expected rng_state keys to be strings, got {list(value)!r}")
        return {k: _encode_state(v, depth + 1) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _encode_state(value.tolist(), depth)
    if isinstance(value, list | tuple):
        return [_encode_state(v, depth + 1) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        n = int(value)
        return str(n) if abs(n) >= _JSON_SAFE_INT else n
    if value is None or isinstance(value, str | float):
        return value
    raise ValueError(f"rng_state holds a value JSON cannot store: {type(value).__name__}")


def _decode_state(value: Any, depth: int) -> Any:
    """Undo ``_encode_state``: decimal strings back to integers."""
    if depth > _MAX_STATE_DEPTH:
        raise BadModelFileError("malformed resume section: rng_state is nested too deeply")
    if isinstance(value, dict):
        return {k: _decode_state(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_state(v, depth + 1) for v in value]
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return int(value)
    return value


def _restore_rng_state(state: Any) -> dict[str, Any]:
    """Numpy's own copy of ``state`` after loading it into a fresh bit generator; ValueError if it does not fit."""
    name = state.get("bit_generator") if isinstance(state, Mapping) else None
    if name not in _BIT_GENERATORS:
        raise ValueError(
            f"expected rng_state of one of numpy's bit generators ({', '.join(_BIT_GENERATORS)}), got {name!r}"
        )
    bit_generator = getattr(np.random, name)()
    try:
        bit_generator.state = dict(state)
    except Exception as exc:  # numpy raises TypeError, ValueError or OverflowError for a bad state
        reason = f"missing key {exc}" if isinstance(exc, KeyError) else first_line(exc)
        raise ValueError(f"rng_state is not a valid {name} state: {reason}") from exc
    return dict(bit_generator.state)


# --- loading -------------------------------------------------------------------------


def load_model(path: PathLike, *, require_mnist: bool = True) -> SavedModel:
    """Read and check a model file written by ``save_model``.

    Args:
        path: the ``.npz`` model file.
        require_mnist: refuse networks without 784 inputs and one output per class: as many as the
            metadata's ``classes`` names, 10 (MNIST's digits) in a file that names none.

    Returns:
        The network (built from the metadata, holding the served weights), the
        parsed metadata, the resume state if the file has one, and the path.

    Raises:
        ModelFileError: for every way the file can be missing, unreadable,
            malformed, inconsistent or unsafe; the one-line message starts
            with the path. Nothing else escapes.
    """
    path = Path(path)
    try:
        return _load(path, require_mnist)
    except BadModelFileError as exc:
        raise ModelFileError(one_line(f"{path}: {exc}")) from exc
    except OSError as exc:
        raise ModelFileError(one_line(f"{path}: cannot read the model file: {exc.strerror or exc}")) from exc
    except Exception as exc:  # whatever else zipfile, numpy or json make of a hostile file
        reason = f"{type(exc).__name__}: {first_line(exc)}"
        raise ModelFileError(one_line(f"{path}: corrupt or unreadable model file ({reason})")) from exc


def _load(path: Path, require_mnist: bool) -> SavedModel:
    """``load_model`` without the translation of errors."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise BadModelFileError("no such file") from None
    if stat.S_ISDIR(mode):
        raise BadModelFileError("is a directory, expected a model file (.npz)")
    if not stat.S_ISREG(mode):
        raise BadModelFileError("not a regular file, expected a model file (.npz)")
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise BadModelFileError("empty file, expected a model file (.npz)")
        magic = f.read(len(_ZIP_MAGIC))
        try:
            archive = zipfile.ZipFile(f)
        except zipfile.BadZipFile:
            if magic == _ZIP_MAGIC:
                raise BadModelFileError("corrupt or truncated model file (damaged .npz archive)") from None
            raise BadModelFileError("not a model file (not an .npz archive)") from None
        with archive:
            return _read_archive(path, archive, size, require_mnist)


def _read_archive(path: Path, archive: zipfile.ZipFile, size: int, require_mnist: bool) -> SavedModel:
    """Check the metadata, then read and check every array it implies."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if info.filename in members:
            raise BadModelFileError(f"duplicate archive member {info.filename!r}")
        members[info.filename] = info
    if "metadata.npy" not in members:
        raise BadModelFileError("no 'metadata' member; not an mnist_nn model file")
    raw = _read_array(archive, members, size, "metadata", np.dtype(np.uint8), None)
    metadata = _parse_metadata(raw.tobytes())
    plan = _plan(metadata)
    sizes = plan.sizes
    if require_mnist:
        _check_inputs_and_outputs(metadata, sizes)
    resume_section = _check_resume_section(metadata["resume"]) if "resume" in metadata else None
    dtype = plan.dtype

    def read(prefix: str) -> dict[str, FloatArray]:
        # Every member is read (so checked against the file's size) before the metadata's
        # untrusted layers decide how much to allocate.
        if plan.version == 1:
            named = {}
            for layer, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
                named[f"layer{layer}_w"] = _read_array(
                    archive, members, size, f"{prefix}w{layer}", dtype, (n_in, n_out)
                )
                named[f"layer{layer}_b"] = _read_array(archive, members, size, f"{prefix}b{layer}", dtype, (n_out,))
            return named
        return {name: _read_array(archive, members, size, prefix + name, dtype, s) for name, s in plan.shapes.items()}

    def read_optimizer(key: str) -> dict[str, FloatArray]:
        if plan.version > 1:
            return read(f"opt_{key}_")
        named = {}
        for layer, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            fused = _read_array(archive, members, size, f"opt_{key}_{layer}", dtype, (n_in + 1, n_out))
            named[f"layer{layer}_w"], named[f"layer{layer}_b"] = fused[:-1], fused[-1]
        return named

    served_named = read("")
    resume_named = None
    best_named = None
    if resume_section is not None:
        rng_state, epochs_completed, keys, best_epoch = resume_section
        resume_named = (read("current_"), {key: read_optimizer(key) for key in keys})
        if best_epoch is not None and plan.version > 1:
            best_named = read("best_")
    try:
        transform = input_transform(_preprocess_name(metadata))
        network = Network(
            plan.layers,
            input_size=sizes[0],
            dtype=dtype,
            activation=plan.activation,
            cost=plan.cost,
            init=None,
            transform=transform,
        )
    except ValueError as exc:
        raise BadModelFileError(f"metadata describes a network this version cannot build: {exc}") from exc
    served = network.params_from_named(served_named)
    resume = None
    if resume_section is not None and resume_named is not None:
        current, optimizer = resume_named
        resume = ResumeState(
            network.params_from_named(current),
            {key: network.params_from_named(state) for key, state in optimizer.items()},
            rng_state,
            epochs_completed,
            best_params=network.params_from_named(best_named) if best_named is not None else None,
            best_epoch=best_epoch if best_named is not None else None,
        )
    network.set_params(served)
    return SavedModel(network=network, metadata=metadata, resume=resume, path=path)


def _check_inputs_and_outputs(metadata: Mapping[str, Any], sizes: Sequence[int]) -> None:
    """784 inputs and one output per class: as many as the metadata's ``classes`` list, else MNIST's 10."""
    names = metadata.get("classes")
    classes = len(names) if isinstance(names, list) else NUM_CLASSES
    if sizes[0] == IMAGE_PIXELS and sizes[-1] == classes:
        return
    if classes == NUM_CLASSES:
        raise BadModelFileError(
            f"expected a network with {IMAGE_PIXELS} inputs and {NUM_CLASSES} outputs for MNIST, got sizes {sizes}"
        )
    raise BadModelFileError(
        f"expected a network with {IMAGE_PIXELS} inputs and {classes} outputs, one per class its metadata "
        f"names, got sizes {sizes}"
    )


def _read_array(
    archive: zipfile.ZipFile,
    members: Mapping[str, zipfile.ZipInfo],
    archive_size: int,
    name: str,
    dtype: np.dtype[Any],
    shape: tuple[int, ...] | None,
) -> npt.NDArray[Any]:
    """Member ``name`` as an array of ``dtype`` and ``shape`` (None: 1-D metadata bytes), checked before it is read."""
    info = members.get(f"{name}.npy")
    if info is None:
        raise BadModelFileError(f"missing array member {name!r}")
    what = f"member {name!r}"
    if info.flag_bits & 0x1:
        raise BadModelFileError(f"{what} is encrypted")
    if info.compress_type != zipfile.ZIP_STORED:
        raise BadModelFileError(
            f"{what} is compressed; model files store members uncompressed, as np.savez writes them"
        )
    if info.file_size != info.compress_size or info.header_offset + info.compress_size > archive_size:
        raise BadModelFileError(
            f"{what} claims {info.file_size} bytes, more than the file holds (truncated or corrupt)"
        )
    with archive.open(info) as f:
        # The header is parsed from a bounded prefix, so no claimed length can make us read or allocate much.
        head = f.read(min(info.file_size, _NPY_HEADER_MAX))
        prefix = io.BytesIO(head)
        try:
            version = np.lib.format.read_magic(prefix)
            if version == (1, 0):
                found_shape, fortran_order, found_dtype = np.lib.format.read_array_header_1_0(prefix)
            elif version == (2, 0):
                found_shape, fortran_order, found_dtype = np.lib.format.read_array_header_2_0(prefix)
            else:
                raise BadModelFileError(f"{what} has .npy format version {version}, expected (1, 0) or (2, 0)")
        except BadModelFileError:
            raise
        except Exception as exc:  # numpy raises ValueError, SyntaxError, ... for a malformed header
            raise BadModelFileError(f"{what} is not a valid .npy array ({first_line(exc)})") from exc
        header_size = prefix.tell()
        if found_dtype.hasobject:
            raise BadModelFileError(f"{what} holds Python objects (pickled data), which model files never contain")
        if found_dtype.newbyteorder("=") != dtype:
            raise BadModelFileError(f"{what} has dtype {found_dtype}, expected {dtype}")
        if shape is None:
            if len(found_shape) != 1 or found_shape[0] > MAX_METADATA_BYTES:
                raise BadModelFileError(f"{what} has shape {found_shape}, expected (n,) with n <= {MAX_METADATA_BYTES}")
            shape = tuple(found_shape)
        elif tuple(found_shape) != shape:
            raise BadModelFileError(f"{what} has shape {tuple(found_shape)}, expected {shape}")
        if fortran_order and len(shape) > 1:
            raise BadModelFileError(f"{what} is stored in Fortran order, expected C order")
        nbytes = math.prod(shape) * dtype.itemsize
        if info.file_size != header_size + nbytes:
            raise BadModelFileError(
                f"{what} holds {info.file_size - header_size} bytes of data, expected {nbytes} for shape {shape}"
            )
        data = head[header_size:]
        data += f.read(nbytes - len(data))  # reaching the member's end makes zipfile check its CRC-32
    if len(data) != nbytes:
        raise BadModelFileError(f"{what} is truncated: {len(data)} of {nbytes} bytes")
    array = np.frombuffer(data, dtype=found_dtype).reshape(shape).astype(dtype)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        kind = "values" if name.startswith("opt_") else "weights"
        raise BadModelFileError(f"non-finite {kind} in {what} (NaN or infinity)")
    return array


def _parse_metadata(raw: bytes) -> dict[str, Any]:
    """The metadata member's bytes as a JSON object."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadModelFileError(f"metadata is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        metadata = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadModelFileError("metadata JSON is nested too deeply") from None
    except ValueError as exc:
        raise BadModelFileError(f"metadata is not valid JSON ({first_line(exc)})") from None
    if not isinstance(metadata, dict):
        raise BadModelFileError(f"metadata is not a JSON object, got {json_type(metadata)}")
    return metadata


def _refuse_constant(name: str) -> Any:
    """JSON has no NaN or Infinity; Python's parser would accept them."""
    raise ValueError(f"{name} is not JSON")


@dataclass(frozen=True)
class _Plan:
    """What the metadata says the network is, checked, before any array is read."""

    version: int
    layers: list[Layer]  # built on their input shapes, nothing allocated
    sizes: list[int]
    shapes: dict[str, tuple[int, ...]]  # the arrays of one prefix, by name (format 2)
    dtype: np.dtype[Any]
    activation: str
    cost: str


def _plan(metadata: Mapping[str, Any]) -> _Plan:
    """Format, version and the network's description from the metadata, checked against the limits."""
    if "format" not in metadata:
        raise BadModelFileError("metadata has no 'format' key; not an mnist_nn model file")
    if metadata["format"] != FORMAT_NAME:
        raise BadModelFileError(
            f"not an mnist_nn model file (format {short(metadata['format'])}, expected {FORMAT_NAME!r})"
        )
    version = metadata.get("format_version")
    supported = " and ".join(str(v) for v in SUPPORTED_FORMAT_VERSIONS)
    if isinstance(version, bool) or not isinstance(version, int):
        raise BadModelFileError(f"metadata 'format_version' should be an integer, got {short(version)}")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        hint = " (written by a newer mnist_nn?)" if version > max(SUPPORTED_FORMAT_VERSIONS) else ""
        raise BadModelFileError(
            f"unsupported format_version {version}{hint}; this mnist_nn reads format versions {supported}"
        )
    dtype_name = metadata.get("dtype")
    if not isinstance(dtype_name, str) or dtype_name not in _DTYPES:
        raise BadModelFileError(f"unsupported dtype {short(dtype_name)}; expected 'float32' or 'float64'")
    names = []
    for key in ("activation", "cost"):
        value = metadata.get(key)
        if not isinstance(value, str):
            raise BadModelFileError(f"metadata {key!r} should be a name, got {short(value)}")
        names.append(value)
    activation, cost = names
    if version == 1:
        old_sizes = _check_sizes(metadata.get("sizes"))
        input_size: Any = old_sizes[0]
        descriptions: Any = [{"kind": "dense", "size": n} for n in old_sizes[1:]]
    else:
        input_size = metadata.get("input_size")
        if not _is_int(input_size) or not 1 <= input_size <= MAX_LAYER_SIZE:
            raise BadModelFileError(
                f"metadata 'input_size' should be an integer in 1..{MAX_LAYER_SIZE}, got {short(input_size)}"
            )
        descriptions = metadata.get("layers")
        if not isinstance(descriptions, list) or not 1 <= len(descriptions) <= MAX_LAYERS - 1:
            raise BadModelFileError(
                f"metadata 'layers' should be a list of 1 to {MAX_LAYERS - 1} layers, got {short(descriptions)}"
            )
    try:
        layers = [Dense(d["size"]) if version == 1 else layer_from_description(d) for d in descriptions]
        shapes_out = build_layers(layers, (input_size,), activation=activation, cost=_lookup_cost(cost))
    except ValueError as exc:
        raise BadModelFileError(f"metadata describes a network this version cannot build: {exc}") from exc
    sizes = [input_size, *(math.prod(s) for s in shapes_out)]
    if any(n > MAX_LAYER_SIZE for n in sizes):
        raise BadModelFileError(f"layers of sizes {short(sizes)} exceed the {MAX_LAYER_SIZE} values allowed per layer")
    total = sum(math.prod(s) for layer in layers for s in layer.param_shapes())
    if total > MAX_PARAMETERS:
        raise BadModelFileError(f"sizes {short(sizes)} mean {total} parameters, more than the {MAX_PARAMETERS} allowed")
    if version > 1 and metadata.get("sizes", sizes) != sizes:
        raise BadModelFileError(f"metadata 'sizes' {short(metadata.get('sizes'))} do not match its layers ({sizes})")
    shapes = {f"layer{i}_{k}": s for i, layer in enumerate(layers) for k, s in layer.file_shapes().items()}
    return _Plan(version, layers, sizes, shapes, _DTYPES[dtype_name], activation, cost)


def _lookup_cost(name: str) -> Cost:
    if name not in COSTS:
        raise ValueError(f"unknown cost {name!r}; expected one of: {', '.join(sorted(COSTS))}")
    return COSTS[name]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_sizes(sizes: Any) -> list[int]:
    """Format 1's 'sizes', checked against the limits."""
    if (
        not isinstance(sizes, list)
        or not 2 <= len(sizes) <= MAX_LAYERS
        or not all(_is_int(n) and 1 <= n <= MAX_LAYER_SIZE for n in sizes)
    ):
        raise BadModelFileError(
            f"metadata 'sizes' should be a list of 2 to {MAX_LAYERS} integers in 1..{MAX_LAYER_SIZE}, "
            f"got {short(sizes)}"
        )
    return sizes


def _preprocess_name(metadata: Mapping[str, Any]) -> str:
    """The input transform's name; files written before transforms existed have none."""
    name = metadata.get("preprocess", "")
    if not isinstance(name, str):
        raise BadModelFileError(f"metadata 'preprocess' should be a name, got {short(name)}")
    return name


def _check_resume_section(section: Any) -> tuple[dict[str, Any], int, list[str], int | None]:
    """The metadata's resume section as (rng_state, epochs_completed, optimizer keys, best_epoch or None)."""
    bad = "malformed resume section:"
    if not isinstance(section, dict):
        raise BadModelFileError(f"{bad} expected a JSON object, got {json_type(section)}")
    for key in ("rng_state", "epochs_completed", "optimizer"):
        if key not in section:
            raise BadModelFileError(f"{bad} no {key!r}")
    epochs = section["epochs_completed"]
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise BadModelFileError(f"{bad} epochs_completed should be a non-negative integer, got {short(epochs)}")
    keys = section["optimizer"]
    if (
        not isinstance(keys, list)
        or len(keys) > MAX_OPTIMIZER_KEYS
        or not all(isinstance(k, str) and _OPTIMIZER_KEY.fullmatch(k) for k in keys)
        or len(set(keys)) != len(keys)
    ):
        raise BadModelFileError(
            f"{bad} optimizer should be a list of at most {MAX_OPTIMIZER_KEYS} distinct names, got {short(keys)}"
        )
    if not isinstance(section["rng_state"], dict):
        raise BadModelFileError(f"{bad} rng_state should be a JSON object, got {json_type(section['rng_state'])}")
    try:
        rng_state = _restore_rng_state(_decode_state(section["rng_state"], 0))
    except ValueError as exc:
        raise BadModelFileError(f"{bad} {exc}") from exc
    best = section.get("best_epoch")
    if best is not None and (isinstance(best, bool) or not isinstance(best, int) or not 1 <= best <= epochs):
        raise BadModelFileError(f"{bad} best_epoch should be an epoch from 1 to {epochs}, got {short(best)}")
    return rng_state, epochs, keys, best
