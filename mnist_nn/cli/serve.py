"""``mnist-nn serve``: choose a model, start the drawing server of ``mnist_nn.serve``, stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import socket
import sys
import webbrowser
from collections.abc import Sequence
from pathlib import Path

from mnist_nn.cli.base import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    Parser,
    command,
    fail,
    load_model_file,
    signals_as_interrupts,
)
from mnist_nn.config import default_models_dir
from mnist_nn.errors import TerminatedError, UsageError
from mnist_nn.text import one_line

DEFAULT_HOST = "127.0.0.1"  # this computer only; --host 0.0.0.0 shares the page on the network
DEFAULT_PORT = 8000


def build_serve_parser(prog: str = "mnist-nn serve") -> argparse.ArgumentParser:
    """Arguments of ``mnist-nn serve``."""
    parser = Parser(
        prog=prog,
        description="Serve a page where you draw a digit with the mouse, a pen or a finger and watch the "
        "model classify it as you draw: the probability of each digit and the 28x28 image the network "
        "sees, prepared exactly as 'mnist-nn predict' prepares an image file. Ctrl-C stops the server.",
    )
    parser.add_argument(
        "model",
        type=Path,
        nargs="?",
        metavar="MODEL",
        help=f"a model file written by train --save (default: the newest .npz file in {default_models_dir()})",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"the address to listen on (default: {DEFAULT_HOST}, this computer only; "
        "0.0.0.0 lets other devices on your network connect)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"the TCP port; 0 picks a free one (default: {DEFAULT_PORT})"
    )
    parser.add_argument("--open", action="store_true", help="open the page in the web browser")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


@command
def serve_main(argv: Sequence[str] | None = None, prog: str = "mnist-nn serve") -> int:
    """Entry point of ``mnist-nn serve``."""
    # Imported here: the HTTP server brings ssl along (~5 MB, ~0.1 s), which no other command needs.
    from mnist_nn.serve import make_server, newest_model, return_freed_memory

    args = build_serve_parser(prog).parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    path: Path | None = args.model
    if path is None:
        folder = default_models_dir()
        path = newest_model(folder)
        if path is None:
            raise UsageError(f"no model given and no .npz file in {folder}; train one with: mnist-nn train --save")
    model = load_model_file(path)
    return_freed_memory()  # a drawing's pictures go back to the system once answered, whichever thread held them
    try:  # the socket's OSErrors are not package errors: each gets its own words here
        server = make_server(model, args.host, args.port, verbose=args.verbose)
    except FileNotFoundError as exc:
        return fail(prog, f"the page's files are missing from the package ({exc}); reinstall mnist-nn", EXIT_FAILURE)
    except socket.gaierror as exc:
        return fail(prog, f"--host {args.host}: unknown host ({exc.strerror or exc})", EXIT_USAGE)
    except OSError as exc:
        return fail(prog, f"cannot listen on {args.host} port {args.port}: {exc.strerror or exc}", EXIT_FAILURE)
    with server:
        url = server.url
        reach = "this computer only" if server.local_names is not None else "other devices on your network too"
        print(f"Serving {one_line(str(model.path))} at {url} ({reach}); Ctrl-C stops", flush=True)
        if args.open and not webbrowser.open(url):
            print(f"{prog}: could not open a browser; visit {url}", file=sys.stderr)
        try:
            with signals_as_interrupts():
                server.serve_forever()
        except (KeyboardInterrupt, TerminatedError):
            pass
    end = "\n" if sys.stderr.isatty() else ""  # after the terminal's "^C"
    print(f"{end}{prog}: stopped", file=sys.stderr)
    return EXIT_OK
