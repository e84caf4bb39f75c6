"""IHE ATNA messages from the HTTP surface: a study search (Query), STOW-RS (DICOM Instances
Transferred per study) and account changes (Security Alert), through the real app and database."""

from __future__ import annotations

import base64

import pytest
from pydicom import dcmread

from dicom_node.ingest import InstanceIngest
from dicom_node.storage import InstanceStore
from tests.atna_checks import event_id, parse_syslog, participant_object_ids, schema_errors
from tests.factories import write_series
from tests.unit.web.test_stow_routes import multipart
from web.app import create_app
from worklist import atna
from worklist.accounts_models import Role
from worklist.atna import events
from worklist.hooks import make_index_hook


class _Collected:
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def send(self, message: bytes) -> None:
        self.received.append(message)

    def close(self) -> None:
        pass


@pytest.fixture
def audited(tmp_path):
    """An installed audit trail; ``audited()`` gives the XML roots of what it sent so far."""
    collected = _Collected()
    trail = atna.AuditTrail(collected, node=events.NodeIdentity.here("RADGROUND"),
                            spool=atna.Spool(tmp_path / "audit-spool"))
    previous = atna.install(trail)

    def roots():
        assert trail.flush(5)
        found = []
        for raw in collected.received:
            message = parse_syslog(raw)
            assert schema_errors(message.xml) == []
            found.append(message.root)
        return found

    yield roots
    atna.install(previous)
    trail.close()


@pytest.fixture
def web_context(web_context, migrated_engine, tmp_path):
    ingest = InstanceIngest(
        InstanceStore(tmp_path / "storage"), on_stored=make_index_hook(migrated_engine)
    )
    return type(web_context)(
        sessions=web_context.sessions, pipeline=web_context.pipeline, ingest=ingest,
        stow_max_request_bytes=2 * 1024 * 1024,
    )


@pytest.fixture
def app(web_context):
    return create_app(web_context)


def test_account_changes_and_a_study_search_are_audited(client, token_for, audited):
    token = token_for(Role.VIEWER, "read")  # creates the account viewer1 and its token
    answer = client.get("/api/v1/studies?modality=CR&limit=5",
                        headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    created, issued, query = audited()
    for alert in (created, issued):
        assert event_id(alert) == "110113"
        assert participant_object_ids(alert, "11") == ["viewer1"]
    assert created.find("EventIdentification/EventTypeCode").get("csd-code") == "110136"
    assert event_id(query) == "110112"
    assert query.find("ActiveParticipant").get("UserID") == "viewer1"
    assert query.find("ActiveParticipant").get("NetworkAccessPointID") == "testclient"
    query_text = query.findtext("ParticipantObjectIdentification/ParticipantObjectQuery")
    assert base64.b64decode(query_text) == b"modality=CR&limit=5"


def test_stow_rs_is_audited_per_study_with_the_patient_from_the_index(
    client, token_for, audited, tmp_path
):
    token = token_for(Role.OPERATOR, "ingest")
    first = write_series(tmp_path / "a", 2)
    second = write_series(tmp_path / "b", 1)
    body, content_type = multipart(*(p.read_bytes() for p in first + second))
    answer = client.post("/dicomweb/studies", content=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": content_type,
    })
    assert answer.status_code == 200, answer.text
    transferred = [r for r in audited() if event_id(r) == "110104"]
    assert len(transferred) == 2
    for files, root in zip((first, second), transferred, strict=True):
        header = dcmread(files[0], stop_before_pixels=True)
        assert participant_object_ids(root, "110180") == [header.StudyInstanceUID]
        assert participant_object_ids(root, "2") == [header.PatientID]
        assert root.find(".//SOPClass").get("NumberOfInstances") == str(len(files))
        source = root.find("ActiveParticipant")
        assert (source.get("UserID"), source.get("UserIsRequestor")) == ("operator1", "true")


def test_console_logins_failed_or_not_and_logout_are_audited(client, web_context, audited):
    import re

    from web.accounts import create_account

    with web_context.sessions.begin() as session:
        create_account(session, "olga", Role.OPERATOR, password="correct horse battery",
                       actor="test")
    refused = client.post("/login", data={"username": "olga", "password": "wrong one!!",
                                          "next": "/"}, follow_redirects=False)
    assert refused.status_code == 401
    signed_in = client.post("/login", data={"username": "olga",
                                            "password": "correct horse battery", "next": "/"},
                            follow_redirects=False)
    assert signed_in.status_code == 303
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text).group(1)
    assert client.post("/logout", data={"csrf_token": csrf},
                       follow_redirects=False).status_code == 303
    logins = [r for r in audited() if event_id(r) == "110114"]
    outcomes = [(r.find("EventIdentification").get("EventOutcomeIndicator"),
                 r.find("EventIdentification/EventTypeCode").get("csd-code"),
                 r.find("ActiveParticipant").get("UserID")) for r in logins]
    assert outcomes == [("4", "110122", "olga"), ("0", "110122", "olga"), ("0", "110123", "olga")]
    assert logins[0].findtext("EventIdentification/EventOutcomeDescription").startswith(
        "wrong password")
