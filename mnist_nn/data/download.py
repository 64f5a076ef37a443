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
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import re
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn
from urllib.parse import urlsplit
from urllib.request import url2pathname

import requests
from tqdm import tqdm
from urllib3.exceptions import ReadTimeoutError

from mnist_nn.config import MIRROR_ENV, default_data_dir
from mnist_nn.errors import DownloadError, MirrorError
from mnist_nn.files import atomic_write
from mnist_nn.text import MESSAGE_LIMIT, first_line, one_line


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
_CAUSE_LIMIT = 120  # characters of a network error's message quoted as the reason
_FIX_HINT = f"download the files yourself and point {MIRROR_ENV} (or --mirror) at their folder"


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


def mirror_list(mirror: str | None = None, mirrors: Sequence[str] | None = None) -> list[str]:
    """The mirrors to try, in order.

    Args:
        mirror: Tried first; if ``None`` or empty, ``$MNIST_NN_MIRROR`` is used
            when it is set and non-empty.
        mirrors: Tried after it; ``DEFAULT_MIRRORS`` if ``None``.

    Returns:
        The mirrors without empty entries and without duplicates (a trailing
        ``/`` does not make a mirror different); the first occurrence wins.
    """
    first = mirror or os.environ.get(MIRROR_ENV, "").strip()
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

    Returns:
        One ``FetchResult`` per file, in the order of ``files``.

    Raises:
        DownloadError: If a file is neither cached nor obtainable from any mirror.
        ValueError: If ``timeout``, ``retries`` or ``backoff`` is out of range.
        OSError: If the cache folder cannot be created or written.
    """
    if len(timeout) != 2 or min(timeout) <= 0:
        raise ValueError(f"expected timeout as (connect, read) > 0 seconds, got {timeout!r}")
    if retries < 0:
        raise ValueError(f"expected retries >= 0, got {retries}")
    if backoff < 0:
        raise ValueError(f"expected backoff >= 0, got {backoff}")
    cache = default_data_dir() if data_dir is None else Path(data_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    fetcher = _Fetcher(cache, mirror_list(mirror, mirrors), quiet, timeout, retries, backoff)
    try:
        return [fetcher.ensure(file) for file in files]
    finally:
        fetcher.close()


def ensure_mnist(data_dir: Path | None = None, *, mirror: str | None = None, quiet: bool = True) -> list[FetchResult]:
    """Make sure the four MNIST files are cached and verified; see ``ensure_files``.

    Args:
        data_dir: The cache folder; by default ``config.default_data_dir()``.
        mirror: A mirror to try before ``DEFAULT_MIRRORS`` (else ``$MNIST_NN_MIRROR``).
        quiet: Hide the progress bars.

    Returns:
        The results for train-images, train-labels, t10k-images, t10k-labels.

    Raises:
        DownloadError: If a file is neither cached nor obtainable from any mirror.
    """
    return ensure_files(MNIST_FILES, data_dir, mirror=mirror, quiet=quiet)


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
    ) -> None:
        self.cache = cache
        self.mirrors = mirrors
        self.quiet = quiet
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._session: requests.Session | None = None

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
        if not self.mirrors:
            raise DownloadError(f"cannot get {file.name}: no mirrors to try; {_FIX_HINT}")
        failures: list[str] = []
        # A terminal gets a progress bar; logs and pipes do not.
        hidden = self.quiet or not getattr(sys.stderr, "isatty", lambda: False)()
        with tqdm(
            total=file.size,
            desc=file.name,
            unit="B",
            unit_scale=True,
            file=sys.stderr,
            disable=hidden,
        ) as bar:
            for mirror in self.mirrors:
                try:
                    data = self._fetch(mirror, file, bar)
                except MirrorError as failure:
                    failures.append(f"{one_line(mirror, MESSAGE_LIMIT)} ({one_line(failure.reason, MESSAGE_LIMIT)})")
                    continue
                return FetchResult(file.name, path, mirror, data)
        raise DownloadError(f"cannot get {file.name} from any mirror: {'; '.join(failures)}; {_FIX_HINT}")

    def _fetch(self, mirror: str, file: MnistFile, bar: tqdm[NoReturn]) -> bytes:
        """Fetch ``file`` from one mirror into the cache and return its payload."""
        parts = urlsplit(mirror)
        if parts.scheme in ("http", "https"):
            return self._fetch_http(mirror, file, bar)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise MirrorError(f"file URL on another host {parts.netloc!r}")
            return self._fetch_local(Path(url2pathname(parts.path)), file, bar)
        if "://" in mirror:
            raise MirrorError(f"unsupported URL scheme {parts.scheme!r}")
        return self._fetch_local(Path(mirror).expanduser(), file, bar)

    def _fetch_local(self, folder: Path, file: MnistFile, bar: tqdm[NoReturn]) -> bytes:
        """Copy ``file`` from a local folder, preferring ``<name>.gz``."""
        if not folder.is_dir():
            raise MirrorError("no such folder")
        for candidate in (f"{file.name}.gz", file.name):
            source = folder / candidate
            if source.is_file():
                return self._store(file, bar, functools.partial(_read_local, source))
        raise MirrorError(f"neither {file.name}.gz nor {file.name} in the folder")

    def _fetch_http(self, base: str, file: MnistFile, bar: tqdm[NoReturn]) -> bytes:
        """Download ``<name>.gz``, or ``<name>`` if the former is 404, retrying transient errors."""
        if self._session is None:
            self._session = requests.Session()
        session = self._session
        base = base if base.endswith("/") else base + "/"
        for candidate in (f"{file.name}.gz", file.name):
            url = base + candidate
            for attempt in itertools.count():
                try:
                    read = functools.partial(_read_http, session, url, self.timeout)
                    return self._store(file, bar, read)
                except MirrorError as failure:
                    if failure.status == 404 and candidate.endswith(".gz"):
                        break  # this mirror may serve the uncompressed file instead
                    if not failure.retry or attempt >= self.retries:
                        raise
                time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable: the uncompressed name's 404 is raised above")

    def _store(self, file: MnistFile, bar: tqdm[NoReturn], read: Callable[[Payload], None]) -> bytes:
        """Stream one source through a ``Payload`` into a temp file; verify; rename into place."""
        bar.reset(total=file.size)
        verified: list[bytes] = []

        def write(out: IO[bytes]) -> None:
            payload = Payload(file, out, bar.update)
            read(payload)
            verified.append(payload.finish())  # raises unless size and digest match

        atomic_write(self.cache / file.name, write, suffix=".part")
        return verified[0]


class Payload:
    """Takes a file's bytes as they arrive: un-gzips, bounds, hashes and writes them."""

    def __init__(self, file: MnistFile, out: IO[bytes], progress: Callable[[int], object]) -> None:
        self._file = file
        self._out = out
        self._progress = progress
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
        self._out.write(data)
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
    """Feed a local file to ``payload``."""
    try:
        with source.open("rb") as f:
            while chunk := f.read(_CHUNK):
                payload.feed(chunk)
    except OSError as exc:
        raise MirrorError(f"cannot read {source.name}: {exc.strerror or exc}") from exc


def _read_http(session: requests.Session, url: str, timeout: tuple[float, float], payload: Payload) -> None:
    """Stream one HTTP GET into ``payload``, raising ``MirrorError`` for any network problem."""
    try:
        with session.get(url, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            for chunk in response.iter_content(_CHUNK):
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
    return any(isinstance(e, (TimeoutError, ReadTimeoutError)) for e in _causes(exc))


def _root_cause(exc: BaseException) -> str:
    """A short reason for a network error, e.g. ``Connection refused``."""
    for e in reversed(_causes(exc)):
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
    return first_line(exc, _CAUSE_LIMIT)
