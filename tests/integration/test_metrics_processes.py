"""`radground node` with two listener processes, started as an operator starts it: dcmtk's
storescu sends over concurrent associations, the listener processes count in the metrics
directory under web.state_dir, and one exposition sums them; a stale file of an earlier run is
cleared at start, and a killed listener's live gauge stops counting."""

from __future__ import annotations

import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.factories import write_series
from tests.integration.dcmtk import echoscu, storescu
from tests.integration.radground_processes import (
    RadGroundProcess,
    child_processes,
    free_port,
    wait_until,
    write_config,
)


def _summed(directory) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=str(directory))
    return registry


def _pids(directory, prefix: str) -> set[int]:
    return {
        int(match.group(1))
        for path in directory.iterdir()
        if (match := re.fullmatch(rf"{prefix}_(\d+)\.db", path.name))
    }


def test_listener_processes_count_into_one_exposition(tmp_path):
    port = free_port()
    metrics = tmp_path / "web" / "metrics"
    metrics.mkdir(parents=True)
    (metrics / "counter_4194000.db").write_bytes(b"left by an earlier run")
    config = write_config(
        tmp_path / "radground.toml", workdir=tmp_path, port=port,
        database_url=f"sqlite:///{tmp_path / 'radground.db'}",
        broker_url=f"radground+sqlite:///{tmp_path / 'broker.sqlite'}",
        pacs_port=None, fhir_url=None, route_destinations=(),
        extra_toml=f'[web]\nstate_dir = "{tmp_path / "web"}"\n',
    )
    node = RadGroundProcess(
        config, ["node", "--listener-processes", "2"], tmp_path / "logs" / "node.log"
    )
    try:
        wait_until(lambda: echoscu(port).returncode == 0, 60, what="the node answering C-ECHO",
                   logs=[node])
        listeners = {
            pid for pid, command in child_processes(node.popen.pid).items()
            if "resource_tracker" not in command  # multiprocessing's helper, not a listener
        }
        assert len(listeners) == 2
        assert not (metrics / "counter_4194000.db").exists()

        studies = [write_series(tmp_path / f"study{i}", 3, rows=16, columns=16) for i in range(4)]
        with ThreadPoolExecutor(4) as pool:
            runs = list(pool.map(lambda files: storescu(port, files, calling="MODALITY"), studies))
        assert all(run.returncode == 0 for run in runs), runs[0]

        summed = _summed(metrics)
        assert summed.get_sample_value(
            "radground_instances_received_total", {"calling_ae": "MODALITY"}) == 12
        stored = sum(p.stat().st_size for p in (tmp_path / "instances").rglob("*.dcm"))
        assert summed.get_sample_value(
            "radground_received_bytes_total", {"calling_ae": "MODALITY"}) == stored
        assert summed.get_sample_value("radground_associations_open") == 0
        # counted in the listener processes, not in the node process
        assert _pids(metrics, "counter") & listeners

        victim = min(_pids(metrics, "gauge_livesum") & listeners)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in _pids(metrics, "gauge_livesum"), 30,
                   what="the supervisor marking the killed listener gone", logs=[node])
        assert _summed(metrics).get_sample_value(
            "radground_instances_received_total", {"calling_ae": "MODALITY"}) == 12
    finally:
        node.stop()
