"""Training that never loses work: kill -9 and resume, Ctrl-C and SIGTERM, failed saves, divergence.

These run the real script in a subprocess where a signal has to reach a real
process; the rest call ``train_main`` directly.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mnist_nn.cli import evaluate_main, train_main
from mnist_nn.errors import ModelFileError
from mnist_nn.models import load_model
from mnist_nn.train.step import Step

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--hidden", "30", "--seed", "1"]


def _script(mnist_cache: Path, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "train_mnist.py"), "--data-dir", str(mnist_cache), *args]


def _wait_for_checkpoint(path: Path, proc: subprocess.Popen[str], at_least: int, timeout: float = 120) -> int:
    """Poll the model file until it records ``at_least`` completed epochs; return that count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be stopped: {proc.communicate()}")
        if path.exists():
            try:
                done = int(load_model(path).metadata["epochs_completed"])
            except ModelFileError:
                done = 0  # cannot happen with atomic writes, but do not depend on it here
            if done >= at_least:
                return done
        time.sleep(0.02)
    pytest.fail("no checkpoint appeared in time")


def _json(path: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def test_kill_9_then_resume_gives_the_uninterrupted_result(mnist_cache: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight.json"
    subprocess.run(
        _script(mnist_cache, "--epochs", "6", *SMALL, "--quiet", "--json", str(straight)), check=True, timeout=300
    )
    model = tmp_path / "r.npz"
    args = ["--epochs", "6", "--checkpoint-every", "1", "--save", str(model), *SMALL, "--quiet"]
    proc = subprocess.Popen(_script(mnist_cache, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = _wait_for_checkpoint(model, proc, at_least=2)
    proc.kill()  # SIGKILL: no handler runs, only what was already on disk survives
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert 2 <= done < 6
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".r.npz")]  # no temporary file left
    resumed = tmp_path / "resumed.json"
    subprocess.run(_script(mnist_cache, *args, "--resume", str(model), "--json", str(resumed)), check=True, timeout=300)
    a, b = _json(straight), _json(resumed)
    keys = ("epoch", "validation_correct", "train_cost")
    assert [[r[k] for k in keys] for r in a["history"]] == [[r[k] for k in keys] for r in b["history"]]
    assert a["test_correct"] == b["test_correct"]


@pytest.mark.parametrize(
    ("sig", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_signal_saves_the_best_model_so_far(
    mnist_cache: Path, tmp_path: Path, sig: signal.Signals, code: int, word: str
) -> None:
    model = tmp_path / "s.npz"
    proc = subprocess.Popen(
        _script(mnist_cache, "--epochs", "30", "--checkpoint-every", "1", "--save", str(model), *SMALL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_checkpoint(model, proc, at_least=2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and word in lines[0] and str(model) in lines[0] and "Traceback" not in err
    saved = load_model(model)
    done = saved.metadata["epochs_completed"]
    assert saved.metadata["status"] == "interrupted"
    assert len(saved.metadata["history"]) == done >= 2
    assert out.count("Epoch ") >= done
    best = max(saved.metadata["history"], key=lambda r: (r["validation_correct"], -r["epoch"]))
    assert saved.metadata["epoch"] == best["epoch"]


def test_a_failed_save_leaves_the_earlier_model_intact(
    mnist_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "m.npz"
    assert train_main(["--data-dir", str(mnist_cache), "--epochs", "1", *SMALL, "--quiet", "--save", str(model)]) == 0
    before = model.read_bytes()
    capsys.readouterr()

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)  # the call that makes a write durable
    assert train_main(["--data-dir", str(mnist_cache), "--epochs", "2", *SMALL, "--quiet", "--save", str(model)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and str(model) in err[0]
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_divergence_names_the_epoch_and_keeps_the_last_good_weights(
    mnist_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_step = Step.__call__
    steps = {"n": 0}

    def step_that_blows_up_in_epoch_3(self: Any, *args: Any) -> None:
        real_step(self, *args)
        steps["n"] += 1
        if steps["n"] == 2 * 5000 + 10:  # ten steps into the third epoch (5,000 steps an epoch)
            self.network.params[0][0, 0] = np.nan

    monkeypatch.setattr(Step, "__call__", step_that_blows_up_in_epoch_3)
    model = tmp_path / "d.npz"
    code = train_main(["--data-dir", str(mnist_cache), "--epochs", "5", *SMALL, "--quiet", "--save", str(model)])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "in epoch 3; try a lower learning rate" in err[0] and str(model) in err[0]
    saved = load_model(model)  # loads: every weight in it is finite
    assert saved.metadata["status"] == "diverged" and saved.metadata["epochs_completed"] == 2
    assert saved.metadata["epoch"] in (1, 2)
    assert evaluate_main([str(model), "--data-dir", str(mnist_cache)]) == 0
    assert f"Test: {saved.metadata['test_correct']} / 10000" in capsys.readouterr().out
