"""The import rules of docs/architecture.md: imports between RadGround's packages go one way.

Every ``import`` and ``from … import`` statement of every module is read with
:mod:`ast` (including imports inside functions), so a lazy import cannot hide
a dependency the table forbids.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Package -> the packages of ours it may import (docs/architecture.md, "Packages").
ALLOWED_IMPORTS: dict[str, frozenset[str]] = {
    "dicom_node": frozenset(),
    "engine": frozenset(),
    "exporters": frozenset({"engine"}),
    "worklist": frozenset({"dicom_node", "engine", "exporters"}),
    "web": frozenset({"dicom_node", "engine", "exporters", "worklist"}),
    "radground": frozenset({"dicom_node", "engine", "exporters", "worklist", "web"}),
}
OURS = frozenset(ALLOWED_IMPORTS)


def imported_packages_of_ours(path: Path) -> set[tuple[str, int]]:
    """(top-level package, line) of every absolute import of one of our packages in ``path``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        found.update((module.split(".")[0], node.lineno) for module in modules if module.split(".")[0] in OURS)
    return found


def violations(package: str) -> list[str]:
    allowed = ALLOWED_IMPORTS[package] | {package}
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        for imported, line in sorted(imported_packages_of_ours(path)):
            if imported not in allowed:
                found.append(f"{path.relative_to(REPO)}:{line} imports {imported}")
    return found


@pytest.mark.parametrize("package", [p for p in ALLOWED_IMPORTS if (REPO / p).is_dir()])
def test_package_imports_only_what_the_architecture_allows(package):
    assert violations(package) == [], f"{package} may import only {sorted(ALLOWED_IMPORTS[package])}"


def test_the_rule_check_sees_lazy_and_dotted_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import os\nimport engine.report\n"
        "def f():\n    from worklist.db import x\n    from . import sibling\n    import radground\n"
    )
    assert imported_packages_of_ours(module) == {("engine", 2), ("worklist", 4), ("radground", 6)}


def test_architecture_document_states_the_same_rules():
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    for package, allowed in ALLOWED_IMPORTS.items():
        if not (REPO / package).is_dir():
            continue
        row = next((line for line in text.splitlines() if line.startswith(f"| `{package}/`")), None)
        assert row is not None, f"docs/architecture.md has no row for {package}/"
        may_import = row.rstrip(" |").rsplit("|", 1)[-1]
        named = {name for name in OURS if f"`{name}`" in may_import}
        assert named == set(allowed) & {p for p in OURS if (REPO / p).is_dir()}, (package, may_import)
