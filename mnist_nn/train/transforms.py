"""Input transforms a model applies to every image before its first layer, by name.

A model trained on transformed images must see every image transformed the
same way (validation, test, a user's photo), so the transform is part of the
model: ``Network`` carries an ``InputTransform`` and model files record its
name. This table is where names become functions.
"""

from __future__ import annotations

from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.network import InputTransform
from mnist_nn.train.augment import deskew_images


def _deskew(images: FloatArray) -> FloatArray:
    return deskew_images(images)


# "" is no transform; "deskew" straightens slanted digits (see mnist_nn.train.augment.deskew_images).
TRANSFORMS: dict[str, InputTransform] = {"deskew": InputTransform("deskew", _deskew)}


def input_transform(name: str) -> InputTransform | None:
    """The transform called ``name``, or None for ""; raises ValueError for unknown names."""
    if not name:
        return None
    if name not in TRANSFORMS:
        raise ValueError(f"unknown input transform {name!r}; expected one of: {', '.join(sorted(TRANSFORMS))}")
    return TRANSFORMS[name]
