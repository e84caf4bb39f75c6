"""DICOM TLS in the node (PS3.15 B.1/B.9): the SCP's TLS listener against our SCU and raw
sockets, the BCP 195 profile, the certificate subject → AE title mapping."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_node.scp import StorageSCP
from dicom_node.scu import Destination, StorageSCU
from dicom_node.storage import InstanceStore
from dicom_node.tls import (
    BCP195_TLS12_CIPHERS,
    TlsServerOptions,
    certificate_subject,
    restrict_to_bcp195,
)
from tests.factories import write_series
from tests.integration.tls_pki import Credential, certificate_authority, issue


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Credential]:
    folder = tmp_path_factory.mktemp("pki")
    authority = certificate_authority(folder / "ca")
    stranger = certificate_authority(folder / "other", name="Untrusted CA")
    return {
        "ca": authority,
        "node": issue(authority, folder / "node", "radground"),
        "modality": issue(authority, folder / "modality", "modality1"),
        "stranger": issue(stranger, folder / "stranger", "modality1"),
    }


def _options(pki, **overrides) -> TlsServerOptions:
    values = dict(certificate=pki["node"].certificate, key=pki["node"].key,
                  ca_bundle=pki["ca"].certificate, verify_client=True)
    values.update(overrides)
    return TlsServerOptions(**values)


def _client(pki, who: str | None = "modality") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca"].certificate))
    if who is not None:
        context.load_cert_chain(str(pki[who].certificate), str(pki[who].key))
    return context


@pytest.fixture
def tls_node(tmp_path, pki):
    nodes: list[StorageSCP] = []

    def start(**overrides):
        refused = []
        scp = StorageSCP(InstanceStore(tmp_path / "store"), ae_title="RADGROUND",
                         tls=_options(pki, **overrides), on_tls_refused=refused.append,
                         acse_timeout=5, network_timeout=5)
        nodes.append(scp)
        return scp, scp.start_tls("127.0.0.1", 0), refused

    yield start
    for scp in nodes:
        scp.stop()


def _echo(address, context, calling="MOD1", server_name=None):
    scu = StorageSCU(calling, tls=context, server_name=server_name, acse_timeout=5,
                     network_timeout=5)
    return scu.echo(Destination("RADGROUND", *address))


def test_bcp195_leaves_only_ecdhe_aead_suites_for_tls12():
    context = restrict_to_bcp195(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == set(BCP195_TLS12_CIPHERS.split(":")) & tls12 and tls12
    assert all(name.startswith("ECDHE-") for name in tls12)
    assert not any("CBC" in name or "SHA" == name[-3:] for name in tls12)
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION


def test_certificate_subject_gives_the_common_name_and_the_rfc4514_subject():
    certificate = {"subject": ((("countryName", "DE"),), (("organizationName", "Clinic, North"),),
                               (("commonName", "ct-1"),))}
    assert certificate_subject(certificate) == ("ct-1", "CN=ct-1,O=Clinic\\, North,C=DE")
    assert certificate_subject({}) == ("", "")


def test_the_mapping_allows_only_the_ae_titles_of_the_certificate(pki):
    options = _options(pki, allowed_subjects={
        "ct-1": frozenset({"CT1"}), "CN=pacs,O=Hospital": frozenset({"PACS", "PACS_QR"}),
    })
    ct = {"subject": ((("organizationName", "Hospital"),), (("commonName", "ct-1"),))}
    pacs = {"subject": ((("organizationName", "Hospital"),), (("commonName", "pacs"),))}
    assert options.allows(ct, "CT1")
    assert not options.allows(ct, "PACS")
    assert options.allows(pacs, "PACS_QR ")
    assert not options.allows(pacs, "CT1")
    assert not options.allows(None, "CT1")
    assert _options(pki).allows(None, "ANY")  # no mapping: any AE title


@pytest.mark.parametrize(("overrides", "message"), [
    ({"ca_bundle": None}, "verify_client needs a ca_bundle"),
    ({"ca_bundle": None, "verify_client": False, "allowed_subjects": {"x": frozenset({"A"})}},
     "allowed_subjects needs a ca_bundle"),
    ({"certificate": Path("/nonexistent.pem")}, "certificate '/nonexistent.pem'"),
    ({"handshake_timeout": 0}, "handshake_timeout"),
])
def test_options_refuse_an_incomplete_configuration(pki, overrides, message):
    with pytest.raises(ValueError, match=message):
        _options(pki, **overrides)


def test_a_trusted_peer_echoes_and_stores_over_tls(tls_node, pki, tmp_path):
    scp, address, refused = tls_node()
    assert _echo(address, _client(pki)).ok
    files = write_series(tmp_path / "series", 3, rows=32, columns=32)
    results = StorageSCU("MOD1", tls=_client(pki)).send(files, Destination("RADGROUND", *address))
    assert [r.ok for r in results] == [True, True, True]
    stored = sorted((tmp_path / "store").rglob("*.dcm"))
    assert len(stored) == 3
    assert {dcmread(f).SOPInstanceUID for f in stored} == {dcmread(f).SOPInstanceUID for f in files}
    assert refused == [] and scp.tls_refusals == 0


def test_the_scu_checks_the_server_name(tls_node, pki):
    _, address, _ = tls_node()
    assert _echo(address, _client(pki), server_name="localhost").ok  # in the certificate
    wrong = _echo(address, _client(pki), server_name="pacs.example.org")
    assert not wrong.ok and "handshake" in wrong.reason


@pytest.mark.parametrize("client", ["none", "untrusted"])
def test_a_peer_without_a_trusted_certificate_is_refused_and_counted(tls_node, pki, client):
    scp, address, refused = tls_node()
    context = _client(pki, None if client == "none" else "stranger")
    assert not _echo(address, context).ok
    deadline = time.monotonic() + 5
    while not refused and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scp.tls_refusals == 1
    assert refused[0].peer_host == "127.0.0.1"
    assert ("CERTIFICATE" in refused[0].reason.upper())
    assert _echo(address, _client(pki)).ok  # the next peer is served


def test_a_certificate_cannot_claim_another_peers_ae_title(tls_node, pki):
    _, address, refused = tls_node(allowed_subjects={"modality1": frozenset({"MOD1"})})
    assert _echo(address, _client(pki), calling="MOD1").ok
    other = _echo(address, _client(pki), calling="PACS")
    assert not other.ok and "rejected" in other.reason
    assert refused == []  # the handshake succeeded; the association was rejected


def test_a_plain_peer_on_the_tls_port_is_refused(tls_node):
    scp, address, refused = tls_node()
    result = StorageSCU("MOD1", acse_timeout=5).echo(Destination("RADGROUND", *address))
    assert not result.ok
    assert "A-ASSOCIATE-RQ" in refused[0].reason and scp.tls_refusals == 1


def test_old_protocols_and_cbc_suites_are_refused(tls_node, pki):
    scp, address, _ = tls_node(verify_client=False)
    tls11 = _client(pki)
    with pytest.warns(DeprecationWarning):  # as it should be
        tls11.minimum_version = tls11.maximum_version = ssl.TLSVersion.TLSv1_1
    cbc = _client(pki)
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-RSA-AES128-SHA256:AES128-GCM-SHA256")  # CBC; RSA key exchange
    for context in (tls11, cbc):
        with socket.create_connection(address, timeout=5) as raw, pytest.raises(ssl.SSLError):
            context.wrap_socket(raw, server_hostname="127.0.0.1")
    deadline = time.monotonic() + 5
    while scp.tls_refusals < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scp.tls_refusals == 2


def test_a_stalled_handshake_times_out_without_blocking_other_peers(tls_node, pki):
    scp, address, refused = tls_node(handshake_timeout=1.5)
    stalled = [socket.create_connection(address) for _ in range(3)]  # connect, send nothing
    try:
        started = time.monotonic()
        assert _echo(address, _client(pki)).ok  # served while three handshakes stall
        assert time.monotonic() - started < 1.5
        for connection in stalled:
            connection.settimeout(5)
            assert connection.recv(1) == b""  # closed by the node after the deadline
        assert time.monotonic() - started < 4
        # the node counts a refusal right after closing the connection: allow it a moment
        deadline = time.monotonic() + 2
        while scp.tls_refusals < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert scp.tls_refusals == 3 and "ClientHello" in refused[0].reason
    finally:
        for connection in stalled:
            connection.close()


def test_a_port_probe_is_no_handshake_failure(tls_node, pki):
    scp, address, refused = tls_node()
    socket.create_connection(address).close()
    assert _echo(address, _client(pki)).ok
    assert scp.tls_refusals == 0 and refused == []


def test_plain_and_tls_listeners_run_side_by_side(tmp_path, pki):
    scp = StorageSCP(InstanceStore(tmp_path / "store"), ae_title="RADGROUND", tls=_options(pki))
    try:
        plain = scp.start("127.0.0.1", 0)
        secure = scp.start_tls("127.0.0.1", 0)
        assert StorageSCU("MOD1").echo(Destination("RADGROUND", *plain)).ok
        assert _echo(secure, _client(pki)).ok
    finally:
        scp.stop()
    with pytest.raises(ValueError, match="tls options"):
        StorageSCP(InstanceStore(tmp_path / "s2"), ae_title="X").start_tls("127.0.0.1", 0)


def test_concurrent_tls_associations(tls_node, pki):
    _, address, _ = tls_node()
    results = []
    threads = [threading.Thread(target=lambda: results.append(_echo(address, _client(pki)).ok))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [True] * 6


def test_tls_refusals_reach_the_audit_hook_and_the_metrics(tmp_path, pki):
    from dicom_node import metrics

    audited = []
    scp = StorageSCP(InstanceStore(tmp_path / "store"), ae_title="RADGROUND",
                     tls=_options(pki, allowed_subjects={"modality1": frozenset({"MOD1"})}),
                     on_association_refused=audited.append, acse_timeout=5)
    handshakes = metrics.ASSOCIATIONS_REFUSED.labels("tls_handshake_failed")
    unmapped = metrics.ASSOCIATIONS_REFUSED.labels("tls_certificate_not_mapped")
    before = handshakes._value.get(), unmapped._value.get()
    try:
        address = scp.start_tls("127.0.0.1", 0)
        assert not _echo(address, _client(pki, "stranger")).ok
        assert not _echo(address, _client(pki), calling="PACS").ok
        deadline = time.monotonic() + 5
        while len(audited) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scp.stop()
    reasons = sorted(refusal.reason for refusal in audited)
    assert reasons[0].startswith("TLS handshake failed: ") and "CERTIFICATE" in reasons[0]
    assert reasons[1] == "calling AE title not mapped to the TLS certificate"
    assert (handshakes._value.get(), unmapped._value.get()) == (before[0] + 1, before[1] + 1)


def test_a_tls12_peer_gets_an_ecdhe_aead_suite(tls_node, pki):
    _, address, _ = tls_node()
    context = _client(pki)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(address, timeout=5) as raw, context.wrap_socket(
        raw, server_hostname="127.0.0.1"
    ) as secured:
        assert secured.version() == "TLSv1.2"
        assert secured.cipher()[0] in BCP195_TLS12_CIPHERS.split(":")
