"""The speed benchmark: what to measure (``SpeedPlan``), running it, and what it found (``SpeedReport``).

``speed_benchmark`` makes the measurements of ``mnist_nn.bench.timings``
(training epochs beside the floor of their math, a plain NumPy port of
Nielsen's network and the per-example reference, and, given an interpreter
with PyTorch, PyTorch's epoch of each convolutional shape; inference, GEMM,
the data load) and of ``mnist_nn.bench.memory`` (first the peak memory, then the main
job's own epoch); it returns a report with a ``to_dict()`` for JSON, whose
``main_job_summary`` sets the main job beside its floor. Nothing here prints or reads argv
(``mnist_nn.cli.benchmark`` does).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from mnist_nn.bench.common import QUICK_TRAIN_SIZE, DataSource
from mnist_nn.bench.machine import environment_info
from mnist_nn.bench.memory import MainJobTiming, MemoryRun, measure_main_job, measure_peak_memory
from mnist_nn.bench.pytorch import measure_pytorch
from mnist_nn.bench.timings import (
    REFERENCE_BATCH_SIZE,
    GemmSpeed,
    InferenceSpeed,
    Timing,
    TrainingShape,
    TrainingSpeed,
    measure_floor,
    measure_gemm,
    measure_inference,
    measure_load,
    measure_port,
    measure_port_lists,
    measure_reference,
    measure_training,
)
from mnist_nn.config import IMAGE_PIXELS, NUM_CLASSES, TRAIN_SIZE
from mnist_nn.data import MnistData
from mnist_nn.data.download import ensure_mnist

GEMM_CEILING = 1.0  # a training step's fraction of the large GEMM's GFLOP/s cannot exceed this
MAIN_JOB_SHAPE = TrainingShape((IMAGE_PIXELS, 30, NUM_CLASSES), 10, "float32")  # what train_mnist.py trains
# The targets, for the main job's shape: its epoch at most this many floor epochs, the plain port
# at least this many main-job epochs, the default run's wall time at most WALL_EPOCHS floor epochs + WALL_EXTRA s.
FLOOR_TARGET, PORT_TARGET, WALL_EPOCHS, WALL_EXTRA = 1.25, 1.3, 30, 1.5
CH6_LAYERS = ("conv20x5", "pool2", "conv40x5", "pool2", "dense100", "dense10")
DEFAULT_SHAPES: tuple[TrainingShape, ...] = (
    TrainingShape((IMAGE_PIXELS, 30, NUM_CLASSES), 10, "float32"),
    TrainingShape((IMAGE_PIXELS, 30, NUM_CLASSES), 10, "float64"),
    TrainingShape((IMAGE_PIXELS, 100, NUM_CLASSES), 100, "float32"),
    TrainingShape((IMAGE_PIXELS, 800, NUM_CLASSES), 128, "float32"),
    # Nielsen's chapter-6 network, ReLU: at his mini-batch and at a larger one.
    TrainingShape.of_layers(CH6_LAYERS, 10, "float32"),
    TrainingShape.of_layers(CH6_LAYERS, 64, "float32"),
)


@dataclass(frozen=True)
class SpeedPlan:
    """What ``speed_benchmark`` measures, and how much of it."""

    shapes: tuple[TrainingShape, ...] = DEFAULT_SHAPES
    repeats: int = 3  # timed epochs per shape (after one untimed) and repeats of everything else
    train_size: int = TRAIN_SIZE  # training images per vectorized epoch
    reference_dtypes: tuple[str, ...] = ("float64", "float32")
    reference_size: int = 2_000  # images per reference epoch; the rate is scaled to 50,000; 0 skips it
    gemm_size: int = 2_048  # n of the n x n @ n x n product; 0 skips it
    gemm_dtypes: tuple[str, ...] = ("float32", "float64")
    memory_epochs: int | None = None  # epochs of the memory run (None: the trainer's default); 0 skips it
    main_job_epochs: tuple[int, int] | None = (2, 12)  # the main job's epoch is the difference of these runs
    pytorch: str | None = None  # an interpreter with PyTorch: its epoch of each convolutional shape, beside ours

    @classmethod
    def quick(cls) -> SpeedPlan:
        """A smoke run of a few seconds: every measurement, each tiny."""
        return cls(
            shapes=DEFAULT_SHAPES[:2],
            repeats=1,
            train_size=QUICK_TRAIN_SIZE,
            reference_size=200,
            gemm_size=256,
            memory_epochs=1,
            main_job_epochs=(1, 2),
        )

    def validate(self) -> None:
        """Raise ValueError for any value out of range."""
        if self.repeats < 1:
            raise ValueError(f"expected repeats >= 1, got {self.repeats}")
        if not 1 <= self.train_size <= TRAIN_SIZE:
            raise ValueError(f"expected a training size between 1 and {TRAIN_SIZE}, got {self.train_size}")
        if not 0 <= self.reference_size <= TRAIN_SIZE:
            raise ValueError(f"expected a reference size between 0 and {TRAIN_SIZE}, got {self.reference_size}")
        if self.reference_size and self.reference_size < REFERENCE_BATCH_SIZE:
            raise ValueError(
                f"expected a reference size of at least one mini-batch ({REFERENCE_BATCH_SIZE}), "
                f"got {self.reference_size}"
            )
        if self.gemm_size < 0:
            raise ValueError(f"expected a matrix size >= 0, got {self.gemm_size}")
        if self.memory_epochs is not None and self.memory_epochs < 0:
            raise ValueError(f"expected memory epochs >= 0, got {self.memory_epochs}")
        if self.main_job_epochs is not None and not 0 < self.main_job_epochs[0] < self.main_job_epochs[1]:
            raise ValueError(f"expected main-job epochs 0 < short < long, got {self.main_job_epochs}")
        for shape in self.shapes:
            if shape.batch_size > self.train_size:
                raise ValueError(
                    f"batch size {shape.batch_size} of {shape.label} exceeds the training size {self.train_size}"
                )

    def inference_shapes(self) -> list[tuple[tuple[int, ...], str, tuple[str, ...]]]:
        """The distinct (sizes, dtype, layers) of ``shapes``, in order."""
        return list(dict.fromkeys((s.sizes, s.dtype, s.layers) for s in self.shapes))

    def steps(self) -> int:
        """How many measurements ``speed_benchmark`` makes (for a progress bar)."""
        return (
            1  # data load
            + (len(self.gemm_dtypes) if self.gemm_size else 0)
            + len(self.shapes)
            + (sum(1 for s in self.shapes if s.layers) if self.pytorch else 0)
            + 3 * sum(1 for s in self.shapes if not s.layers)  # the floor and the two plain ports of dense shapes
            + (1 if self.main_job_epochs else 0)
            + (len(self.reference_dtypes) if self.reference_size else 0)
            + len(self.inference_shapes())
            + (1 if self.memory_epochs != 0 else 0)
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["shapes"] = [s.to_dict() for s in self.shapes]
        d["reference_dtypes"] = list(self.reference_dtypes)
        d["gemm_dtypes"] = list(self.gemm_dtypes)
        d["main_job_epochs"] = list(self.main_job_epochs) if self.main_job_epochs else None
        return d


@dataclass(frozen=True)
class SpeedReport:
    """Everything ``speed_benchmark`` measured."""

    plan: SpeedPlan
    environment: dict[str, Any]
    load: Timing
    gemm: list[GemmSpeed]
    training: list[TrainingSpeed]
    inference: list[InferenceSpeed]
    memory: MemoryRun | None
    load_average: tuple[float, float] | None = None  # 1-minute load average at the start and at the end
    main_job: MainJobTiming | None = None
    main_job_floor: Timing | None = None  # floor epochs of the main job's shape, one before each round of its runs

    def _row(self, implementation: str, shape: TrainingShape) -> TrainingSpeed | None:
        return next((t for t in self.training if t.implementation == implementation and t.shape == shape), None)

    def main_job_summary(self) -> dict[str, Any] | None:
        """The main job ([784, 30, 10] @ 10 float32) beside its floor and the plain port, with the targets.

        None unless the floor of that shape was measured. Seconds are per 50,000-image epoch; the main
        job's epoch comes from whole runs (validation, the running cost and all), the others from
        ``fit``'s steps alone (``step``), the floor and the port.
        """
        floor = self._row("floor", MAIN_JOB_SHAPE)
        if floor is None:
            return None
        step, port = self._row("vectorized", MAIN_JOB_SHAPE), self._row("plain port", MAIN_JOB_SHAPE)
        lists = self._row("plain port, his lists", MAIN_JOB_SHAPE)
        floor_s = floor.epoch_seconds()
        # The main job's runs and the default run are held against the floor timed between their rounds,
        # in the same minutes (the machine drifts), when it was; else against the table's.
        beside = (
            TrainingSpeed("floor", MAIN_JOB_SHAPE, self.main_job_floor).epoch_seconds()
            if self.main_job_floor is not None
            else None
        )
        runs_floor = beside if beside is not None else floor_s
        summary: dict[str, Any] = {
            "shape": MAIN_JOB_SHAPE.to_dict(),
            "floor_seconds": floor_s,
            "floor_beside_main_job_seconds": beside,
            "step_seconds": step.epoch_seconds() if step else None,
            "step_over_floor": step.epoch_seconds() / floor_s if step else None,
            "port_seconds": port.epoch_seconds() if port else None,
            "port_lists_seconds": lists.epoch_seconds() if lists else None,
            "main_job_seconds": None,
            "main_job_over_floor": None,
            "port_over_main_job": None,
            "port_lists_over_main_job": None,
            "default_run_seconds": None,
            "default_runs": 0,
            "default_run_limit_seconds": WALL_EPOCHS * runs_floor + WALL_EXTRA,
            "targets": {"main_job_over_floor_at_most": FLOOR_TARGET, "port_over_main_job_at_least": PORT_TARGET},
        }
        if self.main_job is not None:
            main = self.main_job.epoch_seconds
            summary["main_job_seconds"] = main
            summary["main_job_over_floor"] = main / runs_floor
            if port is not None and main > 0:
                summary["port_over_main_job"] = port.epoch_seconds() / main
            if lists is not None and main > 0:
                summary["port_lists_over_main_job"] = lists.epoch_seconds() / main
        if self.main_job is not None and self.main_job.default_run_seconds is not None:
            summary["default_run_seconds"] = self.main_job.default_run_seconds
            summary["default_runs"] = len(self.main_job.default_seconds)
        return summary

    def warnings(self) -> list[str]:
        """Figures that cannot be right, each explained in one sentence (none on a quiet machine).

        A training step is made of smaller matrix products than the GEMM
        measurement, in the same dtype, so it cannot reach more than 100% of
        GEMM's GFLOP/s; when it seems to, the GEMM timing was slowed, most
        likely by other work on the machine.
        """
        over = [t for t in self.training if t.gemm_fraction is not None and t.gemm_fraction > GEMM_CEILING]
        if not over:
            return []
        figures = ", ".join(f"{_shape_label(t)} {t.gemm_fraction:.0%}" for t in over if t.gemm_fraction is not None)
        busy = ""
        if self.load_average is not None:
            cpus = os.cpu_count() or 1
            start, end = self.load_average
            busy = f" (load average {start:.1f} at the start, {end:.1f} at the end, on {cpus} CPUs)"
        return [
            f"{figures} of GEMM cannot be right: training's smaller products cannot beat the large one, so the GEMM "
            f"timing was slowed, most likely because the machine was busy{busy}; measure again on a quiet machine."
        ]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "action": "speed",
            "load_average": list(self.load_average) if self.load_average is not None else None,
            "warnings": self.warnings(),
            "plan": self.plan.to_dict(),
            "environment": self.environment,
            "load_seconds": self.load.to_dict(),
            "gemm": [g.to_dict() for g in self.gemm],
            "training": [t.to_dict() for t in self.training],
            "inference": [i.to_dict() for i in self.inference],
            "memory": self.memory.to_dict() if self.memory is not None else None,
            "main_job": self.main_job.to_dict() if self.main_job is not None else None,
            "main_job_floor": self.main_job_floor.to_dict() if self.main_job_floor is not None else None,
            "main_job_summary": self.main_job_summary(),
        }


def _shape_label(t: TrainingSpeed) -> str:
    """'[784, 30, 10] @10 float32' or the layer specs."""
    sizes = " ".join(t.shape.layers) if t.shape.layers else f"[{', '.join(map(str, t.shape.sizes))}]"
    return f"{sizes} @{t.shape.batch_size} {t.shape.dtype}"


def _load_average() -> float | None:
    """The 1-minute load average, where the system reports one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


