"""Atomic file writes, their temporary files, locks on a path, and JSON files.

A write goes to a temporary file in the target's folder, then ``os.replace``
puts it in place: a reader never sees a half-written file, and a write that
fails leaves any earlier file at the path untouched.

Every temporary file is ``.<name>.<8 random characters><suffix>`` beside its
target and is locked (``flock``) by its writer for as long as it exists. The
kernel drops that lock when the writer dies, even by ``kill -9``, so a
temporary file whose lock is free is a leftover: the next write to the same
path removes it (``remove_stale_temps``), and never touches one that a
running process is writing.

``PathLock`` lets one process at a time own a path for a long job (a
training run saving to it): a ``.<name>.lock`` file beside the target,
locked the same way, so a killed owner cannot leave it stuck; the next
owner, or the next write to the path, removes the file it leaves. A
``flock`` belongs to the open file, which ``fork`` shares with the child:
a child forked while a lock is held (the training's helper process) closes
its copy at once, so the lock ends with its owner, never later.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from mnist_nn.errors import PathBusyError

if sys.platform != "win32":
    import fcntl

PathLike = str | os.PathLike[str]  # a path as the public functions take it: a string or a Path
TEMP_SUFFIXES = (".tmp", ".part", ".check")  # what temporary files of this module end with
_TEMP_TRIES = 100
_LOCK_RETRIES = 2  # a lock taken by a cleanup is released within microseconds
_LOCK_RETRY_SECONDS = 0.05
_GONE_OWNER_RETRIES = 40  # while the process named in a held lock file is gone: 2 s for whatever holds it to end

# The descriptors of the PathLocks this process holds: a forked child closes its copies (see the docstring).
_held_locks: set[int] = set()


def _close_held_locks_in_child() -> None:
    """After a fork, in the child: close the inherited descriptors of the parent's locks."""
    for fd in _held_locks:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_locks.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_locks_in_child)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], suffix: str = ".tmp") -> None:
    """Create ``path``'s folder if needed and write it atomically through ``write(file)``.

    Leftover temporary files of ``path`` (their writer died) are removed first.
    The new one has a unique name, so several processes can write the same
    path at once (the last rename wins). If ``write`` raises, the temporary
    file is removed.

    Raises:
        ValueError: ``suffix`` is not one of ``TEMP_SUFFIXES``.
        OSError: the file cannot be written; any earlier file at ``path`` is kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = _new_temp(path, suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)  # still locked, so no other writer's cleanup can take it first
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _new_temp(path: Path, suffix: str) -> tuple[int, Path]:
    """A new temporary file beside ``path``, opened for writing and locked: (descriptor, path)."""
    if suffix not in TEMP_SUFFIXES:
        raise ValueError(f"expected a temporary file suffix in {TEMP_SUFFIXES}, got {suffix!r}")
    for _ in range(_TEMP_TRIES):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            # 0o666 less the umask: the permissions open() would give the file.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        try:
            # Another process's cleanup may have found the file before it was locked:
            # then it is that process's to remove, and this one takes a new name.
            if _lock(fd, block=False) and _is_same_file(fd, tmp):
                return fd, tmp
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
    raise FileExistsError(errno.EEXIST, f"no free temporary file name beside {path} after {_TEMP_TRIES} tries")


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files of ``path`` that no running process holds; returns those removed.

    Only names of this module's patterns for ``path`` are considered
    (``.<name>.<8 characters><suffix>``, a suffix of ``TEMP_SUFFIXES``, and
    ``PathLock``'s ``.<name>.lock``), and only regular files whose lock is
    free. Problems (a folder that cannot be listed, a file of another user)
    leave the file where it is.
    """
    if sys.platform == "win32":  # no flock to tell a leftover from a file being written
        return []
    path = Path(path)
    suffixes = "|".join(re.escape(s) for s in TEMP_SUFFIXES)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:[a-z0-9_]{{8}}(?:{suffixes})|lock)")
    try:
        with os.scandir(path.parent) as entries:
            names = [entry.name for entry in entries if pattern.fullmatch(entry.name)]
    except OSError:
        return []
    removed = []
    for name in names:
        tmp = path.parent / name
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode) and _lock(fd, block=False) and _is_same_file(fd, tmp):
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            pass
        finally:
            os.close(fd)  # releases the lock taken above
    return removed


