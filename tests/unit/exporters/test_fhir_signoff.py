"""The FHIR Bundle a radiologist's sign-off produces: the preliminary resources finalised in
place (same conditional-update identifiers), the radiologist as Practitioner, rejected
findings ``entered-in-error``, a Provenance; checked by the R4 JSON schema and FHIR.js,
and against the EHR stand-in (an amended report replaces the preliminary one, no duplicate).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import urllib.request

import pytest

from exporters.fhir import FhirExporter, build_fhir_bundle, bundle_json
from exporters.protocol import ExportOptions, OutputKind
from exporters.regions import plan_regions
from tests.exporters_validators import fhir_problems, fhir_validate
from tests.integration.fhir_server import FhirTestServer
from tests.unit.exporters.conftest import EDITED, REJECTED, VERIFIED_AT

SITE_SYSTEM = "urn:oid:1.2.826.0.1.3680043.10.1234"
PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def _bundle(report, sources, **kwargs) -> dict:
    kwargs.setdefault("revision", 1)
    kwargs.setdefault("patient_identifier_system", SITE_SYSTEM)
    return json.loads(bundle_json(build_fhir_bundle(report, sources, **kwargs)))


def _entries(data: dict, resource_type: str) -> list[dict]:
    return [e for e in data["entry"] if e["resource"]["resourceType"] == resource_type]


def _one(data: dict, resource_type: str) -> dict:
    (entry,) = _entries(data, resource_type)
    return entry


def _observations_by_tracking_uid(data: dict) -> dict[str, dict]:
    found = {}
    for entry in _entries(data, "Observation"):
        (tracking,) = [i for i in entry["resource"]["identifier"] if i.get("use") == "secondary"]
        found[tracking["value"].removeprefix("urn:oid:")] = entry
    return found


@pytest.fixture
def preliminary(grounded_report, source_images) -> dict:
    return _bundle(grounded_report, source_images)


@pytest.fixture
def final(reviewed_report, sign_off, source_images) -> dict:
    """The signed Bundle for an EHR that got nothing before (``before_ehr``)."""
    return _bundle(reviewed_report, source_images, sign_off=sign_off)


@pytest.fixture
def amended(reviewed_report, sign_off, source_images) -> dict:
    """The signed Bundle for an EHR that got the preliminary one."""
    return _bundle(
        reviewed_report, source_images, sign_off=dataclasses.replace(sign_off, amends=True)
    )


def test_report_is_final_with_the_radiologist_as_results_interpreter(final, preliminary):
    report = _one(final, "DiagnosticReport")
    assert report["resource"]["status"] == "final"
    assert report["resource"]["issued"].startswith("2026-03-10T11:05:30")
    practitioner = _one(final, "Practitioner")
    assert report["resource"]["resultsInterpreter"] == [
        {"reference": practitioner["fullUrl"], "display": "Jane Doe"}
    ]
    # updates the preliminary report in place
    assert report["request"] == _one(preliminary, "DiagnosticReport")["request"]
    assert report["fullUrl"] == _one(preliminary, "DiagnosticReport")["fullUrl"]
    assert _one(preliminary, "DiagnosticReport")["resource"]["status"] == "preliminary"
    assert "resultsInterpreter" not in _one(preliminary, "DiagnosticReport")["resource"]


def test_amends_gives_an_amended_report(reviewed_report, sign_off, source_images):
    data = _bundle(
        reviewed_report, source_images, sign_off=dataclasses.replace(sign_off, amends=True)
    )
    assert _one(data, "DiagnosticReport")["resource"]["status"] == "amended"
    statuses = {e["resource"]["status"] for e in _entries(data, "Observation")}
    assert statuses == {"final", "entered-in-error"}


def test_practitioner_is_created_once_per_account(final):
    practitioner = _one(final, "Practitioner")
    assert practitioner["request"] == {
        "method": "POST",
        "url": "Practitioner",
        "ifNoneExist": "identifier=urn:radground:RADGROUND:account|jdoe",
    }
    resource = practitioner["resource"]
    assert resource["identifier"] == [
        {"system": "urn:radground:RADGROUND:account", "value": "jdoe"}
    ]
    (name,) = resource["name"]
    assert (name["family"], name["given"], name["text"]) == ("Doe", ["Jane"], "Jane Doe")


def test_observations_keep_their_identifiers_and_change_status(
    final, amended, preliminary, grounded_report, reviewed_report
):
    before = _observations_by_tracking_uid(preliminary)
    for data in (final, amended):
        after = _observations_by_tracking_uid(data)
        practitioner = _one(data, "Practitioner")["fullUrl"]
        for finding in reviewed_report.findings:
            entry = after[finding.tracking_uid]
            assert entry["resource"]["status"] == "final"
            assert entry["resource"]["performer"] == [{"reference": practitioner}]
            if finding.tracking_uid in before:  # the same conditional update key as preliminary
                assert entry["request"] == before[finding.tracking_uid]["request"]
                assert entry["fullUrl"] == before[finding.tracking_uid]["fullUrl"]
        edited = after[grounded_report.findings[EDITED].tracking_uid]["resource"]
        assert edited["note"][0]["text"] == "Moderate cardiomegaly (cardiothoracic ratio 0.62)."
    assert {e["resource"]["status"] for e in _entries(preliminary, "Observation")} == {
        "preliminary"
    }


def test_rejected_findings_are_withdrawn_where_the_preliminary_was_sent(
    final, amended, preliminary, grounded_report, reviewed_report
):
    before = _observations_by_tracking_uid(preliminary)
    after = _observations_by_tracking_uid(amended)
    assert len(after) == len(reviewed_report.findings) + len(REJECTED)
    results = [r["reference"] for r in _one(amended, "DiagnosticReport")["resource"]["result"]]
    for n in REJECTED:
        withdrawn = grounded_report.findings[n]
        entry = after[withdrawn.tracking_uid]
        assert entry["resource"]["status"] == "entered-in-error"
        assert "performer" not in entry["resource"]
        assert entry["request"] == before[withdrawn.tracking_uid]["request"]
        assert entry["fullUrl"] not in results
    # an EHR that never got the preliminary Bundle is not sent Observations to retract
    assert len(_observations_by_tracking_uid(final)) == len(reviewed_report.findings)
    assert {e["resource"]["status"] for e in _entries(final, "Observation")} == {"final"}


@pytest.mark.parametrize("bundle", ["final", "amended"])
def test_provenance_names_the_radiologist_and_the_model(bundle, request):
    final = request.getfixturevalue(bundle)
    entry = _one(final, "Provenance")
    provenance = entry["resource"]
    assert entry["request"] == {"method": "PUT", "url": f"Provenance/{provenance['id']}"}
    assert entry["fullUrl"] == f"urn:uuid:{provenance['id']}"
    assert provenance["recorded"].startswith("2026-03-10T11:05:30")
    targets = [t["reference"] for t in provenance["target"]]
    written = [
        e["fullUrl"]
        for e in final["entry"]
        if e["resource"]["resourceType"] in ("DiagnosticReport", "Observation")
    ]
    assert sorted(targets) == sorted(written)
    practitioner = _one(final, "Practitioner")["fullUrl"]
    device = _one(final, "Device")["fullUrl"]
    agents = {
        agent["type"]["coding"][0]["code"]: agent
        for agent in provenance["agent"]
        if agent["type"]["coding"][0]["system"] == PARTICIPANT
    }
    assert set(agents) == {"author", "verifier", "contributor"}
    assert agents["author"]["who"]["reference"] == practitioner
    assert agents["verifier"]["who"]["reference"] == practitioner
    assert agents["verifier"]["onBehalfOf"] == {"display": "RadGround Test Hospital"}
    assert agents["contributor"]["who"] == {"reference": device}


def test_presented_form_and_narrative_say_who_verified(final, preliminary):
    report = _one(final, "DiagnosticReport")["resource"]
    for page in report["presentedForm"]:
        html = base64.b64decode(page["data"]).decode("utf-8")
        assert "Jane Doe" in html and "unverified" not in html and "未经审核" not in html
        assert "Jane Doe" in page["title"]
    en = next(p for p in report["presentedForm"] if p["language"] == "en")
    assert en["title"] == "AI-assisted findings (verified by Jane Doe)"
    assert (
        "reviewed and verified by Jane Doe on 2026-03-10" in base64.b64decode(en["data"]).decode()
    )
    assert "verified by Jane Doe" in report["text"]["div"]
    old = _one(preliminary, "DiagnosticReport")["resource"]
    assert "Not verified by a radiologist" in old["text"]["div"]


def test_signed_bundle_is_deterministic_and_another_bundle(
    reviewed_report, sign_off, source_images, final, preliminary
):
    again = _bundle(reviewed_report, source_images, sign_off=sign_off)
    assert again == final
    assert final["identifier"] != preliminary["identifier"]
    second = _bundle(
        reviewed_report, source_images, sign_off=dataclasses.replace(sign_off, number=2)
    )
    assert _one(second, "Provenance")["fullUrl"] != _one(final, "Provenance")["fullUrl"]
    assert _one(second, "DiagnosticReport")["request"] == _one(final, "DiagnosticReport")["request"]


def test_a_withdrawn_finding_cannot_also_be_reported(reviewed_report, sign_off, source_images):
    from exporters.errors import ExportError

    contradictory = dataclasses.replace(sign_off, withdrawn=(reviewed_report.findings[0],))
    with pytest.raises(ExportError, match="withdrawn"):
        build_fhir_bundle(
            reviewed_report,
            source_images,
            revision=1,
            patient_identifier_system=SITE_SYSTEM,
            sign_off=contradictory,
        )


def test_exporter_names_the_signed_bundle_apart(reviewed_report, sign_off, source_images):
    plan = plan_regions(reviewed_report, source_images)
    options = ExportOptions(
        revision=1, languages=("en", "zh-CN"), destination="ehr", local_node="RG"
    )
    (model,) = FhirExporter().export(reviewed_report, source_images, plan, options)
    (signed,) = FhirExporter().export(
        reviewed_report, source_images, plan, dataclasses.replace(options, sign_off=sign_off)
    )
    assert signed.kind is OutputKind.FHIR_BUNDLE
    assert (model.filename, signed.filename) == ("fhir-ehr.json", "fhir-ehr-signoff1.json")
    assert model.object_uid != signed.object_uid
    assert json.loads(signed.content)["identifier"] != json.loads(model.content)["identifier"]


# -- validators and the EHR stand-in ---------------------------------------------------------


def test_signed_bundles_pass_the_r4_schema_and_fhirjs(
    tmp_path, reviewed_report, sign_off, source_images, final
):
    amended_zh = _bundle(
        reviewed_report,
        source_images,
        sign_off=dataclasses.replace(sign_off, amends=True),
        primary_language="zh-CN",
    )
    texts = [json.dumps(final, ensure_ascii=False), json.dumps(amended_zh, ensure_ascii=False)]
    for data, result in zip((final, amended_zh), fhir_validate(tmp_path, *texts), strict=True):
        assert len(result["items"]) == len(data["entry"]) + 1
        assert {i["resourceType"] for i in result["items"]} >= {"Practitioner", "Provenance"}
        assert fhir_problems(result) == []


def test_validators_reject_a_wrong_provenance(tmp_path, final):
    """Negative control: the validators look at the new resources (a Provenance without
    its required ``recorded``, a Practitioner with an R5-only element)."""
    broken = json.loads(json.dumps(final))
    for entry in broken["entry"]:
        if entry["resource"]["resourceType"] == "Provenance":
            del entry["resource"]["recorded"]
        if entry["resource"]["resourceType"] == "Practitioner":
            entry["resource"]["pronouns"] = "she/her"
    (result,) = fhir_validate(tmp_path, json.dumps(broken))
    problems = fhir_problems(result)
    assert any("recorded" in p for p in problems), problems
    assert any("pronouns" in p for p in problems), problems


def _post(server: FhirTestServer, data: dict) -> dict:
    request = urllib.request.Request(
        server.base_url,
        data=json.dumps(data).encode("utf-8"),
        headers={"Content-Type": "application/fhir+json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def test_amended_report_replaces_the_preliminary_one_in_the_ehr(
    preliminary, amended, reviewed_report, grounded_report
):
    with FhirTestServer() as server:
        _post(server, preliminary)
        _post(server, amended)
        _post(server, amended)  # a redelivery changes nothing
        (report,) = server.resources("DiagnosticReport")
        assert report["status"] == "amended"
        assert report["meta"]["versionId"] == "3"
        (practitioner,) = server.resources("Practitioner")
        assert report["resultsInterpreter"][0]["reference"] == f"Practitioner/{practitioner['id']}"
        observations = server.resources("Observation")
        model_uids = {f.tracking_uid for f in grounded_report.findings}
        added = [f for f in reviewed_report.findings if f.tracking_uid not in model_uids]
        assert len(observations) == len(grounded_report.findings) + len(added)
        by_status: dict[str, int] = {}
        for observation in observations:
            by_status[observation["status"]] = by_status.get(observation["status"], 0) + 1
        assert by_status == {
            "final": len(reviewed_report.findings),
            "entered-in-error": len(REJECTED),
        }
        (provenance,) = server.resources("Provenance")
        assert provenance["recorded"].startswith(VERIFIED_AT.strftime("%Y-%m-%dT%H:%M:%S"))
        assert f"DiagnosticReport/{report['id']}" in [t["reference"] for t in provenance["target"]]
