"""Cache-folder and disk problems end in one line and exit code 1, for every command that loads data or writes JSON.

The data folder is a regular file, a read-only folder, a folder with another
folder where ``train-images-idx3-ubyte`` belongs, or a disk that fills during
the download; ``--json`` goes onto a disk that is full. A read-only folder is
made with ``chmod`` when the tests do not run as root (root writes anyway), or
as a read-only tmpfs in a private mount namespace (``unshare -m``) where that
is allowed; a full disk is a tiny tmpfs the same way, or, anywhere on Linux, a
limit on file sizes (``RLIMIT_FSIZE``), which fails writes with EFBIG as a full
disk fails them with ENOSPC. Tests that need what this machine cannot give are
skipped, saying why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mnist_nn.cli import download_main, evaluate_main, train_main
from mnist_nn.cli.predict import predict_main
from mnist_nn.cli.show import show_main
from mnist_nn.config import DATA_ENV
from mnist_nn.models import load_model
from mnist_nn.train import checkpoint
from tests.conftest import real_mirror

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[1]
MainFunction = Callable[..., int]
RUN_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
TINY_DISK = "size=64k"  # a tmpfs far too small for the 47 MB training images


def _commands(model: Path) -> dict[str, tuple[MainFunction, list[str]]]:
    """Each command that loads MNIST, with the arguments it needs besides --data-dir."""
    return {
        "download": (download_main, []),
        "train": (train_main, ["--epochs", "1", "--hidden", "10"]),
        "evaluate": (evaluate_main, [str(model)]),
        "show": (show_main, []),
    }


COMMANDS = ["download", "train", "evaluate", "show"]


def _one_line(code: int, err: str) -> str:
    """The single stderr line of a command that failed with exit code 1, checked to be one line."""
    assert code == 1, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _cli(args: Sequence[str], *, fsize: int | None = None, mount: tuple[Path, str] | None = None) -> tuple[int, str]:
    """Run ``python -m mnist_nn ARGS`` in a child process; return its exit code and stderr.

    ``fsize`` limits the size of every file the child writes (RLIMIT_FSIZE);
    ``mount`` = (folder, tmpfs options) mounts a tmpfs there in the child's own
    mount namespace, first filling it when the options say ``full``.
    """
    env = {k: v for k, v in os.environ.items() if k != DATA_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "mnist_nn", *args]
    if mount is not None:
        folder, options = mount
        fill = f" && (cat /dev/zero > {folder}/fill 2>/dev/null || true)" if "full" in options.split(",") else ""
        options = ",".join(o for o in options.split(",") if o != "full")
        script = f'mount -t tmpfs -o {options} tmpfs {folder}{fill} && exec "$@"'
        command = ["unshare", "-m", "sh", "-c", script, "sh", *command]

    def limit() -> None:
        import resource

        assert fsize is not None
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    result = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        preexec_fn=limit if fsize is not None else None,
    )
    return result.returncode, result.stderr


@pytest.fixture(scope="module")
def mount_namespace(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip unless this machine lets a child mount a tmpfs in its own mount namespace."""
    if shutil.which("unshare") is None or not sys.platform.startswith("linux"):
        pytest.skip("needs Linux's unshare to mount a tmpfs")
    folder = tmp_path_factory.mktemp("probe")
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=4k tmpfs {folder}"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("cannot mount a tmpfs in a private mount namespace here (needs root or user namespaces)")


# --- the data folder ---------------------------------------------------------------------


