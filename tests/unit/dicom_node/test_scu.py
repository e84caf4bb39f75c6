"""The Storage SCU against the node's own SCP (no database: a recording hook)."""

import socket
import threading
import time

import pytest
from pydicom import dcmread
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage

from dicom_node.patches import PYNETDICOM_PATCHES
from dicom_node.scp import AllowedPeer, StorageSCP
from dicom_node.scu import Destination, StorageSCU, _batches, _Item
from dicom_node.storage import InstanceStore
from tests.factories import make_ct, write_series


@pytest.fixture
def scp(tmp_path):
    received = []
    node = StorageSCP(
        InstanceStore(tmp_path / "store"),
        ae_title="RADGROUND",
        on_stored=received.append,
        allowed_peers=[AllowedPeer("SENDER")],
    )
    host, port = node.start("127.0.0.1", 0)
    node.received = received
    yield node, Destination("RADGROUND", host, port)
    node.stop()


def test_send_files_and_datasets_with_a_result_each(scp, tmp_path, shared_data):
    node, destination = scp
    files = write_series(tmp_path / "s", 3)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"definitely not DICOM")
    j2k = shared_data / "dicom" / "RG1_J2KI.dcm"
    dataset = make_ct(study_instance_uid="1.2.3", series_instance_uid="1.2.3.4", rows=8, columns=8)
    results = StorageSCU("SENDER").send(
        [files[0], junk, j2k, dataset, files[1], files[2]], destination
    )
    assert [r.ok for r in results] == [True, False, True, True, True, True]
    assert "not a readable DICOM file" in results[1].reason
    assert len(node.received) == 5
    stored_j2k = next(
        i for i in node.received if i.sop_instance_uid == str(dcmread(j2k).SOPInstanceUID)
    )
    # sent as it was, not transcoded
    assert stored_j2k.transfer_syntax_uid == "1.2.840.10008.1.2.4.91"


def test_rejected_association_is_explained(scp, tmp_path):
    _, destination = scp
    results = StorageSCU("STRANGER").send(write_series(tmp_path, 1), destination)
    assert not results[0].ok and "rejected" in results[0].reason
    assert StorageSCU("STRANGER").echo(destination).ok is False
    assert StorageSCU("SENDER").echo(destination).ok is True


def test_a_peer_that_drops_the_connection_mid_batch_costs_one_instance_not_a_timeout_each(tmp_path):
    """A PACS that dies while storing (killed, crashed) answers nothing: that
    instance's fate is unknown, and the rest of the batch is not sent into the
    dead association (each would wait out the DIMSE timeout)."""
    requests = []

    def drop_connection(event):
        requests.append(event.request.AffectedSOPInstanceUID)
        event.assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)
        return 0x0000

    peer = AE(ae_title="DYINGPACS")
    peer.add_supported_context(CTImageStorage)
    server = peer.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, drop_connection)]
    )
    try:
        port = server.socket.getsockname()[1]
        results = StorageSCU("SENDER", dimse_timeout=20).send(
            write_series(tmp_path, 3), Destination("DYINGPACS", "127.0.0.1", port)
        )
    finally:
        server.shutdown()
    assert len(requests) == 1
    assert results[0].status is None and "no response" in results[0].reason
    assert [r.reason for r in results[1:]] == ["not sent: association lost"] * 2


def test_batches_stay_within_the_presentation_context_limit():
    items = [
        _Item(f"f{i}", None, f"1.2.{i % 100}", f"1.3.{i}", "1.2.840.10008.1.2.1")
        for i in range(250)
    ]
    batches = _batches(list(range(250)), items)
    assert sum(len(b) for b in batches) == 250
    for batch in batches:
        assert len({items[i].sop_class_uid for i in batch}) <= 64


def test_destination_parsing():
    assert Destination.parse("ORTHANC@127.0.0.1:4242") == Destination("ORTHANC", "127.0.0.1", 4242)
    with pytest.raises(ValueError, match="AE@host:port"):
        Destination.parse("127.0.0.1:4242")
    with pytest.raises(ValueError, match="port"):
        Destination("X", "h", 70000)


