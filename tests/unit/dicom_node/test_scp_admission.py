"""A running node against hostile or broken peers: absurd PDU lengths, stalled
headers and too many connections cost it nothing, and other peers are served."""

import socket
import struct
import time
import tracemalloc

import pytest

from dicom_node.scp import AllowedPeer, PeerConnectionLimiter, StorageSCP
from dicom_node.scu import Destination, StorageSCU
from dicom_node.storage import InstanceStore

# A-ASSOCIATE-RJ sent at accept to a peer over its cap: transient, service provider, local limit
# exceeded.
_REJECT_LIMIT = bytes([0x03, 0x00, 0, 0, 0, 4, 0x00, 0x02, 0x03, 0x02])
# A-ABORT: source service provider, reason invalid PDU parameter value (PS3.8 §9.3.8).
_ABORT_INVALID_PARAMETER = bytes([0x07, 0x00, 0, 0, 0, 4, 0x00, 0x00, 0x02, 0x06])


def _start(tmp_path, **options):
    node = StorageSCP(
        InstanceStore(tmp_path / "store"),
        ae_title="RADGROUND",
        on_stored=lambda _: None,
        allowed_peers=[AllowedPeer("ECHOER")],
        **options,
    )
    return node, node.start("127.0.0.1", 0)


def _read_until_closed(connection: socket.socket, seconds: float = 20.0) -> bytes:
    """Everything the node sends until it closes the connection (TimeoutError if it never does)."""
    connection.settimeout(seconds)
    received = b""
    try:
        while chunk := connection.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def _echo(address) -> bool:
    return (
        StorageSCU("ECHOER", acse_timeout=10, dimse_timeout=10)
        .echo(Destination("RADGROUND", *address))
        .ok
    )


@pytest.mark.parametrize("declared", [200_000_000, 0xFFFFFFFF])
def test_an_absurd_association_request_is_aborted_without_allocating_it_and_others_are_served(
    tmp_path, declared
):
    tracemalloc.start()
    node, address = _start(tmp_path)
    try:
        with socket.create_connection(address) as hostile:
            hostile.sendall(
                struct.pack(">BBL", 0x01, 0, declared) + b"\x00\x01"
            )  # then nothing more
            assert _read_until_closed(hostile) == _ABORT_INVALID_PARAMETER
            _, peak = tracemalloc.get_traced_memory()
            assert peak < 20_000_000  # nothing near the declared size was allocated
        with socket.create_connection(address) as stalled:
            stalled.sendall(struct.pack(">BBL", 0x01, 0, declared))
            assert _echo(
                address
            )  # while another peer's absurd request is pending, C-ECHO is answered
    finally:
        tracemalloc.stop()
        node.stop()


def test_a_connection_that_stalls_inside_a_pdu_header_is_closed_after_the_network_timeout(tmp_path):
    node, address = _start(tmp_path, network_timeout=1.0)
    try:
        with socket.create_connection(address) as stalled:
            stalled.sendall(b"\x01\x00\x00")  # three bytes of a PDU header, then nothing
            assert (
                _read_until_closed(stalled) == b""
            )  # the node hung up (TimeoutError if it never does)
            assert _echo(address)
    finally:
        node.stop()


def test_connections_per_peer_address_are_capped_and_freed_when_their_association_ends(tmp_path):
    node, address = _start(tmp_path, peer_limiter=PeerConnectionLimiter(2), acse_timeout=2.0)
    try:
        first, second = socket.create_connection(address), socket.create_connection(address)
        with socket.create_connection(address) as third:
            assert _read_until_closed(third) == _REJECT_LIMIT  # refused at accept, before any PDU
        for held in (first, second):  # the two within the cap stay open
            held.settimeout(0.5)
            with pytest.raises(TimeoutError):
                held.recv(1)
        first.close()
        deadline = time.monotonic() + 10
        while not _echo(address):  # the closed connection's slot comes back
            assert time.monotonic() < deadline, "the cap was not released when a connection closed"
            time.sleep(0.1)
        second.close()
    finally:
        node.stop()


def test_the_per_peer_cap_is_shared_through_its_counters():
    counts = PeerConnectionLimiter.shared_counts()
    one, other = PeerConnectionLimiter(1, counts=counts), PeerConnectionLimiter(1, counts=counts)
    assert one.try_acquire("10.0.0.1")
    assert not other.try_acquire("10.0.0.1")  # another listener process sees the same count
    assert other.try_acquire("10.0.0.2")
    one.release("10.0.0.1")
    assert other.try_acquire("10.0.0.1")


def test_an_item_length_that_runs_past_its_pdu_is_refused_and_others_are_served(tmp_path):
    """Inside a PDU of sane length, a variable item claiming 64 KiB (PS3.8 §9.3.2.1) is read
    within the PDU's bytes only: the request is answered (rejected or aborted), nothing waits."""
    node, address = _start(tmp_path)
    context = b"1.2.840.10008.3.1.1.1"
    body = (
        b"\x00\x01\x00\x00"
        + b"RADGROUND".ljust(16)
        + b"ECHOER".ljust(16)
        + bytes(32)
        + b"\x10\x00"
        + struct.pack(">H", 0xFFFF)
        + context
    )
    try:
        with socket.create_connection(address) as lying:
            lying.sendall(struct.pack(">BBL", 0x01, 0, len(body)) + body)
            answer = _read_until_closed(lying)
            assert answer[:1] in (
                b"\x03",
                b"\x07",
            )  # A-ASSOCIATE-RJ or A-ABORT, then the node hangs up
        assert _echo(address)
    finally:
        node.stop()


def test_a_connection_that_never_sends_a_request_is_closed_by_the_artim_timer(tmp_path):
    node, address = _start(tmp_path, acse_timeout=1.0)
    try:
        with socket.create_connection(address) as silent:
            assert (
                _read_until_closed(silent) == b""
            )  # PS3.8 §9.1.5: ARTIM expiry closes the connection
    finally:
        node.stop()


def test_stop_asked_twice_at_once_stops_cleanly(tmp_path):
    """A listener process can be asked to stop by SIGTERM and by its parent watch at the same
    moment: both calls return without an error and the port is closed."""
    import threading

    node, address = _start(tmp_path)
    assert _echo(address)
    errors: list[BaseException] = []

    def stop() -> None:
        try:
            node.stop()
        except BaseException as exc:  # noqa: BLE001 - the test reports whatever a stop raised
            errors.append(exc)

    threads = [threading.Thread(target=stop) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    with pytest.raises(OSError):
        socket.create_connection(address, timeout=2).close()
