"""The benchmark command, run as users run it: ``benchmark_main([...])`` with ``--quick`` on real MNIST.

Timings are never compared with anything but zero: the machines that run
this are shared and their speed drifts.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mnist_nn.bench import BLAS_THREAD_VARIABLES, Stats, TrainingShape, executors, single_blas_thread_env
from mnist_nn.bench.accuracy import ensemble_count, train_seed
from mnist_nn.bench.machine import helper_info
from mnist_nn.cli.benchmark import benchmark_main
from mnist_nn.config import PRESETS
from mnist_nn.data import MnistData
from mnist_nn.train import Run, fit
from mnist_nn.tta import TTA, tta_probabilities

COUNT_FIELDS = (
    "seed",
    "served_epoch",
    "validation_correct",
    "test_correct",
    "last_epoch",
    "last_validation_correct",
    "last_test_correct",
)


def run_benchmark(argv: list[str]) -> int:
    """benchmark_main's exit code, whether it returns it or argparse raises SystemExit with it."""
    try:
        return benchmark_main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def run_json(argv: list[str], path: Path) -> dict[str, Any]:
    assert benchmark_main([*argv, "--quiet", "--json", str(path)]) == 0
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def test_accuracy_reports_every_seed_and_a_consistent_summary(
    mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = run_json(["accuracy", "--quick", "--seeds", "3", "--data-dir", str(mnist_cache)], tmp_path / "a.json")
    runs = record["runs"]
    assert [r["seed"] for r in runs] == [1, 2, 3]
    for r in runs:
        assert r["validation_total"] == r["test_total"] == 10_000
        assert 0 <= r["test_correct"] <= 10_000 and 0 <= r["validation_correct"] <= 10_000
        assert 0 <= r["last_test_correct"] <= 10_000
        assert 1 <= r["served_epoch"] <= r["last_epoch"] == 2
        # The served epoch is the best on validation, so the last can't beat it.
        assert r["validation_correct"] >= r["last_validation_correct"]
        assert r["seconds"] > 0
    # Two epochs on 5,000 images already learn something: far above chance (10%).
    accuracies = [r["test_correct"] / r["test_total"] for r in runs]
    summary = record["summary"]["test_accuracy"]
    assert summary["min"] == min(accuracies) and summary["max"] == max(accuracies)
    assert summary["min"] <= summary["mean"] <= summary["max"] and summary["min"] > 0.5
    assert summary["std"] >= 0
    assert record["summary"]["runs"] == 3 and record["preset"] == "nielsen-ch1"
    assert record["config"]["layers"] == ["dense30", "dense10"] and record["train_size"] == 5_000

    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 3 + 1  # header, rule, a row per seed, the summary row
    assert table[2].startswith("| 1 | ") and "mean ± sd (n=3)" in table[-1]


def test_accuracy_flags_override_the_preset(mnist_cache: Path, tmp_path: Path) -> None:
    argv = ["accuracy", "--quick", "--seed-list", "4", "--hidden", "12", "--epochs", "1", "--batch-size", "20"]
    argv += ["--eta", "2.5", "--dtype", "float64", "--train-size", "1000", "--data-dir", str(mnist_cache)]
    record = run_json(argv, tmp_path / "a.json")
    config = record["config"]
    assert config["layers"] == ["dense12", "dense10"] and config["epochs"] == 1 and config["batch_size"] == 20
    assert config["eta"] == 2.5 and config["dtype"] == "float64"
    assert record["train_size"] == 1_000 and record["seeds"] == [4]
    assert record["summary"]["test_accuracy"]["std"] is None  # one run has no spread


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_accuracy_counts_do_not_depend_on_the_number_of_processes(
    mnist_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    if method == "fork" and sys.platform != "linux":
        pytest.skip("workers are forked on Linux only")
    monkeypatch.setattr(executors, "start_method", lambda: method)
    argv = ["accuracy", "--quick", "--seed-list", "7", "3", "--data-dir", str(mnist_cache)]
    serial = run_json([*argv, "--jobs", "1"], tmp_path / "serial.json")
    parallel = run_json([*argv, "--jobs", "2"], tmp_path / "parallel.json")
    assert [r["seed"] for r in parallel["runs"]] == [7, 3]  # in the order asked, whatever finished first
    for one, two in zip(serial["runs"], parallel["runs"], strict=True):
        assert {k: one[k] for k in COUNT_FIELDS} == {k: two[k] for k in COUNT_FIELDS}
    # Each worker ran with one BLAS thread, a forked one too (its parent's BLAS had two).
    assert [r["blas_threads"] for r in parallel["runs"]] == [1, 1]
    assert parallel["jobs"] == 2


def test_all_cores_runs_each_seed_as_train_mnist_does(
    mnist_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnist_nn.bench.machine import blas_threads
    from mnist_nn.train import split

    answers: list[bool] = []
    original = split.wanted

    def wanted(network: Any, m: int) -> bool:
        answers.append(original(network, m))
        return answers[-1]

    monkeypatch.setattr(split, "wanted", wanted)
    argv = ["accuracy", "--quick", "--seed-list", "2", "--layers", "conv4x5", "pool2", "dense10", "--epochs", "1"]
    argv += ["--batch-size", "16", "--train-size", "1000", "--data-dir", str(mnist_cache)]
    alone = run_json([*argv, "--all-cores"], tmp_path / "alone.json")
    assert alone["executor"] == "1 job on every core" and alone["jobs"] == 1
    [run] = alone["runs"]
    assert run["blas_threads"] == blas_threads()  # not held to one
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = blas_threads() or 1
    expected = usable >= 2 and threads >= 2 and split.threadpoolctl_module() is not None
    assert answers and set(answers) == {expected}  # split wherever train_mnist.py would split
    answers.clear()
    one = run_json([*argv, "--jobs", "1"], tmp_path / "one.json")
    assert one["runs"][0]["blas_threads"] == 1 and answers and not any(answers)  # never split
    assert run_benchmark([*argv, "--all-cores", "--jobs", "2"]) == 2


def test_workers_are_forked_only_while_this_process_runs_no_other_thread() -> None:
    code = "from mnist_nn.bench.executors import start_method; print(start_method())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout == ("fork\n" if sys.platform == "linux" else "spawn\n")
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        assert executors.start_method() == "spawn"
    finally:
        stop.set()
        other.join()


def test_speed_reports_speedups_blas_and_every_measurement(
    mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = run_json(["speed", "--quick", "--data-dir", str(mnist_cache)], tmp_path / "s.json")
    training = record["training"]
    vectorized = [t for t in training if t["implementation"] == "vectorized"]
    reference = [t for t in training if t["implementation"] == "reference"]
    assert {t["dtype"] for t in vectorized} == {t["dtype"] for t in reference} == {"float32", "float64"}
    for t in vectorized:
        assert t["speedup"] > 0 and t["gflops"] > 0 and t["gemm_fraction"] > 0
        assert t["examples_per_second_best"] >= t["examples_per_second_median"] > 0
        assert len(t["timing"]["seconds"]) == 1 and t["timing"]["items"] == 5_000
    assert all(t["speedup"] is None and t["timing"]["items"] == 200 for t in reference)
    # Beside each dense shape, the floor of its math (ratio 1 to itself) and the plain NumPy port.
    for kind in ("floor", "plain port", "plain port, his lists"):
        rows = [t for t in training if t["implementation"] == kind]
        assert {t["dtype"] for t in rows} == {"float32", "float64"}
        assert all(t["floor_ratio"] > 0 and t["timing"]["items"] == 5_000 for t in rows)
    assert all(t["floor_ratio"] == 1.0 for t in training if t["implementation"] == "floor")
    assert all(t["floor_ratio"] > 0 for t in vectorized)
    summary = record["main_job_summary"]
    assert record["main_job"]["epochs"] == [1, 2] and len(record["main_job"]["short_seconds"]) == 1
    # One floor epoch before each round of the main job's runs; the summary's floor is the fastest of all.
    assert len(record["main_job_floor"]["seconds"]) == 1 and record["main_job_floor"]["items"] == 5_000
    assert summary["floor_beside_main_job_seconds"] > 0
    assert summary["main_job_over_floor"] == pytest.approx(
        record["main_job"]["epoch_seconds"] / summary["floor_beside_main_job_seconds"]
    )
    assert summary["floor_seconds"] > 0 and summary["step_over_floor"] > 0 and summary["port_over_main_job"] != 0
    assert [g["dtype"] for g in record["gemm"]] == ["float32", "float64"]
    assert all(g["gflops"] > 0 for g in record["gemm"])
    assert all(i["images_per_second_best"] > 0 and i["timing"]["items"] == 10_000 for i in record["inference"])
    assert record["load_seconds"]["best_seconds"] > 0
    memory = record["memory"]
    assert memory["peak_rss_mib"] > 0 and memory["epochs"] == 1 and memory["test_line"].startswith("Test: ")

    environment = record["environment"]
    assert environment["numpy"] and environment["cpu_count"] >= 1
    today = datetime.datetime.now(datetime.timezone.utc).date()
    assert today - datetime.date.fromisoformat(environment["date"]) <= datetime.timedelta(days=1)
    assert environment["blas"] and environment["blas"][0]["internal_api"]
    assert environment["helper"] == helper_info()

    out = capsys.readouterr().out
    assert "- BLAS: " in out and "speed-up vs reference" in out and "peak memory of a training run of 1 epoch" in out
    assert "## The main job against its floor" in out and "BLAS core type" in out
    assert "the main job's epoch ((the 2-epoch run - the 1-epoch run) / 1)" in out
    helper_line = "the main job's helper process: " + (
        "gathers each epoch's shuffled rows" if environment["helper"]["gathers"] else "none"
    )
    assert helper_line in out
    assert any(line.startswith("| floor | [784, 30, 10] | 10 | float32 |") for line in out.splitlines())
    speed_rows = [line for line in out.splitlines() if line.startswith("| vectorized | [784, 30, 10] | 10 |")]
    assert len(speed_rows) == 2 and all(row.rstrip(" |").endswith("x") for row in speed_rows)


@pytest.mark.parametrize(
    ("helper", "words"),
    [
        ({"gathers": True, "counts": True}, "on the second CPU and counts half of the validation set"),
        ({"gathers": True, "counts": False}, "on the second CPU (BLAS may run more than one thread: no split count)"),
        ({"gathers": False, "counts": False}, "none (one CPU, or not Linux): the main job gathers its rows itself"),
        (None, "not recorded"),
    ],
)
def test_the_report_says_what_the_helper_process_did(helper: dict[str, bool] | None, words: str) -> None:
    from mnist_nn.bench.speed import MAIN_JOB_SHAPE, SpeedPlan, SpeedReport
    from mnist_nn.bench.timings import Timing, TrainingSpeed
    from mnist_nn.cli.benchmark import _main_job_lines

    floor = TrainingSpeed("floor", MAIN_JOB_SHAPE, Timing(50_000, (0.25,)))
    report = SpeedReport(SpeedPlan(), {"helper": helper}, Timing(1, (0.1,)), [], [floor], [], None, None, None)
    (line,) = [line for line in _main_job_lines(report) if "helper process" in line]
    assert line.endswith(words)


def test_timed_children_get_a_bytecode_cache_where_writing_bytecode_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from mnist_nn.bench.memory import child_environment

    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)
    with child_environment() as env:
        folder = Path(env["PYTHONPYCACHEPREFIX"])
        assert "PYTHONDONTWRITEBYTECODE" not in env and folder.is_dir()
        code = "import mnist_nn.bench.floor"
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
        assert any(folder.rglob("floor*.pyc"))  # compiled once, into the temporary cache
    assert not folder.exists() and os.environ["PYTHONDONTWRITEBYTECODE"] == "1"
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE")
    with child_environment() as env:
        assert env == dict(os.environ)


def test_the_default_runs_wall_time_is_the_fastest_of_its_runs_beside_the_main_job() -> None:
    from mnist_nn.bench.memory import MainJobTiming
    from mnist_nn.bench.speed import MAIN_JOB_SHAPE, SpeedPlan, SpeedReport
    from mnist_nn.bench.timings import Timing, TrainingSpeed

    floor = TrainingSpeed("floor", MAIN_JOB_SHAPE, Timing(50_000, (0.30, 0.25)))
    main_job = MainJobTiming(["train"], (2, 12), (1.2, 1.0), (4.2, 3.9), (9.6, 8.8, 9.1))
    report = SpeedReport(SpeedPlan(), {}, Timing(1, (0.1,)), [], [floor], [], None, None, main_job)
    summary = report.main_job_summary()
    assert summary is not None
    assert summary["default_run_seconds"] == 8.8 and summary["default_runs"] == 3
    assert summary["default_run_limit_seconds"] == pytest.approx(30 * 0.25 + 1.5)
    assert summary["floor_beside_main_job_seconds"] is None and summary["floor_seconds"] == 0.25
    # Floor epochs timed between the rounds, in the runs' minutes, are what the runs are held against:
    # here on 25,000 images, at best 0.135 s, so 0.27 s per 50,000.
    beside = dataclasses.replace(report, main_job_floor=Timing(25_000, (0.14, 0.135, 0.15)))
    summary = beside.main_job_summary()
    assert summary is not None and summary["floor_beside_main_job_seconds"] == pytest.approx(0.27)
    assert summary["floor_seconds"] == 0.25  # the table's, for the step and the ports
    assert summary["main_job_over_floor"] == pytest.approx((3.9 - 1.0) / 10 / 0.27)
    assert summary["default_run_limit_seconds"] == pytest.approx(30 * 0.27 + 1.5)
    assert summary["main_job_seconds"] == pytest.approx((3.9 - 1.0) / 10)
    untimed = dataclasses.replace(report, main_job=dataclasses.replace(main_job, default_seconds=()))
    summary = untimed.main_job_summary()
    assert summary is not None and summary["default_run_seconds"] is None and summary["default_runs"] == 0


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["sprint"],
        ["accuracy", "--preset", "no-such-preset"],
        ["accuracy", "--seeds", "0"],
        ["accuracy", "--seeds", "2", "--seed-list", "1"],
        ["accuracy", "--seed-list", "1", "1"],
        ["accuracy", "--seed-list", "-3"],
        ["accuracy", "--jobs", "0"],
        ["accuracy", "--epochs", "0"],
        ["accuracy", "--eta", "-1"],
        ["accuracy", "--eta", "nan"],
        ["accuracy", "--hidden", "0"],
        ["accuracy", "--quick", "--batch-size", "5001"],
        ["accuracy", "--train-size", "50001"],
        ["accuracy", "--dtype", "float16"],
        ["speed", "--config", "30@10"],
        ["speed", "--config", "784-30-10"],
        ["speed", "--config", "784-30-10@ten"],
        ["speed", "--config", "784-30-10@10:float16"],
        ["speed", "--quick", "--config", "784-30-10@5001"],
        ["speed", "--repeats", "0"],
        ["speed", "--reference-size", "5"],
        ["speed", "--gemm-size", "-1"],
        ["speed", "--memory-epochs", "-1"],
        ["speed", "--reference-dtypes", "float16"],
    ],
)
def test_bad_flags_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run_benchmark(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("benchmark.py") and "error: " in lines[0], captured.err


def test_unwritable_json_path_exits_2_before_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_benchmark(["speed", "--quick", "--json", str(tmp_path)]) == 2  # a folder, not a file
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0]


@pytest.mark.parametrize(
    ("action", "flags"),
    [
        ("accuracy", ["--preset", "--hidden", "--epochs", "--batch-size", "--eta", "--dtype", "--seeds", "--jobs"]),
        ("speed", ["--config", "--repeats", "--train-size", "--reference-size", "--gemm-size", "--memory-epochs"]),
    ],
)
def test_help_explains_the_flags(action: str, flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run_benchmark([action, "--help"]) == 0
    out = capsys.readouterr().out
    for flag in [*flags, "--seed-list" if action == "accuracy" else "--reference-dtypes", "--json", "--quick"]:
        assert f"\n  {flag} " in out, flag


def test_single_blas_thread_env_restores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with single_blas_thread_env():
        assert all(os.environ[name] == "1" for name in BLAS_THREAD_VARIABLES)
    assert os.environ["OPENBLAS_NUM_THREADS"] == "3" and "OMP_NUM_THREADS" not in os.environ


def test_stats_and_shapes() -> None:
    assert Stats.of([0.5]) == Stats(mean=0.5, std=None, min=0.5, max=0.5)
    stats = Stats.of([1.0, 3.0])
    assert stats.mean == 2.0 and stats.std == pytest.approx(2**0.5)
    shape = TrainingShape((784, 30, 10), 10)
    assert shape.weights == 784 * 30 + 30 * 10 and shape.dtype == "float32"


def test_accuracy_ensemble_is_reported_beside_the_mean(
    mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["accuracy", "--quick", "--seeds", "3", "--ensemble", "--data-dir", str(mnist_cache)]
    serial = run_json([*argv, "--jobs", "1"], tmp_path / "serial.json")
    parallel = run_json([*argv, "--jobs", "2"], tmp_path / "parallel.json")
    ensemble = serial["summary"]["ensemble"]
    assert ensemble == parallel["summary"]["ensemble"]  # the same networks, in any process
    assert ensemble["networks"] == 3 and ensemble["test_accuracy"] == ensemble["test_correct"] / 10_000
    assert ensemble["test_correct"] > 5_000  # three networks that each learned something
    assert benchmark_main([*argv, "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    k = ensemble["test_correct"]
    assert f"Test (ensemble of 3): {k} / 10000 correct ({k / 100:.2f}%)" in out
    # Without --ensemble there is none.
    plain = run_json(["accuracy", "--quick", "--seeds", "1", "--data-dir", str(mnist_cache)], tmp_path / "p.json")
    assert plain["summary"]["ensemble"] is None


def test_accuracy_tta_counts_each_run_and_the_ensemble_without_changing_their_training(
    mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["accuracy", "--quick", "--seeds", "2", "--augment", "none,shift=1", "--data-dir", str(mnist_cache)]
    plain = run_json([*argv, "--ensemble"], tmp_path / "plain.json")
    tta = run_json([*argv, "--ensemble", "--tta"], tmp_path / "tta.json")
    for a, b in zip(plain["runs"], tta["runs"], strict=True):
        assert {k: v for k, v in b.items() if "tta" not in k and k != "seconds"} == {
            k: v for k, v in a.items() if k != "seconds"
        }  # the same training and served weights
        assert 5_000 < b["validation_correct_tta"] <= 10_000 and 5_000 < b["test_correct_tta"] <= 10_000
        assert b["test_accuracy_tta"] == b["test_correct_tta"] / 10_000
        assert "test_correct_tta" not in a
    summary = tta["summary"]
    counts = [r["test_correct_tta"] / 10_000 for r in tta["runs"]]
    assert summary["test_accuracy_tta"]["mean"] == pytest.approx(sum(counts) / 2)
    assert summary["ensemble"]["test_correct"] == plain["summary"]["ensemble"]["test_correct"]
    k = summary["ensemble"]["tta_test_correct"]
    assert 5_000 < k <= 10_000 and "test_accuracy_tta" not in plain["summary"]
    assert "tta_test_correct" not in plain["summary"]["ensemble"]
    assert benchmark_main([*argv, "--ensemble", "--tta"]) == 0
    out = capsys.readouterr().out
    assert "| validation with TTA | test with TTA |" in out
    assert "averaged over 5 copies, the image and its 4 one-pixel shifts;" in out  # no mirror without flip=
    assert f"with TTA {k} / 10000 ({k / 100:.2f}%)" in out


def test_a_run_tested_with_tta_counts_its_served_weights_on_their_copies(mnist: MnistData) -> None:
    config = dataclasses.replace(
        PRESETS["fashion-mlp"], layers=("dense64", "dense10"), epochs=2, augment="none,flip=0.5", seed=4
    )
    result = train_seed(config, mnist, 2_000, keep_probabilities=True, tta=True)
    run = Run.start(config)
    fit(
        run,
        mnist.train.images[:2_000],
        mnist.train.labels[:2_000],
        validation=(mnist.validation.images, mnist.validation.labels),
        monitor_cost=False,
    )
    served = run.served_network()
    copies = TTA(mirror=True)  # the configuration mirrors, so its copies do too
    for split, count in ((mnist.validation, result.validation_correct_tta), (mnist.test, result.test_correct_tta)):
        expected = np.argmax(tta_probabilities(served, split.images, copies), axis=1) == split.labels
        assert count == int(np.count_nonzero(expected))
    assert result.test_probabilities_tta is not None and result.test_probabilities_tta.shape == (10_000, 10)
    assert result.test_correct == served.count_correct(*mnist.test)


def test_ensemble_count_takes_the_most_probable_class_of_the_average() -> None:
    a = np.array([[0.6, 0.4], [0.1, 0.9], [0.5, 0.5]], dtype=np.float32)
    b = np.array([[0.0, 1.0], [0.2, 0.8], [0.9, 0.1]], dtype=np.float32)
    # Averages: [0.3, 0.7], [0.15, 0.85], [0.7, 0.3]: classes 1, 1, 0.
    assert ensemble_count([a, b], [1, 1, 0]) == 3
    assert ensemble_count([a], [1, 1, 0]) == 2  # alone, a says 0, 1, 0 (the tie goes to the first)
    with pytest.raises(ValueError, match="every run's test probabilities"):
        ensemble_count([a, None], [1, 1, 0])


def test_speed_flags_more_than_100_percent_of_gemm_as_a_busy_machine() -> None:
    from mnist_nn.bench import SpeedPlan, SpeedReport, Timing, TrainingSpeed, environment_info
    from mnist_nn.bench.timings import GemmSpeed
    from mnist_nn.cli.benchmark import format_speed

    shape = TrainingShape((784, 30, 10), 10, "float32")
    speeds = [TrainingSpeed("vectorized", shape, Timing(50_000, (0.2,)), gemm_fraction=f) for f in (0.16, 1.39)]
    gemm = [GemmSpeed(256, "float32", Timing(1, (0.01,)))]
    environment = environment_info()
    report = SpeedReport(SpeedPlan(), environment, Timing(1, (0.1,)), gemm, speeds, [], None, load_average=(5.2, 7.4))
    [warning] = report.warnings()
    assert warning.startswith("[784, 30, 10] @10 float32 139% of GEMM cannot be right")
    assert "the machine was busy (load average 5.2 at the start, 7.4 at the end" in warning
    assert report.to_dict()["warnings"] == [warning]
    lines = format_speed(report)
    assert any(line.endswith(f"Warning: {warning}") for line in lines)
    assert sum("139.0% (!)" in line for line in lines) == 1 and sum("16.0%" in line for line in lines) == 1
    quiet = dataclasses.replace(report, training=speeds[:1])
    assert quiet.warnings() == [] and not any("Warning" in line for line in format_speed(quiet))
