"""IHE ATNA audit messages delivered to a real audit repository: a private rsyslog (Debian's
``rsyslog`` + ``rsyslog-gnutls``) receiving RFC 5425 syslog over TLS and RFC 5426 over UDP.

The node's own flow (dcmtk's storescu sending a study, an association refused, start and
stop) produces the messages; each received message is parsed as RFC 5424 and checked against
the DICOM audit message schema (PS3.15 A.5.1) and by field name. A stopped repository
buffers messages on disk; they arrive when it is back.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from radground.node import Node
from radground.settings import (
    AuditSettings,
    CompletionSettings,
    DatabaseSettings,
    NodeSettings,
    Settings,
    StorageSettings,
)
from tests.atna_checks import event_id, parse_syslog, participant_object_ids, schema_errors
from tests.factories import write_series
from tests.integration.dcmtk import echoscu, storescu
from tests.integration.rsyslog import PrivateRsyslog
from tests.integration.tls import self_signed_certificate
from worklist import atna
from worklist.atna import events

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def certificate(tmp_path):
    return self_signed_certificate(tmp_path / "pki")


@pytest.fixture
def tls_repository(tmp_path, certificate):
    repository = PrivateRsyslog(tmp_path / "rsyslog", tls=certificate)
    yield repository
    repository.stop()


def _checked(lines: list[bytes]):
    """Each received line as (syslog message, XML root), checked against RFC 5424/ITI-20 and
    the schema."""
    checked = []
    for line in lines:
        message = parse_syslog(line)
        assert (message.pri, message.msgid, message.app_name) == (85, "IHE+RFC-3881", "radground")
        assert schema_errors(message.xml) == [], message.xml
        checked.append((message, message.root))
    return checked


def _trail(repository: PrivateRsyslog, certificate, spool: Path) -> atna.AuditTrail:
    return atna.AuditTrail(
        atna.SyslogTlsTransport("127.0.0.1", repository.tls_port,
                                atna.TlsClientOptions(ca_file=certificate[0])),
        node=events.NodeIdentity.here("RADGROUND"),
        spool=atna.Spool(spool),
        retry_seconds=0.3,
    )


@pytest.mark.parametrize("listener_processes", [1, 2])
def test_the_nodes_own_flow_arrives_in_rsyslog_over_tls(
    tmp_path, tls_repository, certificate, listener_processes
):
    """With listener processes, each one sends what its associations did."""
    settings = Settings(
        node=NodeSettings(port=0, listener_processes=listener_processes),
        storage=StorageSettings(root=tmp_path / "instances", reserve_mb=0, fsync="never"),
        database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'index.db'}"),
        completion=CompletionSettings(idle_seconds=30, poll_seconds=3600),
        audit=AuditSettings(
            transport="tls", host="127.0.0.1", port=tls_repository.tls_port,
            ca_file=str(certificate[0]), spool_dir=tmp_path / "spool", retry_seconds=0.5,
            enterprise_site_id="Test Hospital",
        ),
    )
    files = write_series(tmp_path / "study", 3)
    header = dcmread(files[0], stop_before_pixels=True)
    node = Node(settings)
    node.start()
    try:
        sent = storescu(node.address[1], files, calling="MODALITY1")
        assert sent.responses == ["Success"] * 3, sent.output
        refused = echoscu(node.address[1], called="NOT-RADGROUND")
        assert refused.returncode != 0
    finally:
        node.stop()
    received = _checked(tls_repository.wait_for(4))
    by_event: dict[str, list] = {}
    for _, root in received:
        by_event.setdefault(event_id(root), []).append(root)
    # Application Activity: start and stop
    activity = [r.find("EventIdentification/EventTypeCode").get("csd-code")
                for r in by_event["110100"]]
    assert activity == ["110120", "110121"]
    # DICOM Instances Transferred: one message for the study on that association
    (transferred,) = by_event["110104"]
    assert transferred.find("EventIdentification").get("EventActionCode") == "C"
    assert participant_object_ids(transferred, "110180") == [header.StudyInstanceUID]
    assert participant_object_ids(transferred, "2") == [header.PatientID]
    sop_class = transferred.find("ParticipantObjectIdentification/ParticipantObjectDescription/"
                                 "SOPClass")
    assert (sop_class.get("UID"), sop_class.get("NumberOfInstances")) == (CT_IMAGE_STORAGE, "3")
    source = transferred.find("ActiveParticipant")
    assert source.get("AlternativeUserID") == "AETITLES=MODALITY1"
    assert source.get("NetworkAccessPointID") == "127.0.0.1"
    assert transferred.find("AuditSourceIdentification").get(
        "AuditEnterpriseSiteID") == "Test Hospital"
    # Security Alert: the association addressed to another AE title
    (alert,) = by_event["110113"]
    assert alert.find("EventIdentification/EventTypeCode").get("csd-code") == "110126"
    assert alert.findall("ActiveParticipant")[1].get("UserID") == "ECHOSCU"
    assert not list((tmp_path / "spool").glob("*.msg"))


def test_a_stopped_repository_gets_the_buffered_messages_when_it_is_back(
    tmp_path, tls_repository, certificate
):
    trail = _trail(tls_repository, certificate, tmp_path / "spool")
    node = trail.node
    try:
        trail.record(events.application_activity(node, started=True))
        assert trail.flush(10)
        assert len(tls_repository.wait_for(1)) == 1
        tls_repository.stop()
        for user in ("alice", "bob", "carol"):
            trail.record(events.user_authentication(
                node, user=user, client_address="198.51.100.4", succeeded=False,
                reason="wrong password",
            ))
        assert not trail.flush(2)  # still waiting for the repository
        spooled = sorted((tmp_path / "spool").glob("*.msg"))
        assert len(spooled) == 3
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in spooled)
        assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
        time.sleep(0.5)
        assert len(tls_repository.lines()) == 1  # nothing sent while it is down
        tls_repository.start()
        assert trail.flush(20)
        received = _checked(tls_repository.wait_for(4))
    finally:
        trail.close()
    users = [root.find("ActiveParticipant").get("UserID") for _, root in received[1:]]
    assert users == ["alice", "bob", "carol"]  # in the order recorded
    assert not list((tmp_path / "spool").glob("*.msg*"))


def test_messages_spooled_by_a_process_that_stopped_are_sent_by_the_next(
    tmp_path, tls_repository, certificate
):
    spool = atna.Spool(tmp_path / "spool")
    node = events.NodeIdentity.here("RADGROUND")
    from worklist.atna.syslog import syslog_message

    spool.add(syslog_message(events.application_activity(node, started=False).to_xml(),
                             hostname="node1"))
    trail = _trail(tls_repository, certificate, tmp_path / "spool")
    try:
        assert trail.flush(10)
        (line,) = tls_repository.wait_for(1)
    finally:
        trail.close()
    assert parse_syslog(line).hostname == "node1"


def test_udp_transport_reaches_a_private_rsyslog(tmp_path):
    repository = PrivateRsyslog(tmp_path / "rsyslog", udp=True)
    try:
        trail = atna.AuditTrail(
            atna.SyslogUdpTransport("127.0.0.1", repository.udp_port),
            node=events.NodeIdentity.here("RADGROUND"), spool=atna.Spool(tmp_path / "spool"),
        )
        try:
            trail.record(events.query(trail.node, requestor="alice", client_address="127.0.0.1",
                                      query_text=b"modality=CR", matches=2))
            assert trail.flush(10)
            ((message, root),) = _checked(repository.wait_for(1))
        finally:
            trail.close()
    finally:
        repository.stop()
    assert event_id(root) == "110112"
    assert message.proc_id == str(os.getpid())
