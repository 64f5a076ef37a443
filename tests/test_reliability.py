"""Training that never loses work: kill -9 and resume, Ctrl-C and SIGTERM (also during a save), failed
saves, divergence, edited files given to --resume, and two trainings saving to one path.

These run the real script in a subprocess where a signal has to reach a real
process; the rest call ``train_main`` directly. To signal a process in the
middle of a save, the tests run ``train_main`` through a small wrapper script
(``PAUSING``) that pauses once inside the chosen save, as a zip member is
about to be closed, and says so by creating a marker file.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
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
TINY = ["--hidden", "10", "--seed", "1"]  # about 0.3 s an epoch

PAUSING = """
import os, sys, time, zipfile
from pathlib import Path

import mnist_nn.models as models
from mnist_nn.cli import train_main

marker = Path(os.environ["PAUSE_MARKER"])
pause_at = int(os.environ["PAUSE_AT_SAVE"])  # 1 for the first model file written
seconds = float(os.environ["PAUSE_SECONDS"])
saves = 0
atomic_write, close_member = models.atomic_write, zipfile._ZipWriteFile.close


def counting_atomic_write(*args, **kwargs):
    global saves
    saves += 1
    atomic_write(*args, **kwargs)


def pausing_close_member(self):
    # Where a signal hurts most: a zip member written but not yet closed. Raising here used to end
    # in "ValueError: Can't close the ZIP file while there is an open writing handle".
    if saves == pause_at and not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(seconds)  # a handled signal does not end the sleep early (PEP 475)
    close_member(self)


models.atomic_write, zipfile._ZipWriteFile.close = counting_atomic_write, pausing_close_member
raise SystemExit(train_main(sys.argv[1:]))
"""


def _script(mnist_cache: Path, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "train_mnist.py"), "--data-dir", str(mnist_cache), *args]


def _env() -> dict[str, str]:
    """This environment, with this checkout first on the path of a child Python."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _paused(tmp_path: Path, mnist_cache: Path, args: list[str], at_save: int, seconds: float) -> subprocess.Popen[str]:
    """Start training through ``PAUSING``; return once it is paused inside save number ``at_save``."""
    wrapper, marker = tmp_path / "pausing.py", tmp_path / "paused"
    wrapper.write_text(PAUSING)
    env = {**_env(), "PAUSE_MARKER": str(marker), "PAUSE_AT_SAVE": str(at_save), "PAUSE_SECONDS": str(seconds)}
    proc = subprocess.Popen(
        [sys.executable, str(wrapper), "--data-dir", str(mnist_cache), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"training never reached save {at_save}: {proc.communicate()}")
        time.sleep(0.01)
    return proc


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in ("pausing.py", "paused"))


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
    proc.wait(timeout=60)  # the process itself, not its pipes, which a helper process it forked shares
    assert proc.returncode == -signal.SIGKILL
    assert 2 <= done < 6
    # At once, as a scheduler that preempts with SIGKILL restarts a job: the killed run's helper
    # process must not be holding its lock.
    resumed = tmp_path / "resumed.json"
    assert train_main(["--data-dir", str(mnist_cache), *args, "--resume", str(model), "--json", str(resumed)]) == 0
    proc.communicate(timeout=60)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".r.npz")]  # no temporary or lock file left
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


