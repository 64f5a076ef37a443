"""MNIST data: the verified download, the IDX parser, Nielsen's split and his loaders.

``download`` fetches the four files from mirrors and checks them against pinned
SHA-256 digests (it is the only module that uses the network); ``idx`` parses
IDX files; ``mnist`` turns them into the 50,000 / 10,000 / 10,000 split, as
arrays (``load_mnist``) or in the shapes of Nielsen's ``mnist_loader``.
"""

from __future__ import annotations

from mnist_nn.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, parse_idx, parse_images, parse_labels
from mnist_nn.data.mnist import (
    MnistData,
    Split,
    as_floats,
    load_data,
    load_data_wrapper,
    load_mnist,
    scale_pixels,
    vectorized_result,
)

__all__ = [
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "MnistData",
    "Split",
    "as_floats",
    "load_data",
    "load_data_wrapper",
    "load_mnist",
    "parse_idx",
    "parse_images",
    "parse_labels",
    "scale_pixels",
    "vectorized_result",
]
