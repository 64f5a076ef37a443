"""``python -m mnist_nn``: the same as the ``mnist-nn`` command."""

from mnist_nn.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
