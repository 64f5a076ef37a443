"""Data augmentation: random affine and elastic distortions and mirroring of 28x28 images, in NumPy.

This module owns ``AugmentConfig`` (how strong the distortions are),
``parse_augment`` (the command-line spec that builds one) and
``augment_images``, which distorts a batch of (m, 784) images, each with its
own random transform drawn from the caller's generator.

Every output pixel p = (x, y) (x the column, y the row) is read from the
source point q of the input image, bilinearly interpolated, with zero
(background) outside the image. With c = (13.5, 13.5) the image center, the
forward transform of one image is

    p = A (q - c) + c + t,    A = R(theta) Sh(phi) diag(s_x, s_y)

so the sampler uses its inverse plus an optional elastic displacement d(p):

    q = A^-1 (p - c - t) + c + d(p)

theta ~ U(-rotate, rotate), phi ~ U(-shear, shear) (Sh(phi) = [[1, tan phi],
[0, 1]]), s_x and s_y ~ U(1 - scale, 1 + scale) and t_x, t_y ~ U(-shift,
shift), all independent. The elastic field follows Simard, Steinkraus and
Platt (2003): two fields of U(-1, 1) per image, each convolved with a
normalized Gaussian of standard deviation ``elastic_sigma`` (truncated at 4
sigma, reflected at the edges) and multiplied by ``elastic_alpha``. The
paper's setting is alpha = 34, sigma = 4; because smoothing averages the noise
away, the resulting displacement is much smaller than alpha (about 1.4 pixels
RMS for that setting, see ``elastic_rms``).

With probability ``flip`` an image is first mirrored left-right, x -> 27 - x:
F = diag(-1, 1) about c, so its forward transform is A F, which is A with s_x
negated, and the sampler inverts it in the same pass at no extra cost.
Mirroring suits Fashion-MNIST clothes, whose mirror images are the same class;
not digits (a mirrored 7 is no digit).

With probability ``erase``, after the distortions, one random rectangle of the
image becomes noise (random erasing, ``mnist_nn.train.erase``).

Speed comes from doing everything for a chunk of images at once: each source
coordinate of the chunk is one broadcast sum of a per-column and a per-row
term, the Gaussian smoothing is two stacked products with a (28, 28) band
matrix, and the interpolation is four ``np.take`` gathers from a zero-padded
copy of the chunk, so no bounds checks are needed. Memory is bounded by
``chunk``: in float32 about 45 bytes per pixel of a chunk, 60 with elastic
(roughly 18 and 25 MB for the default 512 images, which fit in cache and run
about a third faster than 2,048): on 2 cores, 50,000 images take about
0.23 s (0.51 s with elastic on).

The sampler is ``mnist_nn.nn.warp.Warper``, which the deterministic
deskewing of ``mnist_nn.nn.transforms`` shares.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from mnist_nn.config import IMAGE_PIXELS, IMAGE_SIDE
from mnist_nn.nn.activations import FloatArray
from mnist_nn.nn.warp import CENTER, PAD_OFFSET, Warper, input_and_output
from mnist_nn.train.erase import erase_rectangles

MAX_SHIFT = IMAGE_SIDE / 2  # 14 pixels: half the image
MAX_ROTATE = 180.0  # degrees
MAX_SHEAR = 80.0  # degrees; tan(phi) grows without bound near 90
MAX_ELASTIC_SIGMA = float(IMAGE_SIDE)  # beyond the image side the field is just a uniform shift
_TRUNCATE = 4.0  # the Gaussian kernel reaches 4 sigma each way, as scipy.ndimage.gaussian_filter
_PROBABILITY = "in [0, 1] (a probability)"
_PROBABILITIES = ("flip", "erase")


@dataclass(frozen=True)
class AugmentConfig:
    """How strongly ``augment_images`` distorts each image; all zeros is the identity.

    Every value but ``flip`` and ``erase`` is the half-width of a uniform
    distribution (or the elastic strength) and must be finite and >= 0;
    ``flip`` and ``erase`` are probabilities in [0, 1].
    """

    shift: float = 2.0  # max translation in pixels, x and y independently, at most 14
    rotate: float = 10.0  # max rotation in degrees, at most 180
    scale: float = 0.1  # max relative scale change, x and y independently: factor in [1 - scale, 1 + scale], < 1
    shear: float = 0.0  # max shear angle in degrees (0 = off), at most 80
    elastic_alpha: float = 0.0  # elastic strength in pixels (0 = off); Simard et al. used 34
    elastic_sigma: float = 4.0  # Gaussian sigma in pixels smoothing the elastic field, in (0, 28]
    flip: float = 0.0  # probability of mirroring an image left-right (0 = off); for clothes, not digits
    erase: float = 0.0  # probability of replacing a random rectangle by noise (0 = off)

    def __post_init__(self) -> None:
        """Check every value and store it as a float; ValueError names the field, the range and the value."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ValueError(f"expected a number for {f.name}, got {value!r} ({type(value).__name__})")
            value = float(value)
            if not math.isfinite(value) or value < 0:
                expected = _PROBABILITY if f.name in _PROBABILITIES else ">= 0"
                raise ValueError(f"expected a finite {f.name} {expected}, got {value}")
            object.__setattr__(self, f.name, value)
        limits = (
            ("shift", self.shift <= MAX_SHIFT, f"<= {MAX_SHIFT:g} pixels"),
            ("rotate", self.rotate <= MAX_ROTATE, f"<= {MAX_ROTATE:g} degrees"),
            ("scale", self.scale < 1, "< 1 (scale factors must stay positive)"),
            ("shear", self.shear <= MAX_SHEAR, f"<= {MAX_SHEAR:g} degrees"),
            ("elastic_sigma", 0 < self.elastic_sigma <= MAX_ELASTIC_SIGMA, f"in (0, {MAX_ELASTIC_SIGMA:g}] pixels"),
            ("flip", self.flip <= 1, _PROBABILITY),
            ("erase", self.erase <= 1, _PROBABILITY),
        )
        for name, ok, expected in limits:
            if not ok:
                raise ValueError(f"expected {name} {expected}, got {getattr(self, name)}")

    @property
    def is_identity(self) -> bool:
        """True when no distortion is enabled, so ``augment_images`` copies its input exactly."""
        return all(getattr(self, f.name) == 0 for f in fields(self) if f.name != "elastic_sigma")

    def to_spec(self) -> str:
        """The spec ``parse_augment`` turns back into this config, e.g. 'none,shift=2,rotate=10'."""
        names = [f.name for f in fields(self) if f.name != "elastic_sigma" or self.elastic_alpha]
        parts = [f"{name}={getattr(self, name):g}" for name in names if getattr(self, name)]
        return ",".join(["none", *parts])

    def to_dict(self) -> dict[str, float]:
        """A JSON-ready copy, e.g. for a model file's metadata."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AugmentConfig:
        """The inverse of ``to_dict``; missing keys take their defaults.

        Raises:
            ValueError: ``d`` is not a mapping, has unknown keys, or holds a bad value.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"expected an augmentation mapping, got {type(d).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in d if k not in names)
        if unknown:
            raise ValueError(f"unknown augmentation keys: {', '.join(unknown)}; expected some of {', '.join(names)}")
        return cls(**{str(k): v for k, v in d.items()})


