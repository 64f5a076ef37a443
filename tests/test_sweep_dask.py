"""Sweeps on a real Dask cluster: a scheduler and two worker processes on 127.0.0.1, started here.

The same tiny sweep gives the same per-run counts on the cluster as with
``--jobs 1`` and ``--jobs 2``; a worker killed mid-sweep has its run redone
elsewhere and the sweep completes; a client killed mid-sweep (``kill -9``)
loses only the runs in flight, and the same command again reads the finished
ones back from ``--results`` without training them. Dask (the
``distributed`` extra) is needed; without it these are skipped, except under
``CI=true``, which installs it. No timing is compared with anything.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mnist_nn.cli.benchmark import benchmark_main

try:
    distributed: Any = importlib.import_module("distributed")
except ImportError:
    if os.environ.get("CI", "").lower() == "true":  # CI installs the extra: these must run there
        raise
    pytest.skip("Dask's distributed scheduler is the 'distributed' extra", allow_module_level=True)

COUNTS = ("seed", "served_epoch", "validation_correct", "test_correct", "last_validation_correct", "last_test_correct")
TINY = ["--epochs", "1", "--train-size", "500", "--hidden", "10", "--quiet"]
# Runs of a second or so, so that a process can be killed while some are in flight.
SLOWER = ["--epochs", "1", "--train-size", "10000", "--hidden", "100", "--quiet"]
DEADLINE = 120.0  # seconds any wait below may take before the test fails


@pytest.fixture(scope="module")
def cluster(mnist_cache: Path) -> Iterator[str]:
    """A scheduler and two one-thread worker processes on 127.0.0.1; yields the scheduler's address."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        worker_dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # its HTTP server on a free port, not 8787
    ) as local:
        yield local.scheduler_address


def sweep_argv(address: str, cache: Path, *extra: str) -> list[str]:
    return ["accuracy", "--scheduler", address, "--data-dir", str(cache), *extra]


def counts(doc: dict[str, Any]) -> list[list[dict[str, int]]]:
    return [[{k: r[k] for k in COUNTS} for r in p["runs"]] for p in doc["configurations"]]


def run_json(argv: list[str], path: Path) -> dict[str, Any]:
    assert benchmark_main([*argv, "--json", str(path)]) == 0
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def wait_for(condition: Any, what: str) -> None:
    ends = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > ends:
            pytest.fail(f"waited {DEADLINE:g} s for {what}")
        time.sleep(0.02)


def cli(argv: list[str]) -> subprocess.Popen[str]:
    """The benchmark as a user runs it, in its own process."""
    command = [sys.executable, "-m", "mnist_nn", "benchmark", *argv]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_cluster_gives_the_same_counts_as_local_processes(cluster: str, mnist_cache: Path, tmp_path: Path) -> None:
    grid = [*TINY, "--seeds", "2", "--grid", "eta=1,3"]
    dask = run_json(sweep_argv(cluster, mnist_cache, *grid), tmp_path / "dask.json")
    one = run_json(["accuracy", "--jobs", "1", "--data-dir", str(mnist_cache), *grid], tmp_path / "one.json")
    two = run_json(["accuracy", "--jobs", "2", "--data-dir", str(mnist_cache), *grid], tmp_path / "two.json")
    assert counts(dask) == counts(one) == counts(two)
    assert dask["executor"] == f"Dask scheduler {cluster}" and dask["summary"]["runs"] == 4
    # One BLAS thread in every task on the workers, as the task itself set it (threadpoolctl tells).
    assert {r["blas_threads"] for p in dask["configurations"] for r in p["runs"]} == {1}


def test_a_worker_killed_mid_sweep_has_its_run_redone_and_the_sweep_completes(
    cluster: str, mnist_cache: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    process = cli(sweep_argv(cluster, mnist_cache, *SLOWER, "--seeds", "6", "--results", str(results)))
    with distributed.Client(cluster, timeout=10, set_as_default=False) as client:
        pids = client.run(os.getpid)  # worker address -> its process

        def busy() -> list[str]:
            return [w for w, keys in client.processing().items() if any("mnist-nn-run-" in str(k) for k in keys)]

        wait_for(lambda: bool(busy()) and results.is_dir(), "a worker to start a run")
        victim = busy()[0]
        os.kill(pids[victim], signal.SIGKILL)  # mid-run: its nanny starts a new worker, Dask reruns the task
    out, err = process.communicate(timeout=DEADLINE)
    assert process.returncode == 0, err
    assert "Runs: 6 (0 read back from" in out and "6 trained now" in out and "0 failed" in out
    assert len(list(results.glob("run-*.json"))) == 6


def test_a_client_killed_mid_sweep_loses_only_the_runs_in_flight(
    cluster: str, mnist_cache: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    argv = sweep_argv(cluster, mnist_cache, *SLOWER, "--seeds", "4", "--grid", "eta=1,3", "--results", str(results))
    process = cli(argv)
    wait_for(lambda: results.is_dir() and any(results.glob("run-*.json")), "the first finished run")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=DEADLINE)
    finished = {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in results.glob("run-*.json")}
    assert 1 <= len(finished) < 8, "the sweep should have been killed part way"

    doc = run_json(argv, tmp_path / "rerun.json")
    assert doc["summary"] == {
        "runs": 8,
        "from_results": len(finished),
        "trained": 8 - len(finished),
        "failed": 0,
    }
    now = {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in results.glob("run-*.json")}
    assert len(now) == 8 and {name: now[name] for name in finished} == finished  # none redone
    again = run_json(argv, tmp_path / "again.json")
    assert again["summary"]["from_results"] == 8 and counts(again) == counts(doc)


def test_an_unreachable_scheduler_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["accuracy", *TINY, "--seeds", "1", "--scheduler", f"tcp://127.0.0.1:{port}", "--connect-timeout", "1"]
    assert benchmark_main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.strip().splitlines()
    assert line.startswith("benchmark.py accuracy: error: cannot reach the Dask scheduler at tcp://127.0.0.1:")