StepCallback = Callable[[int, int, str], None]  # (measurements done, total, what comes next)


_BESIDE_THE_STEP = (
    ("floor", measure_floor),
    ("plain port", measure_port),
    ("plain port on Nielsen's lists", measure_port_lists),
)


def _compared(timed: list[TrainingSpeed], gemm: list[GemmSpeed]) -> list[TrainingSpeed]:
    """Each training timing held against GEMM of its dtype, the reference of its shape and its floor."""
    gemm_gflops = {g.dtype: g.gflops for g in gemm}
    reference_rate = {t.shape: t.timing.best_rate for t in timed if t.implementation == "reference"}
    floor_seconds = {t.shape: t.epoch_seconds() for t in timed if t.implementation == "floor"}
    pytorch_seconds = {t.shape: t.epoch_seconds() for t in timed if t.implementation == "pytorch"}

    def compare(t: TrainingSpeed) -> TrainingSpeed:
        ceiling = gemm_gflops.get(t.shape.dtype)
        ref = reference_rate.get(t.shape) if t.implementation == "vectorized" else None
        floor = floor_seconds.get(t.shape) if t.implementation != "reference" else None
        pytorch = pytorch_seconds.get(t.shape) if t.implementation == "vectorized" else None
        return TrainingSpeed(
            t.implementation,
            t.shape,
            t.timing,
            gemm_fraction=t.gflops / ceiling if ceiling else None,
            speedup=t.timing.best_rate / ref if ref else None,
            floor_ratio=t.epoch_seconds() / floor if floor else None,
            pytorch_ratio=t.epoch_seconds() / pytorch if pytorch else None,
            version=t.version,
        )

    return [compare(t) for t in timed]


