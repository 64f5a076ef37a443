"""The lowest versions the package allows, as pip constraints, so that CI tests what it claims.

Run with the Python of an environment where the project is installed (CI's ``.venv``): it
reads the installed metadata, which is what pip reads too. ``python .ci/lowest_constraints.py``
prints one ``name==X`` line for each ``name>=X`` floor among the runtime dependencies and the
runtime extras (images, plot, bench, fast, export, distributed): the file ``pip install -c FILE`` takes.
``python .ci/lowest_constraints.py --python`` prints the lowest Python that
``requires-python`` allows (``3.10``). The test tools (pytest, hypothesis, ONNX Runtime,
playwright, the linters) stay at their newest: their floors are not what a user of the package depends on.

Every runtime requirement must have a plain ``>=`` floor, and every extra must be known here
as runtime or tooling, so that a new requirement cannot slip past the lowest-versions run.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from importlib import metadata

DISTRIBUTION = "mnist-nn"
# The extras a user installs to use the package.
RUNTIME_EXTRAS = ("images", "plot", "bench", "fast", "export", "distributed")
TOOL_EXTRAS = ("test", "browser", "lint", "docs", "dev")  # extras for developing and checking it

_REQUIREMENT = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?P<spec>[^;]*?)\s*"
    r"(?:;\s*extra\s*==\s*[\"'](?P<extra>[^\"']+)[\"'])?\s*"
)
_FLOOR = re.compile(r">=\s*(?P<version>[0-9][0-9A-Za-z.]*)")
_PYTHON_FLOOR = re.compile(r">=\s*(?P<version>3\.[0-9]+)")


def lowest_pins(requirements: Sequence[str]) -> list[str]:
    """``name==X`` for each runtime requirement ``name>=X``, given the metadata's ``Requires-Dist`` lines.

    Raises:
        ValueError: a runtime requirement with no plain ``>=`` floor, a marker other than
            ``extra == "..."``, or an extra neither in RUNTIME_EXTRAS nor in TOOL_EXTRAS.
    """
    pins: list[str] = []
    for requirement in requirements:
        match = _REQUIREMENT.fullmatch(requirement)
        if match is None:
            raise ValueError(f"expected 'name>=X' with at most an extra marker, got {requirement!r}")
        extra = match["extra"]
        if extra in TOOL_EXTRAS:
            continue
        if extra is not None and extra not in RUNTIME_EXTRAS:
            raise ValueError(f"extra {extra!r} is neither runtime {RUNTIME_EXTRAS} nor tooling {TOOL_EXTRAS}")
        floor = _FLOOR.fullmatch(match["spec"])
        if floor is None:
            raise ValueError(f"expected a runtime requirement of the form 'name>=X', got {requirement!r}")
        pin = f"{match['name']}=={floor['version']}"
        if pin not in pins:
            pins.append(pin)
    return pins


def lowest_python(requires_python: str) -> str:
    """The lowest Python version a ``>=3.N`` specifier allows, e.g. ``3.10``."""
    match = _PYTHON_FLOOR.fullmatch(requires_python.strip())
    if match is None:
        raise ValueError(f"expected requires-python of the form '>=3.N', got {requires_python!r}")
    return match["version"]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the constraints, or with ``--python`` the lowest Python, of the installed package."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args == ["--python"]:
            lines = [lowest_python(metadata.metadata(DISTRIBUTION)["Requires-Python"] or "")]
        else:
            lines = lowest_pins(metadata.requires(DISTRIBUTION) or [])
    except (ValueError, metadata.PackageNotFoundError) as exc:
        print(f"lowest_constraints: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
