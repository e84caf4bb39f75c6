"""The association socket of both directions: whole PDUs, quick ACKs, no Nagle."""

import socket

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dicom_node.scp import AllowedPeer, StorageSCP
from dicom_node.scu import Destination, StorageSCU
from dicom_node.sockets import BulkReadSocket, tune_association_socket
from dicom_node.storage import InstanceStore
from tests.factories import write_series


def _reader(connection: socket.socket) -> BulkReadSocket:
    """The read path alone, on a plain connected socket (no association around it)."""
    reader = BulkReadSocket.__new__(BulkReadSocket)
    reader.socket = connection
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


def test_a_tuned_association_talks_dicom_without_nagle(tmp_path):
    node = StorageSCP(InstanceStore(tmp_path / "store"), ae_title="RADGROUND", on_stored=lambda _: None,
                      allowed_peers=[AllowedPeer("SENDER")])
    host, port = node.start("127.0.0.1", 0)
    try:
        ae = AE("SENDER")
        ae.add_requested_context(Verification)
        assoc = ae.associate(host, port, ae_title="RADGROUND")
        assert assoc.is_established
        tune_association_socket(assoc)
        assert isinstance(assoc.dul.socket, BulkReadSocket)
        assert assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        # and the SCU's own associations, which use it for every instance
        results = StorageSCU("SENDER").send(write_series(tmp_path / "s", 3), Destination("RADGROUND", host, port))
        assert [r.status for r in results] == [0x0000] * 3
    finally:
        node.stop()
