"""The data sets in MNIST's format that the package knows by name: MNIST and Fashion-MNIST.

A ``Dataset`` is what loading one needs: its four IDX files pinned by the
SHA-256 of their decompressed payloads, its public mirrors, the variable
naming a local mirror, a system copy to use offline, its cache folder and
its class names. ``dataset(name)`` looks one up; the split into 50,000 /
10,000 / 10,000 images is made the same way for each (``mnist_nn.data.mnist``).

Fashion-MNIST (Xiao, Rasul and Vollgraf 2017, Zalando Research, MIT licence)
has MNIST's file names, sizes and format; its ten classes are clothing.
Debian and Ubuntu ship its files in the package ``dataset-fashion-mnist``,
under ``/usr/share/datasets/fashion-mnist/``: when that folder is there it
is tried before the network, as an offline mirror (its ``.gz`` bytes differ
from Zalando's, the payloads are the same).
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from mnist_nn.config import MIRROR_ENV, NUM_CLASSES, default_data_dir
from mnist_nn.data.download import DEFAULT_MIRRORS, MNIST_FILES, FetchResult, MnistFile, ensure_files
from mnist_nn.files import PathLike

DIGITS = tuple(str(digit) for digit in range(NUM_CLASSES))


@dataclass(frozen=True)
class Dataset:
    """A data set in MNIST's format, by name.

    Attributes:
        name: what ``--dataset`` and model files call it, e.g. ``"fashion-mnist"``.
        title: how text names it, e.g. ``"Fashion-MNIST"``.
        files: the four files, pinned by their decompressed payloads.
        mirrors: the public mirrors, tried after a local one.
        mirror_env: the variable naming a local mirror (a folder or URL), tried first.
        cache_folder: the cache's subfolder for its files ("" for MNIST: the cache folder itself).
        classes: the name of each class, by label.
        system_copy: a folder an operating system's package installs the files in, or None.
    """

    name: str
    title: str
    files: tuple[MnistFile, ...]
    mirrors: tuple[str, ...]
    mirror_env: str
    cache_folder: str
    classes: tuple[str, ...]
    system_copy: Path | None = None

    def cache_dir(self, root: Path) -> Path:
        """Where this data set's files are cached under the cache folder ``root``."""
        return root / self.cache_folder if self.cache_folder else root

    def system_mirror(self) -> str | None:
        """The system copy's folder when it holds the files, else None."""
        copy = self.system_copy
        if copy is None or not all((copy / f"{f.name}.gz").is_file() or (copy / f.name).is_file() for f in self.files):
            return None
        return str(copy)


MNIST = Dataset(
    name="mnist",
    title="MNIST",
    files=MNIST_FILES,
    mirrors=DEFAULT_MIRRORS,
    mirror_env=MIRROR_ENV,
    cache_folder="",
    classes=DIGITS,
)

# The decompressed payloads of Zalando's files (the .gz bytes of Debian's copy differ; these do not):
# train images, train labels, test images, test labels.
_FASHION_SHA256 = (
    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
)
FASHION_MNIST = Dataset(
    name="fashion-mnist",
    title="Fashion-MNIST",
    files=(
        MnistFile("train-images-idx3-ubyte", _FASHION_SHA256[0], 47_040_016),
        MnistFile("train-labels-idx1-ubyte", _FASHION_SHA256[1], 60_008),
        MnistFile("t10k-images-idx3-ubyte", _FASHION_SHA256[2], 7_840_016),
        MnistFile("t10k-labels-idx1-ubyte", _FASHION_SHA256[3], 10_008),
    ),
    mirrors=(
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    mirror_env="MNIST_NN_FASHION_MNIST_MIRROR",
    cache_folder="fashion-mnist",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    system_copy=Path("/usr/share/datasets/fashion-mnist"),
)

DATASETS: dict[str, Dataset] = {d.name: d for d in (MNIST, FASHION_MNIST)}


def dataset(name: str) -> Dataset:
    """The data set called ``name``.

    Raises:
        ValueError: an unknown name (naming the nearest known ones, or all of them).
    """
    if name in DATASETS:
        return DATASETS[name]
    near = difflib.get_close_matches(name, DATASETS, n=2, cutoff=0.5)
    known = f"did you mean {' or '.join(near)}?" if near else f"expected one of {', '.join(DATASETS)}"
    raise ValueError(f"unknown data set {name!r}; {known}")


_TOLD_SYSTEM_COPY: set[str] = set()  # the data sets whose system copy this process has said it reads


def ensure_dataset(
    data: Dataset,
    data_dir: PathLike | None = None,
    *,
    mirror: str | None = None,
    quiet: bool = True,
    deadline: float | None = None,
) -> list[FetchResult]:
    """The data set's four files from its cache folder, fetched and verified first where needed.

    ``data_dir`` is the cache folder (the data set's subfolder of it), by
    default ``config.default_data_dir()``; ``mirror`` is tried first, else the
    data set's variable; then its system copy, when there is one (the first
    time it is read this says so on stderr), and its public mirrors. See
    ``download.ensure_files`` for the rest and what it raises.
    """
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    folder = data.cache_dir(root)
    mirrors = list(data.mirrors)
    system = data.system_mirror()
    if system is not None:
        mirrors.insert(0, system)
        cached = all((folder / f.name).is_file() for f in data.files)
        if not cached and data.name not in _TOLD_SYSTEM_COPY and not (mirror or os.environ.get(data.mirror_env)):
            _TOLD_SYSTEM_COPY.add(data.name)
            print(f"{data.title}: reading the system copy in {system}", file=sys.stderr)
    return ensure_files(
        data.files, folder, mirror=mirror, mirrors=mirrors, quiet=quiet, deadline=deadline, mirror_env=data.mirror_env
    )