def _lock(fd: int, *, block: bool) -> bool:
    """Take an exclusive flock on ``fd``; False if another open file holds it (and ``block`` is off)."""
    if sys.platform == "win32":  # no flock: nothing is locked, and nothing is removed as stale
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _is_same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not removed or replaced meanwhile)."""
    try:
        here = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    there = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


class PathLock:
    """Ownership of ``path`` by this process while the ``with`` block runs.

    The lock is a ``flock`` on ``.<name>.lock`` beside ``path``, which holds
    the owner's process id. The file is removed on release; a killed owner
    leaves it behind, unlocked, and the next owner takes it over (or the next
    write to ``path`` removes it). On Windows (no ``flock``) nothing is locked.

    Raises (on entry):
        PathBusyError: another process owns ``path``; the message names it.
        OSError: the lock file cannot be created.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.parent / f".{self.path.name}.lock"
        self._fd: int | None = None
        self._owner = 0  # the process that took the lock: only it releases it

    def __enter__(self) -> PathLock:
        if sys.platform == "win32":
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        busy = 0
        for _ in range(_TEMP_TRIES + _GONE_OWNER_RETRIES):
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                locked = _lock(fd, block=False)
                # A releasing owner removes the file while holding the lock: if this one
                # was opened before that, it is no longer the lock file; open the new one.
                if locked and _is_same_file(fd, self.lock_path):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
                    self._fd, self._owner = fd, os.getpid()
                    _held_locks.add(fd)
                    return self
                if not locked:
                    busy += 1
                    owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                    alive = owner.isdigit() and int(owner) > 0 and _is_running(int(owner))
                    # A lock whose named owner is gone is released within moments (whatever it left holding
                    # it is ending): it is waited for longer than a live owner's.
                    if busy > (_LOCK_RETRIES if alive else _GONE_OWNER_RETRIES):
                        raise PathBusyError(_busy_message(self.path, self.lock_path, owner if alive else None))
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
            if not locked:  # perhaps only for a moment, by a cleanup that found a dead owner's file
                time.sleep(_LOCK_RETRY_SECONDS)
        raise PathBusyError(f"{self.path}: could not take its lock file {self.lock_path}")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._fd is not None and self._owner == os.getpid():  # never in a forked child
            _held_locks.discard(self._fd)
            try:
                # Before the lock is released (see __enter__); a folder that became read-only keeps the file,
                # which the next owner takes over: not an error of its own.
                with contextlib.suppress(OSError):
                    self.lock_path.unlink(missing_ok=True)
            finally:
                os.close(self._fd)
                self._fd = None


def _is_running(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _busy_message(path: Path, lock_path: Path, owner: str | None) -> str:
    """Why ``path`` cannot be taken: its owner by process id if that process is running, else unnamed."""
    who = f"process {owner}" if owner is not None else "another process"
    return f"{path} is in use by {who}, which holds {lock_path.name}; wait for it to finish or choose another path"


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to an output path (``write_output``)."""
    write_output(path, json_text(obj).encode("utf-8"))


def json_text(obj: Any) -> str:
    """``obj`` as the indented JSON document an output file holds, ending with a newline."""
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def write_output(path: Path, data: bytes) -> None:
    """Write ``data`` to an output path a user named, in the way its kind of file needs.

    - A regular file (or a new name): written atomically (``atomic_write``).
    - A symlink to a regular file (or to a name not yet there): its target is
      written atomically; the link stays.
    - A device, a FIFO, or a link to an open descriptor (``/dev/stdout``,
      ``/dev/fd/N``, ``/proc/self/fd/N``): the bytes are streamed into it,
      nothing is renamed or replaced. A descriptor of this process is
      written through itself, so output redirected to a file lands after
      what the process wrote there.

    Raises:
        OSError: the path cannot be written; a regular file keeps its earlier contents.
    """
    target, stream, fd = _output_target(Path(path))
    if fd is not None:
        _write_all(os.dup(fd), data)
    elif stream:
        _write_all(os.open(target, os.O_WRONLY | os.O_CLOEXEC), data)
    else:
        atomic_write(target, lambda f: _write_file(f, data))


def _write_file(f: IO[bytes], data: bytes) -> None:
    """Write ``data`` into the open file ``f``."""
    f.write(data)


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to the open descriptor ``fd``, then close it."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


_MAX_LINKS = 40  # symlinks followed before giving up, as the kernel's own limit (ELOOP)
_DESCRIPTOR_FOLDER = re.compile(r"/proc/(?:(\d+)|self|thread-self)(?:/task/\d+)?/fd")


def _output_target(path: Path) -> tuple[Path, bool, int | None]:
    """Where output to ``path`` goes: (the path to write, whether it is streamed, this process's descriptor or None).

    Links are followed one at a time, so that a link into ``/proc/*/fd`` (a
    descriptor, whatever it points at) is told from a link to a file.
    """
    current = path
    for _ in range(_MAX_LINKS):
        descriptor = _DESCRIPTOR_FOLDER.fullmatch(os.path.realpath(current.parent))
        if descriptor is not None and current.name.isdigit():
            ours = descriptor.group(1) in (None, str(os.getpid()))
            return current, True, int(current.name) if ours else None
        if not current.is_symlink():
            break
        current = current.parent / os.readlink(current)
    else:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
    try:
        mode = os.stat(current).st_mode
    except FileNotFoundError:
        return Path(os.path.realpath(current)), False, None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return Path(os.path.realpath(current)), False, None
    return current, True, None


def check_writable(path: Path) -> None:
    """Raise OSError now if ``path`` could not be written later (its folder is created if missing).

    A device, a FIFO or a descriptor link must be writable; for a file, a
    temporary file is made and removed beside it (or beside a symlink's
    target), and leftover temporary files of it are removed on the way.
    """
    target, stream, fd = _output_target(Path(path))
    if fd is not None:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise PermissionError(errno.EBADF, "the descriptor is open for reading only", str(path))
        return
    if stream:
        if not os.access(target, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp = _new_temp(target, ".check")
    os.close(fd)
    tmp.unlink()
