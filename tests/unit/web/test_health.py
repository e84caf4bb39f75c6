"""/healthz, /readyz and /metrics through the real application: who may call them, what a
failing readiness check answers, the multi-process exposition, and the Grafana dashboard
asking only for metrics /metrics exposes."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from dicom_node import metrics as node_metrics
from dicom_node.scu import Destination
from engine.metrics import MODEL_INFERENCE_SECONDS
from web.app import create_app
from web.health import NotReadyError, run_checks
from worklist import metrics as worklist_metrics
from worklist.accounts_models import Role
from worklist.context import DicomTarget
from worklist.destinations.protocol import DeliveryStatus
from worklist.models import RevisionOutcome
from worklist.review_models import (
    FindingDecision,
    FindingOrigin,
    RejectReason,
    Review,
    ReviewFinding,
)
from worklist.routing import Route

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "docs" / "grafana-dashboard.json"


def _client(context) -> TestClient:
    return TestClient(create_app(context), base_url="https://testserver")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_healthz_answers_without_authentication(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/metrics", "/readyz"])
def test_everything_else_needs_a_token_with_read(client, token_for, path):
    refused = client.get(path)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert client.get(path, headers=_bearer("not-a-token")).status_code == 401
    assert client.get(path, headers=_bearer(token_for(Role.VIEWER, "read"))).status_code == 200


def test_metrics_is_the_prometheus_text_exposition_with_queue_depths(client, token_for):
    node_metrics.instance_stored("HEALTHTEST", 10)
    response = client.get("/metrics", headers=_bearer(token_for(Role.VIEWER, "read")))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text) for s in family.samples
    }
    assert samples[("radground_instances_received_total", (("calling_ae", "HEALTHTEST"),))] >= 1
    assert samples[("radground_jobs", (("state", "queued"),))] == 0
    assert samples[("radground_queue_depth_up", ())] == 1


def test_readyz_names_the_failed_check_with_503(web_context, token_for):
    def broker() -> str:
        raise NotReadyError("amqp://node:5672: ConnectionRefusedError")

    def database() -> str:
        raise RuntimeError("postgresql://radground:secret@db/radground is down")

    context = dataclasses.replace(web_context, readiness_checks={
        "database": database, "broker": broker, "storage": lambda: "writable",
    })
    with _client(context) as client:
        response = client.get("/readyz", headers=_bearer(token_for(Role.VIEWER, "read")))
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["failed"] == ["database", "broker"]
    assert body["detail"] == "not ready: database, broker"
    assert body["checks"]["storage"]["ok"] is True
    assert body["checks"]["broker"]["detail"] == "amqp://node:5672: ConnectionRefusedError"
    # an unexpected exception's message (which may quote a URL with a password) is not shown
    assert body["checks"]["database"]["detail"] == "check failed (RuntimeError)"
    assert "secret" not in response.text


def test_readyz_is_200_with_every_result_when_all_pass(web_context, token_for):
    context = dataclasses.replace(web_context, readiness_checks={
        "database": lambda: "postgresql answers", "model": lambda: "default loadable",
    })
    with _client(context) as client:
        response = client.get("/readyz", headers=_bearer(token_for(Role.VIEWER, "read")))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["model"]["detail"] == "default loadable"


def test_a_check_that_hangs_fails_after_the_deadline():
    release = threading.Event()
    started = time.monotonic()
    try:
        results = run_checks({"broker": lambda: str(release.wait(30)), "db": lambda: "ok"},
                             timeout=0.5)
    finally:
        release.set()
    assert time.monotonic() - started < 5
    assert results["broker"]["ok"] is False and "no answer within 0.5 s" in results[
        "broker"]["detail"]
    assert results["db"]["ok"] is True


def test_metrics_sums_the_files_of_every_process(web_context, token_for, tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": str(REPO)}
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-c",
             "from dicom_node import metrics; metrics.instance_stored('LISTENER', 7)"],
            env=env, check=True, timeout=60, cwd=REPO,
        )
    context = dataclasses.replace(web_context, metrics_directory=directory)
    with _client(context) as client:
        response = client.get("/metrics", headers=_bearer(token_for(Role.VIEWER, "read")))
    assert response.status_code == 200
    assert 'radground_instances_received_total{calling_ae="LISTENER"} 2.0' in response.text
    assert 'radground_received_bytes_total{calling_ae="LISTENER"} 14.0' in response.text
    assert "radground_jobs{" in response.text  # the queue depths come along


def _some_activity() -> None:
    """One of each event, so every labelled series exists."""
    node_metrics.instance_stored("DASHBOARD", 100)
    node_metrics.instance_refused(0xA700)
    node_metrics.association_opened()
    node_metrics.association_closed()
    node_metrics.association_refused("association_limit")
    worklist_metrics.revision_routed(RevisionOutcome.JOB)
    for stage in worklist_metrics.STAGES:
        worklist_metrics.stage_finished(stage, 1.0)
    worklist_metrics.delivery_recorded("PACS", DeliveryStatus.DELIVERED, retry=False)
    worklist_metrics.delivery_recorded("PACS", DeliveryStatus.RETRYABLE, retry=True)
    MODEL_INFERENCE_SECONDS.labels("dashboard-model").observe(0.1)
    worklist_metrics.review_signed("chest", 600.0)
    worklist_metrics.record_signed_review(Review(findings=[
        ReviewFinding(origin=FindingOrigin.MODEL, decision=FindingDecision.ACCEPTED,
                      model_class="cardiomegaly", box_iou=0.8),
        ReviewFinding(origin=FindingOrigin.MODEL, decision=FindingDecision.REJECTED,
                      reject_reason=RejectReason.NOT_PRESENT, model_class="cardiomegaly"),
        ReviewFinding(origin=FindingOrigin.RADIOLOGIST, decision=FindingDecision.ACCEPTED,
                      final_class="rib fracture"),
    ]))


_PROMQL_FUNCTIONS_AND_WORDS = frozenset({
    "sum", "min", "max", "avg", "by", "without", "rate", "increase", "delta", "histogram_quantile",
    "le", "job", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
})


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside label matchers and
    range brackets that are not functions, keywords or grouping labels."""
    bare = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # ranges
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", bare)  # grouping labels
    return {
        word for word in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare)
        if word not in _PROMQL_FUNCTIONS_AND_WORDS
    }


