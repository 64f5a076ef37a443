"""Photographed-style digits for the tests: ink on grey paper under uneven light, with a page edge.

A phone photo of a digit brings what a scan does not: a lighting gradient
across the page, the page edge with a darker table beyond it (at an angle),
a little blur and noise, JPEG compression. ``photograph`` puts a clean
digit (ink 1 on 0, any size) onto such a page. The digits are MNIST test
digits enlarged (``mnist_photo``) or strokes drawn with Pillow's ImageDraw
(``stroke_digit``: every digit of ``STROKES``, the 4 and 5 in two strokes
that do not touch), so the tests need no other data.

Run as a script it writes photographed MNIST test digits as JPEGs, for
measuring ``mnist-nn predict`` on them::

    python -m tests.photos OUT_DIR --count 100    # OUT_DIR/photo-000-label-7.jpg, ...
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatImage = npt.NDArray[np.float64]

# Each digit as strokes (polylines) in a 100 x 140 (width x height) box; the 4 and the 5 are
# written in two strokes that do not touch, as many people write them.
STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [[(50, 8), (22, 25), (12, 70), (22, 115), (50, 132), (78, 115), (88, 70), (78, 25), (50, 8)]],
    1: [[(35, 30), (58, 8), (58, 132)]],
    2: [[(15, 35), (35, 10), (65, 10), (85, 35), (78, 65), (15, 130), (88, 130)]],
    3: [[(15, 20), (45, 8), (78, 20), (80, 45), (48, 68), (82, 90), (80, 120), (45, 132), (12, 118)]],
    4: [[(55, 8), (12, 90), (88, 90)], [(70, 45), (70, 132)]],
    5: [[(28, 10), (85, 10)], [(26, 22), (20, 65), (55, 55), (84, 75), (82, 112), (50, 132), (15, 120)]],
    6: [[(75, 12), (40, 30), (18, 75), (22, 115), (50, 132), (80, 112), (78, 80), (50, 70), (22, 90)]],
    7: [[(12, 12), (88, 12), (40, 132)]],
    8: [
        [(50, 68), (20, 45), (25, 15), (50, 8), (75, 15), (80, 45), (50, 68)],
        [(50, 68), (18, 95), (25, 125), (50, 132), (75, 125), (82, 95), (50, 68)],
    ],
    9: [[(78, 55), (50, 70), (22, 50), (28, 18), (55, 8), (80, 25), (78, 55), (72, 132)]],
}
STROKE_BOX = (100, 140)  # width, height of the strokes' coordinates


def stroke_digit(digit: int, rng: np.random.Generator, height: int = 140) -> FloatImage:
    """A digit drawn from ``STROKES`` with a marker of random width, its points jittered.

    Returns:
        (height, about 0.7 height) float64: ink 1 on background 0.
    """
    from PIL import Image, ImageDraw

    scale = height / STROKE_BOX[1]
    margin = 10
    width = round(STROKE_BOX[0] * scale)
    canvas = Image.new("L", (width + 2 * margin, height + 2 * margin), 0)
    draw = ImageDraw.Draw(canvas)
    pen = max(2, round(height * rng.uniform(0.07, 0.11)))
    for stroke in STROKES[digit]:
        points = [(margin + (x + rng.normal(0, 2)) * scale, margin + (y + rng.normal(0, 2)) * scale) for x, y in stroke]
        draw.line(points, fill=255, width=pen, joint="curve")
        for x, y in (points[0], points[-1]):  # round ends, as a marker leaves
            draw.ellipse([x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2], fill=255)
    return np.asarray(canvas, dtype=np.float64) / 255.0


def enlarge(digit: npt.ArrayLike, height: int) -> FloatImage:
    """A (784,) or (28, 28) MNIST digit enlarged to (height, height) with bicubic interpolation."""
    from PIL import Image

    levels = np.rint(np.asarray(digit, dtype=np.float64).reshape(28, 28) * 255).astype(np.uint8)
    big = Image.fromarray(levels).resize((height, height), Image.Resampling.BICUBIC)
    return np.asarray(big, dtype=np.float64) / 255.0


def photograph(
    ink: FloatImage,
    rng: np.random.Generator,
    size: tuple[int, int] = (480, 360),
    page_edge: bool = True,
    max_turn: float = 8.0,
) -> FloatImage:
    """``ink`` (1 on 0) written dark on grey paper and photographed: light, page edge, blur, noise.

    The digit is placed near the middle (off center by up to a tenth of the frame) and turned by
    up to ``max_turn`` degrees; the paper is lit unevenly (a gradient of 20-45% of its level across the frame,
    in a random direction); with ``page_edge`` the frame also shows, past a straight edge at a random
    angle, a darker table on one side (a tenth to a quarter of the frame); then a Gaussian blur of
    0.6-1.6 pixels and noise of 1.5-3% of full scale.

    Args:
        ink: (h, w) float64 in [0, 1], the digit's ink (1) on nothing (0); smaller than ``size``.
        rng: the generator that chooses all of the above.
        size: (width, height) of the photo.

    Returns:
        (height, width) float64 gray in [0, 1], dark ink on light paper.
    """
    from PIL import Image, ImageFilter

    width, height = size
    angle = rng.uniform(-max_turn, max_turn)
    turned = Image.fromarray(np.rint(ink * 255).astype(np.uint8)).rotate(angle, Image.Resampling.BILINEAR, expand=True)
    ink_layer = np.zeros((height, width))
    h, w = turned.height, turned.width
    top = (height - h) // 2 + int(rng.integers(-height // 10, height // 10 + 1))
    left = (width - w) // 2 + int(rng.integers(-width // 10, width // 10 + 1))
    top, left = min(max(top, 0), height - h), min(max(left, 0), width - w)
    ink_layer[top : top + h, left : left + w] = np.asarray(turned, dtype=np.float64) / 255.0

    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    direction = rng.uniform(0, 2 * math.pi)
    along = (cols - width / 2) * math.cos(direction) + (rows - height / 2) * math.sin(direction)
    along /= np.abs(along).max()  # -1 .. 1 across the frame
    paper = rng.uniform(0.62, 0.85) * (1 + rng.uniform(0.1, 0.22) * along)  # a 20-45% gradient
    darkness = rng.uniform(0.7, 0.9)  # how dark the ink prints, of the paper's level
    photo = paper * (1 - darkness * ink_layer)
    if page_edge:
        # A straight edge at an angle; beyond it, the table (darker, its own texture).
        side = int(rng.integers(4))
        depth = rng.uniform(0.1, 0.25)
        tilt = math.tan(math.radians(rng.uniform(-15, 15)))
        if side in (0, 1):  # the edge runs across the frame: the table above or below
            edge = height * (depth if side == 0 else 1 - depth) + (cols - width / 2) * tilt
            beyond = rows < edge if side == 0 else rows > edge
        else:  # the edge runs down the frame: the table left or right
            edge = width * (depth if side == 2 else 1 - depth) + (rows - height / 2) * tilt
            beyond = cols < edge if side == 2 else cols > edge
        table = rng.uniform(0.12, 0.4) * (1 + 0.1 * along)
        photo = np.where(beyond, table, photo)
    image = Image.fromarray(np.rint(np.clip(photo, 0, 1) * 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.6)))
    noisy = np.asarray(image, dtype=np.float64) / 255.0 + rng.normal(0, rng.uniform(0.015, 0.03), size=photo.shape)
    result: FloatImage = np.clip(noisy, 0.0, 1.0)
    return result


def mnist_photo(digit: npt.ArrayLike, rng: np.random.Generator, page_edge: bool = True) -> FloatImage:
    """An MNIST test digit, enlarged to 110-190 pixels, printed on grey paper and photographed."""
    return photograph(enlarge(digit, int(rng.integers(110, 190))), rng, page_edge=page_edge)


def save_jpeg(image: FloatImage, path: Path, quality: int = 85) -> Path:
    """Save a (height, width) gray image in [0, 1] as a JPEG, as a phone would."""
    from PIL import Image

    Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(path, quality=quality)
    return path


def _main(argv: Sequence[str] | None = None) -> int:
    """Write photographed MNIST test digits (the real data from MNIST_NN_MIRROR or data/) as JPEGs."""
    from mnist_nn.config import MIRROR_ENV
    from mnist_nn.data import load_mnist

    parser = argparse.ArgumentParser(prog="python -m tests.photos", description=_main.__doc__)
    parser.add_argument("out", type=Path, help="folder to write photo-NNN-label-D.jpg into")
    parser.add_argument("--count", type=int, default=100, help="how many test digits (default 100)")
    parser.add_argument("--seed", type=int, default=15, help="chooses the digits and the photos (default 15)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="the MNIST folder (default data/)")
    args = parser.parse_args(argv)
    data = load_mnist(args.data_dir, mirror=os.environ.get(MIRROR_ENV) or None)
    rng = np.random.default_rng(args.seed)
    chosen = rng.choice(len(data.test.labels), size=args.count, replace=False)
    args.out.mkdir(parents=True, exist_ok=True)
    for n, index in enumerate(chosen):
        label = int(data.test.labels[index])
        save_jpeg(mnist_photo(data.test.images[index], rng), args.out / f"photo-{n:03d}-label-{label}.jpg")
    print(f"wrote {args.count} photos to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
