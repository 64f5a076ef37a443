"""The validation set, counted after every epoch, and uint8 pixels counted without a float copy.

Floats are prepared once and counted by ``Network.count_correct``. uint8
pixels (of a network without an input transform) stay pixels: a count
scales them ``_COUNT_ROWS`` rows at a time into one small buffer and
predicts each chunk (``count_in_chunks``), so no full float copy is ever
held beside the pixels the caller keeps. ``Validation`` is the one object
``fit`` counts with: alone, or with the helper process of the run's feed
(``mnist_nn.train.prefetch``) counting the second half of the chunks while
this process counts the first; both count the same chunks as a count here
alone, so the count is the same either way. Where a convolutional
network's steps split across two threads (``mnist_nn.train.split``), a
thread counts that second half instead, with BLAS on one thread.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

from mnist_nn.data import as_floats, scale_pixels
from mnist_nn.errors import NonFiniteError
from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.network import IntArray, Network
from mnist_nn.train.feeds import check_pixels, prepared_images
from mnist_nn.train.prefetch import Prefetcher
from mnist_nn.train.split import one_thread_blas, wanted

_COUNT_ROWS = 2000  # pixels scaled and counted at a time: a float copy of 6 MB, not 31 MB


def count_in_chunks(
    network: Network, images: npt.ArrayLike, labels: npt.ArrayLike, buffer: FloatArray | None = None
) -> int:
    """How many of ``images`` the network gets right: floats as they are, uint8 pixels scaled a chunk at a time.

    Pixels (of a network without an input transform) are scaled into
    ``buffer`` (a few thousand rows of the network's dtype; one is made if
    None) and counted chunk by chunk, so no float copy of the whole set is
    ever made. The count is ``Network.count_correct``'s of the same images as floats.
    """
    pixels = np.asarray(images)
    if pixels.dtype != np.uint8:
        return network.count_correct(pixels, labels)
    check_pixels(network, pixels, "images")
    if network.transform is not None:
        return network.count_correct(as_floats(pixels, network.dtype), labels)
    y = network.check_labels(labels, pixels.shape[0])
    if buffer is None:
        buffer = np.empty((min(_COUNT_ROWS, max(pixels.shape[0], 1)), pixels.shape[1]), network.dtype)
    return _count_pixels(network, pixels, y, buffer)


def _count_pixels(network: Network, pixels: npt.NDArray[np.uint8], y: IntArray, buffer: FloatArray) -> int:
    """``count_in_chunks`` of checked pixels and labels, scaled into ``buffer`` a chunk at a time."""
    correct, rows, total = 0, buffer.shape[0], pixels.shape[0]
    for k in range(0, total, rows):
        chunk = buffer[: min(rows, total - k)]
        scale_pixels(pixels[k : k + rows], chunk)
        correct += int(np.count_nonzero(network.predict(chunk, prepared=True) == y[k : k + rows]))
    return correct


class Validation:
    """The validation images (n, n_in) and labels (n,), checked once, counted after every epoch by ``count``.

    With a helper process, the helper counts the pixels from ``split`` on
    (``count_rest``) while this process counts those before; ``split`` is 0
    where the set is not split (floats, or a single chunk of pixels).

    Raises:
        ValueError: images or labels that do not fit the network.
    """

    def __init__(self, network: Network, images: npt.ArrayLike, labels: npt.ArrayLike) -> None:
        pixels = np.asarray(images)
        self.network = network
        if pixels.dtype == np.uint8 and network.transform is None:
            check_pixels(network, pixels, "validation images")
            self.pixels: npt.NDArray[np.uint8] | None = pixels
            self.images = np.empty((min(_COUNT_ROWS, pixels.shape[0]), pixels.shape[1]), network.dtype)
        else:
            self.pixels = None
            self.images = prepared_images(network, pixels, "validation images")
        self.total = pixels.shape[0]
        self.labels = network.check_labels(labels, self.total, "validation labels")
        chunks = -(-self.total // _COUNT_ROWS)
        self.split = _COUNT_ROWS * -(-chunks // 2) if self.pixels is not None and chunks > 1 else 0
        # Where a convolutional network's steps split across two threads, so does its count (a thread
        # counts the chunks from ``split`` on into a buffer of its own), unless the helper process counts.
        self.images_rest = np.empty_like(self.images) if self.split and wanted(network, _COUNT_ROWS) else None

    def count(self, helper: Prefetcher | None = None) -> int:
        """How many of the validation images the network gets right; ``helper`` counts a part, where it can.

        Raises:
            NonFiniteError: the network's weighted inputs overflowed.
        """
        if self.pixels is None:
            return self.network.count_correct(self.images, self.labels, prepared=True)
        if helper is None or not self.split or not helper.start_count(self.network.params):
            return self._count(0, self.total) if self.images_rest is None else self._count_in_two_threads()
        mine = self._count(0, self.split)
        theirs = helper.finish_count()
        if theirs is None or theirs < 0:  # the helper died or overflowed: its part is counted (or raised) here
            theirs = self._count(self.split, self.total)
        return mine + theirs

    def count_rest(self, params: list[FloatArray]) -> int:
        """The helper's part: the images from ``split`` on, counted by its own copy of the network with ``params``.

        -1 if the network's weighted inputs overflowed: the parent counts the part again and raises.
        """
        self.network.set_params(params)
        try:
            return self._count(self.split, self.total)
        except NonFiniteError:
            return -1

    def _count_in_two_threads(self) -> int:
        """The chunks before ``split`` counted here and those after in a thread, at once, BLAS on one thread each.

        Each chunk is the same as in a count in one thread; only BLAS's threads differ.
        """
        assert self.pixels is not None and self.images_rest is not None
        pixels, labels, buffer = self.pixels[self.split :], self.labels[self.split :], self.images_rest
        rest: list[int | BaseException] = []

        def count_rest() -> None:
            try:
                rest.append(_count_pixels(self.network, pixels, labels, buffer))
            except BaseException as error:  # raised here, after this thread's part
                rest.append(error)

        thread = threading.Thread(target=count_rest, name="mnist_nn-split-count", daemon=True)
        with one_thread_blas(True):
            thread.start()
            try:
                mine = self._count(0, self.split)
            finally:
                thread.join()
        if isinstance(rest[0], BaseException):
            raise rest[0]
        return mine + rest[0]

    def _count(self, start: int, stop: int) -> int:
        """The count of pixels start:stop (checked once, when this was made), a chunk at a time into the one buffer."""
        assert self.pixels is not None
        return _count_pixels(self.network, self.pixels[start:stop], self.labels[start:stop], self.images)