def elastic_rms(config: AugmentConfig) -> float:
    """The RMS length, in pixels, of one component of the elastic displacement (away from the edges).

    Smoothing U(-1, 1) noise (variance 1/3) with a normalized kernel w leaves
    variance sum(w^2) / 3, so the displacement's RMS is alpha * sqrt(sum(w^2) / 3).
    """
    w = _gaussian_kernel(config.elastic_sigma)
    return config.elastic_alpha * float(np.sqrt(np.sum(np.outer(w, w) ** 2) / 3))


def _gaussian_kernel(sigma: float) -> npt.NDArray[np.float64]:
    """The normalized 1-D Gaussian kernel, truncated at 4 sigma."""
    radius = int(_TRUNCATE * sigma + 0.5)
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (k / sigma) ** 2)
    w /= w.sum()
    return w


def _gaussian_matrix(sigma: float, n: int = IMAGE_SIDE) -> npt.NDArray[np.float64]:
    """(n, n) matrix G with (G @ v) the Gaussian-smoothed v, reflected at the edges; rows sum to 1."""
    w = _gaussian_kernel(sigma)
    radius = (w.size - 1) // 2
    rows = np.repeat(np.arange(n), w.size)
    cols = (np.arange(n)[:, None] + np.arange(-radius, radius + 1)).reshape(-1) % (2 * n)
    cols = np.where(cols >= n, 2 * n - 1 - cols, cols)  # half-sample reflection: ... b a | a b ... y z | z y ...
    g = np.zeros((n, n))
    np.add.at(g, (rows, cols), np.tile(w, n))
    return g