@pytest.mark.parametrize(
    ("sig", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_signal_during_the_final_save_waits_for_it(
    mnist_cache: Path, tmp_path: Path, sig: signal.Signals, code: int, word: str
) -> None:
    model = tmp_path / "f.npz"
    proc = _paused(tmp_path, mnist_cache, ["--epochs", "2", *TINY, "--save", str(model)], at_save=1, seconds=2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and word in lines[0] and str(model) in lines[0] and "Traceback" not in err, err
    saved = load_model(model)  # the whole run, saved as an uninterrupted one
    assert saved.metadata["status"] == "complete" and saved.metadata["epochs_completed"] == 2
    assert f"Test: {saved.metadata['test_correct']} / 10000" in out
    assert _files(tmp_path) == ["f.npz"]


@pytest.mark.parametrize(
    ("sig", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_signal_during_a_checkpoint_waits_for_it_then_saves_the_run(
    mnist_cache: Path, tmp_path: Path, sig: signal.Signals, code: int, word: str
) -> None:
    model = tmp_path / "c.npz"
    args = ["--epochs", "4", "--checkpoint-every", "1", *TINY, "--save", str(model)]
    proc = _paused(tmp_path, mnist_cache, args, at_save=1, seconds=2)  # the checkpoint after epoch 1
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"{word} after epoch 1" in lines[0] and str(model) in lines[0], err
    saved = load_model(model)
    assert saved.metadata["status"] == "interrupted" and saved.metadata["epochs_completed"] == 1
    assert _files(tmp_path) == ["c.npz"]


def test_kill_9_during_a_checkpoint_leaves_no_stray_file_after_the_next_save(mnist_cache: Path, tmp_path: Path) -> None:
    model = tmp_path / "k.npz"
    args = ["--epochs", "3", "--checkpoint-every", "1", *TINY, "--save", str(model), "--quiet"]
    proc = _paused(tmp_path, mnist_cache, args, at_save=2, seconds=60)  # inside epoch 2's checkpoint
    proc.kill()
    proc.communicate(timeout=60)
    left = _files(tmp_path)
    assert "k.npz" in left and any(name.startswith(".k.npz.") and name.endswith(".tmp") for name in left)
    subprocess.run(
        _script(mnist_cache, *args, "--resume", str(model)), check=True, timeout=120, env=_env(), capture_output=True
    )
    assert _files(tmp_path) == ["k.npz"]  # the dead writer's temporary file and lock file are gone
    assert load_model(model).metadata["epochs_completed"] == 3


def _edit(source: Path, target: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Copy a model file, changing its metadata with ``change(metadata)``."""
    with np.load(source, allow_pickle=False) as archive:
        arrays = dict(archive)
    metadata = json.loads(arrays["metadata"].tobytes())
    change(metadata)
    arrays["metadata"] = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    np.savez(target, **arrays)


def _set(where: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit that sets the metadata value at ``where`` ("config.sizes", "history.0.epoch") to ``value``."""

    def change(metadata: dict[str, Any]) -> None:
        d: Any = metadata
        *keys, last = [int(k) if k.isdigit() else k for k in where.split(".")]
        for key in keys:
            d = d[key]
        d[last] = value

    return change


EDITS = {
    "sizes disagree with the arrays": _set("config.sizes", [784, 20, 10]),
    "a layer of 10^12 units": _set("config.sizes", [784, 10**12, 10]),
    "layers of 10^12 units": _set("config.layers", ["dense1000000000000", "dense10"]),
    "layers that disagree": _set("config.layers", ["dense20", "dense10"]),
    "unknown activation": _set("config.activation", "swish"),
    "another activation": _set("config.activation", "relu"),
    "unknown cost": _set("config.cost", "hinge"),
    "another cost": _set("config.cost", "cross-entropy"),
    "unknown schedule": _set("config.schedule", "step"),
    "dtype float16": _set("config.dtype", "float16"),
    "another preprocess": _set("config.preprocess", "deskew"),
    "bad augment": _set("config.augment", "bogus=1"),
    "string counts": _set("history.0.validation_correct", "8828"),
    "string epoch": _set("history.0.epoch", "1"),
    "huge count": _set("history.0.validation_correct", 10**400),
    "no history": _set("history", []),
    "history not a list": _set("history", {"epoch": 1}),
    "served epoch not the best": _set("epoch", 2),
    "served epoch a string": _set("epoch", "1"),
    "unknown served rule": _set("served", "median"),
}


@pytest.fixture(scope="module")
def resumable(mnist_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tmp_path_factory.mktemp("resumable") / "one-epoch.npz"
    assert train_main(["--data-dir", str(mnist_cache), "--epochs", "1", *TINY, "--quiet", "--save", str(model)]) == 0
    return model


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_resume_refuses_an_edited_file_in_one_line(
    mnist_cache: Path, resumable: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str
) -> None:
    edited = tmp_path / "edited.npz"
    _edit(resumable, edited, EDITS[edit])
    capsys.readouterr()
    code = train_main(["--data-dir", str(mnist_cache), "--epochs", "2", "--resume", str(edited), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"train_mnist.py: error: {edited}: cannot resume: "), err


def test_resume_serves_the_epoch_an_uninterrupted_run_serves(mnist_cache: Path, tmp_path: Path) -> None:
    # Seed 3's validation counts for 4 epochs are 8743, 8897, 8973, 8958: the best (3) is not the last (4).
    common = ["--data-dir", str(mnist_cache), "--hidden", "10", "--seed", "3", "--quiet"]
    straight, model = tmp_path / "straight.npz", tmp_path / "r.npz"
    assert train_main([*common, "--epochs", "4", "--save-last", "--save", str(straight)]) == 0
    assert train_main([*common, "--epochs", "2", "--save-last", "--save", str(model)]) == 0
    assert train_main([*common, "--epochs", "4", "--save", str(model), "--resume", str(model)]) == 0
    a, b = load_model(straight).metadata, load_model(model).metadata
    assert [r["validation_correct"] for r in a["history"]] == [r["validation_correct"] for r in b["history"]]
    assert (
        (b["served"], b["epoch"], b["test_correct"])
        == (a["served"], a["epoch"], a["test_correct"])
        == (
            "last",
            4,
            a["test_correct"],
        )
    )


def _served(path: Path) -> tuple[str, int, int, list[int]]:
    """A saved run's rule, served epoch, test count and validation counts."""
    metadata = load_model(path).metadata
    validation = [r["validation_correct"] for r in metadata["history"]]
    return metadata["served"], metadata["epoch"], metadata["test_correct"], validation


@pytest.mark.parametrize("flag", ["--no-save-last", "--save-last"])
def test_resume_may_change_which_epoch_is_served_to_what_an_uninterrupted_run_serves(
    mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    # Seed 3's validation counts for 4 epochs are 8743, 8897, 8973, 8958: the best (3) comes before
    # the resume point (4), so serving it after the resume needs its weights kept in the checkpoint.
    common = ["--data-dir", str(mnist_cache), "--hidden", "10", "--seed", "3", "--quiet"]
    straight, model = tmp_path / "straight.npz", tmp_path / "r.npz"
    assert train_main([*common, "--epochs", "5", flag, "--save", str(straight)]) == 0
    saved_with = "--save-last" if flag == "--no-save-last" else "--no-save-last"  # the other rule
    assert train_main([*common, "--epochs", "4", saved_with, "--save", str(model)]) == 0
    capsys.readouterr()
    assert train_main([*common[:2], "--epochs", "5", flag, "--resume", str(model)]) == 0
    rule = "last" if flag == "--save-last" else "best"
    assert f"serving its {rule} epoch ({flag})" in capsys.readouterr().err
    assert _served(model) == _served(straight)
    assert _served(model)[0] == rule


def test_resume_keeps_the_rule_saved_with_the_run_unless_told(mnist_cache: Path, tmp_path: Path) -> None:
    common = ["--data-dir", str(mnist_cache), "--hidden", "10", "--seed", "3", "--quiet"]
    model = tmp_path / "r.npz"
    assert train_main([*common, "--epochs", "2", "--save-last", "--save", str(model)]) == 0
    assert train_main([*common, "--epochs", "3", "--resume", str(model)]) == 0
    assert _served(model)[:2] == ("last", 3)


def test_resume_refuses_to_serve_a_best_epoch_whose_weights_were_not_kept(
    mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A file saved with --save-last that holds no best_ arrays: the last epoch's weights alone.
    common = ["--data-dir", str(mnist_cache), "--hidden", "10", "--seed", "3", "--quiet"]
    model, bare = tmp_path / "r.npz", tmp_path / "bare.npz"
    assert train_main([*common, "--epochs", "4", "--save-last", "--save", str(model)]) == 0
    with np.load(model, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files if not name.startswith("best_")}
    metadata = json.loads(arrays["metadata"].tobytes())
    assert metadata["resume"].pop("best_epoch") == 3
    arrays["metadata"] = np.frombuffer(json.dumps(metadata).encode("utf-8"), dtype=np.uint8)
    with bare.open("wb") as f:
        np.savez(f, **arrays)
    capsys.readouterr()
    assert train_main([*common[:2], "--epochs", "5", "--no-save-last", "--resume", str(bare)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds only its last epoch's weights, not its best's" in err[0], err


def test_a_second_training_cannot_save_to_the_path_of_a_running_one(
    mnist_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "busy.npz"
    first = ["--epochs", "500", "--checkpoint-every", "1", *TINY, "--save", str(model), "--quiet"]
    proc = subprocess.Popen(_script(mnist_cache, *first), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoint(model, proc, at_least=1)
        second = ["--data-dir", str(mnist_cache), "--epochs", "1", *TINY, "--quiet", "--save", str(model)]
        assert train_main(second) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{model} is in use by process {proc.pid}" in err[0], err
        assert load_model(model).metadata["config"]["epochs"] == 500  # still the first one's
    finally:
        proc.kill()  # kill -9: the kernel drops its lock
        proc.communicate(timeout=60)
    assert train_main(second) == 0  # the lock did not outlive its owner
    assert load_model(model).metadata["config"]["epochs"] == 1
    assert _files(tmp_path) == ["busy.npz"]
