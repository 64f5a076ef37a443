"""Fetching and verifying the four MNIST files: the only module that uses ``requests``.

This module owns the pinned SHA-256 digests and sizes of the decompressed IDX
files (``MNIST_FILES``), the list of public mirrors (``DEFAULT_MIRRORS``) and
the logic that fills the cache folder: a cached file is verified and reused;
otherwise each mirror is tried in turn until one yields bytes that verify.

A mirror is an ``http(s)://`` URL, a ``file://`` URL or a local folder. From
each one ``<name>.gz`` is tried first, then the uncompressed ``<name>``. The
bytes are streamed, un-gzipped on the fly (gzip is recognised by its magic
number, so either form works under either name), hashed and written to a
temporary file in the cache folder; only a payload whose size and SHA-256
match the pinned values is renamed into place. Nothing partial or unverified
is ever left in the cache, and the cache holds the decompressed payloads.

Each mirror has a deadline per file (``DEFAULT_DEADLINE``, ``$MNIST_NN_DOWNLOAD_DEADLINE``
or ``deadline=``), on top of the connect and read timeouts, which only bound each
single read: a mirror still sending when its time is up counts as failed and the
next one is tried. A low-speed rule, like curl's ``--speed-limit``/``--speed-time``,
ends a mirror sooner: one that delivers under ``DEFAULT_SPEED_LIMIT`` (1 kB/s) over
the last ``DEFAULT_SPEED_TIME`` (30 s) has stalled, counts as failed without a retry,
and the next one is tried (``$MNIST_NN_DOWNLOAD_SPEED_LIMIT`` and
``$MNIST_NN_DOWNLOAD_SPEED_TIME``, or ``speed_limit=`` and ``speed_time=``, change the
numbers; a limit of 0 turns the rule off). The reply's status line and headers count
as no bytes, so a reply trickled before its body stalls too. Each failed mirror is
reported as it fails, with what comes next, through the caller's ``note`` callback,
or else on stderr: above the progress bar on a terminal, and in a log (unless
``quiet``) when it stalled, ran out of time or took ``_SLOW_FAILURE_SECONDS``.
In the main thread a timer signal (``SIGALRM``) applies the deadline and the rule
wherever the transfer waits (connecting, reading, backing off), even on a mirror
trickling one byte at a time, and only there: the code that writes, cleans up
and draws the progress bar is never cut short. Elsewhere both are checked as data
arrives.
A cache folder that cannot be written (a file in its place, read-only, full, a
folder where a data file belongs) raises ``DataDirError``, which says what to do.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import hashlib
import itertools
import math
import os
import re
import signal
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

from mnist_nn.config import DATA_ENV, MIRROR_ENV, default_data_dir
from mnist_nn.errors import DataDirError, DownloadError, MirrorError, UsageError
from mnist_nn.files import atomic_write
from mnist_nn.text import MESSAGE_LIMIT, describe_os_error, first_line, one_line, short

if TYPE_CHECKING:  # requests and tqdm are imported where a download needs them: a warm cache never loads them
    import requests
    from tqdm import tqdm


@dataclass(frozen=True)
class MnistFile:
    """One file of the data set, pinned by its decompressed payload.

    Attributes:
        name: The decompressed file name, e.g. ``"train-images-idx3-ubyte"``;
            mirrors serve it as ``name + ".gz"`` or as ``name``.
        sha256: Lower-case hex SHA-256 of the decompressed IDX payload.
        size: Length of the decompressed payload in bytes.
    """

    name: str
    sha256: str
    size: int

    def __post_init__(self) -> None:
        # The name becomes a path inside the cache folder, so it must not escape it.
        if not self.name or self.name in (".", "..") or Path(self.name).name != self.name:
            raise ValueError(f"expected a plain file name, got {self.name!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"expected 64 lower-case hex digits for sha256, got {self.sha256!r}")
        if self.size < 0:
            raise ValueError(f"expected a size >= 0, got {self.size}")


# Digests and sizes of the original, decompressed IDX payloads.
# Pinning the decompressed bytes lets every mirror verify against the same values,
# however it happened to compress them.
MNIST_FILES: tuple[MnistFile, ...] = (
    MnistFile(
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        47_040_016,
    ),
    MnistFile(
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        60_008,
    ),
    MnistFile(
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        7_840_016,
    ),
    MnistFile(
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        10_008,
    ),
)

# yann.lecun.com is left out: it has refused plain downloads for years.
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

_CHUNK = 1 << 20  # bytes per read from the network or disk, and per inflate step
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # tells zlib to expect a gzip header and trailer
_SLOW_FAILURE_SECONDS = 5.0  # a mirror that took this long to fail is reported in a log too, as it fails
_CAUSE_LIMIT = 120  # characters of a network error's message quoted as the reason


def _fix_hint(mirror_env: str) -> str:
    """What to do when no mirror worked; says so when MNIST's variable is set for another data set, which ignores it."""
    hint = f"download the files yourself and point {mirror_env} (or --mirror) at their folder"
    if mirror_env != MIRROR_ENV and os.environ.get(MIRROR_ENV):
        hint += f" (${MIRROR_ENV} is MNIST's mirror only)"
    return hint