def _measure_shape(
    plan: SpeedPlan, shape: TrainingShape, data: MnistData, step: Callable[[str], None]
) -> list[TrainingSpeed]:
    """The step of one shape, and beside it PyTorch's (convolutional shapes) or the floor and the ports (dense)."""
    step(f"training {shape.label}")
    rows = [measure_training(shape, data, plan.train_size, plan.repeats)]
    if plan.pytorch and shape.layers:
        step(f"PyTorch {shape.label}")
        rows.append(measure_pytorch(plan.pytorch, shape, plan.train_size, plan.repeats))
    for what, measure in () if shape.layers else _BESIDE_THE_STEP:
        step(f"{what} {shape.label}")
        timed = measure(shape, data, plan.train_size, plan.repeats)
        if timed is not None:
            rows.append(timed)
    return rows


def speed_benchmark(
    plan: SpeedPlan | None = None, *, source: DataSource | None = None, on_step: StepCallback | None = None
) -> SpeedReport:
    """Measure everything in ``plan``; see the module docstring.

    Args:
        plan: what to measure (default: ``SpeedPlan()``).
        source: where to load MNIST from.
        on_step: progress, called before each measurement and once at the end.

    Returns:
        The ``SpeedReport``.

    Raises:
        ValueError: the plan has values out of range.
        DownloadError, DataFormatError: the data could not be loaded.
        BenchmarkError: the memory run failed.
    """
    plan = plan if plan is not None else SpeedPlan()
    plan.validate()
    source = source if source is not None else DataSource()
    total = plan.steps()
    done = 0

    def step(label: str) -> None:
        nonlocal done
        if on_step is not None:
            on_step(done, total, label)
        done += 1

    load_before = _load_average()
    memory = None
    if plan.memory_epochs != 0:
        # First, while this process is small: a child's peak counts its launcher's (see measure_peak_memory).
        # The files are fetched and verified first so the run times training, not a download.
        step("peak memory of a training run")
        ensure_mnist(source.data_dir, mirror=source.mirror)
        memory = measure_peak_memory(source, plan.memory_epochs)
    step("data load")
    data = source.load()  # untimed: it also warms the cache
    load = measure_load(source, plan.repeats)
    gemm = []
    if plan.gemm_size:
        for dtype in plan.gemm_dtypes:
            step(f"GEMM {plan.gemm_size} {dtype}")
            gemm.append(measure_gemm(plan.gemm_size, dtype, plan.repeats))
    vectorized: list[TrainingSpeed] = []
    main_job = None
    floors: list[Timing] = []  # one floor epoch before each round of the main job's runs

    def floor_epoch() -> None:
        timed = measure_floor(MAIN_JOB_SHAPE, data, plan.train_size, 1)
        if timed is not None:
            floors.append(timed.timing)

    def time_main_job(epochs: tuple[int, int]) -> MainJobTiming:
        step(f"the main job, {epochs[0]} and {epochs[1]} epochs")
        return measure_main_job(
            source, epochs, plan.repeats, default_run=plan.memory_epochs is None, each_round=floor_epoch
        )

    for shape in plan.shapes:
        # The step, its floor and the plain port side by side, so that drift on the machine hits all three.
        vectorized += _measure_shape(plan, shape, data, step)
        if shape == MAIN_JOB_SHAPE and plan.main_job_epochs and main_job is None:
            main_job = time_main_job(plan.main_job_epochs)
    reference = []
    if plan.reference_size:
        for dtype in plan.reference_dtypes:
            step(f"reference {dtype}")
            reference.append(measure_reference(dtype, data, plan.reference_size, plan.repeats))
    inference = []
    for sizes, dtype, layers in plan.inference_shapes():
        step(f"inference {' '.join(layers) if layers else list(sizes)} {dtype}")
        inference.append(measure_inference(sizes, dtype, data, plan.repeats, layers))
    if on_step is not None:
        on_step(total, total, "done")
    load_after = _load_average()

    if main_job is None and plan.main_job_epochs:  # no main-job shape among the configurations: time it anyway
        main_job = time_main_job(plan.main_job_epochs)
    return SpeedReport(
        plan=plan,
        environment=environment_info(),
        load=load,
        gemm=gemm,
        training=_compared(vectorized + reference, gemm),
        inference=inference,
        memory=memory,
        load_average=(load_before, load_after) if load_before is not None and load_after is not None else None,
        main_job=main_job,
        main_job_floor=Timing(floors[0].items, tuple(t for f in floors for t in f.seconds)) if floors else None,
    )
