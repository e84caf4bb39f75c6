"""The association socket both directions of the node use.

A DICOM peer that writes a PDU in more than one ``send`` with Nagle's
algorithm on (dcmtk's ``storescu`` as Debian ships it, dcmtk-based PACS such
as Orthanc answering a C-STORE, many others) stalls until the other side ACKs
its previous small segment, and Linux delays that ACK by up to 40 ms. Reading
with ``TCP_QUICKACK`` re-armed after every ``recv`` removes the stall on our
side of any connection: as a receiver (SCP) for every sender, and as a sender
(SCU) for the peer's responses. Our own writes go out with ``TCP_NODELAY``.
"""

from __future__ import annotations

import socket
from typing import Any, cast

from pynetdicom.transport import AssociationSocket

__all__ = ["BulkReadSocket", "tune_association_socket"]

_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


class BulkReadSocket(AssociationSocket):
    """pynetdicom's association socket, reading each PDU with few large reads.

    pynetdicom reads a PDU 4 KiB per ``recv`` (128 reads and copies for a
    512 KiB instance); this reads into one buffer of the PDU's length, never
    past it (the DUL's readiness check must still see the next PDU in the
    kernel), and re-arms ``TCP_QUICKACK`` after every read.
    """

    def recv(self, nr_bytes: int) -> bytearray:
        connection = cast(socket.socket, self.socket)
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        received = 0
        while received < nr_bytes:
            count = connection.recv_into(view[received:], nr_bytes - received)
            if not count:  # the peer closed the connection: what arrived so far
                del view
                del buffer[received:]
                return buffer
            received += count
            if _TCP_QUICKACK is not None:
                try:
                    connection.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
                except OSError:
                    pass  # the peer closed the connection; the next read reports it
        return buffer


def tune_association_socket(assoc: Any) -> None:
    """Give an association our read path and ``TCP_NODELAY``.

    Only the class changes (the object, its socket and state stay), so this is
    safe on a running association: the DUL picks up the new ``recv`` on its
    next read.
    """
    association_socket = getattr(getattr(assoc, "dul", None), "socket", None)
    if not isinstance(association_socket, AssociationSocket):
        return
    association_socket.__class__ = BulkReadSocket
    connection = association_socket.socket
    if isinstance(connection, socket.socket):
        try:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # already closed; the association reports it
