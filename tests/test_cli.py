"""The command-line entry points, called with argv lists as users call the scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_nn.cli import download_main, train_main

ROOT = Path(__file__).resolve().parents[1]


def test_download_reports_a_verified_cache(mnist_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert download_main(["--data-dir", str(mnist_cache)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4
    assert all("already present and verified" in line for line in out)


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
    assert list((tmp_path / "d").iterdir()) == []


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
    assert record["config"]["sizes"] == [784, 20, 10]
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