DEADLINE_ENV = "MNIST_NN_DOWNLOAD_DEADLINE"
# Seconds each mirror gets for each file. 600 s asks at least 16.5 kB/s for the largest
# file (9.9 MB compressed); a slower line can allow more with --download-deadline.
DEFAULT_DEADLINE = 600.0
_DEADLINE_HINT = f"allow more time with --download-deadline or ${DEADLINE_ENV}"

SPEED_LIMIT_ENV = "MNIST_NN_DOWNLOAD_SPEED_LIMIT"
SPEED_TIME_ENV = "MNIST_NN_DOWNLOAD_SPEED_TIME"
# A mirror delivering under DEFAULT_SPEED_LIMIT bytes/s over the last DEFAULT_SPEED_TIME seconds
# has stalled (curl's --speed-limit and --speed-time). 1 kB/s would take 2.7 hours for the
# largest file, which the deadline ends anyway; 30 s is long enough to ride out a pause.
DEFAULT_SPEED_LIMIT = 1000.0
DEFAULT_SPEED_TIME = 30.0
_CHECKS_PER_SPEED_TIME = 10  # the timer's checks of the rule: a stall is seen at most a tenth of the time late
_SPEED_HINT = f"allow slower mirrors with ${SPEED_LIMIT_ENV} (bytes per second, 0 for no limit)"
_DATA_DIR_HINT = f"choose another folder with --data-dir or ${DATA_ENV}"


@dataclass(frozen=True)
class FetchResult:
    """A verified file in the cache.

    Attributes:
        name: The file's name, as in ``MnistFile.name``.
        path: Where the verified, decompressed file lies in the cache folder.
        source: ``"cache"``, or the mirror (as given) it was downloaded from.
        data: The verified decompressed payload, so callers need not re-read it.
    """

    name: str
    path: Path
    source: str
    data: bytes


def mirror_list(
    mirror: str | None = None, mirrors: Sequence[str] | None = None, mirror_env: str = MIRROR_ENV
) -> list[str]:
    """The mirrors to try, in order.

    Args:
        mirror: Tried first; if ``None`` or empty, ``$MNIST_NN_MIRROR`` (the variable
            ``mirror_env`` names) is used when it is set and non-empty.
        mirrors: Tried after it; ``DEFAULT_MIRRORS`` if ``None``.
        mirror_env: The variable of the data set's own local mirror.

    Returns:
        The mirrors without empty entries and without duplicates (a trailing
        ``/`` does not make a mirror different); the first occurrence wins.
    """
    first = mirror or os.environ.get(mirror_env, "").strip()
    rest = DEFAULT_MIRRORS if mirrors is None else mirrors
    result: list[str] = []
    seen: set[str] = set()
    for candidate in (first, *rest):
        key = candidate.strip().rstrip("/")
        if candidate.strip() and key not in seen:
            seen.add(key)
            result.append(candidate.strip())
    return result


