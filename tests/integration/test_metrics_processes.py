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


def test_prometheus_scrapes_radground_serve_with_a_token(tmp_path):
    """`radground serve` as an operator runs it: /healthz open, /metrics and /readyz with a read
    token; what the listener processes and the node process counted is in one exposition."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from tests.integration.test_web_serve import _radground

    port, web_port = free_port(), free_port()
    config = write_config(
        tmp_path / "radground.toml", workdir=tmp_path, port=port,
        database_url=f"sqlite:///{tmp_path / 'radground.db'}",
        broker_url=f"radground+sqlite:///{tmp_path / 'broker.sqlite'}",
        pacs_port=None, fhir_url=None, route_destinations=(), idle_seconds=1,
        extra_toml=f'[web]\nport = {web_port}\nstate_dir = "{tmp_path / "web"}"\n',
    )
    serve = RadGroundProcess(
        config, ["serve", "--listener-processes", "2"], tmp_path / "logs" / "serve.log"
    )
    base = f"http://127.0.0.1:{web_port}"

    def get(path: str, token: str | None = None) -> httpx.Response | None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            return httpx.get(f"{base}{path}", headers=headers, timeout=20)
        except httpx.HTTPError:
            return None

    def samples(token: str) -> dict[tuple[str, tuple], float]:
        response = get("/metrics", token)
        assert response is not None and response.status_code == 200
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples
        }

    try:
        wait_until(lambda: (r := get("/healthz")) is not None and r.status_code == 200, 90,
                   what="/healthz answering", logs=[serve])
        assert get("/healthz").json() == {"status": "ok"}
        assert get("/metrics").status_code == 401
        assert get("/readyz").status_code == 401
        added = _radground(config, "users", "add", "prometheus", "--role", "viewer",
                           "--no-password")
        assert added.returncode == 0, added.stderr
        issued = _radground(config, "users", "token", "prometheus", "--scope", "read")
        assert issued.returncode == 0, issued.stderr
        token = issued.stdout.strip()

        ready = get("/readyz", token)
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["checks"]) == {"database", "broker", "storage", "model"}

        files = write_series(tmp_path / "ct", 4, rows=16, columns=16)  # CT: no route matches
        assert storescu(port, files, calling="MODALITY").returncode == 0
        received = ("radground_instances_received_total", (("calling_ae", "MODALITY"),))
        wait_until(lambda: samples(token).get(received) == 4, 30,
                   what="4 instances in /metrics", logs=[serve])
        no_route = ("radground_study_revisions_total", (("outcome", "no-route"),))
        wait_until(lambda: samples(token).get(no_route) == 1, 30,
                   what="the revision's outcome in /metrics", logs=[serve])
        scraped = samples(token)
        assert scraped[("radground_queue_depth_up", ())] == 1
        assert scraped[("radground_jobs", (("state", "queued"),))] == 0
        assert scraped[("radground_associations_open", ())] == 0
    finally:
        serve.stop()
