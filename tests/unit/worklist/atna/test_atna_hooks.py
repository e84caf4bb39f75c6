"""Events from the SCP and the worklist's audit trail become audit messages."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from dicom_node.associations import AssociationEnded, AssociationRefused, ReceivedInstance
from tests.atna_checks import event_id, parse_syslog, participant_object_ids, schema_errors
from worklist import atna
from worklist.atna import events
from worklist.atna.hooks import scp_hooks
from worklist.context import audit
from worklist.db import Base

AT = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)


class _Collected:
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def send(self, message: bytes) -> None:
        self.received.append(message)

    def close(self) -> None:
        pass

    def roots(self):
        roots = []
        for raw in self.received:
            message = parse_syslog(raw)
            assert schema_errors(message.xml) == []
            roots.append(message.root)
        return roots


@pytest.fixture
def trail(tmp_path):
    collected = _Collected()
    trail = atna.AuditTrail(collected, node=events.NodeIdentity.here("RADGROUND"),
                            spool=atna.Spool(tmp_path / "spool"))
    previous = atna.install(trail)
    yield trail, collected
    atna.install(previous)
    trail.close()


def test_one_message_per_study_per_association(trail):
    trail, collected = trail
    refused, ended = scp_hooks(trail)
    ended(AssociationEnded(
        calling_ae_title="PACS", called_ae_title="RADGROUND", peer_host="10.0.0.5", at=AT,
        instances=(
            ReceivedInstance("1.2.1", "1.2.840.10008.5.1.4.1.1.2", patient_id="P1"),
            ReceivedInstance("1.2.2", "1.2.840.10008.5.1.4.1.1.1.1", patient_id="P2"),
            ReceivedInstance("1.2.1", "1.2.840.10008.5.1.4.1.1.2", patient_id="P1"),
        ),
    ))
    refused(AssociationRefused("EVIL", "RADGROUND", "10.0.0.6", "calling AE title not allowed",
                               AT))
    assert trail.flush(5)
    first, second, alert = collected.roots()
    assert participant_object_ids(first, "110180") == ["1.2.1"]
    assert participant_object_ids(first, "2") == ["P1"]
    assert first.find(".//SOPClass").get("NumberOfInstances") == "2"
    assert participant_object_ids(second, "110180") == ["1.2.2"]
    assert event_id(alert) == "110113"


def _session() -> Session:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    return Session(engine)


def test_logins_and_account_changes_are_audited_when_their_transaction_commits(trail):
    trail, collected = trail
    with _session() as session:
        audit(session, "web:alice", "login", None, "", source="198.51.100.4")
        audit(session, "web:mallory", "login-failed", None, "wrong password (1 in a row)",
              source="203.0.113.9")
        audit(session, "cli:root", "account-created", None, "account bob role viewer")
        audit(session, "worker", "job-done", 1)  # not an ATNA event
        assert trail.flush(1) and collected.received == []  # nothing before the commit
        session.commit()
    with _session() as session:
        audit(session, "web:eve", "login", None, "", source="192.0.2.1")
        session.rollback()
        audit(session, "worker", "job-done", 2)
        session.commit()  # a later transaction of the same session does not send eve's login
    assert trail.flush(5)
    login, failed, account = collected.roots()
    assert event_id(login) == event_id(failed) == "110114"
    assert login.find("ActiveParticipant").get("UserID") == "alice"
    assert failed.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    assert failed.find("ActiveParticipant").get("NetworkAccessPointID") == "203.0.113.9"
    assert event_id(account) == "110113"
    assert participant_object_ids(account, "11") == ["bob"]


def test_without_an_installed_trail_nothing_is_recorded():
    assert atna.installed() is None
    atna.record(events.application_activity, started=True)  # no error, no message


def test_an_export_names_the_indexed_studies_with_their_sop_classes(trail):
    from worklist.atna.hooks import data_exported
    from worklist.models import Instance, Patient, Series, Study

    trail, collected = trail
    with _session() as session:
        patient = Patient(patient_id="P9", issuer_of_patient_id="", patients_name="X^Y")
        study = Study(study_instance_uid="1.2.9", patient=patient, accession_number="ACC9",
                      first_received_at=AT, last_received_at=AT)
        series = Series(series_instance_uid="1.2.9.1", study=study)
        session.add_all([patient, study, series])
        for n, sop_class in enumerate(("1.2.840.10008.5.1.4.1.1.1.1",) * 2):
            session.add(Instance(
                sop_instance_uid=f"1.2.9.1.{n}", series=series, sop_class_uid=sop_class,
                transfer_syntax_uid="1.2.840.10008.1.2.1", size=1, path="x",
                calling_ae_title="PACS", received_at=AT, revision=1,
            ))
        session.commit()
        data_exported(session, exporter="cli:alice", destination="file:///export/out",
                      study_instance_uids=["1.2.9", "9.9.9"])
    assert trail.flush(5)
    (root,) = collected.roots()
    assert event_id(root) == "110106"
    assert participant_object_ids(root, "110180") == ["1.2.9"]  # the unknown study is left out
    assert participant_object_ids(root, "2") == ["P9"]
    assert root.find(".//SOPClass").get("NumberOfInstances") == "2"
    assert root.find(".//Accession").get("Number") == "ACC9"
    assert root.findall("ActiveParticipant")[1].get("UserID") == "file:///export/out"