def ensure_files(
    files: Sequence[MnistFile] = MNIST_FILES,
    data_dir: Path | None = None,
    *,
    mirror: str | None = None,
    mirrors: Sequence[str] | None = None,
    quiet: bool = True,
    timeout: tuple[float, float] = (10.0, 60.0),
    retries: int = 2,
    backoff: float = 0.5,
    deadline: float | None = None,
    speed_limit: float | None = None,
    speed_time: float | None = None,
    note: Callable[[str], object] | None = None,
    mirror_env: str = MIRROR_ENV,
) -> list[FetchResult]:
    """Make sure each file is in the cache and verified, downloading what is missing.

    A cached file whose size and SHA-256 match is used without any network
    access. Otherwise the mirrors from ``mirror_list(mirror, mirrors)`` are
    tried in order until one yields a payload that verifies; it then replaces
    the cached file atomically.

    Args:
        files: The files to provide; by default the four MNIST files.
        data_dir: The cache folder, created if missing; by default
            ``config.default_data_dir()``.
        mirror: A mirror to try before the others (else ``$MNIST_NN_MIRROR``).
        mirrors: The other mirrors; ``DEFAULT_MIRRORS`` if ``None``. An empty
            list means "use the cache only".
        quiet: Hide the progress bars (they only ever show on a terminal).
        timeout: ``(connect, read)`` timeouts in seconds for each HTTP request.
        retries: Extra HTTP attempts per URL after the first one, for
            connection errors, timeouts, dropped connections and 5xx replies.
        backoff: Seconds to wait before the first retry; doubled for each
            further retry (``backoff * 2**attempt``).
        deadline: Seconds each mirror gets for each file, retries included,
            after which it counts as failed and the next mirror is tried; by
            default ``$MNIST_NN_DOWNLOAD_DEADLINE``, else ``DEFAULT_DEADLINE``.
        speed_limit: Bytes per second under which a mirror has stalled, once it
            has been under it for ``speed_time`` seconds: it counts as failed,
            without a retry, and the next mirror is tried; 0 turns the rule off.
            By default ``$MNIST_NN_DOWNLOAD_SPEED_LIMIT``, else ``DEFAULT_SPEED_LIMIT``.
        speed_time: The seconds of the low-speed rule; by default
            ``$MNIST_NN_DOWNLOAD_SPEED_TIME``, else ``DEFAULT_SPEED_TIME``.
        note: Called with one line, e.g. ``"<file>: <mirror> (stalled: under 1 kB/s
            for 30 s); trying the next mirror"``, as soon as a mirror fails and
            another is left to try. Without it the line is written above the
            progress bar when one shows, and nowhere otherwise.
        mirror_env: The variable of the files' own local mirror (``$MNIST_NN_MIRROR`` for
            MNIST), read when ``mirror`` is not given and named in the errors' hints.

    Returns:
        One ``FetchResult`` per file, in the order of ``files``.

    Raises:
        DownloadError: If a file is neither cached nor obtainable from any mirror.
        DataDirError: If the cache folder cannot be created or written.
        UsageError: If ``$MNIST_NN_DOWNLOAD_DEADLINE`` or ``$MNIST_NN_DOWNLOAD_SPEED_TIME``
            is not a number of seconds > 0, or ``$MNIST_NN_DOWNLOAD_SPEED_LIMIT`` not
            a number >= 0.
        ValueError: If ``timeout``, ``retries``, ``backoff``, ``deadline``, ``speed_limit``
            or ``speed_time`` is out of range.
    """
    if len(timeout) != 2 or min(timeout) <= 0:
        raise ValueError(f"expected timeout as (connect, read) > 0 seconds, got {timeout!r}")
    if retries < 0:
        raise ValueError(f"expected retries >= 0, got {retries}")
    if backoff < 0:
        raise ValueError(f"expected backoff >= 0, got {backoff}")
    if deadline is None:
        deadline = deadline_from_env()
    elif not (math.isfinite(deadline) and deadline > 0):
        raise ValueError(f"expected a deadline > 0 seconds, got {deadline!r}")
    if speed_limit is None:
        speed_limit = _number_from_env(SPEED_LIMIT_ENV, DEFAULT_SPEED_LIMIT, "bytes per second", zero=True)
    elif not (math.isfinite(speed_limit) and speed_limit >= 0):
        raise ValueError(f"expected a speed_limit >= 0 bytes per second, got {speed_limit!r}")
    if speed_time is None:
        speed_time = _number_from_env(SPEED_TIME_ENV, DEFAULT_SPEED_TIME, "seconds")
    elif not (math.isfinite(speed_time) and speed_time > 0):
        raise ValueError(f"expected a speed_time > 0 seconds, got {speed_time!r}")
    cache = default_data_dir() if data_dir is None else Path(data_dir).expanduser()
    created = _missing_folders(cache)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _data_dir_error(exc, cache) from None
    rule = _SpeedRule(speed_limit, speed_time) if speed_limit > 0 else None
    urls, hint = mirror_list(mirror, mirrors, mirror_env), _fix_hint(mirror_env)
    fetcher = _Fetcher(cache, urls, quiet, timeout, retries, backoff, deadline, rule, note, hint)
    try:
        return [fetcher.ensure(file) for file in files]
    except BaseException:
        _remove_if_empty(created)  # a failed first download leaves no empty cache folder behind
        raise
    finally:
        fetcher.close()


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not os.path.lexists(folder) and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders, deepest first, as long as each is empty (another process may be filling one)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def ensure_mnist(
    data_dir: Path | None = None,
    *,
    mirror: str | None = None,
    quiet: bool = True,
    deadline: float | None = None,
    note: Callable[[str], object] | None = None,
) -> list[FetchResult]:
    """Make sure the four MNIST files are cached and verified; see ``ensure_files``.

    Args:
        data_dir: The cache folder; by default ``config.default_data_dir()``.
        mirror: A mirror to try before ``DEFAULT_MIRRORS`` (else ``$MNIST_NN_MIRROR``).
        quiet: Hide the progress bars.
        deadline: Seconds each mirror gets for each file (else ``$MNIST_NN_DOWNLOAD_DEADLINE``
            or ``DEFAULT_DEADLINE``).
        note: Called with one line as soon as a mirror fails (stalls, say) and the next is tried.

    Returns:
        The results for train-images, train-labels, t10k-images, t10k-labels.

    Raises:
        DownloadError: If a file is neither cached nor obtainable from any mirror.
        DataDirError: If the cache folder cannot be created or written.
    """
    return ensure_files(MNIST_FILES, data_dir, mirror=mirror, quiet=quiet, deadline=deadline, note=note)


def deadline_from_env() -> float:
    """``$MNIST_NN_DOWNLOAD_DEADLINE`` in seconds, or ``DEFAULT_DEADLINE`` when it is unset or empty.

    Raises:
        UsageError: If it is set to anything but a finite number > 0.
    """
    return _number_from_env(DEADLINE_ENV, DEFAULT_DEADLINE, "seconds")


