"""Atomic writes leave no stray files, and a path lock cannot be left stuck (``mnist_nn.files``)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

from mnist_nn.errors import PathBusyError
from mnist_nn.files import PathLock, atomic_write, check_writable, remove_stale_temps, write_json

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")


@contextmanager
def _held(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` through a descriptor of its own, as a live writer does."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def test_a_write_removes_leftovers_of_its_path_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "m.npz"
    dead = [tmp_path / ".m.npz.abcd1234.tmp", tmp_path / ".m.npz.x_9zq0k1.tmp", tmp_path / ".m.npz.0000beef.check"]
    alive = tmp_path / ".m.npz.feed0001.tmp"
    others = [tmp_path / ".m.npz.notes", tmp_path / ".n.npz.abcd1234.tmp", tmp_path / "m.npz.abcd1234.tmp"]
    for p in [*dead, alive, *others]:
        p.write_bytes(b"partial")
    with _held(alive):  # a writer that is still running: its file stays
        write_json(target, {"a": 1})
        assert alive.exists()
    assert not any(p.exists() for p in dead)
    assert all(p.exists() for p in others)
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert remove_stale_temps(target) == [alive]  # its writer is gone now


def test_the_temporary_file_is_locked_while_it_is_written(tmp_path: Path) -> None:
    target = tmp_path / "m.bin"
    seen: list[list[Path]] = []

    def write(f: IO[bytes]) -> None:
        f.write(b"data")
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(".m.bin.")]
        seen.append(temps)
        assert remove_stale_temps(target) == []  # another process's cleanup cannot take it

    atomic_write(target, write)
    assert len(seen[0]) == 1 and seen[0][0].name.endswith(".tmp")
    assert target.read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin"]


def test_a_failed_write_and_a_check_leave_nothing(tmp_path: Path) -> None:
    target = tmp_path / "m.bin"

    def write(f: IO[bytes]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, write)
    check_writable(target)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="suffix"):
        atomic_write(target, write, suffix=".bak")


def test_a_path_lock_refuses_a_second_owner_and_is_never_stuck(tmp_path: Path) -> None:
    target = tmp_path / "run.npz"
    lock = tmp_path / ".run.npz.lock"
    with PathLock(target):
        assert lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(PathBusyError, match=f"in use by process {os.getpid()}"), PathLock(target):
            pass
    assert not lock.exists()

    # A killed owner leaves its lock file behind, unlocked: the next owner takes it over.
    code = "import os, sys; from mnist_nn.files import PathLock; PathLock(sys.argv[1]).__enter__(); os._exit(0)"
    subprocess.run([sys.executable, "-c", code, str(target)], check=True, env={**os.environ, "PYTHONPATH": _root()})
    assert lock.exists()
    with PathLock(target):
        assert lock.read_text() == f"{os.getpid()}\n"
        assert remove_stale_temps(target) == []  # a live owner's lock file stays
    assert not lock.exists()
    subprocess.run([sys.executable, "-c", code, str(target)], check=True, env={**os.environ, "PYTHONPATH": _root()})
    assert remove_stale_temps(target) == [lock]  # so does the next write to the path


def _root() -> str:
    return os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])


FORKING_OWNER = """
import os, sys, time
from mnist_nn.files import PathLock

PathLock(sys.argv[1]).__enter__()
if os.fork() == 0:  # a child that outlives its parent, as a helper process may for a moment
    time.sleep(30)
    os._exit(0)
print("locked", flush=True)
time.sleep(30)
"""


def test_a_path_lock_ends_with_its_owner_even_when_a_forked_child_lives_on(tmp_path: Path) -> None:
    target = tmp_path / "run.npz"
    owner = subprocess.Popen(
        [sys.executable, "-c", FORKING_OWNER, str(target)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": _root()},
        start_new_session=True,  # its child too is killed at the end, by process group
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline() == "locked\n"
        owner.kill()  # kill -9: the child it forked lives on, with copies of its descriptors
        owner.wait(timeout=10)
        with PathLock(target):  # at once: the child closed its copy of the lock when it was forked
            assert (tmp_path / ".run.npz.lock").read_text() == f"{os.getpid()}\n"
    finally:
        os.killpg(owner.pid, 9)


def test_a_refusal_never_names_a_process_that_no_longer_exists(tmp_path: Path) -> None:
    target, lock = tmp_path / "run.npz", tmp_path / ".run.npz.lock"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(gone.stdout)  # the process that wrote it has exited, yet something still holds the lock
    with _held(lock), pytest.raises(PathBusyError) as refusal, PathLock(target):
        pass
    message = str(refusal.value)
    assert "in use by another process, which holds .run.npz.lock" in message
    assert gone.stdout.strip() not in message
