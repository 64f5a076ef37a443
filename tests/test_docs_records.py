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


# The performance page: one block per speed record (docs/records/speed/<BLAS kernel>[-<CPU maker>].json, written by
# `python scripts/benchmark.py speed --json ...`), between an opening and a closing comment. Each block
# must equal the one made here from its record; `python tests/test_docs_records.py` rewrites them.
PERFORMANCE = ROOT / "docs" / "performance.md"
SPEED_RECORDS = sorted((ROOT / "docs" / "records" / "speed").glob("*.json"))
_BLOCK = re.compile(r"<!-- speed record: (?P<path>\S+) -->\n(?P<body>.*?)<!-- end of the speed record -->\n", re.S)


def _network(entry: dict[str, Any]) -> str:
    layers = entry.get("layers")
    return " ".join(layers) if layers else str(entry["sizes"])


def speed_block(path: Path) -> str:
    """The performance page's tables for one speed record."""
    record = _record(path)
    env = record["environment"]
    blas = env["blas"][0]
    pytorch = " --pytorch PYTHON" if record["plan"].get("pytorch") else ""
    lines = [
        f"{env['date']}: {env['cpu']}, {env['usable_cpus']} CPUs; NumPy {env['numpy']} with OpenBLAS "
        f"{'.'.join(blas['version'].split('.')[:3])} using its {blas['architecture']} kernels on {blas['num_threads']} "
        f"threads; Python {env['python']}; load average {record['load_average'][0]:.2f} at the start. "
        f"Written by `python scripts/benchmark.py speed{pytorch} --json {path.relative_to(ROOT)}`.",
        "",
        "| network | mini-batch | dtype | s per epoch | GFLOP/s | of GEMM | time over the floor "
        "| speed-up over the reference | time over PyTorch's |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    what = {"vectorized": "", "reference": " (the per-example reference)", "pytorch": " (PyTorch {}, plain SGD)"}
    for entry in record["training"]:
        if entry["implementation"] not in what:
            continue
        name = _network(entry) + what[entry["implementation"]].format(entry.get("version"))
        over = f"{entry['floor_ratio']:.2f}x" if entry["floor_ratio"] is not None else ""
        speedup = f"{entry['speedup']:.1f}x" if entry["speedup"] is not None else ""
        pytorch = f"{entry['pytorch_ratio']:.2f}x" if entry.get("pytorch_ratio") is not None else ""
        lines.append(
            f"| {name} | {entry['batch_size']} | {entry['dtype']} | {entry['epoch_seconds_best']:.3f} | "
            f"{entry['gflops']:.1f} | {100 * entry['gemm_fraction']:.0f}% | {over} | {speedup} | {pytorch} |"
        )
    job = record["main_job_summary"]
    shape = job["shape"]
    targets = job["targets"]
    lines += [
        "",
        f"| the main job against its floor ({shape['sizes']} at mini-batch {shape['batch_size']}, {shape['dtype']}) "
        "| s per epoch | ratio | target |",
        "| --- | ---: | --- | --- |",
        f"| the floor | {job['floor_seconds']:.3f} | | |",
        f"| the floor, before each round of the runs | {job['floor_beside_main_job_seconds']:.3f} | | |",
        f"| the step alone (`fit`, no cost, no validation) | {job['step_seconds']:.3f} | "
        f"{job['step_over_floor']:.2f}x the floor | |",
        f"| the main job's epoch, (12-epoch run - 2-epoch run) / 10 | {job['main_job_seconds']:.3f} | "
        f"{job['main_job_over_floor']:.2f}x the floor before the rounds | at most "
        f"{targets['main_job_over_floor_at_most']:.2f}x |",
        f"| plain port, mini-batches from arrays | {job['port_seconds']:.3f} | {job['port_over_main_job']:.2f}x the "
        f"main job | at least {targets['port_over_main_job_at_least']:.2f}x |",
        f"| plain port on Nielsen's lists of columns | {job['port_lists_seconds']:.3f} | "
        f"{job['port_lists_over_main_job']:.2f}x the main job | |",
        f"| the whole default run, command to `Test:`, fastest of {job['default_runs']} | "
        f"{job['default_run_seconds']:.1f} s | | at most {job['default_run_limit_seconds']:.1f} s "
        "(30 floors + 1.5 s) |",
    ]
    memory = record["memory"]
    gemm = {g["dtype"]: g for g in record["gemm"]}
    lines += [
        "",
        "| other measurement | result |",
        "| --- | ---: |",
        f"| GEMM {gemm['float32']['n']}x{gemm['float32']['n']}, float32 / float64 | "
        f"{gemm['float32']['gflops']:.0f} / {gemm['float64']['gflops']:.0f} GFLOP/s |",
    ]
    for entry in record["inference"]:
        timing = entry["timing"]
        lines.append(
            f"| inference on the {timing['items']:,} test images, {_network(entry)}, {entry['dtype']} | "
            f"{1000 * timing['best_seconds']:.1f} ms, {entry['images_per_second_best']:,.0f} images/s |"
        )
    lines += [
        f"| `load_mnist()` from a warm cache | {1000 * record['load_seconds']['best_seconds']:.0f} ms |",
        f"| peak memory of the default run (`{memory['test_line']}`) / of evaluating its model | "
        f"{memory['peak_rss_mib']:.0f} / {memory['eval_peak_rss_mib']:.0f} MiB |",
    ]
    return "\n".join(lines) + "\n"


def _blocks(text: str) -> dict[str, str]:
    return {m["path"]: m["body"] for m in _BLOCK.finditer(text)}


def test_the_performance_page_has_one_block_per_speed_record() -> None:
    assert SPEED_RECORDS, "no speed record in docs/records/speed"
    assert sorted(_blocks(PERFORMANCE.read_text())) == sorted(str(p.relative_to(ROOT)) for p in SPEED_RECORDS)


@pytest.mark.parametrize("path", SPEED_RECORDS, ids=lambda path: path.stem)
def test_the_performance_page_reads_as_the_speed_record(path: Path) -> None:
    record = _record(path)
    assert record["action"] == "speed" and record["plan"]["train_size"] == 50_000
    kernel, _, maker = path.stem.partition("-")
    assert kernel == record["environment"]["blas"][0]["architecture"].lower()
    assert maker in record["environment"]["cpu"].lower()
    body = _blocks(PERFORMANCE.read_text()).get(str(path.relative_to(ROOT)))
    assert body == speed_block(path), "run `python tests/test_docs_records.py` to rewrite the page's block"


def _write_speed_blocks() -> None:
    """Rewrite every speed block of the performance page from its record."""

    def block(match: re.Match[str]) -> str:
        path = match["path"]
        return f"<!-- speed record: {path} -->\n{speed_block(ROOT / path)}<!-- end of the speed record -->\n"

    PERFORMANCE.write_text(_BLOCK.sub(block, PERFORMANCE.read_text()))


# The ablation table of the results page: each row names the `benchmark.py accuracy ... --json` command of its
# record (in docs/records/ or docs/records/ablation/) and gives the record's validation accuracy over its
# seeds, without and with test-time augmentation where the record has it; every ablation record has its row.
ABLATIONS = sorted((ROOT / "docs" / "records" / "ablation").glob("*.json"))
_ABLATION = re.compile(r"^## Ablation, on validation\n(?P<body>.*?)(?=^## |\Z)", re.S | re.M)


def _ablation_rows() -> list[str]:
    section = _ABLATION.search(RESULTS.read_text())
    assert section is not None, "the results page has no section 'Ablation, on validation'"
    return [line for line in section["body"].splitlines() if line.startswith("| ") and "--json docs/records/" in line]


def test_the_ablation_table_reads_as_its_records() -> None:
    rows = _ablation_rows()
    named = [re.search(r"--json (docs/records/\S+\.json)`", row) for row in rows]
    paths = [ROOT / match[1] for match in named if match is not None]
    assert len(paths) == len(rows) and set(ABLATIONS) <= set(paths) and ABLATIONS
    for row, path in zip(rows, paths, strict=True):
        record = _record(path)
        summary = record["summary"]
        assert record["action"] == "accuracy" and len(record["runs"]) >= 2 and not record["failures"], path
        validation = summary["validation_accuracy"]
        assert f"| {_percent(validation['mean'])}% ± {_percent(validation['std'])} |" in row, (path, row)
        with_tta = summary.get("validation_accuracy_tta")
        cell = f"| {_percent(with_tta['mean'])}% ± {_percent(with_tta['std'])} |" if with_tta else "| |"
        assert cell in row, (path, row)
        assert f"| {', '.join(map(str, record['seeds']))} |" in row, (path, row)


if __name__ == "__main__":
    _write_speed_blocks()