def _inverse_affine(
    params: npt.NDArray[np.float64], config: AugmentConfig, flipped: npt.NDArray[np.bool_] | None = None
) -> npt.NDArray[np.float64]:
    """(c, 2, 3) matrices mapping output (x, y, 1) to padded source coordinates, from (c, 6) U(-1, 1) draws.

    ``flipped`` (c,) marks the images to mirror left-right (None: none).
    """
    theta = np.deg2rad(config.rotate) * params[:, 0]
    tan_phi = np.tan(np.deg2rad(config.shear) * params[:, 1])
    scale = 1 + config.scale * params[:, 2:4]  # (c, 2): s_x, s_y
    if flipped is not None:
        scale[:, 0] = np.where(flipped, -scale[:, 0], scale[:, 0])  # A F = A with s_x negated
    shift = config.shift * params[:, 4:6]  # (c, 2): t_x, t_y
    cos, sin = np.cos(theta), np.sin(theta)
    # A^-1 = diag(1/s_x, 1/s_y) Sh(-phi) R(-theta), R(-theta) = [[cos, sin], [-sin, cos]]
    inv = np.empty((params.shape[0], 2, 3))
    inv[:, 0, 0] = (cos + tan_phi * sin) / scale[:, 0]
    inv[:, 0, 1] = (sin - tan_phi * cos) / scale[:, 0]
    inv[:, 1, 0] = -sin / scale[:, 1]
    inv[:, 1, 1] = cos / scale[:, 1]
    # q = A^-1 p + (c - A^-1 (c + t)), then into padded space; the elastic field's mean -alpha
    # is folded in here (see _add_elastic)
    inv[:, :, 2] = CENTER + PAD_OFFSET - config.elastic_alpha
    inv[:, :, 2] -= np.einsum("cij,cj->ci", inv[:, :, :2], CENTER + shift)
    return inv


def _add_elastic(
    coords: FloatArray,
    rng: np.random.Generator,
    smooth_y: FloatArray,
    smooth_x_t: FloatArray,
    scratch: tuple[FloatArray, FloatArray],
) -> None:
    """Add 2 alpha smooth(U(0, 1)) to coords (c, 2, 784): with the offset's -alpha, alpha smooth(U(-1, 1)).

    Rows of the smoothing matrices sum to 1, so smooth(2u - 1) = 2 smooth(u) - 1.
    Each field is smoothed as smooth_y @ field @ smooth_x_t, a stack of
    (28, 28) products: each is too small for OpenBLAS to start threads, which
    stall when other processes keep the cores busy.
    """
    shape = (2 * coords.shape[0], IMAGE_SIDE, IMAGE_SIDE)  # field 2i is image i's x, 2i + 1 its y
    n = shape[0] * IMAGE_PIXELS
    noise = scratch[0][:n].reshape(shape)  # contiguous, as rng.random(out=) needs
    half = scratch[1][:n].reshape(shape)
    rng.random(out=noise, dtype=noise.dtype.type)
    np.matmul(smooth_y, noise, out=half)  # along columns of the field (the y direction); carries 2 alpha
    np.matmul(half, smooth_x_t, out=noise)  # then along rows (the x direction)
    coords.reshape(shape)[...] += noise


def augment_images(
    images: FloatArray,
    rng: np.random.Generator,
    config: AugmentConfig,
    out: FloatArray | None = None,
    chunk: int = 512,
) -> FloatArray:
    """Apply a random affine (and optional elastic) distortion, mirroring and erasing to each row of ``images``.

    Each image gets its own transform (see the module docstring). For each
    chunk of c images the draws are ``rng.uniform(-1, 1, (c, 6))``, whose
    columns scale rotate, shear, scale x, scale y, shift x and shift y of each
    image, then, only when ``config.flip`` > 0, ``rng.random(c)`` (image i is
    mirrored when its draw is < flip), then, with elastic distortion on,
    ``rng.random`` for the two (28, 28) noise fields of each image, then,
    only when ``config.erase`` > 0, the draws of ``erase_rectangles``. So the
    result is a deterministic function of the generator's state, ``config``
    and (only when elastic, flip or erase is on) ``chunk``, and flip = 0 and
    erase = 0 draw the same numbers as a config without them. Bilinear interpolation with a
    zero background; the result is clipped to [0, 1]. Math is done in the
    images' dtype. An identity config (``config.is_identity``) copies the
    images exactly and draws nothing from ``rng``.

    Args:
        images: (m, 784) float32 or float64 in [0, 1]; only read, unless it is ``out``.
        rng: the generator every random draw comes from.
        config: the distortion strengths.
        out: (m, 784) array of the images' dtype to write into, or None for a new
            one. It may be ``images`` itself (in place) or a strided view such as
            ``buffer[:, :784]`` of an (m, 785) array; columns outside it are not
            touched. If it partly overlaps ``images`` otherwise, the images are
            copied first.
        chunk: images processed at once; bounds the scratch memory (in float32
            about 45 bytes per pixel of a chunk, 60 with elastic). 512 is fastest.

    Returns:
        ``out`` (or the new array): (m, 784), the dtype of ``images``.

    Raises:
        ValueError: bad shapes, dtypes or chunk, or ``config`` is not an AugmentConfig.
    """
    if not isinstance(config, AugmentConfig):
        raise ValueError(f"expected an AugmentConfig, got {type(config).__name__}")
    images, out = input_and_output(images, out, chunk)
    if config.is_identity:
        np.copyto(out, images)
        return out

    m = images.shape[0]
    warper = Warper(int(min(chunk, max(m, 1))), images.dtype)
    elastic = config.elastic_alpha > 0
    flip = config.flip > 0
    if elastic:
        g = _gaussian_matrix(config.elastic_sigma)
        smooth_y = (2 * config.elastic_alpha * g).astype(images.dtype)
        smooth_x_t = np.ascontiguousarray(g.T, dtype=images.dtype)
        n = 2 * warper.chunk * IMAGE_PIXELS
        scratch = (np.empty(n, dtype=images.dtype), np.empty(n, dtype=images.dtype))
    for start in range(0, m, warper.chunk):
        c = min(warper.chunk, m - start)
        params = rng.uniform(-1.0, 1.0, size=(c, 6))
        flipped = rng.random(c) < config.flip if flip else None  # no draw at all when off: the stream is unchanged
        q = warper.coordinates(_inverse_affine(params, config, flipped))
        if elastic:
            _add_elastic(q, rng, smooth_y, smooth_x_t, scratch)
        warper.sample(images[start : start + c], q, out[start : start + c])
        if config.erase:
            erase_rectangles(out[start : start + c], rng, config.erase)
    return out


