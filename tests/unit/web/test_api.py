"""The REST API (/api/v1) through the ASGI application on SQLite and the real PostgreSQL server:
every endpoint, bad input, permissions, pagination and the OpenAPI document."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from engine.default_model.config import ONNX_PATH
from tests.factories import make_ct, write_dataset
from tests.index_rows import add_artifact, add_delivery, add_job, add_study
from web.context import WebContext
from web.runtime_info import Listener, ModelFile, NodeRuntime
from worklist.accounts_models import Role
from worklist.db import utcnow
from worklist.jobs_models import AuditEvent, DeliveryState, Job, JobState
from worklist.models import RevisionOutcome
from worklist.routing import Route

API = "/api/v1"


@pytest.fixture
def web_context(web_context: WebContext, tmp_path: Path) -> WebContext:
    """The shared context with routes, a model and a node probe."""
    import dataclasses

    pipeline = dataclasses.replace(
        web_context.pipeline,
        routes=(Route("ct", modalities=frozenset({"CT"})),
                Route("cxr", modalities=frozenset({"DX"}), destinations=("PACS",))),
    )
    (tmp_path / "storage").mkdir()
    (tmp_path / "outputs").mkdir()
    return dataclasses.replace(
        web_context, pipeline=pipeline,
        models=(ModelFile("default", "onnx", ONNX_PATH),
                ModelFile("medrega", "hf", tmp_path / "medrega")),
        storage_reserve_bytes=1024,
        node_probe=lambda: NodeRuntime(
            listeners=(Listener("RADGROUND", "0.0.0.0", 11112, True),), associations_open=2),
    )


@pytest.fixture
def reader(token_for):
    return {"Authorization": f"Bearer {token_for(Role.VIEWER, 'read')}"}


@pytest.fixture
def operator(token_for):
    return {"Authorization": f"Bearer {token_for(Role.OPERATOR, 'read', 'act')}"}


@pytest.fixture
def rows(web_context, tmp_path):
    """A done job with an SR on disk, a failed job with a failed delivery, a queued job, a study
    no route took."""
    now = utcnow()
    with web_context.sessions.begin() as session:
        done_study = add_study(session, received_at=now - timedelta(hours=3),
                               outcome=RevisionOutcome.JOB, outcome_detail="cxr")
        done = add_job(session, done_study, created_at=now - timedelta(hours=3),
                       finished_at=now - timedelta(hours=3) + timedelta(seconds=9))
        sr = make_ct(study_instance_uid=done_study.study_instance_uid,
                     series_instance_uid="1.2.3.4.5")
        relative = f"{done_study.study_instance_uid}/r1/sr-en.dcm"
        write_dataset(sr, tmp_path / "outputs" / relative)
        artifact = add_artifact(session, done, kind="sr", path=relative)
        outside = add_artifact(session, done, kind="gsps", path="../../etc/passwd")
        failed_study = add_study(session, received_at=now - timedelta(hours=2),
                                 calling_ae_title="WARD", outcome=RevisionOutcome.JOB)
        failed = add_job(session, failed_study, state=JobState.FAILED,
                         created_at=now - timedelta(hours=2), finished_at=now - timedelta(hours=2),
                         last_error="delivery to PACS: refused")
        delivery = add_delivery(session, failed, state=DeliveryState.FAILED, attempts=3,
                                last_error="0xA700 out of resources")
        queued_study = add_study(session, received_at=now - timedelta(hours=1),
                                 outcome=RevisionOutcome.JOB)
        queued = add_job(session, queued_study, state=JobState.QUEUED,
                         created_at=now - timedelta(hours=1))
        ct = add_study(session, received_at=now, modality="CT",
                       outcome=RevisionOutcome.NO_ROUTE, outcome_detail="modality")
        return {
            "done": done.id, "failed": failed.id, "queued": queued.id, "delivery": delivery.id,
            "artifact": artifact.id, "outside": outside.id, "sr": sr,
            "done_study": done_study.study_instance_uid, "ct": ct.study_instance_uid,
        }


def _problem(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


def test_studies_list_filters_and_pages(client, reader, rows):
    body = client.get(f"{API}/studies", headers=reader).json()
    assert body["total"] == 4 and not body["has_more"]
    assert body["items"][0]["study_instance_uid"] == rows["ct"]
    ct = body["items"][0]
    assert ct["revisions"][-1]["outcome"]["kind"] == "no-route"
    assert ct["revisions"][-1]["outcome"]["text"] == "skipped: no route (modality)"

    page = client.get(f"{API}/studies", params={"limit": 3, "offset": 0}, headers=reader).json()
    rest = client.get(f"{API}/studies", params={"limit": 3, "offset": 3}, headers=reader).json()
    assert page["has_more"] and not rest["has_more"] and len(page["items"]) + len(
        rest["items"]) == 4
    assert client.get(f"{API}/studies", params={"modality": "CT"},
                      headers=reader).json()["total"] == 1
    assert client.get(f"{API}/studies", params={"calling_ae_title": "WARD"},
                      headers=reader).json()["total"] == 1
    assert client.get(f"{API}/studies", params={"job_state": "queued"},
                      headers=reader).json()["total"] == 1


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/studies", {"state": "sleeping"}, "state"),
        ("/studies", {"received_from": "yesterday"}, "received_from"),
        ("/studies", {"received_from": "2026-12-06T00:00:00"}, "received_from"),
        ("/studies", {"received_from": "2026-12-06T00:00:00Z",
                      "received_until": "2026-12-05T00:00:00Z"}, "received_until"),
        ("/studies", {"limit": 0}, "limit"),
        ("/jobs", {"state": ["done", "nope"]}, "state[1]"),
        ("/jobs", {"offset": -1}, "offset"),
        ("/jobs", {"limit": 501}, "limit"),
        ("/jobs", {"calling_ae_title": "X" * 17}, "calling_ae_title"),
        ("/dashboard", {"day": "2026-13-01"}, "day"),
    ],
)
def test_bad_filters_are_400_naming_the_parameter(client, reader, path, params, parameter):
    body = _problem(client.get(f"{API}{path}", params=params, headers=reader), 400)
    assert body["parameter"] == parameter


def test_one_study_and_its_routes_dry_run(client, reader, rows):
    study = client.get(f"{API}/studies/{rows['done_study']}", headers=reader).json()
    assert study["calling_ae_titles"] == ["MODALITY"]
    assert study["series"][0]["modality"] == "DX"
    dry = client.get(f"{API}/studies/{rows['done_study']}/routes", headers=reader).json()
    assert dry["chosen"] == "cxr"
    assert dry["routes"][0]["mismatches"] == [
        {"condition": "modality", "actual": "DX", "wanted": "CT"}]
    for path in ("/studies/1.2.3", "/studies/1.2.3/routes"):
        assert _problem(client.get(f"{API}{path}", headers=reader), 404)["type"].endswith(
            "/not-found")


def test_jobs_list_and_one_job(client, reader, rows):
    body = client.get(f"{API}/jobs", headers=reader).json()
    assert [j["id"] for j in body["items"]] == [rows["queued"], rows["failed"], rows["done"]]
    failed = client.get(f"{API}/jobs", params={"state": ["failed", "dead"]},
                        headers=reader).json()
    assert [j["id"] for j in failed["items"]] == [rows["failed"]]
    job = client.get(f"{API}/jobs/{rows['done']}", headers=reader).json()
    assert job["timings"]["inference_seconds"] == 1.5
    assert job["timings"]["total_seconds"] == 9.0
    assert [a["media_type"] for a in job["artifacts"]] == ["application/dicom"] * 2
    assert job["audit"][0]["action"] == "job-created"
    delivery = client.get(f"{API}/jobs/{rows['failed']}", headers=reader).json()["deliveries"][0]
    assert (delivery["state"], delivery["attempts"], delivery["last_error"]) == (
        "failed", 3, "0xA700 out of resources")
    _problem(client.get(f"{API}/jobs/424242", headers=reader), 404)
    _problem(client.get(f"{API}/jobs/abc", headers=reader), 400)


def test_artifact_download(client, reader, rows, tmp_path):
    response = client.get(f"{API}/jobs/{rows['done']}/artifacts/{rows['artifact']}",
                          headers=reader)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom"
    (tmp_path / "got.dcm").write_bytes(response.content)
    assert dcmread(tmp_path / "got.dcm").SOPInstanceUID == rows["sr"].SOPInstanceUID
    # another job's artifact, an unknown one, a path that leaves the outputs folder
    _problem(client.get(f"{API}/jobs/{rows['failed']}/artifacts/{rows['artifact']}",
                        headers=reader), 404)
    _problem(client.get(f"{API}/jobs/{rows['done']}/artifacts/99999", headers=reader), 404)
    _problem(client.get(f"{API}/jobs/{rows['done']}/artifacts/{rows['outside']}",
                        headers=reader), 404)


def _audit(web_context, job_id):
    with web_context.sessions() as session:
        return [(e.actor, e.action, e.source) for e in session.scalars(
            select(AuditEvent).where(AuditEvent.job_id == job_id).order_by(AuditEvent.id))]


def test_actions(client, operator, rows, web_context):
    sent = web_context.pipeline.enqueue.sent
    retried = client.post(
        f"{API}/jobs/{rows['failed']}/deliveries/{rows['delivery']}/retry", headers=operator)
    assert retried.status_code == 202, retried.text
    assert sent == [("delivery", rows["delivery"])]
    actor, action, source = _audit(web_context, rows["failed"])[-1]
    assert (actor, action) == ("web:operator1", "delivery-retry") and source
    # again: the delivery is pending now
    _problem(client.post(f"{API}/jobs/{rows['failed']}/deliveries/{rows['delivery']}/retry",
                         headers=operator), 409)
    _problem(client.post(f"{API}/jobs/{rows['done']}/deliveries/{rows['delivery']}/retry",
                         headers=operator), 404)

    assert client.post(f"{API}/jobs/{rows['queued']}/cancel", headers=operator).status_code == 200
    with web_context.sessions() as session:
        assert session.get_one(Job, rows["queued"]).state is JobState.CANCELLED
    _problem(client.post(f"{API}/jobs/{rows['done']}/cancel", headers=operator), 409)
    assert client.post(f"{API}/jobs/{rows['queued']}/retry", headers=operator).status_code == 202
    assert sent[-1] == ("inference", rows["queued"])
    _problem(client.post(f"{API}/jobs/{rows['done']}/retry", headers=operator), 409)
    _problem(client.post(f"{API}/jobs/777777/retry", headers=operator), 404)

    reprocessed = client.post(f"{API}/studies/{rows['ct']}/reprocess", headers=operator)
    assert reprocessed.status_code == 202 and "revision 2" in reprocessed.json()["detail"]
    _problem(client.post(f"{API}/studies/1.2.3/reprocess", headers=operator), 404)


def test_permissions(client, reader, rows):
    body = _problem(client.get(f"{API}/jobs"), 401)
    assert body["type"].endswith("/unauthenticated")
    _problem(client.get(f"{API}/jobs", headers={"Authorization": "Bearer nope"}), 401)
    for path in (f"/jobs/{rows['queued']}/cancel", f"/jobs/{rows['failed']}/retry",
                 f"/jobs/{rows['failed']}/deliveries/{rows['delivery']}/retry",
                 f"/studies/{rows['ct']}/reprocess"):
        assert _problem(client.post(f"{API}{path}", headers=reader), 403)["scope"] == "act"


def test_routes_models_node_and_dashboard(client, reader, rows):
    routes = client.get(f"{API}/routes", headers=reader).json()
    assert [r["name"] for r in routes] == ["ct", "cxr"] and routes[1]["destinations"] == ["PACS"]
    default, medrega = client.get(f"{API}/models", headers=reader).json()
    assert default["metadata"]["model_release"] and "Cardiomegaly" in default["metadata"][
        "classes"]
    assert medrega["metadata"] is None and medrega["problem"]
    node = client.get(f"{API}/node", headers=reader).json()
    assert node["listeners"][0]["port"] == 11112 and node["associations_open"] == 2
    assert node["storage"]["reserve_bytes"] == 1024 and node["storage"]["above_reserve"]
    assert node["queue"]["jobs"]["queued"] == 1 and node["workers_answering"] is None
    day = client.get(f"{API}/dashboard", headers=reader).json()
    assert day["queue"]["jobs"]["queued"] == 1 and day["received"] >= 1


def test_openapi_document(client, reader):
    response = client.get(f"{API}/openapi.json", headers=reader)
    assert response.status_code == 200
    document = response.json()
    paths = document["paths"]
    for path, method in [
        ("/studies", "get"), ("/studies/{study_instance_uid}", "get"),
        ("/studies/{study_instance_uid}/routes", "get"),
        ("/studies/{study_instance_uid}/reprocess", "post"),
        ("/jobs", "get"), ("/jobs/{job_id}", "get"),
        ("/jobs/{job_id}/artifacts/{artifact_id}", "get"), ("/jobs/{job_id}/retry", "post"),
        ("/jobs/{job_id}/cancel", "post"),
        ("/jobs/{job_id}/deliveries/{delivery_id}/retry", "post"),
        ("/routes", "get"), ("/models", "get"), ("/node", "get"), ("/dashboard", "get"),
    ]:
        assert method in paths[f"{API}{path}"], path
    schemas = document["components"]["schemas"]

    def refs(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    found = set(refs(document))
    assert found
    for ref in found:
        assert ref.startswith("#/components/schemas/") and ref.split("/")[-1] in schemas, ref
    try:
        from openapi_spec_validator import validate
    except ImportError:
        return
    validate(document)