def _number_from_env(name: str, default: float, unit: str, *, zero: bool = False) -> float:
    """``$name`` as a finite number > 0 (>= 0 with ``zero``), or ``default`` when unset or empty."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
        raise UsageError(f"${name} must be a number of {unit} {'>= 0' if zero else '> 0'}, got {short(text)}")
    return value


class _Fetcher:
    """The state of one ``ensure_files`` call: cache folder, mirrors, HTTP session."""

    def __init__(
        self,
        cache: Path,
        mirrors: list[str],
        quiet: bool,
        timeout: tuple[float, float],
        retries: int,
        backoff: float,
        deadline: float,
        rule: _SpeedRule | None,
        note: Callable[[str], object] | None,
        fix_hint: str,
    ) -> None:
        self.cache = cache
        self.mirrors = mirrors
        self.quiet = quiet
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.deadline = deadline
        self.rule = rule
        self.note = note
        self.fix_hint = fix_hint  # what to do when no mirror works
        self._session: requests.Session | None = None
        self._received = 0  # decompressed bytes of the current file from the current mirror
        self._watch: _SpeedWatch | None = None  # the low-speed rule for the current file and mirror
        self._timed = False  # whether a timer signal applies the rule, rather than each arriving chunk
        self._waiting = _Window()  # open while the transfer waits: the only place the timer interrupts

    def close(self) -> None:
        """Release the HTTP session's connections, if one was opened."""
        if self._session is not None:
            self._session.close()

    def ensure(self, file: MnistFile) -> FetchResult:
        """Return ``file`` from the cache if it verifies, else from the first mirror that works."""
        path = self.cache / file.name
        data = _read_verified(path, file)
        if data is not None:
            return FetchResult(file.name, path, "cache", data)
        if path.is_dir():  # said now, not after a download that could never be renamed into place
            raise _folder_in_the_way(self.cache, file)
        if not self.mirrors:
            raise DownloadError(f"cannot get {file.name}: no mirrors to try; {self.fix_hint}")
        failures: list[str] = []
        # A terminal gets a progress bar; logs and pipes do not.
        hidden = self.quiet or not getattr(sys.stderr, "isatty", lambda: False)()
        from tqdm import tqdm  # imported only when a file is fetched: loading from the cache needs no bar

        with tqdm(
            total=file.size,
            desc=file.name,
            unit="B",
            unit_scale=True,
            file=sys.stderr,
            disable=hidden,
        ) as bar:
            late = slow = False  # whether a mirror ran out of time or stalled, so the message says what to change
            for mirror in self.mirrors:
                self._received = 0
                started = time.monotonic()
                ends = started + self.deadline
                self._watch = None if self.rule is None else _SpeedWatch(self.rule, started)
                try:
                    with _alarm(ends, self._watch, self._waiting) as timed:
                        self._timed = timed
                        data = self._fetch(mirror, file, bar, ends)
                except _DeadlinePassed:
                    self._drop_session()  # a request cut off anywhere leaves nothing worth reusing
                    reason = _deadline_reason(self.deadline, self._received, file.size)
                except _Stalled as stall:
                    self._drop_session()
                    reason = stall.reason
                except MirrorError as failure:
                    reason = failure.reason
                else:
                    return FetchResult(file.name, path, mirror, data)
                late = late or reason.startswith(_DEADLINE_PREFIX)
                slow = slow or reason.startswith(_STALL_PREFIX)
                failures.append(f"{one_line(mirror, MESSAGE_LIMIT)} ({one_line(reason, MESSAGE_LIMIT)})")
                if mirror != self.mirrors[-1]:
                    line = f"{file.name}: {failures[-1]}; trying the next mirror"
                    if self.note is not None:
                        self.note(line)
                    elif not hidden or (not self.quiet and _slow_failure(reason, time.monotonic() - started)):
                        # On a terminal always; in a log only after a slow failure, where the final line
                        # may be minutes away.
                        bar.write(line, file=sys.stderr)
        changes = [hint for hint, needed in ((_DEADLINE_HINT, late), (_SPEED_HINT, slow)) if needed]
        hints = ", ".join([*changes, f"or {self.fix_hint}"]) if changes else self.fix_hint
        # A cached copy that is there but failed verification is said first: on a machine that
        # had the data (a benchmark's worker), it is the problem to fix.
        stale = f" (the cached {one_line(str(path), MESSAGE_LIMIT)} failed verification)" if path.is_file() else ""
        raise DownloadError(f"cannot get {file.name} from any mirror{stale}: {'; '.join(failures)}; {hints}")

    def _drop_session(self) -> None:
        """Close the HTTP session, so the next request starts on fresh connections."""
        self.close()
        self._session = None

    def _advance(self, bar: tqdm[NoReturn], size: int) -> None:
        """Count ``size`` more decompressed bytes of the current file, on the bar too."""
        self._received += size
        bar.update(size)

    def _arrived(self, size: int) -> None:
        """Count ``size`` more bytes from the mirror; without the timer, apply the low-speed rule here."""
        if self._watch is None:
            return
        self._watch.count(size)
        if not self._timed and self._watch.stalled(time.monotonic()):
            raise MirrorError(self._watch.rule.reason)

    def _fetch(self, mirror: str, file: MnistFile, bar: tqdm[NoReturn], ends: float) -> bytes:
        """Fetch ``file`` from one mirror into the cache by ``time.monotonic()`` ``ends``; return its payload."""
        parts = urlsplit(mirror)
        if parts.scheme in ("http", "https"):
            return self._fetch_http(mirror, file, bar, ends)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise MirrorError(f"file URL on another host {parts.netloc!r}")
            from urllib.request import url2pathname  # here: urllib.request loads ssl (~5 MB), which a cache never needs

            return self._fetch_local(Path(url2pathname(parts.path)), file, bar, ends)
        if "://" in mirror:
            raise MirrorError(f"unsupported URL scheme {parts.scheme!r}")
        return self._fetch_local(Path(mirror).expanduser(), file, bar, ends)

    def _fetch_local(self, folder: Path, file: MnistFile, bar: tqdm[NoReturn], ends: float) -> bytes:
        """Copy ``file`` from a local folder, preferring ``<name>.gz``."""
        if not folder.is_dir():
            raise MirrorError("no such folder")
        for candidate in (f"{file.name}.gz", file.name):
            source = folder / candidate
            if source.is_file():
                return self._store(file, bar, functools.partial(_read_local, source), ends)
        raise MirrorError(f"neither {file.name}.gz nor {file.name} in the folder")

    def _fetch_http(self, base: str, file: MnistFile, bar: tqdm[NoReturn], ends: float) -> bytes:
        """Download ``<name>.gz``, or ``<name>`` if the former is 404, retrying transient errors."""
        if self._session is None:
            import requests  # here, not at the top: loading from the cache never needs it (~14 MB, ~0.2 s)

            self._session = requests.Session()
        session = self._session
        base = base if base.endswith("/") else base + "/"
        for candidate in (f"{file.name}.gz", file.name):
            url = base + candidate
            for attempt in itertools.count():
                try:
                    read = functools.partial(_read_http, session, url, self.timeout)
                    return self._store(file, bar, read, ends)
                except MirrorError as failure:
                    if failure.status == 404 and candidate.endswith(".gz"):
                        break  # this mirror may serve the uncompressed file instead
                    if not failure.retry or attempt >= self.retries:
                        raise
                with self._waiting:
                    time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable: the uncompressed name's 404 is raised above")

    def _store(self, file: MnistFile, bar: tqdm[NoReturn], read: Callable[[Payload], None], ends: float) -> bytes:
        """Stream one source through a ``Payload`` into a temp file; verify; rename into place."""
        bar.reset(total=file.size)
        self._received = 0
        verified: list[bytes] = []

        def write(out: IO[bytes]) -> None:
            progress = functools.partial(self._advance, bar)
            payload = Payload(file, out, progress, ends, self.deadline, arrived=self._arrived, waiting=self._waiting)
            read(payload)
            verified.append(payload.finish())  # raises unless size and digest match

        try:
            atomic_write(self.cache / file.name, write, suffix=".part")
        except _CacheWriteError as exc:
            raise _data_dir_error(exc.error, self.cache, file) from None
        except OSError as exc:  # creating, syncing or renaming the temporary file
            raise _data_dir_error(exc, self.cache, file) from None
        return verified[0]


