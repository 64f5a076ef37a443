"""The command-line entry points, called with argv lists as users call the scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mnist_nn.cli import download_main, evaluate_main, train_main
from mnist_nn.data.download import MNIST_FILES
from mnist_nn.models import load_model

ROOT = Path(__file__).resolve().parents[1]


def test_download_reports_a_verified_cache(mnist_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert download_main(["--data-dir", str(mnist_cache)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5
    assert all("already present and verified" in line for line in out[:4])
    assert out[4] == f"MNIST is in {mnist_cache}"


def test_download_failure_is_one_line_naming_every_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_NN_MIRROR", str(tmp_path / "nowhere"))
    # The public mirrors are unreachable offline, and must be named too; the subprocess
    # is the real script, so the test also shows that no traceback is printed.
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "download_mnist.py"),
            "--data-dir",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "nowhere" in lines[0] and "ossci-datasets" in lines[0] and "cvdf-datasets" in lines[0]
    assert "MNIST_NN_MIRROR" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()  # no empty data folder is left behind


def test_train_one_epoch_prints_epoch_and_test_lines_and_writes_json(
    mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "sub" / "run.json"
    code = train_main(["--data-dir", str(mnist_cache), "--epochs", "2", "--hidden", "20", "--json", str(out_json)])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("Epoch 1/2: validation ") and ", cost " in lines[0]
    assert lines[-1].startswith("Test: ") and lines[-1].endswith("%)") and "/ 10000 correct (" in lines[-1]
    record = json.loads(out_json.read_text())
    assert [r["epoch"] for r in record["history"]] == [1, 2]
    assert record["config"]["layers"] == ["dense20", "dense10"]
    assert record["test_total"] == 10_000
    assert f"Test: {record['test_correct']} / 10000" in lines[-1]
    assert record["test_correct"] > 8_500


def test_quiet_prints_only_the_test_line(mnist_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_main(["--data-dir", str(mnist_cache), "--epochs", "1", "--hidden", "10", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 1 and captured.out.startswith("Test: ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "-1"], "--epochs must be at least 1"),
        (["--eta", "0"], "--eta must be a positive number"),
        (["--eta", "nan"], "--eta must be a positive number"),
        (["--batch-size", "0"], "--batch-size must be between 1 and 50000"),
        (["--batch-size", "50001"], "--batch-size must be between 1 and 50000"),
        (["--hidden", "0"], "--hidden sizes must be positive"),
        (["--epochs", "x"], "invalid int value"),
        (["--dtype", "float16"], "invalid choice"),
        (["--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        raise SystemExit(train_main(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


def test_help_explains_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        train_main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--hidden",
        "--epochs",
        "--batch-size",
        "--eta",
        "--seed",
        "--dtype",
        "--mirror",
        "--data-dir",
        "--json",
        "--quiet",
    ):
        assert flag in text


def _run_json(mnist_cache: Path, tmp_path: Path, name: str, *extra: str) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    assert train_main(["--data-dir", str(mnist_cache), "--hidden", "12", "--quiet", "--json", str(out), *extra]) == 0
    record: dict[str, Any] = json.loads(out.read_text())
    return record


def test_save_then_evaluate_agree_and_metadata_records_the_served_epoch(
    mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "models" / "m.npz"
    record = _run_json(mnist_cache, tmp_path, "run", "--epochs", "3", "--seed", "3", "--save", str(model))
    test_line = capsys.readouterr().out.strip().splitlines()[-1]
    saved = load_model(model)
    best = max(record["history"], key=lambda r: (r["validation_correct"], -r["epoch"]))
    assert saved.metadata["epoch"] == best["epoch"] == record["served_epoch"]
    assert saved.metadata["validation_correct"] == best["validation_correct"]
    assert saved.metadata["test_correct"] == record["test_correct"]
    assert len(saved.metadata["history"]) == 3 and saved.metadata["config"]["seed"] == 3
    assert set(saved.metadata["mnist_sha256"]) == {f.name for f in MNIST_FILES}

    assert evaluate_main([str(model), "--data-dir", str(mnist_cache), "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == test_line
    assert "Confusion matrix" in out and "Most confident mistakes" in out and "images/s" in out
    report = json.loads((tmp_path / "e.json").read_text())[0]
    assert report["correct"] == saved.metadata["test_correct"]
    assert sum(map(sum, report["confusion"])) == 10_000 and len(report["mistakes"]) == 10

    assert evaluate_main([str(model), "--split", "validation", "--data-dir", str(mnist_cache)]) == 0
    assert capsys.readouterr().out.startswith(f"Validation: {saved.metadata['validation_correct']} / 10000")


def test_save_last_serves_the_final_epoch(mnist_cache: Path, tmp_path: Path) -> None:
    model = tmp_path / "last.npz"
    record = _run_json(mnist_cache, tmp_path, "run", "--epochs", "2", "--save", str(model), "--save-last")
    saved = load_model(model)
    assert saved.metadata["epoch"] == 2 == record["served_epoch"]
    assert saved.metadata["served"] == "last"


def test_resume_finishes_a_run_exactly_as_an_uninterrupted_one(mnist_cache: Path, tmp_path: Path) -> None:
    straight = _run_json(mnist_cache, tmp_path, "straight", "--epochs", "3", "--seed", "5")
    model = tmp_path / "r.npz"
    _run_json(mnist_cache, tmp_path, "first", "--epochs", "2", "--seed", "5", "--save", str(model))
    resumed = _run_json(
        mnist_cache, tmp_path, "resumed", "--epochs", "3", "--seed", "5", "--save", str(model), "--resume", str(model)
    )
    key = ("epoch", "validation_correct", "train_cost")
    assert [[r[k] for k in key] for r in resumed["history"]] == [[r[k] for k in key] for r in straight["history"]]
    assert resumed["test_correct"] == straight["test_correct"]
    assert load_model(model).metadata["epochs_completed"] == 3


def test_resume_refuses_a_changed_configuration(mnist_cache: Path, tmp_path: Path, capsys) -> None:
    model = tmp_path / "r.npz"
    _run_json(mnist_cache, tmp_path, "first", "--epochs", "1", "--save", str(model))
    capsys.readouterr()
    assert train_main(["--data-dir", str(mnist_cache), "--resume", str(model), "--eta", "0.5"]) == 2
    assert "only --epochs and --save-last may change, not eta" in capsys.readouterr().err


def test_resume_without_save_saves_back_to_the_resumed_file(
    mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "r.npz"
    _run_json(mnist_cache, tmp_path, "first", "--epochs", "1", "--save", str(model))
    capsys.readouterr()
    assert train_main(["--data-dir", str(mnist_cache), "--resume", str(model), "--epochs", "2"]) == 0
    err = capsys.readouterr().err
    assert f"Resuming {model} after epoch 1 of 2, serving its best epoch (--no-save-last); saving back to it" in err
    assert "Saved epoch " in err and str(model) in err
    assert load_model(model).metadata["epochs_completed"] == 2


def test_resume_with_fewer_epochs_than_done_is_one_line_exit_2(
    mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "r.npz"
    _run_json(mnist_cache, tmp_path, "first", "--epochs", "2", "--save", str(model))
    capsys.readouterr()
    before = model.read_bytes()
    assert train_main(["--data-dir", str(tmp_path / "no-data"), "--resume", str(model), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"train_mnist.py: error: --resume: {model} has already trained 2 epochs, more than 1"]
    assert model.read_bytes() == before and not (tmp_path / "no-data").exists()


def test_resume_of_a_model_saved_from_python_says_why_not(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mnist_nn import Network, save_model

    model = tmp_path / "api.npz"
    save_model(model, Network([784, 5, 10], rng=np.random.default_rng(0)), {})
    assert train_main(["--resume", str(model), "--data-dir", str(tmp_path / "no-data")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{model}: cannot resume: it holds the weights only" in err[0]
    assert "NoneType" not in err[0] and "train --save" in err[0]


def test_unwritable_save_path_is_reported_before_training(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert train_main(["--save", str(blocker / "m.npz"), "--data-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cannot write" in err
    assert not (tmp_path / "none").exists()  # nothing was downloaded or trained


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello, I am text\n", "not a model file"),
        (b"", "empty file"),
        (None, "holds Python objects"),
    ],
)
def test_evaluate_refuses_bad_files_with_exit_2_and_one_line(
    tmp_path: Path, content: bytes | None, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.npz"
    if content is None:
        np.savez(path, metadata=np.array([{"a": 1}], dtype=object), w0=np.zeros(3))
    else:
        path.write_bytes(content)
    assert evaluate_main([str(path), "--data-dir", str(tmp_path / "unused")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(path) in err[0]


def test_evaluate_missing_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate_main([str(tmp_path / "nope.npz")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize(("typed", "suggested"), [("cn", "did you mean cnn?"), ("nielsen-ch-1", "nielsen-ch1")])
def test_a_mistyped_preset_suggests_the_nearest_and_help_describes_each(
    typed: str, suggested: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--preset", typed])
    assert exit_info.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert f"no preset '{typed}'" in line and suggested in line
    with pytest.raises(SystemExit):
        train_main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "cnn: [conv24x5 pool2 conv48x5 pool2 dense200 dense10], relu" in help_text
    assert "nielsen-ch1: [784, 30, 10], sigmoid, quadratic cost" in help_text


@pytest.mark.real_data
def test_finding_saved_models_listing_them_and_replacing_one_says_so(
    mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnist_nn.cli.main import main

    folder = tmp_path / "models"
    model = folder / "m.npz"
    argv = ["--data-dir", str(mnist_cache), "--epochs", "1", "--hidden", "10", "--save", str(model)]
    assert train_main(argv) == 0
    assert "(replacing" not in capsys.readouterr().err
    assert train_main([*argv, "--seed", "2"]) == 0
    assert f"to {model} (replacing the model that was there)" in capsys.readouterr().err

    (folder / "junk.npz").write_bytes(b"not a model")
    assert main(["models", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Models in {folder}, newest first:"
    [line] = [line for line in out if line.startswith("  m.npz  ")]
    test_correct = load_model(model).metadata["test_correct"]
    assert line.endswith(f"[784, 10, 10], epoch 1, test {test_correct} / 10000 ({test_correct / 100:.2f}%)")
    assert any(line.startswith("  junk.npz  ") and "unreadable: " in line for line in out)

    assert main(["models", str(tmp_path / "nowhere")]) == 2
    assert main(["evaluate", str(tmp_path / "ch1.npz"), "--data-dir", str(mnist_cache)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(
        "no such file; models saved with --save alone are in " + _models_dir() + " (mnist-nn models lists them)"
    )


def _models_dir() -> str:
    from mnist_nn.config import default_models_dir

    return str(default_models_dir())


@pytest.mark.real_data
def test_a_run_at_chance_level_says_so_in_one_line(mnist_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--data-dir", str(mnist_cache), "--hidden", "10", "--epochs", "2", "--eta", "1000"]
    assert train_main(argv) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "validation is at chance level" in warnings[0] and "after 2 epochs" in warnings[0]
    assert "try a lower --eta" in warnings[0]


@pytest.mark.real_data
def test_the_first_training_says_where_mnist_went(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import real_mirror

    folder = tmp_path / "data"
    argv = ["--data-dir", str(folder), "--mirror", real_mirror(), "--epochs", "1", "--hidden", "10"]
    assert train_main(argv) == 0
    assert f"MNIST downloaded and verified into {folder}" in capsys.readouterr().err
    assert train_main(argv) == 0
    assert "downloaded" not in capsys.readouterr().err  # the cache was used


def test_the_commands_run_no_tqdm_monitor_thread() -> None:
    # Checked in a fresh interpreter: the test process sets the same in conftest.py.
    code = "import tqdm, mnist_nn.cli; print(tqdm.tqdm.monitor_interval)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "0"
