"""Input transforms a model applies to every image before its first layer, by name.

A model trained on transformed images must see every image transformed the
same way (validation, test, a user's photo), so the transform is part of the
model: ``Network`` carries an ``InputTransform`` and model files record its
name. ``TRANSFORMS`` is where names become functions; the one transform is
``deskew_images``.
"""

from __future__ import annotations

import numpy as np

from mnist_nn.config import IMAGE_SIDE
from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.network import InputTransform
from mnist_nn.nn.warp import CENTER, PAD_OFFSET, Warper, input_and_output


def deskew_images(images: FloatArray, out: FloatArray | None = None, chunk: int = 512) -> FloatArray:
    """Straighten each digit's slant and center its mass, as in LeCun et al.'s "deskewing".

    For each image, from its intensity moments: the center of mass (m_x, m_y)
    and the slant s = cov(x, y) / var(y). The output pixel (x, y) reads the
    source point (x - c + s (y - c) + m_x, y - c + m_y), c = 13.5: rows are
    shifted sideways in proportion to their height, so the principal axis
    becomes vertical and the center of mass lands on the center. A blank image
    stays blank. The transform is deterministic, so it is applied alike to
    training, validation, test and user images (a model's ``preprocess``).

    Args:
        images: (m, 784) float32 or float64 in [0, 1].
        out: where to write (may be ``images``, or a strided row view), or None.
        chunk: images processed at once.

    Returns:
        ``out`` (or a new array): the deskewed images, (m, 784), in [0, 1].
    """
    images, out = input_and_output(images, out, chunk)
    m = images.shape[0]
    warper = Warper(int(min(chunk, max(m, 1))), images.dtype)
    steps = np.arange(IMAGE_SIDE, dtype=np.float64)
    for start in range(0, m, warper.chunk):
        block = images[start : start + warper.chunk].reshape(-1, IMAGE_SIDE, IMAGE_SIDE).astype(np.float64)
        total = block.sum(axis=(1, 2))
        weight = np.where(total > 0, total, 1.0)
        rows = block.sum(axis=2)  # (c, 28): mass of each row
        cols = block.sum(axis=1)  # (c, 28): mass of each column
        my = rows @ steps / weight
        mx = cols @ steps / weight
        var_y = (rows @ steps**2) / weight - my**2
        cov = np.einsum("cyx,y,x->c", block, steps, steps) / weight - mx * my
        slant = np.where(var_y > 1e-3, cov / np.maximum(var_y, 1e-3), 0.0)
        blank = total <= 0
        mx[blank] = my[blank] = CENTER
        inv = np.zeros((block.shape[0], 2, 3))
        inv[:, 0, 0] = 1.0
        inv[:, 0, 1] = slant
        inv[:, 0, 2] = mx - CENTER - slant * CENTER + PAD_OFFSET
        inv[:, 1, 1] = 1.0
        inv[:, 1, 2] = my - CENTER + PAD_OFFSET
        c = block.shape[0]
        warper.sample(images[start : start + c], warper.coordinates(inv), out[start : start + c])
    return out


def _deskew(images: FloatArray) -> FloatArray:
    return deskew_images(images)


# "" is no transform; "deskew" straightens slanted digits (see deskew_images).
TRANSFORMS: dict[str, InputTransform] = {"deskew": InputTransform("deskew", _deskew)}


def shift_into(source: FloatArray, target: FloatArray, down: int, right: int) -> None:
    """(n, 28, 28) images moved ``down`` rows and ``right`` columns into ``target``, background (0) moved in.

    target[r, c] = source[r - down, c - right] where that is inside the image; the
    row or column that moves in from the edge is written 0. Nielsen's expanded
    training set (``mnist_nn.train.expand``) and test-time augmentation
    (``mnist_nn.tta``) move their images with it.
    """
    side = source.shape[-1]
    rows, columns = slice(max(down, 0), side + min(down, 0)), slice(max(right, 0), side + min(right, 0))
    target[...] = 0.0
    target[:, rows, columns] = source[:, max(-down, 0) : side + min(-down, 0), max(-right, 0) : side + min(-right, 0)]


def input_transform(name: str) -> InputTransform | None:
    """The transform called ``name``, or None for ""; raises ValueError for unknown names."""
    if not name:
        return None
    if name not in TRANSFORMS:
        raise ValueError(f"unknown input transform {name!r}; expected one of: {', '.join(sorted(TRANSFORMS))}")
    return TRANSFORMS[name]