class Payload:
    """Takes a file's bytes as they arrive: un-gzips, bounds, hashes and writes them, within a deadline."""

    def __init__(
        self,
        file: MnistFile,
        out: IO[bytes],
        progress: Callable[[int], object],
        ends: float = math.inf,
        deadline: float = DEFAULT_DEADLINE,
        *,
        arrived: Callable[[int], object] | None = None,
        waiting: contextlib.AbstractContextManager[object] | None = None,
    ) -> None:
        """Take ``file``'s bytes into ``out``, calling ``progress(n)`` per decompressed chunk.

        ``ends`` is the ``time.monotonic()`` by which the last byte must have
        arrived; ``deadline`` is the number of seconds that was, for the message.
        ``arrived(n)``, if given, is called with the size of each chunk fed, as fetched.
        ``waiting``, if given, is the context the readers enter while they wait for
        the source (``self.waiting``, a reusable no-op by default).
        """
        self._file = file
        self._out = out
        self._progress = progress
        self._ends = ends
        self._deadline = deadline
        self._arrived = arrived
        self.waiting = contextlib.nullcontext() if waiting is None else waiting
        self._hash = hashlib.sha256()
        self._chunks: list[bytes] = []
        self._size = 0  # decompressed bytes so far
        self._received = 0  # bytes fed in so far
        # Gzip packs at worst a few bytes per 64 KiB block more than its content,
        # so a longer stream is refused even if it inflates to nothing.
        self._max_received = file.size + file.size // 100 + 65_536
        self._head = b""  # the first bytes, kept until the gzip magic can be checked
        self._started = False
        self._inflater: zlib._Decompress | None = None

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the file as fetched (gzip or plain)."""
        if time.monotonic() > self._ends:  # the check between reads, where no timer signal can interrupt
            raise MirrorError(_deadline_reason(self._deadline, self._size, self._file.size))
        if self._arrived is not None:
            self._arrived(len(chunk))
        self._received += len(chunk)
        if self._received > self._max_received:
            raise MirrorError(f"more data than a {self._file.size}-byte file can need")
        if not self._started:
            self._head += chunk
            if len(self._head) < len(_GZIP_MAGIC):
                return
            self._start()
            chunk, self._head = self._head, b""
        if self._inflater is None:
            self._emit(chunk)
        else:
            self._inflate(chunk)

    def finish(self) -> bytes:
        """Check that the whole file arrived and verifies; return the payload."""
        if not self._started:  # shorter than the gzip magic, so plain
            self._started = True
            self._emit(self._head)
        if self._inflater is not None:
            try:
                self._emit(self._inflater.flush())
            except zlib.error as exc:
                raise MirrorError("not a valid gzip file") from exc
            if not self._inflater.eof:
                raise MirrorError("not a valid gzip file (truncated)")
        if self._size != self._file.size:
            raise MirrorError(f"size mismatch: got {self._size} bytes, expected {self._file.size}")
        if self._hash.hexdigest() != self._file.sha256:
            raise MirrorError("checksum mismatch")
        return b"".join(self._chunks)

    def _start(self) -> None:
        """Decide from the first bytes whether the stream is gzip or the plain payload."""
        self._started = True
        if self._head.startswith(_GZIP_MAGIC):
            self._inflater = zlib.decompressobj(_GZIP_WBITS)

    def _inflate(self, data: bytes) -> None:
        """Decompress ``data``, never producing more than one byte beyond the expected size."""
        assert self._inflater is not None
        try:
            while data:
                if self._inflater.eof:
                    # Another member follows: concatenated gzip members are one valid file.
                    self._inflater = zlib.decompressobj(_GZIP_WBITS)
                # The zip-bomb guard: zlib may not hand back more than this, and one
                # byte beyond the expected size is enough for _emit to refuse.
                room = min(self._file.size - self._size + 1, _CHUNK)
                self._emit(self._inflater.decompress(data, room))
                data = self._inflater.unused_data if self._inflater.eof else self._inflater.unconsumed_tail
        except zlib.error as exc:
            raise MirrorError("not a valid gzip file") from exc

    def _emit(self, data: bytes) -> None:
        """Account for, hash and write decompressed bytes, refusing any beyond the expected size."""
        if not data:
            return
        self._size += len(data)
        if self._size > self._file.size:
            raise MirrorError(f"larger than the expected {self._file.size} bytes")
        self._hash.update(data)
        try:
            self._out.write(data)
        except OSError as exc:  # the cache's disk, not the mirror: carried past the network's handlers
            raise _CacheWriteError(exc) from None
        self._chunks.append(data)
        self._progress(len(data))


def _read_verified(path: Path, file: MnistFile) -> bytes | None:
    """The cached file's bytes if its size and SHA-256 match, else ``None``."""
    try:
        # Checking the size first avoids reading a huge wrong file into memory.
        if path.stat().st_size != file.size:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) != file.size or hashlib.sha256(data).hexdigest() != file.sha256:
        return None
    return data


