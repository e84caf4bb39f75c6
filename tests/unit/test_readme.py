"""The README opens with the two commands, points at files that exist, and speaks to users."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_make_serve_and_make_test_and_both_targets_exist():
    first_block = README.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in first_block.splitlines()]
    assert commands == ["make serve", "make test"]
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^serve:", makefile, flags=re.MULTILINE)
    assert re.search(r"^test:", makefile, flags=re.MULTILINE)


def test_every_repository_path_the_readme_names_exists():
    named = set(re.findall(r"`((?:docs|engine|exporters|bench|config|dicom_node|worklist)/[^`\s]+)`", README))
    assert named, "the README names no repository files"
    missing = sorted(path for path in named if not (REPO / path.rstrip("/")).exists())
    assert missing == []


def test_readme_points_at_docs_in_the_repository_not_outside_it():
    assert "../shared" not in README
    for document in ("docs/architecture.md", "docs/conformance.md", "docs/performance.md"):
        assert f"`{document}`" in README
        assert (REPO / document).is_file()


def test_readme_tells_no_history_of_the_numbers():
    assert not re.search(r"\bstop \d+\b|previous stop|after the fix|before the fix", README, flags=re.IGNORECASE)


def test_every_benchmark_has_a_section_with_its_command():
    for script in sorted((REPO / "bench").glob("[!_]*.py")):
        assert f"bench/{script.name}" in README, f"the README has no table for bench/{script.name}"
