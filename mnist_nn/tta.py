"""Test-time augmentation: a network's probabilities averaged over a few moved copies of each image.

A network trained on shifted images answers a shifted copy of a test
image about as well as the image itself, and its mistakes on the copies
differ, so the average of the probabilities over the copies is right more
often than one answer (a committee of one network). ``TTA`` says which
copies: the image itself, its four one-pixel shifts (up, down, left,
right; the pixel shifted in is background, 0), and, for a network trained
on mirrored images (clothes), the mirror image of each.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mnist_nn.config import IMAGE_SIDE
from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.network import Network
from mnist_nn.nn.transforms import shift_into
from mnist_nn.train.augment import parse_augment

SHIFTS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))  # (rows down, columns right): the image and its 4 shifts


@dataclass(frozen=True)
class TTA:
    """Which copies of each image a network answers: the image and its 4 one-pixel shifts, mirrored if ``mirror``."""

    mirror: bool = False

    @classmethod
    def for_training(cls, augment: str | None) -> TTA:
        """The copies for a network trained with the ``--augment`` spec ``augment``: mirrored ones when it mirrored.

        An unreadable spec gives the unmirrored copies (the model file's own check says so where it matters).
        """
        try:
            mirror = bool(augment) and parse_augment(augment or "").flip > 0
        except ValueError:
            mirror = False
        return cls(mirror=mirror)

    @property
    def copies(self) -> int:
        """Copies answered per image: 5, or 10 with their mirror images."""
        return len(SHIFTS) * (2 if self.mirror else 1)

    def describe(self) -> str:
        """One line for the output: what the probabilities were averaged over."""
        mirrored = " and the mirror image of each" if self.mirror else ""
        return (
            f"with test-time augmentation: each image's probabilities averaged over {self.copies} copies, "
            f"the image and its 4 one-pixel shifts{mirrored}"
        )

    def views(self, images: FloatArray) -> Iterator[FloatArray]:
        """Each copy of the (m, 784) images in turn, as a new (m, 784) array (the image itself first)."""
        square = images.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
        sources = (square, square[:, :, ::-1]) if self.mirror else (square,)
        for source in sources:
            for down, right in SHIFTS:
                view = np.empty_like(source)
                shift_into(source, view, down, right)
                yield view.reshape(images.shape)


def tta_probabilities(network: Network, images: npt.ArrayLike, tta: TTA) -> FloatArray:
    """(m, n_out) probabilities of the (m, 784) images, each the mean over its copies (``Network.probabilities``).

    Raises:
        ValueError: images that are not (m, 784) floats, or a network whose inputs are not 28x28 images.
    """
    if network.input_size != IMAGE_SIDE * IMAGE_SIDE:
        raise ValueError(f"test-time augmentation moves 28x28 images; this network takes {network.input_size} inputs")
    x = network.check_images(images)
    total: FloatArray | None = None
    for view in tta.views(x):
        probs = network.probabilities(view)
        total = probs if total is None else total + probs
    assert total is not None
    return total / tta.copies
