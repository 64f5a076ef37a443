"""Winograd's minimal filtering, F(2x2, 3x3): a 3x3 convolution with 16 products where im2col takes 36.

Lavin and Gray (2016, "Fast Algorithms for Convolutional Neural Networks")
apply it to CNNs. The output is cut into 2x2 tiles; each one is computed from
the 4x4 tile of input under it (tiles overlap by 2) as

    Y = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise, over 4x4)

with g a 3x3 kernel, d the 4x4 input tile, and

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].

Summed over input channels, each of the 16 positions of a tile is one matrix
product over all tiles: V[k] (tiles, C) @ U[k] (C, F) = M[k] (tiles, F). So a
layer's three products (forward, the kernels' gradient, the delta below)
become 16 products each of (tiles, C, F), 16/36 of im2col's multiplications
(4 output positions a tile, 9 C each), and the transforms are additions over
the batch. The backward pass is the exact adjoint of these linear maps:

    dM = A dY A^T,  dU[k] = V[k]^T dM[k],  dg = G^T dU G,
    dV[k] = dM[k] U[k]^T,  dd = B dV B^T, added where each input tile lies.

Arrays are batch first and channels last, as the layers keep them, tiles
ordered (m, H'/2, W'/2), and the 16 positions of a tile first, k = 4a + b
for row a and column b. The padded input and the delta below it are kept
with each row's even columns before its odd ones, (m, H'+2, 2, W'/2+1, C):
the tiles' columns j and j + 2 are then runs of W'/2 C values, not of C,
and NumPy's additions run at their speed on long runs.
"""

from __future__ import annotations

import numpy as np

from mnist_nn.nn.activations import FloatArray

# U = G g G^T and dg = G^T dU G, with g and U flattened to (9, C*F) and (16, C*F): G kron G, (16, 9).
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
_KERNEL_TRANSFORM = np.kron(_G, _G)


def transform_kernels(kernels: FloatArray, out: FloatArray) -> None:
    """U = G g G^T for every (input channel, feature map): (3, 3, C, F) kernels into out (16, C, F)."""
    np.matmul(_KERNEL_TRANSFORM.astype(kernels.dtype), kernels.reshape(9, -1), out=out.reshape(16, -1))


def kernels_gradient(d_u: FloatArray, out: FloatArray) -> None:
    """dg = G^T dU G: the gradient (16, C, F) of the transformed kernels into out (3, 3, C, F)."""
    np.matmul(_KERNEL_TRANSFORM.T.astype(d_u.dtype), d_u.reshape(16, -1), out=out.reshape(9, -1))


