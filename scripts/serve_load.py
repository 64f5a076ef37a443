"""Load a running ``mnist-nn serve`` with concurrent predictions and print what came back.

Every client is a thread with its own connection; all of them wait at one
barrier and then send the same drawing at once, as the page sends it (a
``--side`` x ``--side`` raster of 0-255 gray levels, 280 x 280 by default, in
the compact form: ``levels``, the levels as bytes in base64; ``--form pixels``
sends them as a JSON array of numbers instead, as other clients may;
``--form png`` sends a 16-bit RGBA PNG, the costliest picture to decode for
its size: a 1024 x 1024 one is a 22 KB body).
Latency is measured per request, from the barrier to the last byte of the
answer. Only the standard library is used, so the script loads any server,
installed or not::

    mnist-nn serve models/some.npz --port 8000 &
    python scripts/serve_load.py http://127.0.0.1:8000 --clients 200

prints, for example, ``200 clients (104,571-byte bodies): 200 answered (200:
200), 0 failed; p50 0.40 s, p99 0.80 s, max 0.81 s``. With ``--pid`` (the
server's process id, on Linux), it also prints the server's resident memory
before the load and its peak (``VmHWM`` in ``/proc/PID/status``, the peak
since the server started). The exit code is 0 when every client got a 200,
1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from urllib.parse import urlsplit

TIMEOUT = 60.0  # seconds a client waits for its connection, its answer and each read


FORMS = ("levels", "pixels", "png")  # the compact raster (base64 bytes), the page's; a JSON array; a PNG


def drawing_body(side: int, form: str = "levels") -> bytes:
    """A ``POST /api/predict`` body: a dark vertical stroke on a light ``side`` x ``side`` canvas, in ``form``."""
    if form == "png":
        data_url = "data:image/png;base64," + base64.b64encode(stroke_png(side)).decode("ascii")
        return json.dumps({"png": data_url}).encode("utf-8")
    pixels = [
        0 if side // 3 <= col < side // 3 + max(1, side // 10) else 255 for _ in range(side) for col in range(side)
    ]
    raster: dict[str, object] = {"width": side, "height": side}
    if form == "levels":
        raster["levels"] = base64.b64encode(bytes(pixels)).decode("ascii")
    else:
        raster["pixels"] = pixels
    return json.dumps({"raster": raster}).encode("utf-8")


def stroke_png(side: int) -> bytes:
    """A ``side`` x ``side`` 16-bit RGBA PNG (opaque) of a black vertical stroke on white, written with zlib."""
    paper, ink = b"\xff" * 8, b"\x00" * 6 + b"\xff" * 2  # one pixel: R, G, B, A as 16-bit samples
    left, width = side // 3, max(1, side // 10)
    blank = b"\x00" + paper * side  # each row starts with its filter type, 0 (none)
    inked = b"\x00" + paper * left + ink * width + paper * (side - left - width)
    rows = [inked if side // 10 <= row < side - side // 10 else blank for row in range(side)]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 0)  # bit depth 16, color type 6 (RGBA)
    pixels = zlib.compress(b"".join(rows), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def memory_mib(pid: int) -> dict[str, float]:
    """The resident memory of process ``pid`` in MiB: ``VmRSS`` (now) and ``VmHWM`` (its peak), from /proc."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        fields = dict(line.split(":", 1) for line in status if line.startswith(("VmRSS", "VmHWM")))
    return {key: int(value.split()[0]) / 1024 for key, value in fields.items()}  # the values are in kB


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
        help="the drawing's form: levels (base64 bytes, as the page sends), pixels (a JSON array) or png "
        "(a 16-bit RGBA PNG); default: levels",
    )
    parser.add_argument("--pid", type=int, help="the server's process id: print its memory before and at the peak")
    args = parser.parse_args(argv)
    body = drawing_body(args.side, args.form)
    before = memory_mib(args.pid) if args.pid is not None else None
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
    if before is not None and args.pid is not None:
        after = memory_mib(args.pid)
        print(f"server memory: {before['VmRSS']:.0f} MiB before, peak {after['VmHWM']:.0f} MiB (VmHWM)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
