"""The helper process that gathers each epoch's chunks: the same results bit for bit, and no process left behind.

``fit(..., helper=True)`` forks the helper even for the small sets here;
each test compares it with ``helper=False`` on the same run. The signal
tests run the real script, where the helper is chosen on its own (50,000
rows, two CPUs): Ctrl-C in a terminal reaches the whole process group, and
a parent killed with SIGKILL leaves a helper that must notice by itself.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mnist_nn.config import TrainConfig
from mnist_nn.data import as_floats
from mnist_nn.train import Run, count_in_chunks, feeds, fit, prefetch
from mnist_nn.train.history import EpochRecord
from mnist_nn.train.validation import Validation

ROOT = Path(__file__).resolve().parents[1]
needs_fork = pytest.mark.skipif(sys.platform != "linux", reason="the helper is forked, on Linux only")


def _pixels(n: int, seed: int = 0) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """n images of random uint8 pixels whose label is a function of them (so the network learns something)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, 784), dtype=np.uint8)
    labels = (pixels[:, :10].argmax(axis=1)).astype(np.int64)
    return pixels, labels


VALIDATION = _pixels(4321, seed=9)  # counted in chunks of 2,000 rows: 4,000 here and the last 321 by the helper


def _trained(helper: bool, images: Any, labels: Any, **settings: Any) -> Run:
    config = TrainConfig(
        **{"layers": ("dense16", "dense10"), "epochs": 3, "batch_size": 10, "eta": 1.0, "seed": 5, **settings}
    )
    return fit(Run.start(config), images, labels, validation=VALIDATION, helper=helper)


def _same(a: Run, b: Run) -> None:
    assert all(np.array_equal(p, q) for p, q in zip(a.network.params, b.network.params, strict=True))
    assert [(r.validation_correct, r.train_cost) for r in a.history.epochs] == [
        (r.validation_correct, r.train_cost) for r in b.history.epochs
    ]
    assert a.best_epoch == b.best_epoch
    # The last epoch's count, split between the two processes, is the whole set's count with its weights.
    assert a.history.epochs[-1].validation_correct == count_in_chunks(a.network, *VALIDATION)


@needs_fork
@pytest.mark.parametrize(
    ("n", "settings"),
    [
        (2237, {}),  # 5 chunks in a ring of 4, a partial last chunk and a partial last mini-batch
        (2000, {"dtype": "float64"}),
        (2000, {"dropout": 0.3}),  # the steps draw from the generator while the helper gathers
        (1500, {"layers": ("conv4x5", "pool2", "dense10"), "activation": "relu"}),
    ],
)
def test_the_helper_gives_the_same_run_bit_for_bit(n: int, settings: dict[str, Any]) -> None:
    pixels, labels = _pixels(n)
    with_helper = _trained(True, pixels, labels, **settings)
    _same(with_helper, _trained(False, pixels, labels, **settings))
    assert multiprocessing.active_children() == []  # the helper is gone once fit returns


@needs_fork
def test_the_helper_gathers_float_images_as_they_are() -> None:
    pixels, labels = _pixels(1200, seed=1)
    images = as_floats(pixels)
    _same(_trained(True, images, labels), _trained(False, images, labels))
    _same(_trained(True, images, labels), _trained(False, pixels, labels))


@needs_fork
def test_a_helper_that_dies_mid_epoch_leaves_the_parent_to_gather_the_rest() -> None:
    pixels, labels = _pixels(2500, seed=2)
    killed: list[int] = []

    def kill_the_helper(done: int, n: int) -> None:
        if not killed and done >= 1000:
            (helper,) = multiprocessing.active_children()
            assert helper.pid is not None
            os.kill(helper.pid, signal.SIGKILL)
            killed.append(helper.pid)

    config = TrainConfig(layers=("dense16", "dense10"), epochs=3, batch_size=10, eta=1.0, seed=5)
    run = fit(Run.start(config), pixels, labels, validation=VALIDATION, helper=True, on_progress=kill_the_helper)
    assert killed
    _same(run, _trained(False, pixels, labels))


@needs_fork
def test_a_helper_that_dies_while_counting_leaves_its_part_to_the_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    parent = os.getpid()
    count_rest = Validation.count_rest
    counted_here: list[int] = []

    def die_in_the_helper(self: Any, params: list[Any]) -> int:
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        counted_here.append(1)
        return count_rest(self, params)

    monkeypatch.setattr(Validation, "count_rest", die_in_the_helper)
    pixels, labels = _pixels(2000, seed=4)
    _same(_trained(True, pixels, labels), _trained(False, pixels, labels))
    assert counted_here == []  # the parent counted the helper's part itself, not through count_rest