class Tiles:
    """The buffers of F(2x2, 3x3) going forward, for m images (m, H, W, C), padding P, and F maps.

    The output is (m, H', W', F), H' = H + 2P - 2 and W' = W + 2P - 2, both
    even. ``load`` copies a batch into ``image``, the padded input with its
    columns split by parity; ``v`` (16, T, C) and ``products`` (16, T, F) are
    the transformed input and the products, T = m H'/2 W'/2 tiles.
    """

    def __init__(self, m: int, image: tuple[int, int, int], padding: int, filters: int, dtype: np.dtype) -> None:
        h, w, c = image
        hp, wp = h + 2 * padding, w + 2 * padding
        ho, wo = hp - 2, wp - 2
        if ho % 2 or wo % 2 or ho < 2 or wo < 2:
            raise ValueError(f"F(2x2, 3x3) needs an even output size, got {ho}x{wo}")
        th, tw = ho // 2, wo // 2
        self.shape = (m, th, tw)
        self.image = np.zeros((m, hp, 2, tw + 1, c), dtype)  # column 2q + p at [:, :, p, q]; the border stays 0
        # Where the input's columns lie: those landing on even columns, then on odd ones.
        self.places = []
        for parity in (0, 1):
            first = (parity - padding) % 2  # the first input column that lands on this parity
            q = (first + padding) // 2
            self.places.append((slice(padding, padding + h), parity, slice(q, q + len(range(first, w, 2))), first))
        self.input_shape = (m, h, w, c)
        self.loads = self.interior(self.image)
        self.v = np.empty((16, m * th * tw, c), dtype)
        self.v6 = self.v.reshape(4, 4, m, th, tw, c)
        self.products = np.empty((16, m * th * tw, filters), dtype)
        self.p6 = self.products.reshape(4, 4, m, th, tw, filters)
        # Row i of every tile: rows i, i + 2, ... of the image, views; then B^T d, (4, m, th, 2, W'/2+1, C).
        self.image_rows = [self.image[:, i : i + 2 * th : 2] for i in range(4)]
        self.rows = np.empty((4, m, th, 2, tw + 1, c), dtype)
        self.row_columns = [self.rows[:, :, :, j % 2, j // 2 : j // 2 + tw] for j in range(4)]
        self.sums = np.empty((2, 4, m, th, tw, filters), dtype)  # A^T M, the first half of the output's
        self.z = np.empty((2, 2, m, th, tw, filters), dtype)

    def interior(self, buffer: FloatArray) -> list[tuple[FloatArray, slice]]:
        """Views of a buffer laid out as ``image``: its interior's even and odd columns, each with the input's."""
        return [(buffer[:, rows, parity, q], slice(first, None, 2)) for rows, parity, q, first in self.places]

    def load(self, x: FloatArray) -> None:
        """Copy a batch x (m, H * W * C) into ``image``'s interior."""
        x4 = x.reshape(self.input_shape)
        for target, columns in self.loads:
            np.copyto(target, x4[:, :, columns])

    def transform_input(self) -> None:
        """V = B^T d B for every tile and channel, from ``image``."""
        d0, d1, d2, d3 = self.image_rows
        r = self.rows
        np.subtract(d0, d2, out=r[0])
        np.add(d1, d2, out=r[1])
        np.subtract(d2, d1, out=r[2])
        np.subtract(d1, d3, out=r[3])
        e0, e1, e2, e3 = self.row_columns
        v = self.v6
        np.subtract(e0, e2, out=v[:, 0])
        np.add(e1, e2, out=v[:, 1])
        np.subtract(e2, e1, out=v[:, 2])
        np.subtract(e1, e3, out=v[:, 3])

    def tiled(self, maps: FloatArray) -> FloatArray:
        """A view of output maps (m, H' * W' * F) by position in their tile: (row, column, m, H'/2, W'/2, F)."""
        m, th, tw = self.shape
        tiled: FloatArray = maps.reshape(m, th, 2, tw, 2, -1).transpose(2, 4, 0, 1, 3, 5)
        return tiled

    def transform_output(self, biases: FloatArray) -> None:
        """z = A^T M A + biases from ``products``, into ``z`` (2, 2, m, H'/2, W'/2, F), as ``tiled`` orders it."""
        p, s, z = self.p6, self.sums, self.z
        np.add(p[1, 1], biases, out=p[1, 1])  # A's column 1 is all ones: every output gets it once
        np.add(p[0], p[1], out=s[0])
        np.add(s[0], p[2], out=s[0])
        np.subtract(p[1], p[2], out=s[1])
        np.subtract(s[1], p[3], out=s[1])
        np.add(s[:, 0], s[:, 1], out=z[:, 0])
        np.add(z[:, 0], s[:, 2], out=z[:, 0])
        np.subtract(s[:, 1], s[:, 2], out=z[:, 1])
        np.subtract(z[:, 1], s[:, 3], out=z[:, 1])


class TilesBackward:
    """The backward pass's buffers for ``Tiles``: dM (16, T, F), dV (16, T, C), and dd as the image is kept."""

    def __init__(self, tiles: Tiles) -> None:
        m, th, tw = tiles.shape
        t, c = tiles.v.shape[1:]
        f = tiles.products.shape[2]
        dtype = tiles.v.dtype
        self.tiles = tiles
        self.d_products = np.empty((16, t, f), dtype)
        self.dp6 = self.d_products.reshape(4, 4, m, th, tw, f)
        self.columns = np.empty((2, 4, m, th, tw, f), dtype)  # dY A^T over each tile's columns
        self.d_v = np.empty((16, t, c), dtype)
        self.dv6 = self.d_v.reshape(4, 4, m, th, tw, c)
        self.d_rows = np.empty_like(tiles.rows)  # dV B^T, each tile's columns added where they lie
        self.d_row_columns = [self.d_rows[:, :, :, j % 2, j // 2 : j // 2 + tw] for j in range(4)]
        self.row = np.empty_like(tiles.rows[0])
        self.d_image = np.empty_like(tiles.image)  # B dV B^T, added where each tile lies
        self.below_rows = [self.d_image[:, i : i + 2 * th : 2] for i in range(4)]
        self.unloads = tiles.interior(self.d_image)

    def transform_delta(self, delta: FloatArray) -> None:
        """dM = A dY A^T from the delta (m, H' * W' * F) at the output."""
        dy = self.tiles.tiled(delta)
        q = self.columns
        np.copyto(q[:, 0], dy[:, 0])
        np.negative(dy[:, 1], out=q[:, 3])
        np.subtract(q[:, 0], q[:, 3], out=q[:, 1])
        np.add(q[:, 0], q[:, 3], out=q[:, 2])
        d = self.dp6
        np.copyto(d[0], q[0])
        np.add(q[0], q[1], out=d[1])
        np.subtract(q[0], q[1], out=d[2])
        np.negative(q[1], out=d[3])

    def delta_below(self, below: FloatArray) -> None:
        """dd = B dV B^T of every tile, added where the tile lies; its interior into below (m, H * W * C)."""
        v, r = self.dv6, self.d_rows
        r.fill(0.0)
        e0, e1, e2, e3 = self.d_row_columns
        np.add(e0, v[:, 0], out=e0)
        np.add(e1, v[:, 1], out=e1)
        np.subtract(e1, v[:, 2], out=e1)
        np.add(e1, v[:, 3], out=e1)
        np.add(e2, v[:, 1], out=e2)
        np.add(e2, v[:, 2], out=e2)
        np.subtract(e2, v[:, 0], out=e2)
        np.subtract(e3, v[:, 3], out=e3)
        below_rows, row = self.below_rows, self.row
        self.d_image.fill(0.0)
        np.add(below_rows[0], r[0], out=below_rows[0])
        np.subtract(r[1], r[2], out=row)
        np.add(row, r[3], out=row)
        np.add(below_rows[1], row, out=below_rows[1])
        np.add(r[1], r[2], out=row)
        np.subtract(row, r[0], out=row)
        np.add(below_rows[2], row, out=below_rows[2])
        np.subtract(below_rows[3], r[3], out=below_rows[3])
        below4 = below.reshape(self.tiles.input_shape)
        for source, columns in self.unloads:
            np.copyto(below4[:, :, columns], source)
