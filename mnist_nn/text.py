"""Small text helpers for one-line messages: line breaks and control characters made visible, bounded reprs,
JSON type names.

Every error message of the package is a single line (see ``mnist_nn.errors``),
yet it often quotes text from outside: a path that may hold a line break, an
exception's message, a value read from a file or a request. These helpers put
such text on one line, with a bound on its length, in one way for the whole
package.
"""

from __future__ import annotations

import errno
import reprlib
from typing import Any

ELLIPSIS = "..."
MESSAGE_LIMIT = 200  # characters of outside text (an exception's message, a URL) quoted in a message

# Characters that must not reach a terminal as they are: the C0 controls (ESC starts the sequences
# that clear the screen or set the window title), DEL, the C1 controls, and the line breaks
# str.splitlines() knows beyond them. Each is written as its escape (e.g. "\n" -> "\\n", ESC -> "\\x1b").
_CONTROLS = "".join(map(chr, [*range(0x20), 0x7F, *range(0x80, 0xA0)])) + "\u2028\u2029"
_ESCAPES = str.maketrans({c: c.encode("unicode_escape").decode("ascii") for c in _CONTROLS})

# What the errors a full, read-only or cluttered disk gives mean, in words a user can act on.
_OS_ERROR_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or use another disk",
    errno.EDQUOT: "the disk quota is used up: free some space or use another disk",
    errno.EFBIG: "the file is larger than this disk or the limit on file sizes, ulimit -f, allows",
    errno.EROFS: "the disk is mounted read-only: use a writable place",
    errno.EACCES: "no permission to write there: use another place or change its permissions",
    errno.EPERM: "not permitted there: use another place or change its permissions",
    errno.EISDIR: "a folder has that name: remove it or use another name",
    errno.ENOTDIR: "part of the path is a file, not a folder",
    errno.EEXIST: "a file has that name where a folder is needed",
}


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` on a single line, safe for a terminal: every line break and control character escaped.

    A path holding one still names the same file, and a name holding terminal
    escape sequences (ESC [2J clears the screen) is shown, not obeyed.

    Args:
        text: any text, e.g. a path, a URL or an exception's message.
        limit: if given (at least 4), the result is cut to this many characters,
            the last three being "...".

    Returns:
        The text with line breaks, the C0 and C1 control characters and DEL written
        as escapes ("\\n", "\\r", "\\x1b", "\\x7f", "\\x9b", ...).
    """
    line = text.translate(_ESCAPES)
    if limit is not None and len(line) > limit:
        return line[: max(limit - len(ELLIPSIS), 0)] + ELLIPSIS
    return line


def first_line(exc: BaseException, limit: int = MESSAGE_LIMIT) -> str:
    """The first non-blank line of an exception's message, at most ``limit`` characters (else its type name)."""
    for line in str(exc).splitlines():
        if line.strip():
            return one_line(line, limit)
    return type(exc).__name__


def describe_os_error(exc: OSError) -> str:
    """What an ``OSError`` means and, for a disk problem, what to do: one line, without the path.

    For example "No space left on device (the disk is full: free some space or use another disk)".
    """
    reason = exc.strerror or first_line(exc)
    hint = _OS_ERROR_HINTS.get(exc.errno or 0)
    return one_line(f"{reason} ({hint})" if hint else reason, MESSAGE_LIMIT)


def short(value: Any) -> str:
    """A bounded, one-line repr of a value from outside (a file, a request), for "got ..." in messages."""
    return one_line(reprlib.repr(value))


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, e.g. "an object" for a dict, for "expected ..., got ..." in messages."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):  # before numbers: bool is an int
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return type(value).__name__  # not a value json.loads makes
