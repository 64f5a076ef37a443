"""The ``benchmark`` command: arguments, progress bars, markdown tables and exit codes.

``benchmark_main(argv)`` parses ``accuracy`` or ``speed`` and its flags,
checks every value once, runs ``mnist_nn.bench`` and prints markdown
tables on stdout (progress bars on stderr); ``--json`` writes the whole
report. Errors are one line on stderr with exit code 2 for bad usage or an
invalid data file and 1 for other failures, as in ``mnist_nn.cli``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from mnist_nn._version import __version__
from mnist_nn.bench import (
    DEFAULT_SHAPES,
    GEMM_CEILING,
    QUICK_TRAIN_SIZE,
    REFERENCE_BATCH_SIZE,
    AccuracyReport,
    DataSource,
    SpeedPlan,
    SpeedReport,
    Stats,
    SweepReport,
    TrainingShape,
    speed_benchmark,
)
from mnist_nn.bench.pytorch import default_interpreter
from mnist_nn.cli.base import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    JSON_HELP,
    Parser,
    UsageError,
    add_data_args,
    add_dataset_arg,
    check_output,
    command,
    fail,
    json_to_stdout,
    show_progress,
    write_json_output,
)
from mnist_nn.cli.sweep import (
    QUICK_EPOCHS,
    QUICK_SEEDS,
    AccuracyPlan,
    accuracy_plan,
    add_accuracy_args,
    format_counts,
    format_sweep,
    run_plan,
)
from mnist_nn.cli.tables import markdown_table, plural, seeds_text, std_text
from mnist_nn.config import IMAGE_PIXELS, NUM_CLASSES, TRAIN_SIZE
from mnist_nn.errors import MnistNNError, OutputError
from mnist_nn.tta import TTA

DTYPES = ("float32", "float64")

_T = TypeVar("_T")


def _shape_text(shape: TrainingShape) -> str:
    what = "-".join(shape.layers) if shape.layers else "-".join(map(str, shape.sizes))
    return f"{what}@{shape.batch_size}:{shape.dtype}"


def parse_shape(text: str) -> TrainingShape:
    """Parse ``--config`` values such as ``784-30-10@10:float32`` or ``conv20x5-pool2-dense10@10``.

    The dtype defaults to float32.
    """
    example = f"expected SIZES@BATCH[:DTYPE] such as 784-30-10@10:float32 or conv20x5-pool2-dense10@10, got {text!r}"
    body, _, dtype = text.partition(":")
    sizes_text, at, batch_text = body.partition("@")
    if any(c.isalpha() for c in sizes_text):
        if not at or not batch_text.isdigit() or int(batch_text) < 1 or dtype not in ("", *DTYPES):
            raise argparse.ArgumentTypeError(example)
        specs = tuple(sizes_text.split("-"))
        if specs[-1] != f"dense{NUM_CLASSES}":
            raise argparse.ArgumentTypeError(f"expected layers ending with dense{NUM_CLASSES}, got {text!r}")
        try:
            return TrainingShape.of_layers(specs, int(batch_text), dtype or "float32")
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc} in {text!r}") from None
    try:
        sizes = tuple(int(n) for n in sizes_text.split("-"))
        batch_size = int(batch_text)
    except ValueError:
        raise argparse.ArgumentTypeError(example) from None
    dtype = dtype or "float32"
    if not at or len(sizes) < 2 or any(n < 1 for n in sizes) or batch_size < 1:
        raise argparse.ArgumentTypeError(example)
    if sizes[0] != IMAGE_PIXELS or sizes[-1] != NUM_CLASSES:
        raise argparse.ArgumentTypeError(
            f"expected sizes from {IMAGE_PIXELS} (pixels) to {NUM_CLASSES} (digits), got {text!r}"
        )
    if dtype not in DTYPES:
        raise argparse.ArgumentTypeError(f"expected dtype float32 or float64, got {dtype!r} in {text!r}")
    return TrainingShape(sizes, batch_size, dtype)


# --- the parser -----------------------------------------------------------------------------


def _add_common_args(parser: argparse.ArgumentParser, quick: str) -> None:
    add_data_args(parser)
    parser.add_argument("--json", type=Path, metavar="PATH", help=f"also write the whole report as JSON{JSON_HELP}")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars (they are also off when stderr is not a terminal)"
    )
    parser.add_argument("--quick", action="store_true", help=f"a smoke run of a few seconds: {quick}")


def build_benchmark_parser(prog: str = "benchmark.py") -> argparse.ArgumentParser:
    """Arguments of ``benchmark.py`` / ``mnist-nn benchmark``: the actions ``accuracy`` and ``speed``."""
    parser = Parser(
        prog=prog,
        description="Measure what the package achieves: test accuracy over several seeds (accuracy) or "
        "training and inference throughput beside the per-example reference implementation (speed). "
        "Prints markdown tables; --json writes everything. See '%(prog)s ACTION --help'.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    accuracy = actions.add_parser(
        "accuracy",
        help="train configurations over several seeds, here or on a Dask cluster; report their counts and spread",
        description="Train a configuration over several seeds, or a grid of configurations (--grid), and report "
        "every run's validation and test correct counts, the served epoch (the best on validation, whose weights "
        "are tested) and the last epoch's counts, then per configuration the mean, standard deviation, minimum "
        "and maximum of test accuracy, validation accuracy and time per run; a grid's configurations are ranked "
        "by validation accuracy. Every training flag of train_mnist.py is taken, from the same definition, "
        "--preset included; --seed, --save, --save-last, --checkpoint-every, --resume and --plot are refused "
        "(give seeds with --seeds or --seed-list; runs are kept with --results DIR; plot the --json report "
        "with mnist-nn plot). Runs go to this process, --jobs local processes or a Dask --scheduler.",
    )
    add_accuracy_args(accuracy)
    add_dataset_arg(accuracy)
    _add_common_args(
        accuracy,
        f"{QUICK_SEEDS} seeds, at most {QUICK_EPOCHS} epochs, {QUICK_TRAIN_SIZE} training images "
        "(flags given explicitly win)",
    )

    d, q = SpeedPlan(), SpeedPlan.quick()
    speed = actions.add_parser(
        "speed",
        help="training and inference throughput, the speed-up over the per-example reference, GEMM, memory",
        description="Time whole training epochs of the vectorized SGD (epochs 2..K+1 of one run, so start-up "
        "is left out) for each --config, and the per-example reference on Nielsen's [784, 30, 10] @ 10 on a "
        "subset, scaled to a 50,000-example epoch; print examples per second, seconds per epoch, achieved "
        "GFLOP/s (about 6 P flops per example for P weights) against a large matrix product's, and the "
        "speed-up. Also inference on the 10,000 test images, a warm-cache data load, the peak memory of a "
        "training run in a subprocess, and the BLAS library and threads it all ran with.",
    )
    speed.add_argument(
        "--config",
        dest="shapes",
        type=parse_shape,
        action="append",
        metavar="SIZES@BATCH[:DTYPE]",
        help="a network to time, e.g. 784-30-10@10:float64 (repeat the flag for several; default: "
        f"{' '.join(_shape_text(s) for s in DEFAULT_SHAPES)}; --quick: the first two)",
    )
    speed.add_argument(
        "--repeats",
        type=int,
        metavar="K",
        help=f"timed epochs per configuration and repeats of every other timing (default: {d.repeats}; "
        f"--quick: {q.repeats})",
    )
    speed.add_argument(
        "--train-size",
        type=int,
        metavar="N",
        help=f"training images per timed epoch (default: {d.train_size}; --quick: {q.train_size})",
    )
    speed.add_argument(
        "--reference-size",
        type=int,
        metavar="N",
        help=f"training images per reference epoch, 0 to skip the reference (default: {d.reference_size}; "
        f"--quick: {q.reference_size})",
    )
    speed.add_argument(
        "--reference-dtypes",
        nargs="+",
        choices=DTYPES,
        metavar="DTYPE",
        help=f"dtypes to time the reference in (default: {' '.join(d.reference_dtypes)})",
    )
    speed.add_argument(
        "--gemm-size",
        type=int,
        metavar="N",
        help=f"time N x N @ N x N matrix products, 0 to skip (default: {d.gemm_size}; --quick: {q.gemm_size})",
    )
    speed.add_argument(
        "--memory-epochs",
        type=int,
        metavar="E",
        help="epochs of the training run whose peak memory is measured, 0 to skip (default: the trainer's "
        f"default, a full run; --quick: {q.memory_epochs})",
    )
    speed.add_argument(
        "--pytorch",
        metavar="PYTHON",
        help="also time PyTorch's CPU training of each convolutional configuration (same network, mini-batch "
        "and threads, plain SGD, random images) with the interpreter PYTHON, one that can import torch, and "
        "give each one's time over PyTorch's; PyTorch is never a dependency of mnist-nn, so a scratch "
        "environment of its own will do (default: this interpreter when it can import torch, else none)",
    )
    _add_common_args(speed, "two small configurations, 1 repeat, tiny subsets (flags given explicitly win)")
    return parser


def _given(value: _T, default: _T) -> _T:
    """A flag's value if it was given, else the default (flags default to None so that --quick can tell)."""
    return value if value is not None else default


