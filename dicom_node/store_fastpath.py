"""The C-STORE exchange without pydicom's general machinery: its command sets read and written
directly.

pynetdicom turns every DIMSE command set into a pydicom Dataset and encodes or
decodes it with pydicom's general code: on this machine about 0.3 ms to answer
one C-STORE and 0.2 ms to take one request in, a quarter of the time a 512 KB
instance takes from a sender that waits for each response. A C-STORE command
set is a handful of fixed elements in Implicit VR Little Endian (PS3.7 §9.3.1,
§E.1), so the node reads and writes those directly:

* a C-STORE-RQ whose command set arrives in one fragment and holds only the
  elements of PS3.7 Table 9.3-1 becomes pynetdicom's own ``C_STORE`` primitive
  (set through its validating setters), its data set fragments are collected as
  pynetdicom does, and it goes to the same queue for the same service class;
* a C-STORE-RSP that carries a status and nothing else (no error comment, no
  offending element) is written in one piece.

Everything else takes pynetdicom's path unchanged: other messages, a command
set in several fragments, unexpected elements or values, and associations with
handlers bound to ``EVT_DIMSE_RECV``/``EVT_DIMSE_SENT`` (pynetdicom's DIMSE
logging). Tests pin both codecs against pynetdicom's byte for byte.
"""

from __future__ import annotations

import logging
import struct
from io import BytesIO
from typing import Any

from pynetdicom import _config, evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

__all__ = [
    "StoreFastPathDIMSE",
    "decode_store_request",
    "encode_store_response",
    "use_store_fast_path",
]

logger = logging.getLogger(__name__)

_C_STORE_RQ = 0x0001
_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101
_ELEMENT_HEADER = struct.Struct("<HHI")  # group, element, value length (Implicit VR Little Endian)
_US = struct.Struct("<H")
_UL = struct.Struct("<I")

# Message control header (PS3.8 §E.2): bit 0 command/data set, bit 1 last fragment.
_COMMAND = 0x01
_LAST_FRAGMENT = 0x02

# (0000,eeee) elements a C-STORE-RQ may carry (PS3.7 Table 9.3-1) and their VRs.
_REQUEST_ELEMENTS = {
    0x0000: "UL",  # Command Group Length
    0x0002: "UI",  # Affected SOP Class UID
    0x0100: "US",  # Command Field
    0x0110: "US",  # Message ID
    0x0700: "US",  # Priority
    0x0800: "US",  # Command Data Set Type
    0x1000: "UI",  # Affected SOP Instance UID
    0x1030: "AE",  # Move Originator Application Entity Title
    0x1031: "US",  # Move Originator Message ID
}
_REQUIRED = (0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000)


def decode_store_request(command_set: bytes | memoryview) -> dict[str, Any] | None:
    """The values of an encoded C-STORE-RQ command set, by ``C_STORE`` attribute name.

    ``None`` when ``command_set`` is anything else (another message, an
    element this reader does not expect, a malformed encoding): pynetdicom's
    general decoder then takes it.
    """
    view = memoryview(command_set)
    values: dict[int, Any] = {}
    offset, end = 0, len(view)
    while offset < end:
        if end - offset < _ELEMENT_HEADER.size:
            return None
        group, element, length = _ELEMENT_HEADER.unpack_from(view, offset)
        offset += _ELEMENT_HEADER.size
        vr = _REQUEST_ELEMENTS.get(element)
        if group != 0x0000 or vr is None or element in values or length > end - offset:
            return None
        raw = view[offset:offset + length]
        offset += length
        if vr == "US":
            if length != _US.size:
                return None
            values[element] = _US.unpack(raw)[0]
        elif vr == "UL":
            if length != _UL.size:
                return None
            values[element] = _UL.unpack(raw)[0]
        else:
            try:
                text = bytes(raw).decode("ascii")
            except UnicodeDecodeError:
                return None
            # UI is padded with NUL, AE with spaces (PS3.5 §6.2); AE's leading spaces are not
            # significant
            values[element] = text.rstrip("\x00 ") if vr == "UI" else text.strip(" ")
    if any(element not in values for element in _REQUIRED):
        return None
    if values[0x0100] != _C_STORE_RQ or values[0x0800] == _NO_DATA_SET:
        return None
    decoded = {
        "MessageID": values[0x0110],
        "AffectedSOPClassUID": values[0x0002],
        "AffectedSOPInstanceUID": values[0x1000],
        "Priority": values[0x0700],
    }
    if 0x1030 in values:
        decoded["MoveOriginatorApplicationEntityTitle"] = values[0x1030]
    if 0x1031 in values:
        decoded["MoveOriginatorMessageID"] = values[0x1031]
    return decoded


