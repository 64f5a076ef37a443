"""The commands of the README and the docs pages, as a user pastes them: each names a script, command and flags
that exist.

Every command line in the README's code blocks (``bash`` blocks, and the
``$ ...`` lines of ``text`` blocks) is split as the shell splits it and
checked without running it: a script must exist, and its arguments must
parse with the project's own argparse parser (``parse_args`` is stopped
before the command does anything); ``mnist-nn`` and ``python -m mnist_nn``
must name a subcommand whose parser accepts the rest; ``pip install``
extras must be declared in pyproject.toml; pytest paths and markers must
exist. Read in order, a bare ``python``, ``pip`` or ``mnist-nn`` must come
after ``source .venv/bin/activate`` (a fresh shell has no environment
active), and the ``import``s of the Python blocks must resolve. Inline
commands in the prose (`` `python scripts/...` ``, `` `mnist-nn ...` ``) are
checked the same way, except for their order and those with placeholders.
The pages under ``docs/`` are checked the same way, each assuming the
environment is active, and every relative link of the README must name a
file that exists.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import io
import re
import runpy
import shlex
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").rglob("*.md"))
PAGES = [README, *DOCS]
ACTIVATE = "source .venv/bin/activate"
VENV = ".venv/bin/"
SEPARATORS = {"&&", "||", ";", "|", "&"}


@dataclass(frozen=True)
class Command:
    """One simple command of the README: its words (environment assignments removed) and where it is."""

    words: tuple[str, ...]
    line: int  # 1-based line in README.md
    text: str  # the line as written, for messages

    def where(self) -> str:
        return f"README.md:{self.line}: {self.text.strip()}"


def _fenced_blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, line number of the first line, lines) of each fenced code block."""
    language: str | None = None
    start = 0
    lines: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if language is None:
                language, start, lines = line[3:].strip(), number + 1, []
            else:
                yield language, start, lines
                language = None
        elif language is not None:
            lines.append(line)


def _split(text: str, line: int) -> list[Command]:
    """A shell line's simple commands (split at ``&&``, ``;``, ``|``, ``&``), comments and ``VAR=value`` dropped."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[Command] = []
    words: list[str] = []
    for token in [*lexer, ";"]:
        if token in SEPARATORS:
            if words:
                commands.append(Command(tuple(words), line, text))
            words = []
        elif words or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", token):
            words.append(token)
    return commands


def block_commands(readme: str) -> list[Command]:
    """Every command of the README's bash blocks and ``$`` lines of text blocks, in order."""
    commands = []
    for language, start, lines in _fenced_blocks(readme):
        if language not in ("bash", "sh", "shell", "text", "console"):
            continue
        pending, first = "", start
        for offset, line in enumerate(lines):
            if language in ("text", "console"):
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if not pending:
                first = start + offset
            if line.rstrip().endswith("\\"):  # a continued line
                pending += line.rstrip()[:-1] + " "
                continue
            commands += _split(pending + line, first)
            pending = ""
    return commands


INLINE_PROGRAMS = ("python scripts/", "python -m mnist_nn", "mnist-nn ", "env ")


def inline_commands(readme: str) -> list[Command]:
    """Commands quoted in the prose, without placeholders (``[...]``, ``...``, ``MODEL``, ``COMMAND``)."""
    commands = []
    for number, line in enumerate(readme.splitlines(), 1):
        for span in re.findall(r"`([^`]+)`", line):
            if not span.startswith(INLINE_PROGRAMS) or "[" in span or "..." in span:
                continue
            if any(re.fullmatch(r"[A-Z][A-Z_]+", word) for word in span.split()):
                continue
            commands += _split(span, number)
    return commands


# --- what a command may name -----------------------------------------------------------------


class _Parsed(BaseException):
    """Raised instead of returning from ``parse_args``, so that the command stops there."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__()
        self.parser = parser


# Whether parse_args only hands over its parser (the names in the prose are checked, not whole lines).
_NAMES_ONLY = False


@contextlib.contextmanager
def _parse_only() -> Iterator[io.StringIO]:
    """Make every ArgumentParser stop the program right after parsing; collect what argparse prints."""
    original = argparse.ArgumentParser.parse_args

    def parse_args(self: argparse.ArgumentParser, args: Sequence[str] | None = None, namespace: Any = None) -> NoReturn:
        if not _NAMES_ONLY:
            original(self, args, namespace)
        raise _Parsed(self)

    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stderr):
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
        yield stderr


def _check_parses(command: Command, run: Any) -> None:
    """Run ``run()`` with parsing only; fail unless it reached a parser that accepted the arguments."""
    with _parse_only() as output:
        try:
            code = run()
        except _Parsed as parsed:
            if _NAMES_ONLY:
                flags = {word.split("=")[0] for word in command.words if word.startswith("--")}
                unknown = flags - _option_strings(parsed.parser)
                assert not unknown, f"{command.where()}\n  no such flags: {sorted(unknown)}"
            return
        except SystemExit as exc:
            code = exc.code
    pytest.fail(f"{command.where()}\n  does not parse (exit {code}): {output.getvalue().strip()}")


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of a parser and of its subcommands' parsers."""
    options = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                options |= _option_strings(subparser)
    return options


