"""Random erasing: one rectangle of an image replaced by noise (Zhong, Zheng, Kang, Li and Yang 2017).

``erase_rectangles`` works on a chunk of (c, 784) images in place. With
probability ``p`` an image gets one rectangle whose area is a fraction
s ~ U(0.02, 0.4) of the image's 784 pixels and whose aspect ratio (height over
width) is r = exp(U(log 0.3, log (1 / 0.3))), the ranges of the paper and of
torchvision's ``RandomErasing``:

    height = round(sqrt(s 784 r)),  width = round(sqrt(s 784 / r)),

each at least 1 and at most 28 (clipped where the paper draws again), at a
uniformly random position that keeps it inside the image. Its pixels become
U(0, 1) noise, the paper's choice, so the network cannot tell the rectangle
from the background.

The draws, per chunk: ``rng.random((c, 5))`` (whether to erase, the area,
the aspect, the row and the column of each image), then ``rng.random((k,
784))`` in the images' dtype for the k images erased. Everything is computed
for the whole chunk at once: a rectangle is the outer product of a row mask
and a column mask.
"""

from __future__ import annotations

import numpy as np

from mnist_nn.config import IMAGE_PIXELS, IMAGE_SIDE
from mnist_nn.nn.activations import FloatArray

AREA = (0.02, 0.4)  # the rectangle's area as a fraction of the image, drawn uniformly
ASPECT = (0.3, 1 / 0.3)  # height over width, drawn log-uniformly


def erase_rectangles(images: FloatArray, rng: np.random.Generator, p: float) -> None:
    """With probability ``p``, replace one random rectangle of each row of ``images`` by U(0, 1) noise, in place.

    Args:
        images: (c, 784) float32 or float64 array (a strided view is fine); written in place.
        rng: the generator the draws come from (see the module docstring for their order).
        p: the probability of erasing an image, in [0, 1]; the draws are made even when it is 0.
    """
    c = images.shape[0]
    draws = rng.random((c, 5))
    erased = np.flatnonzero(draws[:, 0] < p)
    area = (AREA[0] + (AREA[1] - AREA[0]) * draws[erased, 1]) * IMAGE_PIXELS
    aspect = np.exp(np.log(ASPECT[0]) + (np.log(ASPECT[1]) - np.log(ASPECT[0])) * draws[erased, 2])
    height = np.clip(np.rint(np.sqrt(area * aspect)), 1, IMAGE_SIDE).astype(np.intp)
    width = np.clip(np.rint(np.sqrt(area / aspect)), 1, IMAGE_SIDE).astype(np.intp)
    top = (draws[erased, 3] * (IMAGE_SIDE - height + 1)).astype(np.intp)  # 0 .. 28 - height
    left = (draws[erased, 4] * (IMAGE_SIDE - width + 1)).astype(np.intp)
    noise = rng.random((erased.size, IMAGE_PIXELS), dtype=images.dtype.type)
    if not erased.size:
        return
    steps = np.arange(IMAGE_SIDE)
    rows = (steps >= top[:, None]) & (steps < (top + height)[:, None])  # (k, 28)
    cols = (steps >= left[:, None]) & (steps < (left + width)[:, None])
    inside = (rows[:, :, None] & cols[:, None, :]).reshape(erased.size, IMAGE_PIXELS)
    images[erased] = np.where(inside, noise, images[erased])
