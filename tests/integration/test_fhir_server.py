"""The test EHR (FhirTestServer) behaves like a FHIR R4 server where RadGround's
delivery depends on it: conditional create/update on identifiers, all-or-nothing
transactions, reference resolution, outages; and what it receives validates."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from exporters.fhir import build_fhir_bundle, bundle_json
from tests.integration.fhir_server import FhirTestServer
from tests.unit.exporters.conftest import IMAGE_SIZES, make_grounded_report, make_source_image
from worklist.destinations.fhir import (
    PermanentFhirError,
    TransientFhirError,
    post_transaction,
)
from worklist.destinations.security import HttpAuth

SITE_SYSTEM = "urn:oid:1.2.826.0.1.3680043.10.1234"


def _bundle(*, revision: int = 1, patient_id: str | None = None) -> str:
    sources = []
    for i, (columns, rows) in enumerate(IMAGE_SIZES):
        ds = make_source_image(i, pixels=np.zeros((rows, columns), dtype=np.uint16))
        if patient_id is not None:
            ds.PatientID = patient_id
        sources.append(ds)
    report = make_grounded_report()
    return bundle_json(
        build_fhir_bundle(report, sources, revision=revision, patient_identifier_system=SITE_SYSTEM)
    )


def _post(server: FhirTestServer, bundle: str | dict):
    text = bundle if isinstance(bundle, str) else json.dumps(bundle)
    return post_transaction(server.base_url, text, auth=HttpAuth.none(), timeout=10)


@pytest.fixture
def server():
    with FhirTestServer() as fhir:
        yield fhir


def test_a_delivered_bundle_validates_as_received(server):
    _post(server, _bundle())
    (request,) = server.transactions
    assert server.validate_with_npm(request.body) == []


def test_existing_patient_is_referred_to_not_overwritten(server):
    data = json.loads(_bundle())
    patient_entry = data["entry"][0]
    assert patient_entry["request"]["ifNoneExist"].startswith("identifier=")
    ehr_patient = {**patient_entry["resource"], "name": [{"family": "Registered-By-EHR"}]}
    seed = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b4f7e3a-2a7c-4d0e-9a51-7f3c1d2e8b10", "resource": ehr_patient,
         "request": {"method": "POST", "url": "Patient"}},
    ]}
    (seeded,) = _post(server, seed).entries

    result = _post(server, data)
    assert result.entries[0].status == "200 OK"
    assert result.entries[0].location == seeded.location
    (patient,) = server.resources("Patient")
    assert patient["name"] == [{"family": "Registered-By-EHR"}]
    (report,) = server.resources("DiagnosticReport")
    assert report["subject"]["reference"] == "/".join(seeded.location.split("/")[:2])


def test_escaped_identifier_values_match_on_redelivery(server):
    """Patient IDs with the token separators | and , (R4 search.html#escaping)."""
    bundle = _bundle(patient_id="RG|0042,B$1")
    first = _post(server, bundle)
    second = _post(server, bundle)
    assert first.entries[0].status == "201 Created" and second.entries[0].status == "200 OK"
    (patient,) = server.resources("Patient")
    assert patient["identifier"][0]["value"] == "RG|0042,B$1"


def test_a_new_revision_adds_a_report_beside_the_first(server):
    _post(server, _bundle(revision=1))
    _post(server, _bundle(revision=2))
    counts = {t: len(server.resources(t)) for t in ("Patient", "Device", "ImagingStudy")}
    assert counts == {"Patient": 1, "Device": 1, "ImagingStudy": 1}
    assert len(server.resources("DiagnosticReport")) == 2
    assert len(server.resources("Observation")) == 40


def test_transactions_are_all_or_nothing(server):
    data = json.loads(_bundle())
    broken = json.loads(json.dumps(data))
    report = next(e for e in broken["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    report["resource"]["subject"]["reference"] = "urn:uuid:00000000-0000-0000-0000-000000000000"
    with pytest.raises(PermanentFhirError) as info:
        _post(server, broken)
    assert info.value.status_code == 400
    assert "unresolved reference(s) urn:uuid:00000000" in info.value.summary
    assert server.resources("Patient") == [] and server.resources("Observation") == []
    assert _post(server, data).created == 24


def test_ambiguous_conditional_create_is_412_and_stores_nothing(server):
    data = json.loads(_bundle())
    patient = data["entry"][0]["resource"]
    twice = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient, "request": {"method": "POST", "url": "Patient"}},
        {"resource": patient, "request": {"method": "POST", "url": "Patient"}},
    ]}
    _post(server, twice)  # plain creates: two Patients with one identifier
    with pytest.raises(PermanentFhirError) as info:
        _post(server, data)
    assert info.value.status_code == 412
    assert "ifNoneExist matches 2 resources" in info.value.summary
    assert server.resources("DiagnosticReport") == []


def test_outage_closes_open_connections_and_keeps_port_and_store(server):
    bundle = _bundle()
    with httpx.Client() as client:  # keeps its connection alive between requests
        post_transaction(server.base_url, bundle, auth=HttpAuth.none(), client=client)
        url = server.base_url
        server.set_down()
        assert not server.is_up
        with pytest.raises(TransientFhirError):
            post_transaction(url, bundle, auth=HttpAuth.none(), client=client, timeout=5)
        server.set_up()
        result = post_transaction(url, bundle, auth=HttpAuth.none(), client=client)
    assert server.base_url == url
    assert {e.status for e in result.entries} == {"200 OK"}  # the store survived the outage
    assert len(server.resources("DiagnosticReport")) == 1


def test_scripts_are_consumed_in_order_then_normal_service_resumes(server):
    bundle = _bundle()
    server.fail_next(2, status=502)
    server.reject_next(422)
    statuses = []
    for _ in range(4):
        try:
            statuses.append(_post(server, bundle).status_code)
        except (TransientFhirError, PermanentFhirError) as exc:
            statuses.append(exc.status_code)
    assert statuses == [502, 502, 422, 200]
    assert [r.status for r in server.received] == statuses
    assert len(server.transactions) == 1


def test_wrong_path_type_or_method_are_refused(server):
    bundle = _bundle()
    base = server.base_url
    with httpx.Client() as client:
        wrong_path = client.post(base + "/Patient", content=bundle,
                                 headers={"Content-Type": "application/fhir+json"})
        wrong_type = client.post(base, content=bundle, headers={"Content-Type": "text/plain"})
        get = client.get(base)
    assert (wrong_path.status_code, wrong_type.status_code, get.status_code) == (404, 415, 405)
    for response in (wrong_path, wrong_type, get):
        assert response.json()["resourceType"] == "OperationOutcome"
    assert server.resources("Patient") == []
