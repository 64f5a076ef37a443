"""Every figure of the results tables is its record's: one source for each figure.

The records in ``docs/records/`` are the JSON reports that ``benchmark.py
accuracy ... --json`` wrote. The results page has one row per record, and
the README's headline table one row per preset it shows; each row's accuracy
(mean ± sd over the seeds, with the range on the results page), its number
of seeds and its time per run must read as the record says, and the page
names the machine the records were made on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECORDS = sorted((ROOT / "docs" / "records").glob("*.json"))
RESULTS = ROOT / "docs" / "results.md"
README = ROOT / "README.md"


def _record(path: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def _rows(page: Path) -> dict[str, str]:
    """The table rows of a page by the preset in their first cell."""
    return dict(re.findall(r"^\| `([a-z0-9-]+)` \|(.*)$", page.read_text(), re.M))


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def test_every_record_is_an_accuracy_report_of_a_preset() -> None:
    assert len(RECORDS) >= 3
    for path in RECORDS:
        record = _record(path)
        assert record["action"] == "accuracy" and record["preset"] == path.stem
        assert record["summary"]["runs"] == len(record["runs"]) == len(record["seeds"]) and not record["failures"]


@pytest.mark.parametrize("path", RECORDS, ids=lambda path: path.stem)
def test_the_results_page_reads_as_the_record(path: Path) -> None:
    record = _record(path)
    rows = _rows(RESULTS)
    assert path.stem in rows, f"the results page has no row for {path.stem}"
    row = rows[path.stem]
    test = record["summary"]["test_accuracy"]
    accuracy = f"{_percent(test['mean'])}% ± {_percent(test['std'])} ({_percent(test['min'])}-{_percent(test['max'])})"
    assert accuracy in row, (accuracy, row)
    assert f"| {len(record['runs'])} |" in row
    assert f"| {_duration(record['summary']['seconds']['mean'])} |" in row
    ensemble = record["summary"].get("ensemble")
    if ensemble is not None:
        assert f"ensemble of {len(record['runs'])}: {_percent(ensemble['test_accuracy'])}%" in row
    environment = record["environment"]
    machine = f"{environment['cpu']} with OpenBLAS's {environment['blas'][0]['architecture']} kernels"
    assert machine in RESULTS.read_text()


def test_every_row_of_the_results_page_has_its_record() -> None:
    assert sorted(_rows(RESULTS)) == sorted(path.stem for path in RECORDS)


def test_the_readmes_headline_table_reads_as_the_records() -> None:
    rows = _rows(README)
    assert len(rows) >= 3
    for preset, row in rows.items():
        path = ROOT / "docs" / "records" / f"{preset}.json"
        assert path.exists(), f"the README's row {preset} has no record"
        summary = _record(path)["summary"]
        test = summary["test_accuracy"]
        assert f"{_percent(test['mean'])}% ± {_percent(test['std'])}" in row, row
        assert f"| {_duration(summary['seconds']['mean'])} |" in row, row