def _read_local(source: Path, payload: Payload) -> None:
    """Feed a local file to ``payload``; only errors reading it are the mirror's."""
    try:
        with payload.waiting:
            f = source.open("rb")
    except OSError as exc:
        raise MirrorError(f"cannot read {source.name}: {exc.strerror or exc}") from exc
    with f:
        while True:
            try:
                with payload.waiting:
                    chunk = f.read(_CHUNK)
            except OSError as exc:
                raise MirrorError(f"cannot read {source.name}: {exc.strerror or exc}") from exc
            if not chunk:
                return
            payload.feed(chunk)


def _read_http(session: requests.Session, url: str, timeout: tuple[float, float], payload: Payload) -> None:
    """Stream one HTTP GET into ``payload``, raising ``MirrorError`` for any network problem."""
    import requests  # loaded already by the session

    try:
        with payload.waiting:
            response = session.get(url, stream=True, timeout=timeout)
        with response:
            response.raise_for_status()
            for chunk in _body(response, payload.waiting):
                payload.feed(chunk)
            # urllib3 1.x does not notice a body cut short, so count the wire bytes here.
            length = response.headers.get("Content-Length", "")
            received = response.raw.tell()
            if length.isdigit() and received != int(length):
                raise MirrorError(f"incomplete download: {received} of {length} bytes", retry=True)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        raise MirrorError(f"HTTP {status}", retry=status >= 500, status=status) from exc
    except requests.ConnectTimeout as exc:
        raise MirrorError("connection timed out", retry=True) from exc
    except requests.ReadTimeout as exc:
        raise MirrorError("read timed out", retry=True) from exc
    except requests.exceptions.ChunkedEncodingError as exc:
        raise MirrorError("connection dropped mid-download", retry=True) from exc
    except requests.ConnectionError as exc:
        # requests reports a read timeout in the middle of the body as a ConnectionError.
        if _caused_by_timeout(exc):
            raise MirrorError("read timed out", retry=True) from exc
        raise MirrorError(f"connection failed: {_root_cause(exc)}", retry=True) from exc
    except requests.RequestException as exc:
        raise MirrorError(f"request failed: {_root_cause(exc)}") from exc
    except ValueError as exc:
        # requests lets a malformed redirect target through unwrapped (urlsplit's ValueError,
        # UnicodeDecodeError, urllib3's LocationParseError).
        raise MirrorError(f"bad redirect target: {first_line(exc, _CAUSE_LIMIT)}") from exc
    except OSError as exc:  # a socket error that requests did not wrap (the cache's come as _CacheWriteError)
        raise MirrorError(f"connection failed: {_root_cause(exc)}", retry=True) from exc