class _LingeringCheckpoint(threading.Event):
    """An association reactor checkpoint that holds the reactor 0.2 s after it
    passes an open checkpoint (as the GIL can under load)."""

    def __init__(self) -> None:
        super().__init__()
        self.lingering = threading.Event()

    def wait(self, timeout=None):
        was_open = self.is_set()
        passed = super().wait(timeout)
        if was_open:
            self.lingering.set()
            time.sleep(0.2)
            self.lingering.clear()
        return passed


@pytest.mark.parametrize(
    "patches",
    [PYNETDICOM_PATCHES, tuple(p for p in PYNETDICOM_PATCHES if p != "scu-response-order")],
    ids=["with scu-response-order", "stock DIMSE provider"],
)
def test_a_response_is_never_taken_by_the_association_reactor(scp, tmp_path, monkeypatch, patches):
    """pynetdicom's pause of the reactor has a window: a reactor that passed its
    checkpoint just before the pause and was held up could take the C-STORE
    response off the queue before the sender looked, and drop it (the sender then
    waited its DIMSE timeout; seen as ~30 s stalls delivering to Orthanc). Here that
    state is made certain: each request goes out while the reactor lingers past an
    open checkpoint with ``_is_paused`` still True (what the sender checks), and the
    sender looks for its response only 0.4 s later. Without the patch (node.pynetdicom_patches
    lacking "scu-response-order") pynetdicom's own provider loses the responses."""
    from dicom_node import scu

    node, destination = scp
    real_prepare = scu._prepare

    def prepare_with_slow_threads(assoc, enabled):
        real_prepare(assoc, enabled)
        checkpoint = _LingeringCheckpoint()
        checkpoint.set()
        assoc._reactor_checkpoint = checkpoint
        real_send = assoc.dimse.send_msg

        def send_inside_the_window(primitive, context_id):
            checkpoint.set()  # reopened, as pynetdicom does after each response
            assert checkpoint.lingering.wait(5)
            real_send(primitive, context_id)
            time.sleep(0.4)  # the response arrives meanwhile; the reactor wakes at 0.2 s

        assoc.dimse.send_msg = send_inside_the_window

    monkeypatch.setattr(scu, "_prepare", prepare_with_slow_threads)
    files = write_series(tmp_path / "s", 3)

    results = StorageSCU("SENDER", dimse_timeout=3, pynetdicom_patches=patches).send(
        files, destination
    )

    if "scu-response-order" in patches:
        assert [r.status for r in results] == [0, 0, 0]
        assert len(node.received) == 3
    else:  # what the patch fixes: the stock provider drops a response and the sender times out
        assert results[0].status is None and results[0].reason == "no response (timeout or abort)"


def test_a_peer_answering_with_an_absurd_pdu_length_is_aborted_from_the_first_pdu():
    """The SCU reads the peer's A-ASSOCIATE-AC through the same bounded read as everything
    after it: a 4 GiB length is answered with A-ABORT, nothing is allocated or waited for."""
    import struct

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    received: list[bytes] = []

    def peer():
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(20)
            connection.recv(65536)  # the A-ASSOCIATE-RQ
            # an "A-ASSOCIATE-AC" of 4 GiB
            connection.sendall(struct.pack(">BBL", 0x02, 0, 0xFFFFFFFF))
            data = b""
            while chunk := connection.recv(4096):
                data += chunk
            received.append(data)

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()
    try:
        result = StorageSCU("SENDER", acse_timeout=5).echo(
            Destination("PEER", "127.0.0.1", listener.getsockname()[1])
        )
        thread.join(20)
        assert not result.ok
        assert received == [bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06])]  # A-ABORT, then closed
    finally:
        listener.close()


@pytest.mark.parametrize(
    ("status", "stored"),
    [
        (0x0000, True),
        (0xB000, True),  # Coercion of Data Elements (PS3.4 Table B.2-1)
        (0xB007, True),  # Data Set does not match SOP Class (Warning)
        (0x0107, True),  # Attribute List Error: a Warning (PS3.7 Annex C), the instance is stored
        (0x0116, True),  # Attribute Value Out of Range: a Warning
        (0xA700, False),
        (0xA900, False),
        (0xC000, False),
        (0x0110, False),  # Processing Failure
        (None, False),
    ],
)
def test_send_result_is_ok_for_success_and_warning_statuses(status, stored):
    """Categories come from pynetdicom's code_to_category, not a hand-written rule."""
    from dicom_node.scu import SendResult

    assert SendResult("x.dcm", "1.2.3", status).ok is stored
