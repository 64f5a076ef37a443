"""Benchmark accuracy over seeds, or training and inference speed. See ``--help``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mnist_nn.cli.benchmark import benchmark_main

if __name__ == "__main__":
    raise SystemExit(benchmark_main())