def _body(response: requests.Response, waiting: contextlib.AbstractContextManager[object]) -> Iterator[bytes]:
    """The response's body as it arrives, each chunk what the connection holds (at most ``_CHUNK`` bytes).

    Each read is made inside ``waiting``.

    ``iter_content`` waits for whole chunks, which hides how fast a slow mirror
    sends; ``read1`` does not. Content-Encoding is undone a bounded chunk at a
    time, and urllib3's errors are wrapped as ``iter_content`` wraps them.
    """
    import requests  # loaded already by the session
    from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError, SSLError

    raw = response.raw
    try:
        while True:
            with waiting:
                chunk = raw.read1(_CHUNK, decode_content=True)
            if not chunk:
                return
            yield chunk
    except ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except ReadTimeoutError as exc:
        raise requests.ConnectionError(exc) from exc
    except SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc


# --- deadlines, the low-speed rule and the cache folder's errors ----------------------------

_DEADLINE_PREFIX = "still incomplete after the"


def _deadline_reason(deadline: float, received: int, size: int) -> str:
    """Why a mirror failed when its time for a file ran out, e.g. "still incomplete after the 600 s ..."."""
    return f"{_DEADLINE_PREFIX} {deadline:g} s download deadline: {received:,} of {size:,} bytes"


class _DeadlinePassed(BaseException):
    """The timer signal's interruption when a mirror's time is up.

    A ``BaseException``, like ``KeyboardInterrupt``, so that no handler in
    requests or urllib3 mistakes it for a network error of their own.
    """


_STALL_PREFIX = "stalled:"


@dataclass(frozen=True)
class _SpeedRule:
    """The low-speed rule: under ``limit`` bytes per second over the last ``period`` seconds is a stall."""

    limit: float
    period: float

    @property
    def reason(self) -> str:
        """Why a stalled mirror failed, e.g. "stalled: under 1 kB/s for 30 s"."""
        rate = f"{self.limit / 1000:g} kB/s" if self.limit >= 1000 else f"{self.limit:g} B/s"
        return f"{_STALL_PREFIX} under {rate} for {self.period:g} s"


class _SpeedWatch:
    """The low-speed rule applied to one file from one mirror, from ``start`` (a ``time.monotonic()``) on.

    Bytes count as fetched (compressed, as the mirror sends them); the status
    line and headers count as none, so a reply that has not reached its body
    after ``period`` seconds has stalled.
    """

    def __init__(self, rule: _SpeedRule, start: float) -> None:
        self.rule = rule
        self.tick = rule.period / _CHECKS_PER_SPEED_TIME  # seconds between the timer's checks
        self._arrived = 0
        # (time, bytes so far), oldest first: the newest one at least a period old, and those after it.
        self._samples: collections.deque[tuple[float, int]] = collections.deque([(start, 0)])

    def count(self, size: int) -> None:
        """Count ``size`` more bytes from the mirror."""
        self._arrived += size

    def stalled(self, now: float) -> bool:
        """Whether under ``rule.limit`` bytes/s arrived over the last ``rule.period`` s (up to a tick more)."""
        samples = self._samples
        if now - samples[-1][0] >= self.tick / 2:  # at most two samples a tick, however often this is asked
            samples.append((now, self._arrived))
        while len(samples) > 1 and samples[1][0] <= now - self.rule.period:
            samples.popleft()
        since, then = samples[0]
        return now - since >= self.rule.period and self._arrived - then < self.rule.limit * (now - since)


