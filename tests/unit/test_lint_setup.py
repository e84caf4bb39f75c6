"""CI lints and type-checks: `.ci/run` runs `make lint` (ruff, mypy) before the tests, the tools
are pinned, every package is typed (PEP 561 `py.typed`), and the tree is ruff-clean."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGES = ["dicom_node", "engine", "exporters", "worklist", "radground", "web"]


def _make_recipe(target: str) -> list[str]:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    match = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    assert match, f"the Makefile has no {target} target"
    return [line.strip() for line in match.group(1).splitlines()]


def test_ci_runs_make_lint_before_make_test():
    commands = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "set -euo pipefail" in commands  # a failing lint stops CI
    assert commands.index("make lint") < commands.index("make test")


def test_make_lint_runs_ruff_on_the_tree_and_mypy_with_the_configured_packages():
    assert _make_recipe("lint") == [".venv/bin/ruff check .", ".venv/bin/mypy"]
    assert PYPROJECT["tool"]["mypy"]["packages"] == PACKAGES
    assert PYPROJECT["tool"]["ruff"]["line-length"] == 100
    assert "E501" in PYPROJECT["tool"]["ruff"]["lint"]["extend-select"]


@pytest.mark.parametrize("tool", ["ruff", "mypy"])
def test_lint_tools_are_pinned_in_the_test_extra_and_installed_at_that_version(tool: str):
    pins = [
        requirement
        for requirement in PYPROJECT["project"]["optional-dependencies"]["test"]
        if re.split(r"[=<>!~ \[]", requirement, maxsplit=1)[0] == tool
    ]
    assert len(pins) == 1 and "==" in pins[0], pins
    assert importlib.metadata.version(tool) == pins[0].split("==", 1)[1]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_ships_a_py_typed_marker(package: str):
    assert (REPO / package / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["*"]


def test_mypy_ignores_missing_imports_only_per_module():
    mypy = PYPROJECT["tool"]["mypy"]
    assert "ignore_missing_imports" not in mypy
    for override in mypy.get("overrides", []):
        if override.get("ignore_missing_imports"):
            modules = override["module"]
            assert not any(m.split(".")[0] in PACKAGES for m in modules), modules


def test_mypy_reports_errors_in_every_module():
    overrides = PYPROJECT["tool"]["mypy"].get("overrides", [])
    assert [o["module"] for o in overrides if o.get("ignore_errors")] == []


def test_the_tree_is_ruff_clean():
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
