"""Output paths that are not regular files: ``-``, devices, FIFOs, ``/dev/stdout`` and symlinks (``--json``).

A regular file is written atomically (a temporary file renamed over it).
Anything else must never be renamed over: a device node or a FIFO gets the
bytes streamed into it, a link to an open descriptor (``/dev/stdout``,
``/proc/self/fd/1``) writes through the descriptor, and a symlink to a file
keeps being a symlink while its target is replaced atomically. ``-`` is
standard output, and the command's other output then goes to stderr.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from mnist_nn.cli import evaluate_main
from mnist_nn.cli.predict import predict_main

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="device nodes, FIFOs and /proc/self/fd are Linux's")

ROOT = Path(__file__).resolve().parents[1]


def _predict(model: Path, digit: Path, out: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``mnist-nn predict MODEL DIGIT --json OUT`` in a child process (its own stdout and stderr)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "mnist_nn", "predict", str(model), str(digit), "--json", out]
    return subprocess.run(command, text=True, env=env, timeout=120, check=False, **kwargs)


def _predictions(text: str) -> list[int]:
    return [entry["prediction"] for entry in json.loads(text)]


def test_json_dash_writes_the_document_alone_to_stdout(
    model: Path, digit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert predict_main([str(model), str(digit), "--json", "-"]) == 0
    out, err = capsys.readouterr()
    assert len(_predictions(out)) == 1  # stdout parses as JSON: nothing else was printed there
    assert f"{digit}: " in err  # the human-readable answer went to stderr
    assert not Path("-").exists()


@pytest.mark.real_data
def test_evaluate_json_dash_is_the_document_alone(
    model: Path, mnist_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate_main([str(model), "--data-dir", str(mnist_cache), "--json", "-", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)[0]["total"] == 10_000
    assert "Test: " in err


def test_json_onto_a_character_device_writes_through_it_and_keeps_it(model: Path, digit: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"  # a twin of /dev/full: every write fails with ENOSPC
    try:
        os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    except PermissionError:
        pytest.skip("making a device node needs root (CAP_MKNOD)")
    result = _predict(model, digit, str(full), capture_output=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"mnist-nn predict: error: cannot write {full}: No space left on device "
        "(the disk is full: free some space or use another disk)"
    ]
    assert stat.S_ISCHR(full.lstat().st_mode)  # still the device, not a regular file renamed over it
    assert sorted(os.listdir(tmp_path)) == ["full"]


def test_json_onto_dev_stdout_reaches_stdout_and_leaves_the_link(model: Path, digit: Path, tmp_path: Path) -> None:
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")  # what /dev/stdout is
    result = _predict(model, digit, str(link), capture_output=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("]\n") and '"prediction"' in result.stdout
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"
    assert sorted(os.listdir(tmp_path)) == ["stdout"]


def test_json_onto_dev_stdout_redirected_to_a_file_lands_after_what_was_printed(
    model: Path, digit: Path, tmp_path: Path
) -> None:
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")  # as /dev/stdout, which a failure here must never replace
    log = tmp_path / "log.txt"
    with log.open("w") as f:
        result = _predict(model, digit, str(link), stdout=f, stderr=subprocess.PIPE)
    assert result.returncode == 0, result.stderr
    head, document = log.read_text().split("[\n", 1)
    assert head.startswith("Probabilities: ") and f"{digit}: " in head
    assert len(_predictions("[\n" + document)) == 1
    assert link.is_symlink()


def test_json_into_a_fifo_is_streamed_to_its_reader(model: Path, digit: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "results"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    result = _predict(model, digit, str(fifo), capture_output=True)
    reader.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(_predictions(received[0])) == 1
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_json_onto_a_symlink_replaces_its_target_atomically_and_keeps_the_link(
    model: Path, digit: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    target = results / "latest.json"
    target.write_text("[]\n")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    result = _predict(model, digit, str(link), capture_output=True)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and link.resolve() == target
    assert len(_predictions(target.read_text())) == 1
    assert sorted(os.listdir(results)) == ["latest.json"]  # no temporary file left beside the target

    dangling = tmp_path / "new.json"
    dangling.symlink_to(results / "new.json")  # a link to a file not there yet: the file is made
    assert _predict(model, digit, str(dangling), capture_output=True).returncode == 0
    assert dangling.is_symlink() and len(_predictions((results / "new.json").read_text())) == 1