def _check_script(command: Command, args: Sequence[str]) -> None:
    script = ROOT / args[0]
    if not script.is_file():
        pytest.fail(f"{command.where()}\n  no such script: {args[0]}")
    text = script.read_text()
    assert "parse_args" in text or re.search(r"from mnist_nn\.cli(\.\w+)? import \w+_main", text), script
    argv = sys.argv
    sys.argv = [str(script), *args[1:]]
    try:
        _check_parses(command, lambda: runpy.run_path(str(script), run_name="__main__"))
    finally:
        sys.argv = argv


def _check_mnist_nn(command: Command, args: Sequence[str]) -> None:
    from mnist_nn.cli import SUBCOMMANDS, main

    if not args or args[0] not in SUBCOMMANDS:
        pytest.fail(f"{command.where()}\n  expected one of the subcommands {', '.join(SUBCOMMANDS)}")
    _check_parses(command, lambda: main(list(args)))


def _declared_extras() -> set[str]:
    """The names of pyproject.toml's [project.optional-dependencies] (read without tomllib, for Python 3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", section, re.M))


def _check_pip(command: Command, args: Sequence[str]) -> None:
    assert args[:1] == ("install",), command.where()
    for target in args[1:]:
        match = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", target)
        if target.startswith("-"):
            assert target in ("-e", "--editable", "-U", "--upgrade"), command.where()
        elif match is None:
            pytest.fail(f"{command.where()}\n  installs something other than this project: {target}")
        elif match.group(1):
            unknown = set(match.group(1).split(",")) - _declared_extras()
            assert not unknown, f"{command.where()}\n  extras not in pyproject.toml: {sorted(unknown)}"


def _check_pytest(command: Command, args: Sequence[str]) -> None:
    words = iter(args)
    for word in words:
        if word == "-m":
            marker = next(words)
            assert f'"{marker}:' in (ROOT / "pyproject.toml").read_text(), f"{command.where()}: no marker {marker}"
        elif not word.startswith("-"):
            assert (ROOT / word.split("::")[0]).exists(), f"{command.where()}\n  no such test path: {word}"


def _check_python(command: Command, args: Sequence[str]) -> None:
    if args[:2] == ("-m", "pytest"):
        _check_pytest(command, args[2:])
    elif args[:2] == ("-m", "mnist_nn"):
        _check_mnist_nn(command, args[2:])
    elif args[:1] and args[0].startswith("scripts/"):
        _check_script(command, args)
    elif args[:1] == ("-m",) and len(args) > 1 and args[1].startswith("tests."):
        module = ROOT / (args[1].replace(".", "/") + ".py")
        assert module.is_file(), f"{command.where()}\n  no such module: {args[1]}"
    else:
        pytest.fail(f"{command.where()}\n  expected scripts/..., -m pytest, -m mnist_nn or -m tests.<module>")


def _check_dask(command: Command, args: Sequence[str]) -> None:
    """``dask scheduler`` or ``dask worker`` (the distributed extra), whose options must parse when it is installed."""
    if args[:1] not in (("scheduler",), ("worker",)):
        pytest.fail(f"{command.where()}\n  expected 'dask scheduler' or 'dask worker'")
    try:
        cli = importlib.import_module(f"distributed.cli.dask_{args[0]}")
        click = importlib.import_module("click")
    except ImportError:
        return  # without the extra, only the subcommand is checked
    try:
        cli.main.make_context(f"dask {args[0]}", list(args[1:]))  # parses, runs nothing
    except click.exceptions.ClickException as exc:
        pytest.fail(f"{command.where()}\n  does not parse: {exc.format_message()}")


def check_command(command: Command, active: bool) -> None:
    """Fail unless ``command`` names what exists and, with ``active`` False, needs no active environment."""
    words = list(command.words)
    if words[0] == "env":  # env [-u NAME]... [NAME=value]... program ...
        words = words[1:]
        while words and (words[0] == "-u" or "=" in words[0]):
            words = words[2:] if words[0] == "-u" else words[1:]
    program, args = words[0], tuple(words[1:])
    if program in ("python", "pip", "mnist-nn") and not active:
        pytest.fail(f"{command.where()}\n  '{program}' before '{ACTIVATE}': a fresh shell does not have it")
    program = program.removeprefix(VENV)
    if program == "python3":
        assert args == ("-m", "venv", ".venv"), command.where()
    elif program == "python":
        _check_python(command, args)
    elif program == "pip":
        _check_pip(command, args)
    elif program == "mnist-nn":
        _check_mnist_nn(command, args)
    elif program == "dask":
        _check_dask(command, args)
    else:
        pytest.fail(f"{command.where()}\n  a program this test does not know: {program}")


# --- the tests -------------------------------------------------------------------------------


def test_every_command_in_the_readme_exists_and_runs_in_a_fresh_shell_in_order() -> None:
    commands = block_commands(README.read_text())
    assert len(commands) > 5
    active = False
    for command in commands:
        if " ".join(command.words) == ACTIVATE:
            active = True
            continue
        check_command(command, active)
    assert active, f"the README never says '{ACTIVATE}'"


@pytest.mark.parametrize("page", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_command_of_a_docs_page_exists(page: Path) -> None:
    for command in block_commands(page.read_text()):
        if " ".join(command.words) != ACTIVATE:
            check_command(command, active=True)


def test_the_commands_the_prose_quotes_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    commands = [command for page in PAGES for command in inline_commands(page.read_text())]
    assert len(commands) > 5
    monkeypatch.setattr(sys.modules[__name__], "_NAMES_ONLY", True)  # `mnist-nn evaluate` names a command
    for command in commands:
        check_command(command, active=True)


def test_the_readmes_links_name_files_that_exist() -> None:
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert len(local) > 5
    assert [link for link in local if not (ROOT / link).exists()] == []


def test_the_main_jobs_flag_table_names_train_flags() -> None:
    from mnist_nn.cli.train import build_train_parser

    page = ROOT / "docs" / "user-guide" / "train.md"
    section = page.read_text().split("## The main job", 1)[1].split("\n## ", 1)[0]
    flags = set(re.findall(r"^\| `[^|]*", section, re.M))
    options = build_train_parser()._option_string_actions
    named = {flag for row in flags for flag in re.findall(r"--[a-z0-9-]+", row)}
    assert len(named) > 10 and not named - set(options), sorted(named - set(options))


def _import_declared(name: str, where: str) -> Any:
    """The module ``name``; None for a package of an extra this environment lacks (asserting the project names it)."""
    top = name.split(".")[0]
    if top != "mnist_nn" and importlib.util.find_spec(top) is None:
        pyproject = (ROOT / "pyproject.toml").read_text()
        assert re.search(rf'"{re.escape(top)}\b', pyproject), f"{where}: {top} is neither installed nor an extra"
        return None
    return importlib.import_module(name)


@pytest.mark.parametrize("page", PAGES, ids=lambda path: str(path.relative_to(ROOT)))
def test_the_python_blocks_import_what_exists(page: Path) -> None:
    for language, start, lines in _fenced_blocks(page.read_text()):
        if language != "python":
            continue
        for node in ast.walk(ast.parse("\n".join(lines))):
            where = f"{page.name}:{start + getattr(node, 'lineno', 1) - 1}"
            if isinstance(node, ast.ImportFrom) and node.module:
                module = _import_declared(node.module, where)
                missing = [a.name for a in node.names if module is not None and not hasattr(module, a.name)]
                assert not missing, f"{where}: {node.module} has no {missing}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    _import_declared(alias.name, where)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("python scripts/train_mnist.py --epochs 1", "before 'source .venv/bin/activate'"),
        ("source .venv/bin/activate && python scripts/no_such.py", "no such script"),
        ("source .venv/bin/activate && python scripts/train_mnist.py --epoch-count 3", "does not parse"),
        ("source .venv/bin/activate && mnist-nn fly", "expected one of the subcommands"),
        ("source .venv/bin/activate && mnist-nn show --mistakes", "does not parse"),
        ("source .venv/bin/activate && pip install -e '.[nosuchextra]'", "extras not in pyproject.toml"),
        ("source .venv/bin/activate && python -m pytest tests/test_nothing.py", "no such test path"),
        ("dask schedule", "expected 'dask scheduler' or 'dask worker'"),
    ],
)
def test_the_checks_catch_what_a_user_would_hit(line: str, problem: str) -> None:
    readme = f"# x\n\n```bash\n{line}\n```\n"
    with pytest.raises((pytest.fail.Exception, AssertionError), match=re.escape(problem)):
        active = False
        for command in block_commands(readme):
            if " ".join(command.words) == ACTIVATE:
                active = True
            else:
                check_command(command, active)
