"""The run file: a training run saved so that it can be evaluated, or resumed exactly.

A run file is a model file (``mnist_nn.models``) whose served weights can be
evaluated like any model's, with the run beside them in its metadata and
arrays: the configuration, the history, which epoch it serves ("best" or
"last") and the state after the last completed epoch (``ResumeState``: the
current weights, the optimizer's state, the generator's state, and the best
epoch's weights when the file serves another). ``save_run`` writes one at the
end of a run, as a checkpoint, or after a stop; ``resume_run`` rebuilds the
``Run``, checking every part against the others first:

    save_run("run.npz", run, data)
    run = resume_run("run.npz")

This module knows nothing of the command line: a resumed run may train for
more epochs and change which epoch it serves, and any other change of its
configuration is refused with a ``ValueError`` that names the settings.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mnist_nn.config import TrainConfig, config_from_dict
from mnist_nn.data import MnistData
from mnist_nn.errors import ModelFileError
from mnist_nn.files import PathLike
from mnist_nn.models import SavedModel, load_model, save_model
from mnist_nn.text import one_line, short
from mnist_nn.train.augment import parse_augment
from mnist_nn.train.history import History
from mnist_nn.train.run import Run
from mnist_nn.train.validation import count_in_chunks

STATUSES = ("complete", "checkpoint", "interrupted", "diverged")  # why a run file was written


def save_run(path: PathLike, run: Run, data: MnistData, status: str = "complete") -> int:
    """Save ``run`` to ``path`` (atomically): its served weights and the last completed epoch's state.

    The served weights are the best validation epoch's, or the last completed
    epoch's when the run keeps its last (or validated none). Their count on
    ``data.test`` goes into the metadata with the data's digests, and is
    returned. Training stopped part way through an epoch is saved as it was
    after the epoch before (``run.snapshot``).

    Raises:
        ValueError: a status other than those in ``STATUSES``.
        OSError: the file could not be written (an earlier file at ``path`` is intact).
    """
    if status not in STATUSES:
        raise ValueError(f"expected a status among {', '.join(STATUSES)}, got {status!r}")
    snapshot = run.snapshot if run.snapshot is not None else run.take_snapshot()
    done = snapshot.epochs_completed
    if run.keep_last or run.best_params is None:  # the last epoch's weights, or their average (``config.ema``)
        last = snapshot.optimizer.get("average", snapshot.params)
        served, served_epoch, rule = run.network.clone(last), done, "last"
    else:
        served, served_epoch, rule = run.network.clone(run.best_params), run.best_epoch or 0, "best"
    test_correct = count_in_chunks(served, *data.test)
    record = run.history.epochs[served_epoch - 1] if served_epoch else None
    metadata = {
        "config": run.config.to_dict(),
        "history": History(run.history.epochs[:done]).to_list(),
        "epoch": served_epoch,
        "epochs_completed": done,
        "status": status,
        "served": rule,
        "validation_correct": record.validation_correct if record else None,
        "validation_total": record.validation_total if record else None,
        "test_correct": test_correct,
        "test_total": len(data.test),
        "dataset": data.dataset,
        "classes": list(data.classes),
        "mnist_sha256": data.digests,  # the digests of the data set's files
    }
    # A file that serves the last epoch keeps the best one's weights too, so that a resume may serve either.
    best = run.best_params if rule == "last" and run.best_epoch and run.best_epoch <= done else None
    state = dataclasses.replace(snapshot, best_params=best, best_epoch=run.best_epoch if best is not None else None)
    save_model(path, served, metadata, resume=state)
    return test_correct


def saved_config(saved: SavedModel) -> TrainConfig:
    """The configuration a run file was trained with, checked.

    Raises:
        ModelFileError: the file holds weights only (no run), or its configuration is not a valid one.
    """
    if saved.resume is None or "config" not in saved.metadata:
        raise ModelFileError(
            one_line(
                f"{saved.path}: cannot resume: it holds the weights only, not the training run (configuration, "
                "history, generator and optimizer state) that train --save writes; save_model(path, network, "
                "metadata) files can be evaluated, not resumed"
            )
        )
    try:
        config = config_from_dict(saved.metadata.get("config"))
        if config.augment:
            parse_augment(config.augment)
    except ValueError as exc:
        raise ModelFileError(one_line(f"{saved.path}: cannot resume: {exc}")) from None
    return config


def resume_run(saved: SavedModel | PathLike, config: TrainConfig | None = None, keep_last: bool | None = None) -> Run:
    """The run saved in ``saved`` (a loaded run file, or its path), ready to continue where it stopped.

    ``config`` is the saved configuration (``saved_config``) with the changes
    asked for; only ``epochs`` may differ, and not below the epochs already
    trained. The run serves its last epoch when ``keep_last`` is True, its
    best when False, and as saved when None; a file that serves its last
    epoch without the best one's weights beside them cannot serve its best.

    Raises:
        ModelFileError: a file that is not a run, or whose parts disagree (one line, naming the file).
        ValueError: a change of the configuration other than ``epochs``, fewer epochs than trained,
            or ``keep_last=False`` for a file that holds only its last epoch's weights.
    """
    if not isinstance(saved, SavedModel):
        saved = load_model(saved)
    stored = saved_config(saved)
    config = stored if config is None else config
    changed = changed_settings(stored, config)
    if changed:
        raise ValueError(
            "a resumed run continues its saved configuration; only the epochs and the epoch it serves may change, "
            f"not {', '.join(changed)}"
        )
    assert saved.resume is not None  # saved_config refused files without it
    done = saved.resume.epochs_completed
    if config.epochs < done:
        raise ValueError(f"{one_line(str(saved.path))} has already trained {done} epochs, more than {config.epochs}")
    try:
        run = _restore(saved, config)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(one_line(f"{saved.path}: cannot resume: {exc}")) from None
    if keep_last is False and run.best_params is None and run.history.best() is not None:
        raise ValueError(
            f"{one_line(str(saved.path))} holds only its last epoch's weights, not its best's, "
            "so it can serve only its last epoch"
        )
    if keep_last is not None:
        run.keep_last = keep_last
    return run


def changed_settings(stored: TrainConfig, config: TrainConfig) -> list[str]:
    """The settings of ``config`` that differ from the saved ``stored``, epochs aside: what a resume refuses."""
    fields = dataclasses.fields(config)
    return [f.name for f in fields if f.name != "epochs" and getattr(config, f.name) != getattr(stored, f.name)]


def _served_rule(saved: SavedModel) -> str:
    """Which epoch a saved run serves, "best" or "last" (ValueError for anything else)."""
    rule = saved.metadata.get("served")
    if rule not in ("best", "last"):
        raise ValueError(f"metadata 'served' should be 'best' or 'last', got {short(rule)}")
    return str(rule)


def _restore(saved: SavedModel, config: TrainConfig) -> Run:
    """``Run.restore`` from the file's parts, each checked against the others (ValueError or TypeError)."""
    assert saved.resume is not None
    state, metadata = saved.resume, saved.metadata
    done = state.epochs_completed
    rule = _served_rule(saved)
    served_epoch = metadata.get("epoch")
    if isinstance(served_epoch, bool) or not isinstance(served_epoch, int):
        raise ValueError(f"metadata 'epoch' should be the served epoch's number, got {short(served_epoch)}")
    if metadata.get("epochs_completed", done) != done:
        raise ValueError(f"metadata 'epochs_completed' is {short(metadata.get('epochs_completed'))}, not {done}")
    history = History.from_list(metadata.get("history"))
    rng = np.random.default_rng()
    rng.bit_generator.state = state.rng_state
    run = Run.restore(
        config,
        saved.network,
        params=state.params,
        optimizer_state=state.optimizer,
        rng=rng,
        history=history,
        served_is_best=rule == "best",
        served_epoch=served_epoch,
        epochs_completed=done,
    )
    best = history.best()
    if rule == "last" and state.best_params is not None:
        if best is None or state.best_epoch != best.epoch:
            expected = "no validated epoch" if best is None else f"epoch {best.epoch}"
            raise ValueError(f"its best weights are said to be epoch {state.best_epoch}'s, not {expected}")
        run.best_params, run.best_epoch = state.best_params, best.epoch
    return run