def _speed_plan(args: argparse.Namespace) -> SpeedPlan:
    """Check the speed flags once, up front, and build the plan."""
    base = SpeedPlan.quick() if args.quick else SpeedPlan()
    plan = SpeedPlan(
        shapes=tuple(args.shapes) if args.shapes else base.shapes,
        repeats=_given(args.repeats, base.repeats),
        train_size=_given(args.train_size, base.train_size),
        reference_dtypes=tuple(args.reference_dtypes) if args.reference_dtypes else base.reference_dtypes,
        reference_size=_given(args.reference_size, base.reference_size),
        gemm_size=_given(args.gemm_size, base.gemm_size),
        memory_epochs=_given(args.memory_epochs, base.memory_epochs),
        main_job_epochs=base.main_job_epochs,
        pytorch=args.pytorch or default_interpreter(),
    )
    checks = [
        (plan.repeats >= 1, f"--repeats must be at least 1, got {plan.repeats}"),
        (
            1 <= plan.train_size <= TRAIN_SIZE,
            f"--train-size must be between 1 and {TRAIN_SIZE}, got {plan.train_size}",
        ),
        (
            plan.reference_size == 0 or REFERENCE_BATCH_SIZE <= plan.reference_size <= TRAIN_SIZE,
            f"--reference-size must be 0 or between {REFERENCE_BATCH_SIZE} (one mini-batch) and {TRAIN_SIZE}, "
            f"got {plan.reference_size}",
        ),
        (plan.gemm_size >= 0, f"--gemm-size must be 0 or more, got {plan.gemm_size}"),
        (
            plan.memory_epochs is None or plan.memory_epochs >= 0,
            f"--memory-epochs must be 0 or more, got {plan.memory_epochs}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    for shape in plan.shapes:
        if shape.batch_size > plan.train_size:
            raise UsageError(f"the batch size of --config {_shape_text(shape)} exceeds --train-size {plan.train_size}")
    return plan


# --- printing ---------------------------------------------------------------------------


def format_accuracy(report: AccuracyReport) -> list[str]:
    """The configuration line and the markdown table: a row per seed and a summary row."""
    c = report.config
    where = f"preset {report.preset}" if report.preset else "configuration"
    runs = report.runs
    lines = [
        f"Accuracy of {where}: {c.describe()}; {report.train_size:,} training images"
        + ("" if report.dataset == "mnist" else f" of {report.dataset}")
        + "; "
        f"{seeds_text(report.seeds)}; {report.executor or plural(report.jobs, 'job')}",
        "",
        f"Counts are out of {runs[0].validation_total:,} validation and {runs[0].test_total:,} test images; "
        "test counts are of the served weights (the best validation epoch's).",
        "",
    ]
    tta = report.tta
    rows = [
        [
            str(r.seed),
            str(r.served_epoch),
            str(r.validation_correct),
            str(r.test_correct),
            f"{100 * r.test_accuracy:.2f}",
            *([str(r.validation_correct_tta), str(r.test_correct_tta)] if tta else []),
            str(r.last_validation_correct),
            str(r.last_test_correct),
            f"{r.seconds:.2f}",
        ]
        for r in runs
    ]
    t = report.test_accuracy

    def mean_sd(counts: Sequence[int | None]) -> str:
        stats = Stats.of([float(n or 0) for n in counts])
        return f"{stats.mean:.1f} ± {std_text(stats.std, digits=1)}"

    rows.append(
        [
            f"**mean ± sd (n={len(runs)})**",
            "",
            mean_sd([r.validation_correct for r in runs]),
            mean_sd([r.test_correct for r in runs]),
            f"{100 * t.mean:.2f} ± {std_text(t.std, 100)} (min {100 * t.min:.2f}, max {100 * t.max:.2f})",
            *(
                [mean_sd([r.validation_correct_tta for r in runs]), mean_sd([r.test_correct_tta for r in runs])]
                if tta
                else []
            ),
            mean_sd([r.last_validation_correct for r in runs]),
            mean_sd([r.last_test_correct for r in runs]),
            f"{report.seconds.mean:.2f}",
        ]
    )
    header = [
        "seed",
        "served epoch",
        "validation",
        "test",
        "test %",
        *(["validation with TTA", "test with TTA"] if tta else []),
        f"last epoch ({c.epochs}) validation",
        "last epoch test",
        "seconds",
    ]
    table = markdown_table(header, rows, "r" * len(header))
    notes = []
    t_tta = report.test_accuracy_tta
    if t_tta is not None:
        copies = TTA.for_training(c.augment)
        notes.append(
            f"TTA: the served weights {copies.describe()}; test mean {100 * t_tta.mean:.2f}% "
            f"± {std_text(t_tta.std, 100)} (min {100 * t_tta.min:.2f}, max {100 * t_tta.max:.2f})."
        )
    if report.ensemble_correct is not None:
        with_tta = (
            f"; with TTA {report.ensemble_tta_correct} / {runs[0].test_total} "
            f"({100 * report.ensemble_tta_correct / runs[0].test_total:.2f}%)"
            if report.ensemble_tta_correct is not None
            else ""
        )
        notes.append(
            f"Test (ensemble of {len(runs)}): {report.ensemble_correct} / {runs[0].test_total} correct "
            f"({100 * (report.ensemble_accuracy or 0.0):.2f}%), "
            f"from the averaged output probabilities of the served weights{with_tta}; "
            f"the runs' mean is {100 * t.mean:.2f}%"
        )
    return lines + table + [line for note in notes for line in ("", note)]


def _blas_lines(environment: dict[str, Any]) -> list[str]:
    blas = environment.get("blas") or []
    if not blas:
        return ["- BLAS: unknown (NumPy does not say; install threadpoolctl)"]
    lines = []
    for b in blas:
        threads = b.get("num_threads")
        core = b.get("architecture")
        parts = [
            f"{b.get('internal_api')} {b.get('version')}",
            f"threading {b['threading_layer']}" if b.get("threading_layer") else None,
            f"core type {core}" if core else "core type unknown",
            f"{threads} thread{'s' if threads != 1 else ''}" if threads else "threads unknown",
        ]
        where = b.get("filepath") or b.get("configuration") or ""
        lines.append(f"- BLAS: {', '.join(p for p in parts if p)}" + (f" ({where})" if where else ""))
    return lines


def format_environment(environment: dict[str, Any]) -> list[str]:
    """Versions, CPUs, BLAS and the BLAS variables, as a markdown list."""
    variables = environment.get("variables") or {}
    return [
        f"- mnist_nn {environment['mnist_nn']}, NumPy {environment['numpy']}, Python {environment['python']}",
        f"- CPU: {environment['cpu']}; {environment['cpu_count']} CPUs, {environment['usable_cpus']} usable",
        *_blas_lines(environment),
        "- Variables: " + (" ".join(f"{k}={v}" for k, v in variables.items()) if variables else "none set"),
    ]


def _duration(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds >= 1 else f"{1000 * seconds:.1f} ms"


def _optional(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else ""


def _helper_words(helper: Any) -> str:
    """What the helper process did, from ``environment_info``'s ``helper``, in words."""
    if not isinstance(helper, dict) or "gathers" not in helper:
        return "not recorded"
    if not helper["gathers"]:
        return "none (one CPU, or not Linux): the main job gathers its rows itself"
    if helper.get("counts"):
        return "gathers each epoch's shuffled rows on the second CPU and counts half of the validation set"
    return "gathers each epoch's shuffled rows on the second CPU (BLAS may run more than one thread: no split count)"


def _main_job_lines(report: SpeedReport) -> list[str]:
    """The main job beside its floor and the plain port, each ratio with its target, and the BLAS core type."""
    summary = report.main_job_summary()
    if summary is None:
        return []
    cores = ", ".join(str(b.get("architecture") or "unknown") for b in report.environment.get("blas") or [])
    floor = summary["floor_seconds"]
    targets = summary["targets"]
    lines = [
        "",
        f"## The main job against its floor ([784, 30, 10] @ 10 float32; BLAS core type {cores or 'unknown'}, "
        f"CPU {report.environment.get('cpu')})",
        "",
        f"- floor (the step's math and nothing else): {floor:.3f} s/epoch",
        f"- the main job's helper process: {_helper_words(report.environment.get('helper'))}",
    ]
    beside = summary["floor_beside_main_job_seconds"]
    if beside is not None:
        lines.append(
            f"- the floor again, one epoch before each round of the main job's runs: {beside:.3f} s/epoch at best "
            "(the main job and the default run are held against this one, timed in the same minutes)"
        )
    if summary["step_seconds"] is not None:
        lines.append(
            f"- the step alone (fit, no cost, no validation): {summary['step_seconds']:.3f} s/epoch, "
            f"{summary['step_over_floor']:.2f}x the floor"
        )
    main = summary["main_job_seconds"]
    if main is not None and report.main_job is not None:
        short, long = report.main_job.epochs
        lines.append(
            f"- the main job's epoch ((the {long}-epoch run - the {short}-epoch run) / {long - short}): "
            f"{main:.3f} s, {summary['main_job_over_floor']:.2f}x the floor (target: at most "
            f"{targets['main_job_over_floor_at_most']}x)"
        )
    if summary["port_seconds"] is not None:
        against = summary["port_over_main_job"]
        versus = (
            f", {against:.2f}x the main job's epoch (target: at least {targets['port_over_main_job_at_least']}x)"
            if against is not None
            else ""
        )
        lines.append(
            f"- a plain NumPy port of Nielsen's network, mini-batches gathered from arrays: "
            f"{summary['port_seconds']:.3f} s/epoch{versus}"
        )
    if summary["port_lists_seconds"] is not None:
        against = summary["port_lists_over_main_job"]
        versus = f", {against:.2f}x the main job's epoch" if against is not None else ""
        lines.append(
            f"- the same port on his data layout (a list of (784, 1) columns, stacked per mini-batch): "
            f"{summary['port_lists_seconds']:.3f} s/epoch{versus}"
        )
    if summary["default_run_seconds"] is not None:
        lines.append(
            f"- the whole default run: {summary['default_run_seconds']:.1f} s wall, the fastest of "
            f"{summary['default_runs']} beside the main job's runs (target: at most 30 floor epochs + 1.5 s = "
            f"{summary['default_run_limit_seconds']:.1f} s)"
        )
    return lines


def format_speed(report: SpeedReport) -> list[str]:
    """The environment, then markdown tables of training, inference, GEMM, data load and memory."""
    plan = report.plan
    lines = ["## Environment", "", *format_environment(report.environment), ""]
    lines += [
        f"## Training (best and median of {plural(plan.repeats, 'epoch')} after the first; vectorized on "
        f"{plan.train_size:,} images, reference on {plan.reference_size:,}; seconds per 50,000-example epoch)",
        "",
    ]
    rows = [
        [
            t.implementation,
            " ".join(t.shape.layers) if t.shape.layers else f"[{', '.join(map(str, t.shape.sizes))}]",
            str(t.shape.batch_size),
            t.shape.dtype,
            f"{t.timing.best_rate:,.0f}",
            f"{t.timing.median_rate:,.0f}",
            f"{t.epoch_seconds():.3f}",
            f"{t.epoch_seconds(median=True):.3f}",
            f"{t.gflops:.2f}",
            _optional(t.gemm_fraction, ".1%") + (" (!)" if (t.gemm_fraction or 0) > GEMM_CEILING else ""),
            _optional(t.floor_ratio, ".2f") + ("x" if t.floor_ratio is not None else ""),
            _optional(t.speedup, ".1f") + ("x" if t.speedup is not None else ""),
            _optional(t.pytorch_ratio, ".2f") + ("x" if t.pytorch_ratio is not None else ""),
        ]
        for t in report.training
    ]
    header = [
        "implementation",
        "sizes",
        "batch",
        "dtype",
        "examples/s best",
        "examples/s median",
        "s/epoch best",
        "s/epoch median",
        "GFLOP/s",
        "of GEMM",
        "time over the floor",
        "speed-up vs reference",
        "time over PyTorch's",
    ]
    lines += markdown_table(header, rows, "lrrlrrrrrrrrr")
    lines += [f"\nWarning: {warning}" for warning in report.warnings()]
    lines += _main_job_lines(report)
    lines += ["", f"## Inference (count_correct on the 10,000 test images, best and median of {plan.repeats})", ""]
    rows = [
        [
            i.label,
            i.dtype,
            f"{i.timing.best_rate:,.0f}",
            f"{1000 * i.timing.best:.1f}",
            f"{1000 * i.timing.median:.1f}",
        ]
        for i in report.inference
    ]
    lines += markdown_table(["sizes", "dtype", "images/s best", "ms best", "ms median"], rows, "llrrr")
    lines += ["", "## Other measurements", ""]
    rows = [
        [f"GEMM {g.n}x{g.n} @ {g.n}x{g.n} {g.dtype}", f"{g.gflops:.1f} GFLOP/s", f"{_duration(g.timing.best)} best"]
        for g in report.gemm
    ]
    load = report.load
    rows.append(["load_mnist, warm cache", f"{_duration(load.best)} best", f"{_duration(load.median)} median"])
    m = report.memory
    if m is not None:
        run = "a full default training run" if m.epochs is None else f"a training run of {plural(m.epochs, 'epoch')}"
        peak = f"{m.peak_rss_mib:,.0f} MiB" if m.exact else f"at most {m.peak_rss_mib:,.0f} MiB"
        rows.append([f"peak memory of {run}", peak, f"{m.seconds:.1f} s wall; {m.test_line}"])
        rows.append(
            ["peak memory of evaluating its model", f"{m.eval_peak_rss_mib:,.0f} MiB", f"{m.eval_seconds:.1f} s wall"]
        )
    lines += markdown_table(["measurement", "result", "detail"], rows, "lrl")
    return lines


# --- the command --------------------------------------------------------------------------


def _progress_bar(total: int, unit: str, desc: str) -> tqdm[Any]:
    return tqdm(total=total, unit=unit, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)


def _run_speed(args: argparse.Namespace, source: DataSource, progress: bool, plan: SpeedPlan) -> SpeedReport:
    bar = _progress_bar(plan.steps(), "step", "speed") if progress else None

    def on_step(done: int, total: int, label: str) -> None:
        if bar is not None:
            bar.update(done - bar.n)
            bar.set_postfix_str(label)

    try:
        return speed_benchmark(plan, source=source, on_step=on_step)
    finally:
        if bar is not None:
            bar.close()


@command
def benchmark_main(argv: Sequence[str] | None = None, prog: str = "benchmark.py") -> int:
    """Entry point of ``scripts/benchmark.py``."""
    args = build_benchmark_parser(prog).parse_args(argv)
    json_to_stdout(args.json)
    action_prog = f"{prog} {args.action}"
    plan: AccuracyPlan | SpeedPlan
    try:
        # Every flag value is checked before anything runs.
        plan = accuracy_plan(args) if args.action == "accuracy" else _speed_plan(args)
        if args.json is not None:
            check_output(args.json)
    except UsageError as exc:
        return fail(action_prog, str(exc), EXIT_USAGE)

    progress = show_progress(args.quiet)
    report: AccuracyReport | SweepReport | SpeedReport
    code = EXIT_OK
    try:
        if isinstance(plan, AccuracyPlan):
            sweep = run_plan(plan, args, action_prog, progress)
            code = EXIT_FAILURE if sweep.counts["failed"] else EXIT_OK
            report = sweep if sweep.grid else sweep.accuracy_report(plan.jobs)
        else:
            report = _run_speed(args, DataSource(args.data_dir, args.mirror), progress, plan)
    except MnistNNError as exc:  # a failed download, a bad data file, every run failed, a dead worker, ...
        # As the ``command`` wrapper would, but naming the action ("benchmark.py speed: error: ...").
        return fail(action_prog, str(exc), exc.exit_code)

    if isinstance(report, SweepReport):
        lines = format_sweep(report)
    elif isinstance(report, AccuracyReport):
        counts = format_counts(sweep)
        lines = format_accuracy(report) + (["", *counts] if counts else [])
    else:
        lines = format_speed(report)
    print("\n".join(lines))
    if args.json is not None:
        try:
            write_json_output(args.json, {**report.to_dict(), "version": __version__})
        except OutputError as exc:
            return fail(action_prog, str(exc), EXIT_FAILURE)
    return code
