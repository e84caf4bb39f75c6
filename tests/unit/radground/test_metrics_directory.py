"""Multi-process metrics: processes count in one directory and one exposition sums them; the
directory is set up before anything counts, cleared at node start, and a gone child's live
gauges stop counting."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from radground.metrics import MULTIPROCESS_ENVIRONMENT, process_gone

REPO = Path(__file__).resolve().parents[3]


def _python(code: str, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != MULTIPROCESS_ENVIRONMENT}
    environment["PYTHONPATH"] = str(REPO)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], check=False, cwd=REPO, env=environment,
        capture_output=True, text=True, timeout=60,
    )


def _summed(directory: Path) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=str(directory))
    return registry


_COUNT = """
    import os
    from dicom_node import metrics
    metrics.instance_stored("PACS", 100)
    metrics.association_opened()
    metrics.instance_refused(0xA700)
    print(os.getpid())
"""


def test_two_processes_count_and_the_exposition_sums_them(tmp_path, monkeypatch):
    env = {MULTIPROCESS_ENVIRONMENT: str(tmp_path)}
    pids = []
    for _ in range(2):
        run = _python(_COUNT, env=env)
        assert run.returncode == 0, run.stderr
        pids.append(int(run.stdout))

    summed = _summed(tmp_path)
    assert summed.get_sample_value(
        "radground_instances_received_total", {"calling_ae": "PACS"}) == 2
    assert summed.get_sample_value("radground_received_bytes_total", {"calling_ae": "PACS"}) == 200
    assert summed.get_sample_value(
        "radground_instances_refused_total", {"reason": "out_of_resources"}) == 2
    assert summed.get_sample_value("radground_associations_open") == 2

    monkeypatch.setenv(MULTIPROCESS_ENVIRONMENT, str(tmp_path))
    process_gone(pids[0])  # the supervisor saw it exit
    summed = _summed(tmp_path)
    assert summed.get_sample_value("radground_associations_open") == 1  # live gauges only
    assert summed.get_sample_value(
        "radground_instances_received_total", {"calling_ae": "PACS"}) == 2  # counters stay


def test_the_directory_is_made_cleared_and_inherited_before_anything_counts(tmp_path):
    directory = tmp_path / "web" / "metrics"
    directory.mkdir(parents=True)
    (directory / "counter_999999.db").write_bytes(b"stale")
    run = _python(f"""
        import os, subprocess, sys
        from pathlib import Path
        from radground.metrics import use_metrics_directory
        use_metrics_directory(Path({str(directory)!r}), clear=True)
        from dicom_node import metrics
        metrics.instance_stored("PARENT", 1)
        child = subprocess.run([sys.executable, "-c", {textwrap.dedent(_COUNT)!r}], check=True)
    """)
    assert run.returncode == 0, run.stderr
    assert not (directory / "counter_999999.db").exists()
    summed = _summed(directory)
    assert summed.get_sample_value(
        "radground_instances_received_total", {"calling_ae": "PARENT"}) == 1
    assert summed.get_sample_value(
        "radground_instances_received_total", {"calling_ae": "PACS"}) == 1  # the child's


def test_metrics_created_before_the_directory_is_set_up_are_refused(tmp_path):
    run = _python(f"""
        from pathlib import Path
        import dicom_node.metrics
        from radground.metrics import use_metrics_directory
        use_metrics_directory(Path({str(tmp_path)!r}), clear=True)
    """)
    assert run.returncode != 0
    assert "dicom_node.metrics imported before the metrics directory was set up" in run.stderr


@pytest.mark.parametrize("module", ["radground.cli", "radground.settings", "radground.worker"])
def test_the_command_line_creates_no_metrics_before_it_chose_their_mode(module):
    run = _python(f"""
        import sys, {module}
        print(sorted(m for m in sys.modules if m.endswith(".metrics") and m != "radground.metrics"))
    """)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
