"""The destination registry: every configured type resolves to its destination, with its
target built from its settings section; an unknown type is refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from radground.runtime import build_destination, retry_policy
from radground.settings import (
    DeliverySettings,
    DestinationType,
    DicomDestination,
    DicomWebDestination,
    FhirEndpointSettings,
    Hl7Destination,
    SettingsError,
)
from worklist.destinations import (
    DESTINATION_TYPES,
    ArtifactFile,
    DicomStoreDestination,
    DicomTarget,
    DicomWebTarget,
    FhirTarget,
    FhirTransactionDestination,
    Hl7Target,
    MllpDestination,
    StowDestination,
    UnknownDestinationTypeError,
    destination_for,
    select_artifacts,
)

SECTIONS = {
    "dicom": DicomDestination(
        ae_title="PACS", host="pacs", port=104, outputs=("sr", "gsps", "kos")
    ),
    "dicomweb": DicomWebDestination(
        url="https://vna/dicom-web", auth="bearer", token_env="RG_TEST_VNA_TOKEN", retry_for_hours=2
    ),
    "fhir": FhirEndpointSettings(
        url="https://ehr/fhir",
        auth="basic",
        username="rg",
        password_env="RG_TEST_EHR_PASSWORD",
        primary_language="zh-CN",
    ),
    "hl7": Hl7Destination(
        host="ris",
        port=2575,
        receiving_application="RIS",
        receiving_facility="RAD",
        processing_id="T",
        ack_timeout_seconds=5,
    ),
}


def test_every_configurable_type_has_a_destination():
    assert set(DESTINATION_TYPES) == set(get_args(DestinationType))
    expected = {
        "dicom": DicomStoreDestination,
        "dicomweb": StowDestination,
        "fhir": FhirTransactionDestination,
        "hl7": MllpDestination,
    }
    for name, cls in expected.items():
        assert isinstance(destination_for(name), cls)
        assert destination_for(name).type == name


def test_an_unknown_type_is_refused_naming_it_and_the_destination():
    with pytest.raises(UnknownDestinationTypeError) as info:
        destination_for("smtp", name="MAIL")
    assert str(info.value) == (
        "destination 'MAIL': unknown destination type 'smtp'; "
        "known types: dicom, dicomweb, fhir, hl7"
    )
    assert isinstance(info.value, ValueError)


def test_each_section_builds_its_type_target(monkeypatch):
    monkeypatch.setenv("RG_TEST_VNA_TOKEN", "tok-1")
    monkeypatch.setenv("RG_TEST_EHR_PASSWORD", "pw-2")
    targets = {
        kind: build_destination(kind.upper(), section, calling_ae_title="RADGROUND")
        for kind, section in SECTIONS.items()
    }
    assert {kind: type(t) for kind, t in targets.items()} == {
        "dicom": DicomTarget,
        "dicomweb": DicomWebTarget,
        "fhir": FhirTarget,
        "hl7": Hl7Target,
    }
    for kind, target in targets.items():
        assert target.type == kind and target.name == kind.upper()
        assert isinstance(destination_for(target.type), type(destination_for(kind)))
    assert str(targets["dicom"].destination) == "PACS@pacs:104" and targets["dicom"].outputs == (
        "sr",
        "gsps",
        "kos",
    )
    assert targets["dicomweb"].auth.headers() == {"Authorization": "Bearer tok-1"}
    assert (
        targets["dicomweb"].retry_for_seconds == 7200 and targets["dicom"].retry_for_seconds is None
    )
    assert targets["fhir"].auth.password == "pw-2" and targets["fhir"].primary_language == "zh-CN"
    hl7 = targets["hl7"]
    assert (
        hl7.host,
        hl7.port,
        hl7.receiving_application,
        hl7.receiving_facility,
        hl7.ack_timeout_seconds,
        hl7.tls,
    ) == ("ris", 2575, "RIS", "RAD", 5, None)
    assert (hl7.sending_facility, hl7.processing_id) == (None, "T")


def test_a_secret_can_come_from_a_file_and_a_missing_one_is_named(tmp_path, monkeypatch):
    token = tmp_path / "token"
    token.write_text("tok-from-file\n")
    token.chmod(0o600)
    section = DicomWebDestination(url="https://vna/dw", auth="bearer", token_file=str(token))
    target = build_destination("VNA", section, calling_ae_title="RG")
    assert target.auth.headers() == {"Authorization": "Bearer tok-from-file"}
    monkeypatch.delenv("RG_TEST_VNA_TOKEN", raising=False)
    with pytest.raises(
        SettingsError, match=r"destinations\.VNA: .*\$RG_TEST_VNA_TOKEN, which is empty or unset"
    ):
        build_destination("VNA", SECTIONS["dicomweb"], calling_ae_title="RG")
    with pytest.raises(SettingsError, match=r"destinations\.VNA: .*nowhere"):
        build_destination(
            "VNA",
            section.model_copy(update={"token_file": str(tmp_path / "nowhere")}),
            calling_ae_title="RG",
        )


def test_tls_options_are_checked_when_the_target_is_built(tmp_path):
    section = Hl7Destination(
        host="ris", port=2575, tls=True, ca_bundle=str(tmp_path / "missing.pem")
    )
    with pytest.raises(SettingsError, match=r"destinations\.RIS: ca_bundle"):
        build_destination("RIS", section, calling_ae_title="RG")
    plain = build_destination(
        "RIS", section.model_copy(update={"ca_bundle": ""}), calling_ae_title="RG"
    )
    assert plain.tls is not None and plain.tls.verify


def test_the_delivery_section_makes_the_retry_policy():
    policy = retry_policy(
        DeliverySettings(retry_for_hours=4, backoff_base_seconds=2, backoff_cap_seconds=90)
    )
    assert (policy.retry_for_seconds, policy.base_seconds, policy.cap_seconds) == (4 * 3600, 2, 90)


def test_a_destination_refuses_another_types_target():
    with pytest.raises(TypeError, match="dicomweb destination delivers to a DicomWebTarget"):
        destination_for("dicomweb").deliver(
            [], build_destination("PACS", SECTIONS["dicom"], calling_ae_title="RG")
        )


def test_artifacts_are_selected_by_output_kind_and_language():
    target = DicomTarget(
        destination=build_destination("P", SECTIONS["dicom"], calling_ae_title="RG").destination,
        outputs=("sr", "gsps"),
        languages=("en",),
    )
    artifacts = [
        ArtifactFile(kind, language, f"1.2.{i}", Path(f"/o/{i}.dcm"))
        for i, (kind, language) in enumerate(
            [
                ("sr", "en"),
                ("sr", "zh-CN"),
                ("csps", "en"),
                ("gsps", "en"),
                ("sc", "en"),
                ("fhir", "en"),
            ]
        )
    ]
    assert [a.object_uid for a in select_artifacts(artifacts, target)] == [
        "1.2.0",
        "1.2.2",
        "1.2.3",
    ]


def test_an_outcome_says_why_it_failed_and_only_a_retry_names_what_is_left():
    from worklist.destinations import DeliveryOutcome, DeliveryStatus

    assert DeliveryOutcome.delivered().ok
    retry = DeliveryOutcome.retryable(
        "HTTP 503", log_text="HTTP 503", retry_after=7.0, remaining=["1.2.3"]
    )
    assert (retry.status, retry.remaining, retry.retry_after, retry.ok) == (
        DeliveryStatus.RETRYABLE,
        ("1.2.3",),
        7.0,
        False,
    )
    with pytest.raises(ValueError, match="needs an answer"):
        DeliveryOutcome.final("")
    with pytest.raises(ValueError, match="remaining"):
        DeliveryOutcome(DeliveryStatus.FINAL, answer="AR", remaining=("RG1",))
    # the log gets status codes, not what the peer wrote (it may echo patient data)
    assert (
        DeliveryOutcome.final(
            "FHIR EHR: HTTP 422: Patient Zhang", log_text="FHIR EHR: HTTP 422"
        ).loggable
        == "FHIR EHR: HTTP 422"
    )


def test_a_destinations_own_bundle_and_message_of_either_set_are_recognised():
    from worklist.destinations.fhir_transaction import is_bundle_for
    from worklist.destinations.hl7_mllp import is_message_for

    assert is_bundle_for("fhir-EHR.json", "EHR") and is_bundle_for("fhir-EHR-signoff2.json", "EHR")
    assert not is_bundle_for("fhir-EHR2.json", "EHR")
    assert not is_bundle_for("fhir-EHR2-signoff1.json", "EHR")
    assert not is_bundle_for("fhir-EHR-signoff0.json", "EHR")
    assert not is_bundle_for("fhir.json", "EHR")
    assert is_message_for("hl7-RIS.hl7", "RIS") and is_message_for("hl7-RIS-signoff1.hl7", "RIS")
    assert not is_message_for("hl7-RIS-B-signoff1.hl7", "RIS")
