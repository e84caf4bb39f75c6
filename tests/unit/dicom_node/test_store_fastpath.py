"""The C-STORE fast path reads and writes exactly what pynetdicom's general codec does."""

from __future__ import annotations

import queue
from io import BytesIO
from types import SimpleNamespace

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import CTImageStorage

from dicom_node import store_fastpath
from dicom_node.scp import StorageSCP
from dicom_node.storage import InstanceStore
from dicom_node.store_fastpath import (
    StoreFastPathDIMSE,
    decode_store_request,
    encode_store_response,
)
from tests.factories import make_ct

ODD_UID = "1.2.826.0.1.3680043.8.498.1"  # 27 characters: padded with NUL
EVEN_UID = "1.2.826.0.1.3680043.8.498.12"


def _store_request(
    *,
    instance_uid: str = ODD_UID,
    priority: int = 2,
    originator: tuple[str, int] | None = None,
    data_set: bytes = b"\x08\x00\x18\x00" + bytes(96),
) -> C_STORE:
    request = C_STORE()
    request.MessageID = 513
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = instance_uid
    request.Priority = priority
    if originator is not None:
        request.MoveOriginatorApplicationEntityTitle, request.MoveOriginatorMessageID = originator
    request.DataSet = BytesIO(data_set)
    return request


def _pynetdicom_pdatas(primitive, message_class, max_pdu: int = 16382) -> list[P_DATA]:
    message = message_class()
    message.primitive_to_message(primitive)
    return list(message.encode_msg(1, max_pdu))


def _pynetdicom_decode(pdatas: list[P_DATA]):
    message = DIMSEMessage()
    for pdata in pdatas:
        if message.decode_msg(pdata):
            return message.message_to_primitive()
    raise AssertionError("message incomplete")


REQUEST_FIELDS = ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority",
                  "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID")


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {},
        {"instance_uid": EVEN_UID},
        {"priority": 0},
        {"priority": 1, "originator": ("ORTHANC", 7)},
        {"originator": ("A", 65535)},
    ],
    ids=["odd-uid", "even-uid", "priority-medium", "move-originator", "short-originator"],
)
def test_request_is_read_as_pynetdicom_reads_it(request_kwargs):
    pdatas = _pynetdicom_pdatas(_store_request(**request_kwargs), C_STORE_RQ)
    command_fragment = pdatas[0].presentation_data_value_list[0][1]
    assert command_fragment[0] == 0x03  # one complete command set

    fast = decode_store_request(command_fragment[1:])

    reference = _pynetdicom_decode(pdatas)
    assert fast is not None
    for field in REQUEST_FIELDS:
        assert fast.get(field) == getattr(reference, field), field


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xB007, 0xC000])
@pytest.mark.parametrize(
    "uids",
    [(CTImageStorage, ODD_UID), (CTImageStorage, EVEN_UID), (None, None)],
    ids=["odd-uid", "even-uid", "no-uids"],
)
def test_response_is_written_as_pynetdicom_writes_it(status, uids):
    sop_class, sop_instance = uids
    response = C_STORE()
    response.MessageIDBeingRespondedTo = 513
    response.AffectedSOPClassUID = sop_class
    response.AffectedSOPInstanceUID = sop_instance
    response.Status = status
    (reference,) = _pynetdicom_pdatas(response, C_STORE_RSP)

    fast = encode_store_response(message_id_being_responded_to=513, status=status,
                                 sop_class_uid=sop_class, sop_instance_uid=sop_instance)

    assert b"\x03" + fast == reference.presentation_data_value_list[0][1]


def _echo_command_set() -> bytes:
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    (pdata,) = _pynetdicom_pdatas(echo, C_ECHO_RQ)
    return pdata.presentation_data_value_list[0][1][1:]


def _store_command_set(replace: tuple[bytes, bytes] | None = None) -> bytes:
    command_set = _pynetdicom_pdatas(_store_request(), C_STORE_RQ)[0].presentation_data_value_list[
        0
    ][1][1:]
    if replace is not None:
        assert replace[0] in command_set
        command_set = command_set.replace(*replace)
    return command_set


@pytest.mark.parametrize(
    "command_set",
    [
        pytest.param(_echo_command_set(), id="c-echo-rq"),
        pytest.param(_store_command_set()[:-3], id="truncated"),
        pytest.param(
            _store_command_set() + b"\x00\x00\x00\x09\x02\x00\x00\x00\x00\x00", id="extra-element"
        ),
        pytest.param(_store_command_set((b"1.2.826", b"1.\xff.826")), id="non-ascii-uid"),
        # (0000,0800) Command Data Set Type 0x0101: no data set
        pytest.param(
            _store_command_set(
                (
                    b"\x00\x00\x00\x08\x02\x00\x00\x00\x01\x00",
                    b"\x00\x00\x00\x08\x02\x00\x00\x00\x01\x01",
                )
            ),
            id="no-data-set",
        ),
    ],
)
def test_anything_else_is_left_to_pynetdicom(command_set):
    assert decode_store_request(command_set) is None


