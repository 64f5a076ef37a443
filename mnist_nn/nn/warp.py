"""The bilinear sampler that warps 28x28 images: augmentation's distortions and the deskewing transform.

``Warper`` holds the scratch buffers for a chunk of images and reads each
output pixel from a source point given in padded coordinates: the image sits
in a zero-bordered 32x32 grid (pixel (0, 0) at (1, 1)), so every source
point clipped to [0, 29] has four neighbours inside the grid, and the
background is zero without a bounds check. ``coordinates`` turns (c, 2, 3)
affine maps into those points, one broadcast sum of a per-column and a
per-row term each; ``sample`` interpolates with four ``np.take`` gathers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from mnist_nn.config import IMAGE_PIXELS, IMAGE_SIDE
from mnist_nn.nn.activations import FloatArray

CENTER = (IMAGE_SIDE - 1) / 2  # 13.5: rotations and scalings are about the middle of the 28x28 grid
PAD_SIDE = 32  # padded image side: one zero row/column before the image and three after
PAD_OFFSET = 1.0  # image pixel (0, 0) sits at padded (1, 1)
PAD_MAX = float(IMAGE_SIDE + 1)  # 29: source coordinates are clipped to [0, 29] in padded space


def _check_arrays(images: FloatArray, out: FloatArray | None, chunk: int) -> None:
    """Raise ValueError unless images and out are (m, 784) float arrays of one dtype and chunk >= 1."""
    if not isinstance(images, np.ndarray) or images.ndim != 2 or images.shape[1] != IMAGE_PIXELS:
        shape = getattr(images, "shape", type(images).__name__)
        raise ValueError(f"expected images of shape (m, {IMAGE_PIXELS}), got {shape}")
    if images.dtype not in (np.float32, np.float64):
        raise ValueError(f"expected float32 or float64 images, got {images.dtype}")
    if out is not None:
        if not isinstance(out, np.ndarray) or out.shape != images.shape:
            shape = getattr(out, "shape", type(out).__name__)
            raise ValueError(f"expected out of shape {images.shape} like images, got {shape}")
        if out.dtype != images.dtype:
            raise ValueError(f"expected out of dtype {images.dtype} like images, got {out.dtype}")
        if not out.flags.writeable:
            raise ValueError("expected a writeable out array, got a read-only one")
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"expected chunk to be an integer >= 1, got {chunk!r}")


def input_and_output(images: FloatArray, out: FloatArray | None, chunk: int) -> tuple[FloatArray, FloatArray]:
    """Check the arrays; make ``out`` if None, and copy ``images`` if ``out`` overlaps it partly."""
    _check_arrays(images, out, chunk)
    if out is None:
        return images, np.empty_like(images)
    if out is not images and np.may_share_memory(images, out) and not _same_view(images, out):
        return images.copy(), out
    return images, out


def _same_view(a: FloatArray, b: FloatArray) -> bool:
    """True when a and b are the same elements in the same layout (so chunk-by-chunk in-place work is safe)."""
    same_start = a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    return bool(same_start and a.strides == b.strides and a.shape == b.shape)


class Warper:
    """Scratch buffers and the bilinear sampler for chunks of up to ``chunk`` images."""

    def __init__(self, chunk: int, dtype: np.dtype[Any]) -> None:
        self.chunk = chunk
        self.dtype = dtype
        self.steps = np.arange(IMAGE_SIDE, dtype=np.float64)  # output columns x and rows y, 0..27
        self.padded = np.zeros((chunk, PAD_SIDE, PAD_SIDE), dtype=dtype)  # borders stay zero: the background
        self.flat = self.padded.reshape(-1)
        self.interior = self.padded[:, 1 : IMAGE_SIDE + 1, 1 : IMAGE_SIDE + 1]  # pixel (0, 0) at padded (1, 1)
        self.coords = np.empty((chunk, 2, IMAGE_PIXELS), dtype=dtype)  # source x, y; then their fractions
        self.floors = np.empty_like(self.coords)
        self.index = np.empty((chunk, IMAGE_PIXELS), dtype=np.intp)
        self.corners = np.empty((4, chunk, IMAGE_PIXELS), dtype=dtype)
        self.row_starts = (np.arange(chunk) * PAD_SIDE * PAD_SIDE)[:, None]  # (chunk, 1)

    def coordinates(self, inv: npt.NDArray[np.float64]) -> FloatArray:
        """Padded source coordinates (c, 2, 784) of every output pixel, from (c, 2, 3) affine maps."""
        c = inv.shape[0]
        q = self.coords[:c]
        # source = inv[:, :, 0] x + (inv[:, :, 1] y + inv[:, :, 2]): one broadcast sum of a column
        # term and a row term per coordinate (no BLAS call: tiny threaded products stall on a busy machine)
        by_column = (inv[:, :, 0, None] * self.steps).astype(self.dtype)  # (c, 2, 28)
        by_row = (inv[:, :, 1, None] * self.steps + inv[:, :, 2, None]).astype(self.dtype)  # (c, 2, 28)
        np.add(by_row[..., :, None], by_column[..., None, :], out=q.reshape(c, 2, IMAGE_SIDE, IMAGE_SIDE))
        return q

    def sample(self, images: FloatArray, q: FloatArray, out: FloatArray) -> None:
        """out = images read at the coordinates q, bilinearly, with zero outside; q is overwritten."""
        c = images.shape[0]
        np.clip(q, 0.0, PAD_MAX, out=q)  # outside the image everything reads the zero border
        fl = self.floors[:c]
        np.floor(q, out=fl)
        q -= fl  # fractions in [0, 1)
        fl[:, 1] *= PAD_SIDE
        fl[:, 0] += fl[:, 1]  # flat offset within a padded image: at most 29 * 32 + 29, exact in float32
        idx = self.index[:c]
        np.copyto(idx, fl[:, 0], casting="unsafe")
        idx += self.row_starts[:c]

        self.interior[:c] = images.reshape(c, IMAGE_SIDE, IMAGE_SIDE)
        top_left, top_right, bottom_left, bottom_right = self.corners[:, :c]
        flat = self.flat
        # shifted views of the flat buffer give the other three corners with the same indices
        np.take(flat, idx, out=top_left, mode="clip")
        np.take(flat[1:], idx, out=top_right, mode="clip")
        np.take(flat[PAD_SIDE:], idx, out=bottom_left, mode="clip")
        np.take(flat[PAD_SIDE + 1 :], idx, out=bottom_right, mode="clip")
        fx, fy = q[:, 0], q[:, 1]
        top_right -= top_left
        top_right *= fx
        top_left += top_right  # top row interpolated in x
        bottom_right -= bottom_left
        bottom_right *= fx
        bottom_left += bottom_right  # bottom row interpolated in x
        bottom_left -= top_left
        bottom_left *= fy
        top_left += bottom_left  # then in y
        np.clip(top_left, 0.0, 1.0, out=out)  # rounding can step an ulp outside [0, 1]
