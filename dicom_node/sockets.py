"""The association socket both directions of the node use: bounded, timed PDU reads.

pynetdicom reads a PDU as its 6-byte header (type, reserved, length), then as
many bytes as the length field says, trusting that length and blocking with
no deadline. :class:`GuardedSocket` replaces that read:

* every PDU length is checked against a limit for its type **before**
  anything is allocated or waited for (:func:`pdu_length_limit`); a PDU over
  its limit is answered with an A-ABORT (PS3.8 §9.3.8: source "service
  provider", reason "invalid PDU parameter value") and the connection closes,
  while other associations carry on;
* every PDU must arrive whole within the association's network timeout from
  the moment it is read (a peer that sends three header bytes and then
  nothing is cut off after it); the read raises :class:`TimeoutError`, which
  pynetdicom's DUL treats as a closed transport connection (Evt17);
* the PDU is read into one buffer of its (checked) length, with few large
  reads instead of 4 KiB ones.

:class:`QuickAckSocket` also re-arms ``TCP_QUICKACK`` after every read. A
peer that writes a PDU in more than one ``send`` with Nagle's algorithm on
(dcmtk's ``storescu`` as Debian ships it, Orthanc answering a C-STORE)
stalls until the other side ACKs its previous small segment, and Linux
delays that ACK by up to 40 ms; quick ACKs remove the stall on our side.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from typing import Any, cast

from pynetdicom.transport import AssociationSocket

from dicom_node.errors import DicomNodeError

__all__ = [
    "ASSOCIATION_PDU_LIMIT",
    "UNLIMITED_PDU_CEILING",
    "GuardedSocket",
    "PDURefusedError",
    "QuickAckSocket",
    "guard_association_socket",
    "pdu_length_limit",
]

logger = logging.getLogger(__name__)

_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
_PDU_HEADER = struct.Struct(">BBL")  # PDU type, reserved, PDU length (PS3.8 §9.3.1)
_UL = struct.Struct(">L")

ASSOCIATION_PDU_LIMIT = 1 << 20
"""Largest A-ASSOCIATE-RQ/AC accepted (1 MiB). PS3.8 sets no maximum; 128 presentation
contexts with 20 transfer syntaxes each and every optional sub-item stay far below it."""

UNLIMITED_PDU_CEILING = 1 << 26
"""Largest P-DATA-TF accepted when our maximum PDU length is 0 ("unlimited", PS3.8 §D.1)."""

_FIXED_LENGTHS = {0x03: 4, 0x05: 4, 0x06: 4, 0x07: 4}  # A-ASSOCIATE-RJ, A-RELEASE-RQ/RP, A-ABORT
_HEADER_TOLERANCE = 6  # P-DATA-TF: some peers count the PDU header in the maximum length

# A-ABORT PDU (PS3.8 §9.3.8): source 2 = service provider, reason 6 = invalid PDU parameter value.
_ABORT_INVALID_PARAMETER = bytes([0x07, 0x00, 0, 0, 0, 4, 0x00, 0x00, 0x02, 0x06])


class PDURefusedError(DicomNodeError, OSError):
    """A PDU header declared a length over the limit for its type; the connection is aborted."""


def pdu_length_limit(pdu_type: int, *, maximum_pdu_size: int) -> int | None:
    """Largest PDU length (the header's length field) accepted for ``pdu_type``.

    Parameters
    ----------
    pdu_type
        The PDU type byte (PS3.8 Table 9-11 ... 9-26).
    maximum_pdu_size
        The Maximum Length we advertised (PS3.8 §D.1), 0 for unlimited: the
        largest variable field of a P-DATA-TF PDU we receive.

    Returns
    -------
    int or None
        ``None`` for an unknown PDU type (pynetdicom refuses those itself).
    """
    if pdu_type in (0x01, 0x02):  # A-ASSOCIATE-RQ, A-ASSOCIATE-AC
        return ASSOCIATION_PDU_LIMIT
    if pdu_type == 0x04:  # P-DATA-TF
        return (maximum_pdu_size or UNLIMITED_PDU_CEILING) + _HEADER_TOLERANCE
    return _FIXED_LENGTHS.get(pdu_type)


class GuardedSocket(AssociationSocket):
    """pynetdicom's association socket, reading each PDU bounded and with a deadline (see the module)."""

    #: Re-arm TCP_QUICKACK after every read (:class:`QuickAckSocket`).
    quick_ack = False
    #: (type, length) of the PDU whose header was read last: its body is the next read.
    _announced: tuple[int, int] | None = None

    def recv(self, nr_bytes: int) -> bytearray:
        """Read ``nr_bytes`` (a PDU header, or the rest of the PDU it announced).

        Raises
        ------
        PDURefusedError
            A header announces a PDU over its limit, or a P-DATA-TF's PDV item
            lengths do not add up to it (an A-ABORT was sent).
        TimeoutError
            The bytes did not arrive within the network timeout.
        """
        connection = cast(socket.socket, self.socket)
        timeout = self.assoc.network_timeout or 60.0
        buffer = _read_exactly(connection, nr_bytes, deadline=time.monotonic() + timeout,
                               restore_timeout=connection.gettimeout(), quick_ack=self.quick_ack)
        announced, self._announced = self._announced, None
        if announced is not None and announced[1] == nr_bytes:  # the body of the header read last
            if announced[0] == 0x04 and len(buffer) == nr_bytes:
                self._check_pdv_items(connection, buffer)
        elif nr_bytes == _PDU_HEADER.size and len(buffer) == nr_bytes:  # pynetdicom reads headers alone
            self._check_header(connection, buffer)
        return buffer

    def _check_header(self, connection: socket.socket, header: bytearray) -> None:
        pdu_type, _, length = _PDU_HEADER.unpack(header)
        limit = pdu_length_limit(pdu_type, maximum_pdu_size=_local_maximum_pdu_size(self.assoc))
        if limit is None:
            return  # an unknown PDU type: pynetdicom refuses it without reading on
        if length <= limit:
            self._announced = (pdu_type, length)
            return
        self._abort(connection, f"PDU type 0x{pdu_type:02X} declares {length} bytes, more than {limit}")

    def _check_pdv_items(self, connection: socket.socket, body: bytearray) -> None:
        """Each PDV item's length (PS3.8 §9.3.5.1: context ID, control header, fragment) must fit
        in the P-DATA-TF, and the items must fill it exactly."""
        offset, end = 0, len(body)
        while offset < end:
            if end - offset < 4:
                self._abort(connection, f"P-DATA-TF has {end - offset} stray bytes after its PDV items")
            (length,) = _UL.unpack_from(body, offset)
            if length < 2 or length > end - offset - 4:
                self._abort(connection, f"PDV item declares {length} bytes, {end - offset - 4} remain in its P-DATA-TF")
            offset += 4 + length

    def _abort(self, connection: socket.socket, reason: str) -> None:
        """Send A-ABORT, close the connection for the peer, raise :class:`PDURefusedError`."""
        self._announced = None
        logger.warning("Aborted the connection from %s: %s", _peer(connection), reason)
        try:
            connection.sendall(_ABORT_INVALID_PARAMETER)
            # The peer sees the connection close now; pynetdicom closes the socket when its
            # state machine has taken the transport-closed event this raise leads to (Evt17).
            connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the peer is gone; closing is all that is left
        raise PDURefusedError(reason)


class QuickAckSocket(GuardedSocket):
    """:class:`GuardedSocket` that re-arms ``TCP_QUICKACK`` after every read."""

    quick_ack = True


def _read_exactly(
    connection: socket.socket, nr_bytes: int, *, deadline: float, restore_timeout: float | None, quick_ack: bool
) -> bytearray:
    """``nr_bytes`` from ``connection`` by ``deadline`` (fewer if the peer closes)."""
    buffer = bytearray(nr_bytes)
    view = memoryview(buffer)
    received = 0
    try:
        while received < nr_bytes:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                connection.settimeout(remaining)
                count = connection.recv_into(view[received:], nr_bytes - received)
            except TimeoutError:
                raise TimeoutError(f"only {received} of {nr_bytes} bytes arrived within the network timeout") from None
            if not count:  # the peer closed the connection: what arrived so far
                break
            received += count
            if quick_ack and _TCP_QUICKACK is not None:
                try:
                    connection.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
                except OSError:
                    pass  # the peer closed the connection; the next read reports it
    finally:
        del view
        try:
            connection.settimeout(restore_timeout)
        except OSError:
            pass  # closed
    if received < nr_bytes:
        del buffer[received:]
    return buffer


def _local_maximum_pdu_size(assoc: Any) -> int:
    local = assoc.acceptor if assoc.is_acceptor else assoc.requestor
    return int(local.maximum_length or 0)


def _peer(connection: socket.socket) -> str:
    try:
        address = connection.getpeername()
    except OSError:
        return "a closed connection"
    return str(address[0]) if isinstance(address, tuple) else "a local socket"


def guard_association_socket(assoc: Any, *, quick_ack: bool) -> None:
    """Give an association the guarded read path (and quick ACKs) and ``TCP_NODELAY``.

    Only the class changes (the object, its socket and state stay), so this is
    safe on a running association: the DUL picks up the new ``recv`` on its
    next read.
    """
    association_socket = assoc.dul.socket
    if not isinstance(association_socket, AssociationSocket):
        raise TypeError(f"pynetdicom's association has no AssociationSocket: {association_socket!r}")
    association_socket.__class__ = QuickAckSocket if quick_ack else GuardedSocket
    connection = association_socket.socket
    if isinstance(connection, socket.socket):
        try:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # already closed; the association reports it
