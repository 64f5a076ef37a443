"""What the package declares: its license, its typing marker, its extras and the versions CI tests.

The checks of pyproject.toml need ``tomllib`` (Python 3.11+), so on 3.10 they are skipped;
CI runs them on its newest Python.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import mnist_nn

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return project


def _lowest_constraints() -> ModuleType:
    """``.ci/lowest_constraints.py``, imported from its path (``.ci`` is not a package)."""
    spec = importlib.util.spec_from_file_location("lowest_constraints", ROOT / ".ci" / "lowest_constraints.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _readme_test_command() -> str:
    """The command under the README's "Set up and run the tests"."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"Set up and run the tests:\s*```bash\n(.+?)\n```", readme)
    assert match is not None, "the README lost its 'Set up and run the tests:' block"
    return match[1].strip()


def test_the_package_says_it_is_typed() -> None:
    assert (Path(mnist_nn.__file__).parent / "py.typed").is_file()
    package_data = _pyproject()["tool"]["setuptools"]["package-data"]["mnist_nn"]
    assert "py.typed" in package_data


def test_the_license_file_matches_the_spdx_license() -> None:
    project = _pyproject()["project"]
    assert project["license"] == "MIT"  # an SPDX expression, not the deprecated table
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License\n")
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # PEP 639 forbids both


def test_the_classifiers_name_the_lowest_python_allowed() -> None:
    project = _pyproject()["project"]
    lowest = _lowest_constraints().lowest_python(project["requires-python"])
    assert f"Programming Language :: Python :: {lowest}" in project["classifiers"]
    assert "Typing :: Typed" in project["classifiers"]


def test_running_the_tests_needs_no_linter_or_browser_driver() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    names = {re.split(r"[^A-Za-z0-9_.-]", r, maxsplit=1)[0].lower() for r in extras["test"]}
    tools = {"mypy", "ruff", "import-linter", "playwright", "types-requests", "types-tqdm", "mkdocs", "mkdocstrings"}
    assert names.isdisjoint(tools)
    assert "mnist-nn[images,plot,bench,export,fast]" in extras["test"]  # the runtime extras' floors, stated once
    # CI runs the Dask tests too, and builds the documentation site.
    assert extras["dev"] == ["mnist-nn[test,browser,lint,docs,distributed]"]


def test_ci_runs_the_readme_test_command_word_for_word() -> None:
    command = _readme_test_command()
    assert command.endswith(".venv/bin/python -m pytest"), command
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert any(line == command or line.startswith(f"{command} || ") for line in lines), command


def test_lowest_constraints_pin_every_runtime_floor() -> None:
    lowest = _lowest_constraints()
    requirements = [
        "numpy>=1.24",
        "requests >= 2.28",
        'Pillow>=9.0; extra == "images"',
        'matplotlib>=3.8; extra == "plot"',
        'threadpoolctl>=3.1; extra == "bench"',
        'threadpoolctl>=3.1; extra == "bench"',
        'pytest>=7.4; extra == "test"',
        'mnist-nn[images,plot,bench]; extra == "test"',
        'types-tqdm; extra == "lint"',
    ]
    assert lowest.lowest_pins(requirements) == [
        "numpy==1.24",
        "requests==2.28",
        "Pillow==9.0",
        "matplotlib==3.8",
        "threadpoolctl==3.1",
    ]
    with pytest.raises(ValueError, match="of the form 'name>=X'"):
        lowest.lowest_pins(["numpy"])  # a runtime requirement with no floor tests nothing
    with pytest.raises(ValueError, match="of the form 'name>=X'"):
        lowest.lowest_pins(["numpy>=1.24,<3"])
    with pytest.raises(ValueError, match="neither runtime"):
        lowest.lowest_pins(['scipy>=1.10; extra == "photos"'])
    assert lowest.lowest_python(">=3.10") == "3.10"
    with pytest.raises(ValueError, match="requires-python"):
        lowest.lowest_python("~=3.10")


def test_lowest_constraints_cover_pyprojects_runtime_requirements() -> None:
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    lowest = _lowest_constraints()
    assert set(extras) == set(lowest.RUNTIME_EXTRAS) | set(lowest.TOOL_EXTRAS)
    requirements = list(project["dependencies"])
    for name in lowest.RUNTIME_EXTRAS:
        requirements += [f'{r}; extra == "{name}"' for r in extras[name]]
    pins = lowest.lowest_pins(requirements)
    names = [p.split("==")[0] for p in pins]
    assert names == [
        "numpy",
        "requests",
        "urllib3",
        "tqdm",
        "Pillow",
        "scipy",
        "matplotlib",
        "threadpoolctl",
        "onnx",
        "distributed",
    ]


def _functions() -> list[tuple[str, int]]:
    """Every function of the package as ("path:name", its length in lines, decorators and docstring included)."""
    found = []
    for path in sorted((ROOT / "mnist_nn").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                assert node.end_lineno is not None
                found.append((f"{path.relative_to(ROOT)}:{node.name}", node.end_lineno - first + 1))
    return found


def test_no_function_is_longer_than_100_lines_and_fit_reads_in_60() -> None:
    lengths = _functions()
    assert len(lengths) > 500
    assert [(name, n) for name, n in lengths if n > 100] == []
    assert dict(lengths)["mnist_nn/train/loop.py:fit"] <= 60
