"""PyTorch's CPU training time for a network given by this project's layer specs: the speed benchmark's yardstick.

Run as a script by an interpreter that has PyTorch (it imports nothing from
this package, so a scratch environment with PyTorch alone will do):

    python mnist_nn/bench/yardstick.py --layers conv20x5 pool2 conv40x5 pool2 dense100 dense10 \\
        --batch-size 10 --threads 2 --images 50000 --epochs 3

It trains the same network as ``--layers`` names (ReLU hidden layers, a
softmax output with the log-likelihood cost, batch norms where ``bn``
stands, dropout where ``dropout<rate>`` does) by plain mini-batch SGD on
random 28x28 images, shuffled every epoch, and prints one line of JSON: the
seconds of each epoch, the images per epoch and PyTorch's version. Data does
not change the time of a dense computation, so random images stand in for
MNIST. ``mnist_nn.bench.speed`` runs it and sets PyTorch's epoch beside the
project's.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import time
from collections.abc import Sequence
from typing import Any


def build(specs: Sequence[str], torch: Any) -> Any:
    """The ``torch.nn.Sequential`` of the specs, channels first, for (N, 1, 28, 28) images.

    Raises:
        ValueError: a spec of no known form.
    """
    nn = torch.nn
    modules: list[Any] = []
    channels, side, flat = 1, 28, 0
    for i, spec in enumerate(specs):
        above = specs[i + 1] if i + 1 < len(specs) else None
        last = above is None
        conv = re.fullmatch(r"conv([0-9]+)x([0-9]+)(?:p([0-9]+))?", spec)
        if conv:
            filters, kernel, padding = int(conv[1]), int(conv[2]), int(conv[3] or 0)
            modules.append(nn.Conv2d(channels, filters, kernel, padding=padding))
            channels, side = filters, side + 2 * padding - kernel + 1
            if above != "bn":
                modules.append(nn.ReLU())
        elif re.fullmatch(r"(avg)?pool([0-9]+)", spec):
            size = int(re.sub(r"[a-z]", "", spec))
            modules.append(nn.AvgPool2d(size) if spec.startswith("avg") else nn.MaxPool2d(size))
            side //= size
        elif spec == "bn":
            modules.append(nn.BatchNorm1d(flat) if flat else nn.BatchNorm2d(channels))
            modules.append(nn.ReLU())
        elif spec.startswith("dropout"):
            modules.append(nn.Dropout(float(spec.removeprefix("dropout"))))
        elif spec.startswith("dense"):
            size = int(spec.removeprefix("dense"))
            if not flat:
                modules.append(nn.Flatten())
                flat = channels * side * side
            modules.append(nn.Linear(flat, size))
            flat = size
            if not last and above != "bn":
                modules.append(nn.ReLU())
        else:
            raise ValueError(f"unknown layer {spec!r}")
    return nn.Sequential(*modules)


def train(specs: Sequence[str], batch_size: int, images: int, epochs: int, threads: int, eta: float) -> dict[str, Any]:
    """Train the network ``epochs`` times over ``images`` random images; the seconds of each epoch."""
    torch: Any = importlib.import_module("torch")  # by name: PyTorch is no dependency, and mypy has no stubs of it

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(specs, torch)
    x = torch.rand(images, 1, 28, 28)
    y = torch.randint(0, 10, (images,))
    optimizer = torch.optim.SGD(model.parameters(), lr=eta)
    loss_fn = torch.nn.CrossEntropyLoss()
    seconds = []
    model.train()
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(images)
        for k in range(0, images, batch_size):
            rows = order[k : k + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x[rows]), y[rows]).backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "images": images, "torch": torch.__version__, "threads": torch.get_num_threads()}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, train, print the JSON line."""
    parser = argparse.ArgumentParser(description="PyTorch's training time for a network of this project's specs")
    parser.add_argument("--layers", nargs="+", required=True, metavar="SPEC", help="the layer specs, as --layers")
    parser.add_argument("--batch-size", type=int, required=True, help="the mini-batch size")
    parser.add_argument("--images", type=int, default=50_000, help="images per epoch (default: 50,000)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed, each on its own (default: 3)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch's threads (default: 2)")
    parser.add_argument("--eta", type=float, default=0.03, help="the learning rate of plain SGD (default: 0.03)")
    args = parser.parse_args(argv)
    print(json.dumps(train(args.layers, args.batch_size, args.images, args.epochs, args.threads, args.eta)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