_SPEC_KEYS = tuple(f.name for f in fields(AugmentConfig))
_SPEC_RESETS = {"default": AugmentConfig(), "on": AugmentConfig(), "none": AugmentConfig(0, 0, 0, 0, 0)}
_SPEC_RESETS["off"] = _SPEC_RESETS["none"]


def parse_augment(spec: str) -> AugmentConfig:
    """Build an ``AugmentConfig`` from a command-line spec.

    A spec is a comma-separated list of items read left to right, starting
    from the defaults (shift=2, rotate=10, scale=0.1, shear=0, elastic off, flip=0,
    erase=0):

    - ``default`` or ``on``: reset every value to its default;
    - ``none`` or ``off``: reset every value to 0 (no augmentation);
    - ``KEY=VALUE`` with KEY one of shift, rotate, scale, shear,
      elastic_alpha, elastic_sigma, flip, erase: set that value;
    - ``elastic=ALPHA`` or ``elastic=ALPHA:SIGMA``: set elastic_alpha (and elastic_sigma).

    So unspecified keys keep their defaults: ``"shift=3"`` is the default
    augmentation with a 3-pixel shift, ``"none,shift=2"`` is a pure shift and
    ``"elastic=34:4"`` adds Simard's elastic distortion to the default affine
    one; ``"none,flip=0.5"`` mirrors about half the images (for Fashion-MNIST
    clothes) and does nothing else; ``"erase=0.5"`` adds random erasing to
    about half the images. A key may be set only once.

    Args:
        spec: the text, e.g. ``"shift=2,rotate=10,scale=0.1,elastic=34:4"``.

    Returns:
        The validated configuration.

    Raises:
        ValueError: a one-line message naming the spec and what is wrong with it.
    """
    if not isinstance(spec, str):
        raise ValueError(f"expected an augmentation spec string, got {type(spec).__name__}")
    values = AugmentConfig().to_dict()
    seen: set[str] = set()

    def fail(reason: str) -> ValueError:
        return ValueError(f"bad augmentation spec {spec!r}: {reason}")

    items = [item.strip() for item in spec.split(",")]
    if not spec.strip():
        raise fail("it is empty; try 'default', 'none' or e.g. 'shift=2,rotate=10'")
    for item in items:
        if not item:
            raise fail("empty item between commas")
        if "=" not in item:
            reset = _SPEC_RESETS.get(item.lower())
            if reset is None:
                raise fail(f"unknown item {item!r}; expected KEY=VALUE, 'default', 'on', 'none' or 'off'")
            values = reset.to_dict()
            continue
        key, _, text = (part.strip() for part in item.partition("="))
        key = key.lower()
        if key == "elastic":
            alpha_text, colon, sigma_text = text.partition(":")
            assignments = [("elastic_alpha", alpha_text)] + ([("elastic_sigma", sigma_text)] if colon else [])
        elif key in _SPEC_KEYS:
            assignments = [(key, text)]
        else:
            keys = ", ".join([*_SPEC_KEYS, "elastic"])
            raise fail(f"unknown key {key!r}; expected one of {keys}")
        for name, number in assignments:
            if name in seen:
                raise fail(f"{name} is set twice")
            seen.add(name)
            try:
                values[name] = float(number)
            except ValueError:
                raise fail(f"{key} expects a number, got {number.strip()!r}") from None
    try:
        return AugmentConfig.from_dict(values)
    except ValueError as error:
        raise fail(str(error)) from None