class _Stalled(BaseException):
    """The timer signal's interruption when a mirror has stalled; a ``BaseException``, as ``_DeadlinePassed`` is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Window:
    """Entered around each wait for a mirror (connecting, reading, backing off): the only place ``_alarm`` interrupts.

    Outside it the timer holds its interruption back, a millisecond at a time:
    an exception raised anywhere else could cut short the removal of a
    temporary file, or leave one of the progress bar's locks taken (one of them
    a ``multiprocessing`` lock that forked processes share, so a benchmark's
    worker forked later would wait on it forever).
    """

    def __init__(self) -> None:
        self.open = False

    def __enter__(self) -> None:
        self.open = True

    def __exit__(self, *exc: object) -> None:
        self.open = False


_HOLD_BACK = 1e-3  # seconds the timer waits again while the window is shut


@contextlib.contextmanager
def _alarm(ends: float, watch: _SpeedWatch | None = None, window: _Window | None = None) -> Iterator[bool]:
    """Interrupt the main thread wherever it waits when a mirror's time is up or it has stalled; yield whether it can.

    Raises ``_DeadlinePassed`` once ``time.monotonic()`` passes ``ends``, and
    ``_Stalled`` once ``watch`` says the mirror is under its speed limit, by a
    ``SIGALRM`` timer set for the deadline or the watch's next check, whichever
    comes first; while ``window`` (if given) is not entered, the timer tries
    again a millisecond later. Another thread, or a system without ``setitimer``, gets nothing
    here (``False``) and relies on the checks as data arrives. An interval timer
    set by the caller is restored afterwards, less the time spent here.
    """
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield False
        return
    armed = True

    def wait(now: float) -> float:
        until = ends - now if watch is None else min(ends - now, watch.tick)
        return max(until, 1e-3)

    def expire(signum: int, frame: FrameType | None) -> None:
        if not armed:
            return
        if window is not None and not window.open:
            signal.setitimer(signal.ITIMER_REAL, _HOLD_BACK)
            return
        now = time.monotonic()
        if now >= ends:
            raise _DeadlinePassed
        if watch is not None and watch.stalled(now):
            raise _Stalled(watch.rule.reason)
        signal.setitimer(signal.ITIMER_REAL, wait(now))

    try:
        previous_handler = signal.signal(signal.SIGALRM, expire)
    except ValueError:  # not the main interpreter
        yield False
        return
    started = time.monotonic()
    previous_timer, _ = signal.setitimer(signal.ITIMER_REAL, wait(started))
    try:
        yield True
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler if previous_handler is not None else signal.SIG_DFL)
        if previous_timer > 0:
            signal.setitimer(signal.ITIMER_REAL, max(previous_timer - (time.monotonic() - started), 1e-3))


class _CacheWriteError(Exception):
    """An ``OSError`` writing the cache, wrapped so that the network's handlers let it pass."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


def _data_dir_error(exc: OSError, cache: Path, file: MnistFile | None = None) -> DataDirError:
    """A one-line ``DataDirError`` saying what is wrong with the cache folder and what to do."""
    folder = one_line(str(cache))
    blocker = next((p for p in (cache, *cache.parents) if p.exists() and not p.is_dir()), None)
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) and blocker is not None:
        what = "is a file" if blocker == cache else f"cannot be made: {one_line(str(blocker))} is a file"
        return DataDirError(f"the data folder {folder} {what}, not a folder: remove or rename it, or {_DATA_DIR_HINT}")
    if file is not None and (exc.errno == errno.EISDIR or (cache / file.name).is_dir()):
        return _folder_in_the_way(cache, file)
    if file is not None and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        what = f"no room for {file.name} ({file.size / 1e6:.1f} MB) in the data folder {folder}"
    else:
        what = f"cannot write in the data folder {folder}"
    return DataDirError(f"{what}: {describe_os_error(exc)}; or {_DATA_DIR_HINT}")


def _folder_in_the_way(cache: Path, file: MnistFile) -> DataDirError:
    """The error for a folder standing where a data file belongs."""
    return DataDirError(
        f"{one_line(str(cache / file.name))} is a folder, where the data file {file.name} belongs: "
        f"remove that folder, or {_DATA_DIR_HINT}"
    )


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (causes, contexts, urllib3 ``reason``s and ``args``)."""
    chain: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if any(current is seen for seen in chain):
            continue
        chain.append(current)
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        nested += list(current.args)
        todo += [e for e in nested if isinstance(e, BaseException)]
    return chain


def _caused_by_timeout(exc: BaseException) -> bool:
    """Whether a timeout is among the exceptions behind ``exc``."""
    from urllib3.exceptions import ReadTimeoutError  # loaded already by requests

    return any(isinstance(e, (TimeoutError, ReadTimeoutError)) for e in _causes(exc))


def _root_cause(exc: BaseException) -> str:
    """A short reason for a network error, e.g. ``Connection refused``."""
    for e in reversed(_causes(exc)):
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
    return first_line(exc, _CAUSE_LIMIT)


def _slow_failure(reason: str, seconds: float) -> bool:
    """Whether a mirror's failure is worth a line in a log as it happens: a stall, a deadline, or a long wait."""
    return reason.startswith((_STALL_PREFIX, _DEADLINE_PREFIX)) or seconds >= _SLOW_FAILURE_SECONDS
