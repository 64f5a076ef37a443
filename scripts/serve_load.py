"""Load a running ``mnist-nn serve`` with concurrent predictions and print what came back.

Every client is a thread with its own connection; all of them wait at one
barrier and then send the same drawing at once, as the page sends it (a
``--side`` x ``--side`` raster of 0-255 gray levels, 280 x 280 by default, in
the compact form: ``levels``, the levels as bytes in base64; ``--form pixels``
sends them as a JSON array of numbers instead, as other clients may).
Latency is measured per request, from the barrier to the last byte of the
answer. Only the standard library is used, so the script loads any server,
installed or not::

    mnist-nn serve models/some.npz --port 8000 &
    python scripts/serve_load.py http://127.0.0.1:8000 --clients 200

prints, for example, ``200 clients (104,571-byte bodies): 200 answered (200:
200), 0 failed; p50 0.40 s, p99 0.80 s, max 0.81 s``. The exit code is 0 when every client got
a 200, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from urllib.parse import urlsplit

TIMEOUT = 60.0  # seconds a client waits for its connection, its answer and each read


FORMS = ("levels", "pixels")  # the compact raster (base64 bytes), the page's; a JSON array of numbers


def drawing_body(side: int, form: str = "levels") -> bytes:
    """A ``POST /api/predict`` body: a dark vertical stroke on a light ``side`` x ``side`` canvas, in ``form``."""
    pixels = [
        0 if side // 3 <= col < side // 3 + max(1, side // 10) else 255 for _ in range(side) for col in range(side)
    ]
    raster: dict[str, object] = {"width": side, "height": side}
    if form == "levels":
        raster["levels"] = base64.b64encode(bytes(pixels)).decode("ascii")
    else:
        raster["pixels"] = pixels
    return json.dumps({"raster": raster}).encode("utf-8")


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (fraction in [0, 1])."""
    ordered = sorted(values)
    rank = min(max(1, math.ceil(fraction * len(ordered))), len(ordered))
    return ordered[rank - 1]


def load(url: str, clients: int, body: bytes) -> tuple[Counter[str], list[float]]:
    """Send ``body`` from ``clients`` threads at once.

    Returns:
        How many requests ended with each outcome (an HTTP status as text, or an
        exception's class name), and the latency in seconds of each answered request.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client() -> None:
        barrier.wait()
        start = time.perf_counter()
        conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
        try:
            conn.request("POST", "/api/predict", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            outcome = str(response.status)
        except Exception as exc:  # a reset, a timeout, ...: counted, not raised
            outcome = type(exc).__name__
        finally:
            conn.close()
        elapsed = time.perf_counter() - start
        with lock:
            outcomes[outcome] += 1
            if outcome.isdigit():
                latencies.append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes, latencies


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, load the server, print one line of results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("url", help="the server's address, e.g. http://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients (default: 200)")
    parser.add_argument("--side", type=int, default=280, help="width and height of the drawing (default: 280)")
    parser.add_argument("--rounds", type=int, default=1, help="times to repeat the load (default: 1)")
    parser.add_argument(
        "--form",
        choices=FORMS,
        default="levels",
        help="the raster's form: levels (base64 bytes, as the page sends) or pixels (a JSON array); default: levels",
    )
    args = parser.parse_args(argv)
    body = drawing_body(args.side, args.form)
    failed = False
    for _ in range(args.rounds):
        outcomes, latencies = load(args.url, args.clients, body)
        answered = sum(n for outcome, n in outcomes.items() if outcome.isdigit())
        counts = ", ".join(f"{outcome}: {n}" for outcome, n in sorted(outcomes.items()))
        timing = (
            f"p50 {percentile(latencies, 0.5):.2f} s, p99 {percentile(latencies, 0.99):.2f} s, "
            f"max {max(latencies):.2f} s"
            if latencies
            else "none answered"
        )
        print(
            f"{args.clients} clients ({len(body):,}-byte bodies): {answered} answered ({counts}), "
            f"{args.clients - answered} failed; {timing}"
        )
        failed = failed or outcomes.get("200", 0) != args.clients
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
