"""The command-line syntax of layers: one spec per layer, such as ``conv20x5``, ``pool2`` or ``dense100``.

``SPEC_FORMS`` is the table, one row per form: the form as ``--help`` and
error messages show it (``conv<F>x<K>[p<P>]``), the layer kind it builds, the
regular expression a spec matches in full (the arguments in its groups),
the layer a match names, and the way back, a layer's spec from its
description. ``layer_from_spec`` parses a spec; ``spec_of`` writes one. A
new kind of layer is one row here, beside its class in
``mnist_nn.nn.layers``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mnist_nn.nn.batchnorm import BatchNorm
from mnist_nn.nn.layers import AvgPool2D, Conv2D, Dense, Dropout, Layer, MaxPool2D


@dataclass(frozen=True)
class SpecForm:
    """One form of layer spec (see the module docstring)."""

    form: str  # as help and messages show it, e.g. "conv<F>x<K>[p<P>]"
    kind: str  # the kind it builds, a key of ``LAYER_KINDS``
    pattern: str  # the whole spec, its arguments in groups
    layer: Callable[[re.Match[str]], Layer]  # the layer a matching spec names
    spec: Callable[[Mapping[str, Any]], str]  # the spec of a layer's description


SPEC_FORMS = (
    SpecForm("dense<N>", "dense", r"dense([0-9]{1,9})", lambda m: Dense(int(m[1])), lambda d: f"dense{d['size']}"),
    SpecForm(
        "conv<F>x<K>[p<P>]",
        "conv2d",
        r"conv([0-9]{1,9})x([0-9]{1,9})(?:p([0-9]{1,9}))?",
        lambda m: Conv2D(int(m[1]), int(m[2]), padding=int(m[3] or 0)),
        lambda d: f"conv{d['filters']}x{d['kernel']}" + (f"p{d['padding']}" if d.get("padding") else ""),
    ),
    SpecForm("pool<P>", "maxpool2d", r"pool([0-9]{1,9})", lambda m: MaxPool2D(int(m[1])), lambda d: f"pool{d['pool']}"),
    SpecForm(
        "avgpool<P>",
        "avgpool2d",
        r"avgpool([0-9]{1,9})",
        lambda m: AvgPool2D(int(m[1])),
        lambda d: f"avgpool{d['pool']}",
    ),
    SpecForm(
        "dropout<rate>",
        "dropout",
        r"dropout(0?\.[0-9]{1,9}|0)",
        lambda m: Dropout(float(m[1])),
        lambda d: f"dropout{d['rate']}",
    ),
    SpecForm("bn", "batchnorm", r"bn", lambda m: BatchNorm(), lambda d: "bn"),
)

# The forms, for messages and help: "dense<N>, conv<F>x<K>[p<P>], pool<P>, avgpool<P>, dropout<rate>, bn".
FORMS = ", ".join(row.form for row in SPEC_FORMS)


def layer_from_spec(spec: str) -> Layer:
    """The layer a command-line spec names: ``conv20x5``, ``conv32x3p1``, ``pool2``, ``dropout0.5``, ``dense100``.

    Raises:
        ValueError: a spec of no form, or of a form whose values no layer takes (``conv0x5``).
    """
    if isinstance(spec, str):
        for row in SPEC_FORMS:
            match = re.fullmatch(row.pattern, spec)
            if match:
                return row.layer(match)
    raise ValueError(f"unknown layer {spec!r}; expected one of the forms {FORMS}")


def spec_of(layer: Layer) -> str:
    """The command-line spec of a layer: ``dense30``, ``conv20x5``, ``pool2``, ``avgpool2``, ``dropout0.5``.

    Raises:
        ValueError: a kind of layer that has no spec form.
    """
    description = layer.describe()
    for row in SPEC_FORMS:
        if row.kind == description["kind"]:
            return row.spec(description)
    raise ValueError(f"a {description['kind']} layer has no spec form; the forms are {FORMS}")
