"""The association socket of both directions: bounded, timed PDU reads, quick ACKs, no Nagle."""

import socket
import struct
import tracemalloc
from types import SimpleNamespace

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dicom_node.scp import AllowedPeer, StorageSCP
from dicom_node.scu import Destination, StorageSCU
from dicom_node.sockets import (
    ASSOCIATION_PDU_LIMIT,
    UNLIMITED_PDU_CEILING,
    GuardedSocket,
    PDURefusedError,
    QuickAckSocket,
    guard_association_socket,
    pdu_length_limit,
)
from dicom_node.storage import InstanceStore
from tests.factories import write_series


def _reader(
    connection: socket.socket, *, network_timeout: float = 30.0, maximum_pdu_size: int = 16384
):
    """The read path alone, on a plain connected socket (an acceptor association's few
    attributes)."""
    reader = GuardedSocket.__new__(GuardedSocket)
    reader.socket = connection
    reader._assoc = SimpleNamespace(network_timeout=network_timeout, is_acceptor=True,
                                    acceptor=SimpleNamespace(maximum_length=maximum_pdu_size))
    return reader


def test_reads_exactly_the_pdu_and_leaves_the_next_one_in_the_kernel():
    left, right = socket.socketpair()
    with left, right:
        reader = _reader(left)
        right.sendall(b"A" * 70000 + b"NEXT")
        assert reader.recv(70000) == b"A" * 70000
        assert left.recv(16) == b"NEXT"


def test_a_closed_connection_returns_what_arrived():
    left, right = socket.socketpair()
    with left:
        reader = _reader(left)
        right.sendall(b"partial")
        right.close()
        assert reader.recv(100) == b"partial"


@pytest.mark.parametrize(("pdu_type", "maximum_pdu_size", "limit"), [
    (0x01, 16384, ASSOCIATION_PDU_LIMIT),  # A-ASSOCIATE-RQ
    (0x02, 16384, ASSOCIATION_PDU_LIMIT),  # A-ASSOCIATE-AC
    (0x03, 16384, 4),  # A-ASSOCIATE-RJ
    (0x04, 16384, 16384 + 6),  # P-DATA-TF: our Maximum Length (+ a header some peers count)
    (0x04, 0, UNLIMITED_PDU_CEILING + 6),  # "unlimited" still has a ceiling
    (0x05, 16384, 4), (0x06, 16384, 4), (0x07, 16384, 4),  # A-RELEASE-RQ/RP, A-ABORT
    (0x09, 16384, None),  # unknown type: pynetdicom refuses it itself
])
def test_every_pdu_type_has_a_length_limit(pdu_type, maximum_pdu_size, limit):
    assert pdu_length_limit(pdu_type, maximum_pdu_size=maximum_pdu_size) == limit


@pytest.mark.parametrize(("pdu_type", "length"), [
    (0x01, 0xFFFFFFFF),  # an A-ASSOCIATE-RQ of 4 GiB
    (0x04, 16384 + 7),  # a P-DATA-TF over our Maximum Length
    (0x07, 1000),  # an A-ABORT is 10 bytes
])
def test_a_pdu_over_its_limit_is_aborted_before_its_body_is_read_or_allocated(pdu_type, length):
    left, right = socket.socketpair()
    with left, right:
        reader = _reader(left)
        right.sendall(struct.pack(">BBL", pdu_type, 0, length))
        tracemalloc.start()
        try:
            with pytest.raises(PDURefusedError, match=f"declares {length} bytes"):
                reader.recv(6)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 1_000_000
        # the peer is told why: A-ABORT, source service provider, reason invalid PDU parameter value
        assert right.recv(100) == bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06])


def test_a_pdu_that_stops_arriving_times_out_after_the_network_timeout():
    left, right = socket.socketpair()
    with left, right:
        reader = _reader(left, network_timeout=0.3)
        right.sendall(b"\x01\x00\x00")  # three bytes of a header, then nothing
        with pytest.raises(TimeoutError, match="3 of 6 bytes"):
            reader.recv(6)
        assert left.gettimeout() is None  # the socket's own timeout is back as it was


def test_a_guarded_association_talks_dicom_without_nagle(tmp_path):
    node = StorageSCP(
        InstanceStore(tmp_path / "store"),
        ae_title="RADGROUND",
        on_stored=lambda _: None,
        allowed_peers=[AllowedPeer("SENDER")],
    )
    host, port = node.start("127.0.0.1", 0)
    try:
        ae = AE("SENDER")
        ae.add_requested_context(Verification)
        assoc = ae.associate(host, port, ae_title="RADGROUND")
        assert assoc.is_established
        guard_association_socket(assoc, quick_ack=True)
        assert isinstance(assoc.dul.socket, QuickAckSocket)
        assert assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        # and the SCU's own associations, which use it for every instance
        results = StorageSCU("SENDER").send(
            write_series(tmp_path / "s", 3), Destination("RADGROUND", host, port)
        )
        assert [r.status for r in results] == [0x0000] * 3
    finally:
        node.stop()


@pytest.mark.parametrize(("items", "reason"), [
    (struct.pack(">L", 100) + b"\x01\x03" + b"x" * 10, "PDV item declares 100 bytes, 12 remain"),
    # no room for context ID + header
    (struct.pack(">L", 1) + b"\x01", "PDV item declares 1 bytes"),
    (struct.pack(">L", 4) + b"\x01\x03ab" + b"\x00\x00", "2 stray bytes after its PDV items"),
])
def test_a_pdv_item_length_that_does_not_fit_its_p_data_is_aborted(items, reason):
    left, right = socket.socketpair()
    with left, right:
        reader = _reader(left)
        right.sendall(struct.pack(">BBL", 0x04, 0, len(items)) + items)
        assert len(reader.recv(6)) == 6
        with pytest.raises(PDURefusedError, match=reason):
            reader.recv(len(items))
        assert right.recv(100) == bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06])


def test_well_formed_p_data_with_several_pdv_items_passes():
    left, right = socket.socketpair()
    with left, right:
        reader = _reader(left)
        items = struct.pack(">L", 4) + b"\x01\x03ab" + struct.pack(">L", 2) + b"\x01\x02"
        right.sendall(
            struct.pack(">BBL", 0x04, 0, len(items))
            + items
            + struct.pack(">BBL", 0x05, 0, 4)
            + bytes(4)
        )
        assert reader.recv(6) == struct.pack(">BBL", 0x04, 0, len(items))
        assert reader.recv(len(items)) == items
        # A-RELEASE-RQ: no PDV items to check
        assert reader.recv(6) == struct.pack(">BBL", 0x05, 0, 4)
        assert reader.recv(4) == bytes(4)
