"""Sweeps on this machine: every training flag, grids, the results folder, failed runs, --scheduler without Dask.

Runs are tiny (one epoch on a few hundred images) and go through
``benchmark_main`` as users run it; the tests with a Dask cluster are in
``test_sweep_dask.py``. No timing is compared with anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mnist_nn.cli.benchmark import benchmark_main
from mnist_nn.cli.plot import plot_main
from mnist_nn.cli.sweep import REFUSED_FLAGS
from mnist_nn.cli.train import build_train_parser

TINY = ["--epochs", "1", "--train-size", "300", "--hidden", "10", "--quiet"]
COUNTS = ("seed", "served_epoch", "validation_correct", "test_correct", "last_validation_correct", "last_test_correct")


def run(argv: list[str]) -> int:
    try:
        return benchmark_main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def run_json(argv: list[str], path: Path, code: int = 0) -> dict[str, Any]:
    assert run([*argv, "--json", str(path)]) == code
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def test_every_training_flag_of_train_mnist_is_a_benchmark_flag(capsys: pytest.CaptureFixture[str]) -> None:
    train = build_train_parser()
    group = next(g for g in train._action_groups if g.title == "training")
    flags = {a.option_strings[0] for a in group._group_actions} - {"--seed"}
    assert {"--preset", "--layers", "--augment", "--momentum", "--expand"} <= flags
    assert run(["accuracy", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in flags:
        assert f"\n  {flag} " in out, flag
    for flag in REFUSED_FLAGS:
        assert flag in out  # the description says which flags are refused


@pytest.mark.parametrize("flag", sorted(REFUSED_FLAGS))
def test_flags_that_make_no_sense_in_a_benchmark_are_refused_with_the_reason(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["accuracy", flag, "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"benchmark.py accuracy: error: {flag} is not a benchmark flag"), err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--grid", "eta"], "expects NAME=V1,V2"),
        (["--grid", "speed=1,2"], "speed: not a training flag"),
        (["--grid", "seed=1,2"], "seed: not a training flag"),
        (["--grid", "eta=1,x"], "--grid eta=x: argument --eta: invalid float value"),
        (["--grid", "eta=1,-2"], "--grid eta=-2.0: --eta must be a positive number"),
        (["--grid", "eta=1,1.0"], "one configuration twice"),
        (["--grid", "eta=1,,2"], "an empty value"),
        (["--grid", "eta=1", "eta=2"], "eta given twice"),
        (["--eta", "1", "--grid", "eta=1,2"], "--eta is both given and swept"),
        (["--hidden", "5", "--grid", "layers=dense5 dense10"], "both set the layers"),
        (["--grid", "layers=dense30 dense9"], "--layers must end with dense10"),
        (["--grid", "nesterov=maybe"], "expected on or off"),
        (["--grid", "augment=bogus=1;none"], "--augment"),
        (["--grid", "preset=nielsen-ch1,nope"], "no preset 'nope'"),
        (["--jobs", "2", "--scheduler", "tcp://127.0.0.1:8786"], "--jobs and --scheduler both given"),
        (["--scheduler", "tcp://a b"], "--scheduler expects an address"),
        (["--ensemble", "--grid", "eta=1,2"], "--ensemble needs"),
    ],
)
def test_bad_sweeps_are_refused_before_anything_runs(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["accuracy", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_a_grid_is_the_cross_product_ranked_by_validation(
    mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["accuracy", *TINY[:-3], "--seed-list", "2", "5", "--data-dir", str(mnist_cache), "--quiet"]
    argv += ["--grid", "eta=0.5,3", "layers=dense10 dense10,dense20 dense10", "momentum=0;0.5"]
    doc = run_json(argv, tmp_path / "sweep.json")
    assert doc["action"] == "sweep" and doc["seeds"] == [2, 5]
    assert doc["grid"] == {"eta": [0.5, 3.0], "layers": ["dense10 dense10", "dense20 dense10"], "momentum": [0.0, 0.5]}
    points = doc["configurations"]
    assert len(points) == 8 and doc["summary"] == {"runs": 16, "from_results": 0, "trained": 16, "failed": 0}
    assert points[1]["values"] == {"eta": 0.5, "layers": "dense10 dense10", "momentum": 0.5}
    assert points[1]["config"]["layers"] == ["dense10", "dense10"] and points[1]["config"]["momentum"] == 0.5
    assert points[7]["config"]["layers"] == ["dense20", "dense10"] and points[7]["config"]["eta"] == 3.0
    validation = [p["summary"]["validation_accuracy"]["mean"] for p in points]
    ranked = [validation[i - 1] for i in doc["ranking"]]
    assert ranked == sorted(validation, reverse=True)
    assert sorted(p["rank"] for p in points) == list(range(1, 9))
    for p in points:
        test = [r["test_accuracy"] for r in p["runs"]]
        assert p["summary"]["test_accuracy"]["min"] == min(test) and p["summary"]["test_accuracy"]["max"] == max(test)
        assert p["summary"]["seconds"]["mean"] > 0
    out = capsys.readouterr().out
    assert "| rank | eta | layers | momentum | runs | validation % |" in out
    assert "8 configurations x seeds 2, 5 = 16 runs" in out

    # mnist-nn plot draws it: accuracy against eta, a line per (layers, momentum).
    assert plot_main([str(tmp_path / "sweep.json"), "--out", str(tmp_path / "plots"), "--quiet"]) == 0
    png = (tmp_path / "plots" / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (800, 500)
    assert plot_main([str(tmp_path / "sweep.json"), "--x", "speed", "--out", str(tmp_path / "p2")]) == 2
    assert "expected x among the swept flags eta, layers, momentum" in capsys.readouterr().err


def test_results_are_kept_and_read_back_and_a_corrupt_file_is_run_again(
    mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    argv = ["accuracy", *TINY, "--seeds", "3", "--grid", "eta=1,3", "--data-dir", str(mnist_cache)]
    argv += ["--results", str(results)]
    first = run_json(argv, tmp_path / "1.json")
    files = sorted(results.iterdir())
    assert len(files) == 6 and all(f.name.startswith("run-") and f.suffix == ".json" for f in files)
    stored = json.loads(files[0].read_text())
    assert stored["format"] == "mnist_nn-run-result" and stored["config"]["seed"] == stored["result"]["seed"]
    before = {f.name: f.stat().st_mtime_ns for f in files}

    again = run_json(argv, tmp_path / "2.json")
    assert again["summary"] == {"runs": 6, "from_results": 6, "trained": 0, "failed": 0}
    assert {f.name: f.stat().st_mtime_ns for f in results.iterdir()} == before
    for one, two in zip(first["configurations"], again["configurations"], strict=True):
        assert [{k: r[k] for k in COUNTS} for r in one["runs"]] == [{k: r[k] for k in COUNTS} for r in two["runs"]]
    assert "Runs: 6 (6 read back from" in capsys.readouterr().out

    files[0].write_text('{"format": "mnist_nn-run-result", "format_version": 1, "config": {')  # cut short
    edited = json.loads(files[1].read_text())
    edited["config"]["eta"] = 2.0  # a result that is not of the run it is named after
    files[1].write_text(json.dumps(edited))
    third = run_json(argv, tmp_path / "3.json")
    assert third["summary"] == {"runs": 6, "from_results": 4, "trained": 2, "failed": 0}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("warning: " in line and "running it again" in line for line in err), err
    assert "not JSON" in err[0] + err[1] and "another configuration" in err[0] + err[1]
    assert json.loads(files[1].read_text())["config"]["eta"] != 2.0  # written anew


def test_one_configuration_keeps_the_accuracy_report_and_counts_its_stored_runs(
    mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["accuracy", *TINY, "--seeds", "2", "--data-dir", str(mnist_cache), "--results", str(tmp_path / "r")]
    doc = run_json(argv, tmp_path / "a.json")
    assert doc["action"] == "accuracy" and doc["from_results"] == 0 and doc["results"] == str(tmp_path / "r")
    # --jobs 1 trains in this process with one BLAS thread, as the workers do.
    assert [r["blas_threads"] for r in doc["runs"]] == [1, 1]
    doc = run_json(argv, tmp_path / "b.json")
    assert doc["from_results"] == 2 and [r["seed"] for r in doc["runs"]] == [1, 2]
    assert "Runs: 2 (2 read back from" in capsys.readouterr().out
    # Counts with test-time augmentation are kept under names of their own, and read back as well.
    tta = run_json([*argv, "--tta"], tmp_path / "c.json")
    assert tta["from_results"] == 0 and all(isinstance(r["test_correct_tta"], int) for r in tta["runs"])
    assert len(list((tmp_path / "r").glob("run-*-seed*-tta.json"))) == 2
    assert run_json([*argv, "--tta"], tmp_path / "d.json")["runs"] == tta["runs"]


def test_a_failed_run_is_reported_with_its_reason_and_the_others_go_on(
    mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # eta 1e30 makes a ReLU network's weights or products overflow in the first epoch (which of the two
    # depends on the BLAS kernel): either way, that configuration's runs fail.
    argv = ["accuracy", *TINY, "--seeds", "2", "--activation", "relu", "--grid", "eta=3,1e30"]
    argv += ["--data-dir", str(mnist_cache)]
    doc = run_json([*argv, "--results", str(tmp_path / "r")], tmp_path / "s.json", code=1)
    good, bad = doc["configurations"]
    assert len(good["runs"]) == 2 and good["rank"] == 1 and doc["ranking"] == [1]
    assert bad["runs"] == [] and bad["rank"] is None and bad["summary"]["test_accuracy"] is None
    assert [f["seed"] for f in bad["failures"]] == [1, 2]
    assert all("learning rate" in f["reason"] for f in bad["failures"])
    assert len(list((tmp_path / "r").iterdir())) == 2  # failures are not kept: a rerun tries them again
    out = capsys.readouterr().out
    assert "Runs: 4 (0 read back from" in out and "2 failed)" in out
    assert sum(line.startswith("Failed: eta=1e+30 seed ") for line in out.splitlines()) == 2


def test_forked_workers_do_not_wait_on_a_progress_bar_lock_their_parent_left_taken(
    mnist_cache: Path, tmp_path: Path
) -> None:
    # tqdm's lock includes a multiprocessing lock that forked children share. Here the parent takes it
    # and never gives it back (as an exception between its two locks would leave it); the workers must
    # download (their cache fails verification), so each makes a progress bar.
    data = tmp_path / "data"
    data.mkdir()
    for f in mnist_cache.iterdir():
        (data / f.name).write_bytes(f.read_bytes())
    labels = data / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-1] + b"\x09")
    empty = tmp_path / "mirror"
    empty.mkdir()
    argv = ["accuracy", *TINY, "--seeds", "2", "--jobs", "2", "--data-dir", str(data), "--mirror", str(empty)]
    code = (
        "import sys\n"
        "from tqdm.std import TqdmDefaultWriteLock\n"
        "from mnist_nn.bench import executors\n"
        "from mnist_nn.cli.benchmark import benchmark_main\n"
        "executors._preload = lambda tasks: None\n"  # no bar here: the parent stays single-threaded and forks
        "assert executors.start_method() == 'fork'\n"
        "TqdmDefaultWriteLock.create_mp_lock()\n"
        "TqdmDefaultWriteLock.mp_lock.acquire()\n"
        f"sys.exit(benchmark_main({argv!r}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1, done.stderr
    assert "every run failed: seed 1: cannot get t10k-labels-idx1-ubyte" in done.stderr


def test_a_worker_whose_data_fails_verification_fails_its_runs_with_the_reason(
    mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The public mirrors are reached through a proxy that is not there, so no copy verifies
    # wherever this runs; the worker processes inherit the variables.
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data"
    data.mkdir()
    for f in mnist_cache.iterdir():
        (data / f.name).write_bytes(f.read_bytes())
    labels = data / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-1] + b"\x09")  # one label changed: the digest differs
    empty = tmp_path / "mirror"
    empty.mkdir()
    argv = ["accuracy", *TINY, "--seeds", "2", "--jobs", "2", "--data-dir", str(data), "--mirror", str(empty)]
    assert run(argv) == 1
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert "every run failed: seed 1: cannot get t10k-labels-idx1-ubyte" in line
    assert line.count("t10k-labels-idx1-ubyte failed verification") == 2, line


def test_scheduler_without_dask_installed_says_what_to_install(tmp_path: Path) -> None:
    # A real subprocess, the real code path, where importing Dask fails as if it were not installed.
    shim = tmp_path / "shim"
    for name in ("dask", "distributed"):
        (shim / name).mkdir(parents=True)
        (shim / name / "__init__.py").write_text(f"raise ImportError('No module named {name}')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "mnist_nn", "benchmark", "accuracy", "--epochs", "1", "--seeds", "1"]
    argv += ["--scheduler", "tcp://127.0.0.1:8786", "--quiet"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'mnist-nn[distributed]'" in lines[0], done.stderr


def test_a_dask_task_and_its_outcome_travel_as_json_text_and_come_back_equal() -> None:
    from mnist_nn.bench import DataSource, RunTask, SeedResult, TaskFailure
    from mnist_nn.bench.executors import outcome_from_json, outcome_to_json, task_from_json, task_to_json
    from mnist_nn.config import PRESETS

    task = RunTask(PRESETS["cnn"], 1234, DataSource(Path("/data/mnist"), "file:///mirror"))
    text = task_to_json(task)
    assert json.loads(text)["train_size"] == 1234
    assert task_from_json(text) == task
    with_tta = dataclasses.replace(task, tta=True)
    assert task_from_json(task_to_json(with_tta)) == with_tta and "tta" not in json.loads(text)
    result = SeedResult(
        seed=3, served_epoch=2, validation_correct=9000, test_correct=8990, last_epoch=3,
        last_validation_correct=8995, last_test_correct=8980, validation_total=10000,
        test_total=10000, seconds=1.5, blas_threads=1,
    )  # fmt: skip
    for outcome in (result, TaskFailure("the cache failed verification")):
        assert outcome_from_json(outcome_to_json(outcome)) == outcome
    for bad_task in ('{"config": {}}', "[]", text.replace('"train_size":1234', '"train_size":-1')):
        with pytest.raises(ValueError):
            task_from_json(bad_task)
    for bad_outcome in ('{"result": {"seed": -1}}', '{"failure": 3}', "[]", "not json"):
        with pytest.raises(ValueError):
            outcome_from_json(bad_outcome)
