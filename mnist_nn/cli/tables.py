"""Markdown tables and the small phrases the benchmark's reports are written with."""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """A markdown table; ``align`` has one letter per column, l or r."""
    rule = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(cells) + " |" for cells in (header, rule, *rows)]


def seeds_text(seeds: Sequence[int]) -> str:
    """'seeds 1-5', 'seeds 7, 3' or 'seed 4'."""
    if len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"seeds {seeds[0]}-{seeds[-1]}"
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def std_text(std: float | None, scale: float = 1.0, digits: int = 2) -> str:
    """A standard deviation, or 'n/a' for a single value."""
    return f"{std * scale:.{digits}f}" if std is not None else "n/a"


def plural(n: int, noun: str) -> str:
    """'1 job', '2 jobs'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