@needs_fork
def test_the_helper_stops_when_training_raises() -> None:
    pixels, labels = _pixels(2000, seed=3)

    def stop(record: EpochRecord, run: Run) -> None:
        raise KeyboardInterrupt

    config = TrainConfig(layers=("dense16", "dense10"), epochs=3, batch_size=10, eta=1.0, seed=5)
    with pytest.raises(KeyboardInterrupt):
        fit(Run.start(config), pixels, labels, helper=True, on_epoch=stop)
    assert multiprocessing.active_children() == []


def test_a_helper_is_chosen_only_where_it_can_help() -> None:
    two_cpus = sys.platform == "linux" and len(os.sched_getaffinity(0)) >= 2
    assert prefetch.available(prefetch.MIN_ROWS) is two_cpus
    assert not prefetch.available(prefetch.MIN_ROWS - 1)
    in_thread: list[bool] = []
    thread = threading.Thread(target=lambda: in_thread.append(prefetch.available(prefetch.MIN_ROWS)))
    thread.start()
    thread.join()
    assert in_thread == [False]  # forking from a thread other than the main one is not done
    assert prefetch.plan(prefetch.MIN_ROWS - 1) == (False, False)
    assert prefetch.plan(prefetch.MIN_ROWS) == (two_cpus, two_cpus and prefetch.one_blas_thread())
    assert prefetch.plan(10, helper=True) == (True, True) and prefetch.plan(10**6, helper=False) == (False, False)


@pytest.mark.parametrize(
    ("variables", "one"),
    [
        ({"OPENBLAS_NUM_THREADS": "1"}, True),
        ({"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "1"}, False),  # OpenBLAS reads its own first
        ({"GOTO_NUM_THREADS": "1"}, True),
        ({"OMP_NUM_THREADS": "1"}, True),
        ({"OMP_NUM_THREADS": "4"}, False),
        ({}, False),  # OpenBLAS then runs a thread per CPU
    ],
)
def test_the_count_is_split_only_with_one_blas_thread(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], one: bool
) -> None:
    for name in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert prefetch.one_blas_thread() is one


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # it exited while we looked
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _gone(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` exits (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def _training(mnist_cache: Path, tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    """The real script training on MNIST in its own process group, once its helper runs: (process, helper pid)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "train_mnist.py"),
            "--data-dir",
            str(mnist_cache),
            "--hidden",
            "10",
            "--epochs",
            "30",
            "--save",
            str(tmp_path / "m.npz"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not (helpers := _children(proc.pid)):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no helper process appeared: {proc.communicate()}")
        time.sleep(0.02)
    time.sleep(0.5)  # well into the first epoch
    assert len(helpers) == 1
    return proc, helpers[0]


@needs_fork
@pytest.mark.skipif(not prefetch.available(prefetch.MIN_ROWS), reason="one CPU: the script trains without a helper")
def test_ctrl_c_to_the_process_group_stops_the_training_with_one_line_and_no_helper_left(
    mnist_cache: Path, tmp_path: Path
) -> None:
    proc, helper = _training(mnist_cache, tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the helper gets it too
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in err
    assert _gone(helper, 5)


@needs_fork
@pytest.mark.skipif(not prefetch.available(prefetch.MIN_ROWS), reason="one CPU: the script trains without a helper")
def test_a_helper_whose_parent_is_killed_exits_by_itself(mnist_cache: Path, tmp_path: Path) -> None:
    proc, helper = _training(mnist_cache, tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    assert _gone(helper, 5)


@needs_fork
@pytest.mark.skipif(not prefetch.available(prefetch.MIN_ROWS), reason="one CPU: the script trains without a helper")
def test_the_kernel_ends_the_helper_with_its_parent_even_when_it_cannot_run(mnist_cache: Path, tmp_path: Path) -> None:
    proc, helper = _training(mnist_cache, tmp_path)
    os.kill(helper, signal.SIGSTOP)  # stopped: it cannot poll for its parent, only be killed
    try:
        proc.kill()
        proc.wait(timeout=60)
        assert _gone(helper, 5)  # the parent-death signal (SIGKILL) reaches a stopped process too
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(helper, signal.SIGKILL)
        proc.communicate(timeout=60)


@needs_fork
@pytest.mark.skipif(not prefetch.available(prefetch.MIN_ROWS), reason="one CPU: the script trains without a helper")
def test_no_helper_trains_in_one_process_with_the_same_result(
    mnist_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnist_nn.cli import train_main

    started: list[int] = []

    class Counted(prefetch.Prefetcher):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self.n)

    monkeypatch.setattr(feeds, "Prefetcher", Counted)
    outputs = []
    for flags in ([], ["--no-helper"]):
        args = ["--data-dir", str(mnist_cache), "--hidden", "10", "--epochs", "2", "--quiet", *flags]
        assert train_main(args) == 0
        outputs.append(capsys.readouterr().out)
    assert started == [50_000]  # the first run only
    assert outputs[0] == outputs[1] and outputs[0].startswith("Test: ")
