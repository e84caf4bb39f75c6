"""Syslog framing (RFC 5424/5425), the local audit file, the spool and the trail's buffering."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from datetime import UTC, datetime

import pytest

from tests.atna_checks import parse_syslog, schema_errors
from worklist import atna
from worklist.atna import events
from worklist.atna.syslog import (
    AuditFile,
    AuditTransportError,
    SyslogTlsTransport,
    TlsClientOptions,
    syslog_message,
)
from worklist.atna.trail import MESSAGES_DROPPED

NODE = events.NodeIdentity.here("RADGROUND", host="node-1.example")


def _xml() -> bytes:
    return events.application_activity(NODE, started=True).to_xml()


def test_syslog_message_is_rfc5424_as_ihe_iti20_asks():
    at = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
    raw = syslog_message(_xml(), hostname="node 1\n.example", proc_id="4242", at=at)
    assert raw.startswith(b"<85>1 2026-12-06T03:00:00.000+00:00 node1.example radground 4242 "
                          b"IHE+RFC-3881 - \xef\xbb\xbf<?xml")
    parsed = parse_syslog(raw)
    assert parsed.msgid == "IHE+RFC-3881" and schema_errors(parsed.xml) == []
    assert b"\n" not in raw


def test_audit_file_is_private_and_rotates(tmp_path):
    path = tmp_path / "audit" / "audit.log"
    audit_file = AuditFile(path, max_bytes=3000, backups=2)
    message = syslog_message(_xml(), hostname="h")
    for _ in range(12):
        audit_file.send(message)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    kept = sorted(p.name for p in path.parent.glob("audit.log*") if not p.name.endswith(".lock"))
    assert kept == ["audit.log", "audit.log.1", "audit.log.2"]
    for name in kept:
        lines = (path.parent / name).read_bytes().splitlines()
        assert lines and all(parse_syslog(line).xml.startswith(b"<?xml") for line in lines)
        assert (path.parent / name).stat().st_size <= 3000


def test_tls_transport_refuses_an_untrusted_repository(tmp_path):
    from tests.integration.tls import self_signed_certificate

    server_cert = self_signed_certificate(tmp_path / "server")
    other_ca, _ = self_signed_certificate(tmp_path / "other")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(server_cert[0]), str(server_cert[1]))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        connection, _ = listener.accept()
        try:
            with context.wrap_socket(connection, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    transport = SyslogTlsTransport("127.0.0.1", port, TlsClientOptions(ca_file=other_ca))
    with pytest.raises(AuditTransportError, match="CERTIFICATE_VERIFY_FAILED"):
        transport.send(b"x")
    transport.close()
    listener.close()
    thread.join(5)


def test_tls_transport_frames_with_octet_counting(tmp_path):
    from tests.integration.tls import self_signed_certificate

    cert, key = self_signed_certificate(tmp_path / "server")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    listener = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def serve() -> None:
        connection, _ = listener.accept()
        with context.wrap_socket(connection, server_side=True) as tls:
            while chunk := tls.recv(65536):
                received.extend(chunk)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    transport = SyslogTlsTransport("127.0.0.1", listener.getsockname()[1],
                                   TlsClientOptions(ca_file=cert))
    first, second = syslog_message(_xml(), hostname="a"), syslog_message(_xml(), hostname="b")
    transport.send(first)
    transport.send(second)
    transport.close()
    thread.join(5)
    listener.close()
    assert bytes(received) == (f"{len(first)} ".encode() + first
                               + f"{len(second)} ".encode() + second)


def test_spool_keeps_order_limits_its_size_and_claims_once(tmp_path):
    spool = atna.Spool(tmp_path / "spool", max_messages=3)
    dropped = [spool.add(f"m{i}".encode()) for i in range(5)]
    assert dropped == [0, 0, 0, 1, 1]
    assert len(spool) == 3
    other = atna.Spool(tmp_path / "spool", max_messages=3)  # another process's view
    claims = spool.claimed()
    claim, payload = next(claims)
    assert payload == b"m2"
    assert [p for _, p in other.claimed()] == [b"m3", b"m4"]  # m2 is taken
    spool.release(claim)
    assert len(spool) == 1  # only m2 waits again: the other's claims are still held


class _Repository:
    """A transport that is down until told otherwise (the trail's side is under test here)."""

    def __init__(self) -> None:
        self.up = False
        self.received: list[bytes] = []

    def send(self, message: bytes) -> None:
        if not self.up:
            raise AuditTransportError("repository down")
        self.received.append(message)

    def close(self) -> None:
        pass


def _dropped(reason: str) -> float:
    return MESSAGES_DROPPED.labels(reason)._value.get()


def test_trail_spools_while_down_counts_drops_and_resends_in_order(tmp_path):
    repository = _Repository()
    trail = atna.AuditTrail(repository, node=NODE, spool=atna.Spool(tmp_path / "s", max_messages=2),
                            retry_seconds=0.1)
    before = _dropped("spool_full")
    try:
        for user in ("a", "b", "c"):
            trail.event(events.user_authentication, user=user, client_address="", succeeded=True)
        assert not trail.flush(1)
        assert _dropped("spool_full") == before + 1  # the oldest made way
        repository.up = True
        assert trail.flush(5)
    finally:
        trail.close()
    users = [parse_syslog(m).root.find("ActiveParticipant").get("UserID")
             for m in repository.received]
    assert users == ["b", "c"]


def test_trail_never_raises_for_a_message_that_cannot_be_built(tmp_path):
    repository = _Repository()
    repository.up = True
    trail = atna.AuditTrail(repository, node=NODE, spool=atna.Spool(tmp_path / "s"))
    before = _dropped("build_error")
    try:
        trail.event(events.user_authentication, user="", client_address="", succeeded=True)
        assert trail.flush(2)
    finally:
        trail.close()
    assert repository.received == []
    assert _dropped("build_error") == before + 1


def test_close_keeps_what_was_not_sent_for_the_next_start(tmp_path):
    repository = _Repository()
    trail = atna.AuditTrail(repository, node=NODE, spool=atna.Spool(tmp_path / "s"),
                            retry_seconds=60)
    trail.event(events.application_activity, started=False)
    trail.close(timeout=0.5)
    assert len(atna.Spool(tmp_path / "s")) == 1


def test_tls_transport_presents_its_client_certificate(tmp_path):
    from tests.integration.tls import self_signed_certificate

    server_cert, server_key = self_signed_certificate(tmp_path / "server")
    client_cert, client_key = self_signed_certificate(tmp_path / "client")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(server_cert), str(server_key))
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the repository checks the node
    context.load_verify_locations(str(client_cert))
    listener = socket.create_server(("127.0.0.1", 0))
    peers: list[dict] = []

    def serve() -> None:
        connection, _ = listener.accept()
        with context.wrap_socket(connection, server_side=True) as tls:
            peers.append(tls.getpeercert())
            while tls.recv(65536):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    transport = SyslogTlsTransport("127.0.0.1", listener.getsockname()[1], TlsClientOptions(
        ca_file=server_cert, client_cert_file=client_cert, client_key_file=client_key,
    ))
    transport.send(syslog_message(_xml(), hostname="h"))
    transport.close()
    thread.join(5)
    listener.close()
    assert peers and dict(x[0] for x in peers[0]["subject"])["commonName"] == "127.0.0.1"
