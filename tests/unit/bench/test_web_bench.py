"""``bench/web.py`` keeps working: its help, and a tiny run against the real services (PostgreSQL,
``radground web`` and ``radground node``, Orthanc with its DICOMweb plugin, dcmtk's storescu)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BENCH = REPO / "bench" / "web.py"


def _run(
    *args: str, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


def test_help_explains_the_parts_and_options() -> None:
    result = _run("--help", timeout=60)

    assert result.returncode == 0, result.stderr
    for text in ("--quick", "--jobs", "--part", "--per-request", "STOW-RS", "Orthanc",
                 "SQLAlchemy", "radground web"):
        assert text in result.stdout


def test_bad_arguments_are_refused() -> None:
    result = _run("--instances", "2", "--per-request", "5", timeout=60)

    assert result.returncode == 2
    assert "--per-request" in result.stderr


@pytest.mark.postgres
@pytest.mark.slow
def test_a_tiny_run_measures_every_page_and_receiver(
    tmp_path: Path, postgres_server_url: str, shared_data: Path
) -> None:
    numbers = tmp_path / "web.json"
    env = {**os.environ, "RADGROUND_BENCH_POSTGRES_URL": postgres_server_url}

    result = _run("--jobs", "1000", "--iterations", "3", "--warmup", "1", "--instances", "4",
                  "--per-request", "2", "--data", str(shared_data), "--json", str(numbers),
                  timeout=240, env=env)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    found = json.loads(numbers.read_text())
    assert found["jobs"] == 1000
    pages = found["latency_ms"]
    assert {"API jobs, first page", "API job", "console jobs page", "console job page"} <= set(
        pages)
    for name, page in pages.items():
        assert 0 < page["direct_p50"] and 0 < page["http_p50"], name
    assert set(found["ingest"]) == {"RadGround STOW-RS", "Orthanc DICOMweb STOW-RS",
                                    "RadGround C-STORE (storescu)", "Orthanc C-STORE (storescu)"}
    for name, row in found["ingest"].items():
        assert row["instances"] == 4 and row["instances_per_s"] > 0, name
    assert "HTTP / direct" in result.stdout and "RadGround / Orthanc" in result.stdout