class _FakeDUL:
    def __init__(self) -> None:
        self.event_queue: queue.Queue = queue.Queue()
        self.sent: list[P_DATA] = []

    def send_pdu(self, primitive) -> None:
        self.sent.append(primitive)


def _provider(handlers: dict | None = None) -> StoreFastPathDIMSE:
    dul = _FakeDUL()
    assoc = SimpleNamespace(
        dul=dul,
        is_requestor=False,
        requestor=SimpleNamespace(maximum_length=16382),
        get_handlers=lambda event: (handlers or {}).get(event, []),
        _abort_nonblocking=lambda: None,
        _abort_blocking=lambda: None,
        abort=lambda: None,
    )
    return StoreFastPathDIMSE(assoc)


def test_request_in_many_pdus_arrives_whole_on_the_message_queue(monkeypatch):
    data_set = bytes(range(256)) * 200  # 51200 bytes: four P-DATA at a 16 KB PDU
    pdatas = _pynetdicom_pdatas(
        _store_request(data_set=data_set, originator=("ORTHANC", 9)), C_STORE_RQ
    )
    assert len(pdatas) >= 4
    provider = _provider()
    general_decoder_calls = []
    monkeypatch.setattr(
        DIMSEMessage, "decode_msg", lambda *args: general_decoder_calls.append(args)
    )

    for pdata in pdatas:
        assert provider.msg_queue.empty()
        provider.receive_primitive(pdata)

    context_id, request = provider.msg_queue.get_nowait()
    assert general_decoder_calls == []
    assert context_id == 1 and request._context_id == 1
    assert request.DataSet.getvalue() == data_set
    assert (
        request.MoveOriginatorApplicationEntityTitle == "ORTHANC"
        and request.MoveOriginatorMessageID == 9
    )
    assert provider.message is None and provider._incoming_store is None


def test_interleaved_fragment_aborts_the_association():
    pdatas = _pynetdicom_pdatas(_store_request(data_set=bytes(40_000)), C_STORE_RQ)
    provider = _provider()
    provider.receive_primitive(pdatas[0])
    intruder = P_DATA()
    intruder.presentation_data_value_list.append((1, b"\x03" + _echo_command_set()))

    provider.receive_primitive(intruder)

    # A-ABORT, as pynetdicom for an invalid message
    assert provider.dul.event_queue.get_nowait() == "Evt19"
    assert provider.msg_queue.empty()


def test_a_bound_dimse_handler_keeps_pynetdicom_path():
    seen = []
    provider = _provider(
        {evt.EVT_DIMSE_RECV: [(seen.append, None)], evt.EVT_DIMSE_SENT: [(seen.append, None)]}
    )
    pdatas = _pynetdicom_pdatas(_store_request(), C_STORE_RQ)
    for pdata in pdatas:
        provider.receive_primitive(pdata)
    # pynetdicom decoded it and told the handler
    assert [event.event for event in seen] == [evt.EVT_DIMSE_RECV]
    assert not provider.msg_queue.empty()

    response = C_STORE()
    response.MessageIDBeingRespondedTo = 1
    response.Status = 0
    assert provider._plain_store_response(response) is None


def test_response_with_error_comment_keeps_pynetdicom_path():
    provider = _provider()
    response = C_STORE()
    response.MessageIDBeingRespondedTo = 1
    response.Status = 0xA700
    response.ErrorComment = "disk full"
    provider.send_msg(response, 1)

    (pdata,) = provider.dul.sent
    command = pdata.presentation_data_value_list[0][1]
    assert b"disk full" in command  # pynetdicom wrote the comment


def test_node_takes_every_store_through_the_fast_path(tmp_path, monkeypatch):
    decoded = []
    real_decode = store_fastpath.decode_store_request
    monkeypatch.setattr(store_fastpath, "decode_store_request",
                        lambda command_set: decoded.append(real_decode(command_set)) or decoded[-1])
    received = []
    scp = StorageSCP(
        InstanceStore(tmp_path / "store"), ae_title="RADGROUND", on_stored=received.append
    )
    address = scp.start("127.0.0.1", 0)
    try:
        ae = AE("SENDER")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate(*address, ae_title="RADGROUND")
        study, series = generate_uid(), generate_uid()
        datasets = [
            make_ct(study_instance_uid=study, series_instance_uid=series, instance_number=i)
            for i in range(5)
        ]
        statuses = [assoc.send_c_store(ds).Status for ds in datasets]
        refused = make_ct(study_instance_uid="../../x", series_instance_uid=series)
        # answered with an error comment: pynetdicom writes that one
        refusal = assoc.send_c_store(refused)
        assoc.release()
    finally:
        scp.stop()

    assert statuses == [0x0000] * 5
    assert refusal.Status == 0xA900 and "StudyInstanceUID" in refusal.ErrorComment
    assert len(decoded) == 6 and all(values is not None for values in decoded)
    assert [r.sop_instance_uid for r in received] == [ds.SOPInstanceUID for ds in datasets]
    for instance, sent in zip(received, datasets, strict=True):
        stored = dcmread(tmp_path / "store" / instance.relative_path)
        assert stored.PixelData == sent.PixelData and stored.SOPInstanceUID == sent.SOPInstanceUID