def test_the_grafana_dashboard_uses_only_metrics_that_metrics_exposes(web_context, token_for):
    _some_activity()
    pacs = DicomTarget(Destination("PACS", "127.0.0.1", 104), name="PACS")
    context = dataclasses.replace(web_context, pipeline=dataclasses.replace(
        web_context.pipeline, destinations={"PACS": pacs}, routes=(Route("chest"),)))
    with _client(context) as client:
        response = client.get("/metrics", headers=_bearer(token_for(Role.VIEWER, "read")))
    exposed = {
        sample.name
        for family in text_string_to_metric_families(response.text) for sample in family.samples
    }
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    assert len(expressions) >= 15
    used = set().union(*map(_metric_names, expressions))
    assert all(name.startswith("radground_") for name in used), used
    assert used - exposed == set()
    # and the dashboard shows every metric family the node defines
    families = {
        re.sub(r"_(total|bucket|sum|count|created)$", "", name) for name in exposed
        if name.startswith("radground_")
    }
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in used}
    assert families - shown == set()


def test_the_dashboard_check_sees_a_misspelt_metric():
    assert _metric_names(
        'sum by (destination) (rate(radground_delivery_atempts_total{job="$job"}[5m]))'
    ) == {"radground_delivery_atempts_total"}
    assert _metric_names(
        "histogram_quantile(0.95, sum by (le, stage) (rate(radground_x_bucket[5m])))"
    ) == {"radground_x_bucket"}
