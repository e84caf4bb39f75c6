"""The SCP's event-driven association reactors.

With the idle check pushed out to a minute, everything a peer does must still
be answered at once: every step then rests on a wake-up, none on polling.
"""

import os
import socket
import threading
import time

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from dicom_node import reactors
from dicom_node.scp import AllowedPeer, StorageSCP
from dicom_node.storage import InstanceStore
from tests.factories import write_series


def _acceptor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("AcceptorThread")]


def _wait_until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def node(tmp_path):
    received = []
    scp = StorageSCP(
        InstanceStore(tmp_path / "store"),
        ae_title="RADGROUND",
        on_stored=received.append,
        allowed_peers=[AllowedPeer("SENDER")],
        network_timeout=30,
    )
    host, port = scp.start("127.0.0.1", 0)
    scp.address = (host, port)
    scp.received = received
    yield scp
    scp.stop()


@pytest.fixture
def no_idle_checks(monkeypatch):
    monkeypatch.setattr(reactors, "IDLE_CHECK_SECONDS", 60.0)


def _associate(address, *contexts):
    ae = AE("SENDER")
    for context in contexts or (Verification,):
        ae.add_requested_context(context)
    assoc = ae.associate(*address, ae_title="RADGROUND")
    assert assoc.is_established
    return assoc


def test_echo_stores_and_release_are_answered_by_wake_ups_alone(node, no_idle_checks, tmp_path):
    from pydicom import dcmread

    files = write_series(tmp_path / "series", 20)
    started = time.monotonic()
    assoc = _associate(node.address, Verification, CTImageStorage)
    assert assoc.send_c_echo().Status == 0x0000
    statuses = [assoc.send_c_store(dcmread(path)).Status for path in files]
    assoc.release()
    assert statuses == [0x0000] * 20
    assert len(node.received) == 20
    assert _wait_until(lambda: not _acceptor_threads())
    # Each step waiting out an idle check would have taken minutes.
    assert time.monotonic() - started < 30


def test_a_peer_abort_ends_the_association(node, no_idle_checks):
    assoc = _associate(node.address)
    assert _wait_until(lambda: len(_acceptor_threads()) == 1)
    assoc.abort()
    assert _wait_until(lambda: not _acceptor_threads())


def test_a_peer_that_vanishes_without_abort_ends_the_association(node, no_idle_checks):
    assoc = _associate(node.address)
    assert _wait_until(lambda: len(_acceptor_threads()) == 1)
    connection = assoc.dul.socket.socket
    connection.shutdown(socket.SHUT_RDWR)  # the TCP connection goes; no A-ABORT is sent
    assert _wait_until(lambda: not _acceptor_threads())
    assoc.abort()


def test_the_network_timeout_still_ends_an_idle_association(tmp_path):
    scp = StorageSCP(InstanceStore(tmp_path / "store"), ae_title="RADGROUND",
                     allowed_peers=[AllowedPeer("SENDER")], network_timeout=0.5)
    address = scp.start("127.0.0.1", 0)
    try:
        assoc = _associate(address)
        assert _wait_until(lambda: not assoc.is_established and not _acceptor_threads())
    finally:
        scp.stop()


def test_an_idle_association_sleeps_instead_of_polling(node, monkeypatch):
    waits = []
    real_select = reactors.select.select

    def counting_select(readers, *args):
        if any(isinstance(r, reactors._WakeupSocket) for r in readers):  # the acceptor DUL's waits
            waits.append(readers)
        return real_select(readers, *args)

    monkeypatch.setattr(reactors.select, "select", counting_select)
    assoc = _associate(node.address)
    time.sleep(1.0)
    assoc.release()
    # pynetdicom's own DUL loop would have passed ~1000 times; ours wakes per idle check.
    assert 0 < len(waits) <= 2 * (1.0 / reactors.IDLE_CHECK_SECONDS) + 10


def test_associations_leave_no_file_descriptors_behind(node):
    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    _associate(node.address).release()
    assert _wait_until(lambda: not _acceptor_threads())
    before = open_descriptors()
    for _ in range(10):
        _associate(node.address).release()
    assert _wait_until(lambda: not _acceptor_threads())
    assert _wait_until(lambda: open_descriptors() <= before)


def test_only_an_association_that_has_not_started_can_be_made_event_driven(node):
    assoc = _associate(node.address)
    try:
        with pytest.raises(RuntimeError, match="has not started"):
            reactors.make_event_driven(assoc)
    finally:
        assoc.release()
