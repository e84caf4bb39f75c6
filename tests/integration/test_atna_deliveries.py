"""Outputs sent to a destination are audited (DICOM Instances Transferred, action Read) into
the local audit file: a real study through the node, the pipeline and a DICOM delivery to a
Storage SCP standing in for the PACS, once down and once up."""

from __future__ import annotations

from radground.settings import AuditSettings, DicomDestination
from tests.atna_checks import event_id, parse_syslog, participant_object_ids, schema_errors
from tests.integration import test_pipeline
from tests.integration.test_destinations import settings_for, start_study
from tests.integration.test_pipeline import _world, drain

pacs = test_pipeline.pacs
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def test_each_delivery_attempt_is_audited_with_its_outcome(tmp_path, shared_data, pacs):
    audit_file = tmp_path / "audit" / "audit.log"
    settings = settings_for(
        tmp_path, f"sqlite:///{tmp_path / 'index.db'}",
        {"PACS": DicomDestination(ae_title="PACS", host="127.0.0.1", port=pacs.port)},
    ).model_copy(update={"audit": AuditSettings(file=audit_file, spool_dir=tmp_path / "spool")})
    pacs.stop()
    for world in _world(settings, tmp_path):
        start_study(world, shared_data)
        drain(world.ctx, world.queue)  # the PACS is down: attempt 1 fails
        pacs.start("127.0.0.1", pacs.port)
        drain(world.ctx, world.queue, wait_for_retries=True)  # attempt 2 delivers
    roots = []
    for line in audit_file.read_bytes().splitlines():
        message = parse_syslog(line)
        assert schema_errors(message.xml) == []
        roots.append(message.root)
    sent = [r for r in roots if event_id(r) == "110104"
            and r.find("EventIdentification").get("EventActionCode") == "R"]
    received = [r for r in roots if event_id(r) == "110104"
                and r.find("EventIdentification").get("EventActionCode") == "C"]
    assert len(received) == 1
    study_uid = participant_object_ids(received[0], "110180")
    assert [r.find("EventIdentification").get("EventOutcomeIndicator") for r in sent] == ["4", "0"]
    for root in sent:
        assert participant_object_ids(root, "110180") == study_uid
        source, destination = root.findall("ActiveParticipant")
        assert source.get("UserIsRequestor") == "true"
        assert destination.get("AlternativeUserID") == "AETITLES=PACS"
        assert destination.find("RoleIDCode").get("csd-code") == "110152"
    sop_classes = {c.get("UID") for c in sent[1].iter("SOPClass")}
    assert COMPREHENSIVE_3D_SR in sop_classes
    assert [r.find("EventIdentification/EventTypeCode").get("csd-code")
            for r in roots if event_id(r) == "110100"] == ["110120", "110121"]