def encode_store_response(
    *,
    message_id_being_responded_to: int,
    status: int,
    sop_class_uid: str | None,
    sop_instance_uid: str | None,
) -> bytes:
    """The encoded command set of a C-STORE-RSP carrying a status and nothing else."""
    elements = []
    if sop_class_uid is not None:
        elements.append((0x0002, _uid(sop_class_uid)))
    elements.append((0x0100, _US.pack(_C_STORE_RSP)))
    elements.append((0x0120, _US.pack(message_id_being_responded_to)))
    elements.append((0x0800, _US.pack(_NO_DATA_SET)))
    elements.append((0x0900, _US.pack(status)))
    if sop_instance_uid is not None:
        elements.append((0x1000, _uid(sop_instance_uid)))
    body = b"".join(
        _ELEMENT_HEADER.pack(0x0000, tag, len(value)) + value for tag, value in elements
    )
    return _ELEMENT_HEADER.pack(0x0000, 0x0000, _UL.size) + _UL.pack(len(body)) + body


def _uid(value: str) -> bytes:
    encoded = value.encode("ascii")
    return encoded + b"\x00" if len(encoded) % 2 else encoded


class StoreFastPathDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider with the C-STORE fast path (see the module).

    Installed on a running association by :func:`use_store_fast_path`; only
    the class changes.
    """

    #: The C-STORE request whose data set fragments are arriving, and its data set.
    _incoming_store: tuple[C_STORE, BytesIO] | None = None

    def receive_primitive(self, primitive: P_DATA) -> None:
        if self._incoming_store is None:
            if self.message is not None or not self._begin_store_request(primitive):
                super().receive_primitive(primitive)
            return
        self._take_data_set_fragments(primitive.presentation_data_value_list)

    def send_msg(self, primitive: Any, context_id: int) -> None:
        command_set = self._plain_store_response(primitive)
        if command_set is None:
            super().send_msg(primitive, context_id)
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list.append(
            (context_id, bytes([_COMMAND | _LAST_FRAGMENT]) + command_set)
        )
        self.dul.send_pdu(pdata)

    def _begin_store_request(self, primitive: P_DATA) -> bool:
        fragments = primitive.presentation_data_value_list
        if (
            not fragments
            or _config.STORE_RECV_CHUNKED_DATASET
            or self.assoc.get_handlers(evt.EVT_DIMSE_RECV)
        ):
            return False
        context_id, data = fragments[0]
        if not data or data[0] & (_COMMAND | _LAST_FRAGMENT) != _COMMAND | _LAST_FRAGMENT:
            return False
        values = decode_store_request(memoryview(data)[1:])
        if values is None:
            return False
        request = C_STORE()
        try:
            for name, value in values.items():
                # pynetdicom's setters validate as they would for its decoder
                setattr(request, name, value)
        except (TypeError, ValueError):
            return False  # pynetdicom's path reports it in its own way
        request._context_id = context_id
        request._dataset_path = None
        request._dataset_file = None
        self._incoming_store = (request, BytesIO())
        self._take_data_set_fragments(fragments[1:])
        return True

    def _take_data_set_fragments(self, fragments: list[tuple[int, bytes]]) -> None:
        assert self._incoming_store is not None
        request, data_set = self._incoming_store
        for context_id, data in fragments:
            if not data or data[0] & _COMMAND or context_id != request._context_id:
                # Fragments of one message may not interleave with others (PS3.8 §9.3.5.1);
                # abort, as pynetdicom does for a message it cannot decode.
                logger.error(
                    "Received an invalid C-STORE request: data set fragment out of sequence"
                )
                self._incoming_store = None
                self.dul.event_queue.put("Evt19")
                return
            data_set.write(memoryview(data)[1:])
            if data[0] & _LAST_FRAGMENT:
                self._incoming_store = None
                request.DataSet = data_set
                self.msg_queue.put((context_id, request))
                return

    def _plain_store_response(self, primitive: Any) -> bytes | None:
        """The encoded command set if ``primitive`` is a status-only C-STORE-RSP to write
        directly."""
        if (
            type(primitive) is not C_STORE
            or primitive.MessageIDBeingRespondedTo is None
            or not isinstance(primitive.Status, int)
            or primitive.ErrorComment is not None
            or primitive.OffendingElement is not None
            or self.assoc.get_handlers(evt.EVT_DIMSE_SENT)
        ):
            return None
        command_set = encode_store_response(
            message_id_being_responded_to=primitive.MessageIDBeingRespondedTo,
            status=primitive.Status,
            sop_class_uid=primitive.AffectedSOPClassUID,
            sop_instance_uid=primitive.AffectedSOPInstanceUID,
        )
        # The peer's limit is on a P-DATA-TF's PDV items: item length (4), context ID, control
        # header.
        if self.maximum_pdu_size and 4 + 1 + 1 + len(command_set) > self.maximum_pdu_size:
            return None
        return command_set


def use_store_fast_path(assoc: Any) -> None:
    """Give a new association the C-STORE fast path (before or between messages)."""
    dimse = getattr(assoc, "dimse", None)
    if type(dimse) is DIMSEServiceProvider:
        dimse.__class__ = StoreFastPathDIMSE