@pytest.mark.parametrize("name", COMMANDS)
def test_a_regular_file_as_the_data_folder(
    name: str, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.write_text("not a folder")
    main, args = _commands(model)[name]

    line = _one_line(main([*args, "--data-dir", str(data_dir)], f"mnist-nn {name}"), capsys.readouterr().err)

    assert f"the data folder {data_dir} is a file, not a folder" in line
    assert "--data-dir" in line
    assert data_dir.read_text() == "not a folder"


def test_a_data_folder_below_a_regular_file(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")

    code = show_main(["--data-dir", str(tmp_path / "file" / "data")], "mnist-nn show")

    line = _one_line(code, capsys.readouterr().err)
    assert f"cannot be made: {tmp_path / 'file'} is a file, not a folder" in line


@pytest.mark.parametrize("name", COMMANDS)
def test_a_folder_where_a_data_file_belongs(
    name: str, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror = real_mirror()
    in_the_way = tmp_path / "data" / "train-images-idx3-ubyte"
    (in_the_way / "something").mkdir(parents=True)
    main, args = _commands(model)[name]

    code = main([*args, "--data-dir", str(tmp_path / "data"), "--mirror", mirror], f"mnist-nn {name}")

    line = _one_line(code, capsys.readouterr().err)
    assert f"{in_the_way} is a folder, where the data file train-images-idx3-ubyte belongs" in line
    assert (in_the_way / "something").is_dir()
    assert sorted(os.listdir(tmp_path / "data")) == ["train-images-idx3-ubyte"]  # no temporary file left


@pytest.mark.skipif(RUN_AS_ROOT or sys.platform == "win32", reason="root writes into read-only folders anyway")
@pytest.mark.parametrize("name", COMMANDS)
def test_a_data_folder_without_write_permission(
    name: str, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror = real_mirror()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o555)
    main, args = _commands(model)[name]
    try:
        code = main([*args, "--data-dir", str(data_dir), "--mirror", mirror], f"mnist-nn {name}")
    finally:
        data_dir.chmod(0o755)

    line = _one_line(code, capsys.readouterr().err)
    assert f"cannot write in the data folder {data_dir}: Permission denied" in line


@pytest.mark.parametrize("name", COMMANDS)
def test_a_read_only_disk_as_the_data_folder(name: str, model: Path, tmp_path: Path, mount_namespace: None) -> None:
    mirror = real_mirror()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _, args = _commands(model)[name]

    code, err = _cli([name, *args, "--data-dir", str(data_dir), "--mirror", mirror], mount=(data_dir, "ro,size=64k"))

    line = _one_line(code, err)
    assert f"cannot write in the data folder {data_dir}: Read-only file system" in line
    assert "--data-dir" in line


@pytest.mark.parametrize("name", ["download", "train", "show"])
def test_a_disk_that_fills_during_the_download(name: str, model: Path, tmp_path: Path, mount_namespace: None) -> None:
    mirror = real_mirror()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _, args = _commands(model)[name]

    code, err = _cli([name, *args, "--data-dir", str(data_dir), "--mirror", mirror], mount=(data_dir, TINY_DISK))

    line = _one_line(code, err)
    assert f"no room for train-images-idx3-ubyte (47.0 MB) in the data folder {data_dir}" in line
    assert "No space left on device (the disk is full" in line


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs RLIMIT_FSIZE")
@pytest.mark.parametrize("name", ["download", "evaluate"])
def test_a_file_size_limit_reached_during_the_download(name: str, model: Path, tmp_path: Path) -> None:
    mirror = real_mirror()
    _, args = _commands(model)[name]

    code, err = _cli([name, *args, "--data-dir", str(tmp_path / "data"), "--mirror", mirror], fsize=1 << 20)

    line = _one_line(code, err)
    assert "no room for train-images-idx3-ubyte (47.0 MB) in the data folder" in line
    assert "File too large" in line
    assert not (tmp_path / "data").exists()  # the partial file is gone, and the folder the download made


# --- JSON outputs ------------------------------------------------------------------------


def _json_commands(model: Path, digit: Path, cache: Path) -> dict[str, list[str]]:
    data = ["--data-dir", str(cache)]
    return {
        "predict": ["predict", str(model), str(digit)],
        "evaluate": ["evaluate", str(model), *data],
        "train": ["train", "--epochs", "1", "--hidden", "10", *data],
    }


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs RLIMIT_FSIZE")
@pytest.mark.parametrize("name", ["predict", "evaluate", "train"])
def test_json_onto_a_disk_that_refuses_the_bytes(
    name: str, model: Path, digit: Path, mnist_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.json"
    out.write_text("[]\n")  # an earlier result, which must survive

    code, err = _cli([*_json_commands(model, digit, mnist_cache)[name], "--json", str(out)], fsize=64)

    line = _one_line(code, err)
    assert f"cannot write {out}: File too large" in line
    assert out.read_text() == "[]\n"
    assert os.listdir(tmp_path) == ["out.json"]


@pytest.mark.parametrize("name", ["predict", "evaluate"])
def test_json_onto_a_full_disk(
    name: str, model: Path, digit: Path, mnist_cache: Path, tmp_path: Path, mount_namespace: None
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    out = disk / "out.json"

    code, err = _cli(
        [*_json_commands(model, digit, mnist_cache)[name], "--json", str(out)], mount=(disk, "size=4k,full")
    )

    line = _one_line(code, err)
    assert f"cannot write {out}: No space left on device (the disk is full" in line


def test_json_path_with_a_line_break_stays_on_one_line(
    model: Path, digit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "a\nb"
    folder.mkdir()
    out = folder / "sub"
    out.mkdir()  # a folder where the JSON file should go

    code = predict_main([str(model), str(digit), "--json", str(out)], "mnist-nn predict")

    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "a\\nb" in err


@contextlib.contextmanager
def _read_only_folder(folder: Path) -> Iterator[None]:
    """``folder`` refuses new and removed entries: chmod for a user, the immutable flag (chattr +i) for root."""
    if not RUN_AS_ROOT:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], check=False).returncode:
        pytest.skip("root writes into a chmod-ed folder, and chattr +i is not available here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_save_folder_that_turns_read_only_mid_run_gives_one_line(
    mnist_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    model = folder / "m.npz"
    real_save = checkpoint.save_run
    turned = contextlib.ExitStack()

    def save_then_turn_read_only(*args: Any, **kwargs: Any) -> int:
        correct = real_save(*args, **kwargs)
        turned.enter_context(_read_only_folder(folder))  # after the first checkpoint: the next save fails
        return correct

    monkeypatch.setattr(checkpoint, "save_run", save_then_turn_read_only)
    argv = ["--data-dir", str(mnist_cache), "--epochs", "3", "--hidden", "10", "--quiet"]
    with turned:
        code = train_main([*argv, "--checkpoint-every", "1", "--save", str(model)])
    err = capsys.readouterr().err
    line = _one_line(code, err)  # not a second one about the lock file it could not remove
    assert f"cannot save the model to {model}" in line
    assert load_model(model).metadata["epochs_completed"] == 1  # the first checkpoint is intact
    # The lock file left behind is free: the next run takes it over.
    monkeypatch.undo()
    assert train_main([*argv, "--epochs", "1", "--save", str(model)]) == 0
    assert sorted(os.listdir(folder)) == ["m.npz"]
