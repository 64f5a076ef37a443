"""Nielsen's expanded training set: every image with its four one-pixel shifts.

His chapter 6 (``expand_mnist.py``) grows the 50,000 training images to
250,000: each image as it is, then moved one pixel up, down, left and right,
the row or column that moves in from the edge left blank. Unlike the random
distortions of ``mnist_nn.train.augment``, the set is fixed, so an epoch is a
pass over 250,000 images.
"""

from __future__ import annotations

import numpy as np

from mnist_nn.config import IMAGE_SIDE
from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.network import IntArray
from mnist_nn.nn.transforms import shift_into

SHIFTS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # (rows, columns): up, down, left, right
EXPANSION = 1 + len(SHIFTS)


def expand_shifts(images: FloatArray, labels: IntArray) -> tuple[FloatArray, IntArray]:
    """(5n, 784) images and (5n,) labels: the n originals first, then each shift of all n in turn.

    Args:
        images: (n, 784) flattened 28x28 images.
        labels: (n,) their labels.
    """
    n = images.shape[0]
    side = IMAGE_SIDE
    if images.ndim != 2 or images.shape[1] != side * side:
        raise ValueError(f"expected images of shape (n, {side * side}), got {images.shape}")
    out = np.zeros((EXPANSION * n, side * side), dtype=images.dtype)
    out[:n] = images
    src = images.reshape(n, side, side)
    for k, (dr, dc) in enumerate(SHIFTS, start=1):
        shift_into(src, out[k * n : (k + 1) * n].reshape(n, side, side), dr, dc)
    return out, np.tile(labels, EXPANSION)
