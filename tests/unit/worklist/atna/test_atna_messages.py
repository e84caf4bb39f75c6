"""DICOM audit messages (PS3.15 A.5): every event RadGround sends validates against the schema
of A.5.1 and carries the fields A.5.3 asks for, by name."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from lxml import etree

from tests.atna_checks import event_id, participant_object_ids, schema_errors
from worklist.atna import events
from worklist.atna.messages import AuditMessage

CT = "1.2.840.10008.5.1.4.1.1.2"
SR = "1.2.840.10008.5.1.4.1.1.88.34"
AT = datetime(2026, 12, 6, 3, 0, 0, 123000, tzinfo=UTC)
NODE = events.NodeIdentity.here("RADGROUND", enterprise_site_id="Radiology", host="10.1.2.3")
PEER = events.DicomPeer("PACS", "192.0.2.7")
STUDY = events.StudyObjects(
    study_instance_uid="1.2.3.4.5", sop_class_uids=(CT, CT, CT, SR), patient_id="P-042",
    issuer_of_patient_id="HOSP", accession_number="A77",
)


def _all_messages() -> dict[str, AuditMessage]:
    return {
        "start": events.application_activity(NODE, started=True, launcher="radground", at=AT),
        "stop": events.application_activity(NODE, started=False, at=AT),
        "refused": events.association_refused(
            NODE, PEER, reason="association refused: calling AE title not allowed", at=AT
        ),
        "received": events.instances_transferred(NODE, received=True, peer=PEER, study=STUDY,
                                                 at=AT),
        "sent": events.instances_transferred(
            NODE, received=False, peer=events.DicomPeer("", "ehr.example", url="https://ehr/fhir"),
            study=STUDY, succeeded=False, outcome_description="HTTP 503", at=AT,
        ),
        "query": events.query(NODE, requestor="alice", client_address="198.51.100.4",
                              query_text=b"patient_id=P-042&limit=50", matches=3, at=AT),
        "export": events.data_export(NODE, exporter="alice", destination="file:///mnt/usb/out",
                                     studies=[STUDY], at=AT),
        "login": events.user_authentication(NODE, user="alice", client_address="198.51.100.4",
                                            succeeded=True, at=AT),
        "login-failed": events.user_authentication(
            NODE, user="mallory", client_address="203.0.113.9", succeeded=False,
            reason="wrong password", at=AT,
        ),
        "account": events.account_changed(NODE, actor="admin", account="alice",
                                          change="account-created: role viewer",
                                          roles_changed=True, at=AT),
    }


@pytest.mark.parametrize("name", list(_all_messages()))
def test_every_message_validates_against_the_audit_message_schema(name):
    xml = _all_messages()[name].to_xml()
    assert schema_errors(xml) == []


def test_the_schema_refuses_what_it_should():
    """The schema check can fail: a message without EventDateTime, a bad outcome value and
    elements out of order are refused."""
    root = etree.fromstring(_all_messages()["received"].to_xml())
    no_time = etree.fromstring(etree.tostring(root))
    del no_time.find("EventIdentification").attrib["EventDateTime"]
    assert schema_errors(etree.tostring(no_time))
    bad_outcome = etree.fromstring(etree.tostring(root))
    bad_outcome.find("EventIdentification").set("EventOutcomeIndicator", "3")
    assert schema_errors(etree.tostring(bad_outcome))
    reordered = etree.fromstring(etree.tostring(root))
    source = reordered.find("AuditSourceIdentification")
    reordered.remove(source)
    reordered.insert(0, source)
    assert schema_errors(etree.tostring(reordered))


def test_instances_received_names_study_sop_classes_patient_and_participants():
    root = etree.fromstring(_all_messages()["received"].to_xml())
    identification = root.find("EventIdentification")
    assert event_id(root) == "110104"
    assert identification.find("EventID").get("codeSystemName") == "DCM"
    assert identification.find("EventID").get("originalText") == "DICOM Instances Transferred"
    assert identification.get("EventActionCode") == "C"
    assert identification.get("EventOutcomeIndicator") == "0"
    assert identification.get("EventDateTime") == "2026-12-06T03:00:00.123+00:00"
    source, destination = root.findall("ActiveParticipant")
    assert source.get("UserID") == "PACS"
    assert source.get("AlternativeUserID") == "AETITLES=PACS"
    assert source.get("UserIsRequestor") == "true"
    assert source.get("NetworkAccessPointID") == "192.0.2.7"
    assert source.get("NetworkAccessPointTypeCode") == "2"
    assert source.find("RoleIDCode").get("csd-code") == "110153"
    assert destination.get("UserIsRequestor") == "false"
    assert destination.get("AlternativeUserID") == "AETITLES=RADGROUND"
    assert destination.find("RoleIDCode").get("csd-code") == "110152"
    audit_source = root.find("AuditSourceIdentification")
    assert audit_source.get("AuditSourceID") == "RADGROUND"
    assert audit_source.get("AuditEnterpriseSiteID") == "Radiology"
    assert audit_source.find("AuditSourceTypeCode").get("csd-code") == "4"
    assert participant_object_ids(root, "110180") == ["1.2.3.4.5"]
    assert participant_object_ids(root, "2") == ["P-042^^^HOSP"]
    study = root.find("ParticipantObjectIdentification")
    assert study.get("ParticipantObjectTypeCode") == "2"
    assert study.get("ParticipantObjectTypeCodeRole") == "3"
    description = study.find("ParticipantObjectDescription")
    counts = {(c.get("UID"), c.get("NumberOfInstances")) for c in description.findall("SOPClass")}
    assert counts == {(CT, "3"), (SR, "1")}
    assert description.find("Accession").get("Number") == "A77"
    patient = root.findall("ParticipantObjectIdentification")[1]
    assert patient.get("ParticipantObjectTypeCode") == "1"
    assert patient.get("ParticipantObjectTypeCodeRole") == "1"


def test_instances_sent_are_read_from_this_node_to_the_destination():
    root = etree.fromstring(_all_messages()["sent"].to_xml())
    identification = root.find("EventIdentification")
    assert identification.get("EventActionCode") == "R"
    assert identification.get("EventOutcomeIndicator") == "4"
    assert identification.findtext("EventOutcomeDescription") == "HTTP 503"
    source, destination = root.findall("ActiveParticipant")
    assert source.get("UserIsRequestor") == "true" and source.get("UserID") == NODE.process_id
    assert destination.get("UserID") == "https://ehr/fhir"
    assert destination.get("NetworkAccessPointTypeCode") == "1"  # a host name


def test_application_activity_start_and_stop():
    messages = _all_messages()
    for name, type_code in (("start", "110120"), ("stop", "110121")):
        root = etree.fromstring(messages[name].to_xml())
        assert event_id(root) == "110100"
        assert root.find("EventIdentification").get("EventActionCode") == "E"
        assert root.find("EventIdentification/EventTypeCode").get("csd-code") == type_code
        application = root.find("ActiveParticipant")
        assert application.find("RoleIDCode").get("csd-code") == "110150"
    launcher = etree.fromstring(messages["start"].to_xml()).findall("ActiveParticipant")[1]
    assert launcher.get("UserID") == "radground"
    assert launcher.find("RoleIDCode").get("csd-code") == "110151"


def test_security_alerts_for_refused_associations_and_account_changes():
    refused = etree.fromstring(_all_messages()["refused"].to_xml())
    assert event_id(refused) == "110113"
    assert refused.find("EventIdentification/EventTypeCode").get("csd-code") == "110126"
    assert refused.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    assert participant_object_ids(refused, "110182") == ["192.0.2.7"]
    detail = refused.find("ParticipantObjectIdentification/ParticipantObjectDetail")
    assert detail.get("type") == "Alert Description"
    assert b"calling AE title not allowed" in base64.b64decode(detail.get("value"))
    account = etree.fromstring(_all_messages()["account"].to_xml())
    assert event_id(account) == "110113"
    assert account.find("EventIdentification/EventTypeCode").get("csd-code") == "110136"
    assert participant_object_ids(account, "11") == ["alice"]
    assert account.findall("ActiveParticipant")[1].get("UserID") == "admin"


def test_query_carries_the_query_and_its_match_count():
    root = etree.fromstring(_all_messages()["query"].to_xml())
    assert event_id(root) == "110112"
    query = root.find("ParticipantObjectIdentification")
    assert query.get("ParticipantObjectTypeCodeRole") == "24"
    query_text = base64.b64decode(query.findtext("ParticipantObjectQuery"))
    assert query_text == b"patient_id=P-042&limit=50"
    detail = query.find("ParticipantObjectDetail")
    assert (detail.get("type"), base64.b64decode(detail.get("value"))) == ("NumberOfMatches", b"3")


def test_export_names_the_destination_media_and_studies():
    root = etree.fromstring(_all_messages()["export"].to_xml())
    assert event_id(root) == "110106"
    media = root.findall("ActiveParticipant")[1]
    assert media.get("UserID") == "file:///mnt/usb/out"
    assert media.find("RoleIDCode").get("csd-code") == "110154"
    assert media.find("MediaIdentifier/MediaType").get("csd-code") == "110037"
    assert participant_object_ids(root, "110180") == ["1.2.3.4.5"]


def test_user_authentication_success_and_failure():
    ok = etree.fromstring(_all_messages()["login"].to_xml())
    failed = etree.fromstring(_all_messages()["login-failed"].to_xml())
    for root in (ok, failed):
        assert event_id(root) == "110114"
        assert root.find("EventIdentification/EventTypeCode").get("csd-code") == "110122"
    assert ok.find("EventIdentification").get("EventOutcomeIndicator") == "0"
    assert failed.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    assert failed.findtext("EventIdentification/EventOutcomeDescription") == "wrong password"
    user = failed.find("ActiveParticipant")
    assert (user.get("UserID"), user.get("NetworkAccessPointID")) == ("mallory", "203.0.113.9")


def test_a_study_without_patient_id_still_names_its_patient_object():
    study = events.StudyObjects(study_instance_uid="1.2.3", sop_class_uids=(CT,))
    message = events.instances_transferred(NODE, received=True, peer=PEER, study=study, at=AT)
    root = etree.fromstring(message.to_xml())
    assert participant_object_ids(root, "2") == ["<none>"]
    assert schema_errors(message.to_xml()) == []


def test_bad_values_are_refused_at_construction():
    with pytest.raises(ValueError, match="time zone"):
        events.application_activity(NODE, started=True, at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="user_id"):
        events.user_authentication(NODE, user="", client_address="", succeeded=True)


def test_what_a_peer_sends_cannot_break_the_xml_or_the_line():
    peer = events.DicomPeer("EVIL\x01<AE>\n", "192.0.2.9")
    message = events.association_refused(NODE, peer, reason="bad\r\nreason & <more>", at=AT)
    xml = message.to_xml()
    assert b"\n" not in xml and b"\r" not in xml and b"\x01" not in xml
    assert schema_errors(xml) == []
    root = etree.fromstring(xml)
    assert root.findall("ActiveParticipant")[1].get("UserID") == "EVIL <AE>"
    assert root.findtext("EventIdentification/EventOutcomeDescription") == "bad  reason & <more>"
