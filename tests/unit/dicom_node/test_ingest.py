"""InstanceIngest, the one ingest path: what it stores, what it refuses, and with which status."""

from __future__ import annotations

import io
import mmap
from pathlib import Path

import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_node.conformance import StoreStatus
from dicom_node.errors import StoreRefusedError
from dicom_node.ingest import InstanceIngest, StoredInstance
from dicom_node.part10 import split_file_meta
from dicom_node.storage import InstanceStore
from tests.factories import make_ct

CT = "1.2.840.10008.5.1.4.1.1.2"


def encoded(ds) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


@pytest.fixture
def ct():
    return make_ct(study_instance_uid=generate_uid(), series_instance_uid=generate_uid(),
                   rows=8, columns=8)


def ingest_of(
    tmp_path: Path, stored: list[StoredInstance] | None = None, **kwargs
) -> InstanceIngest:
    hook = stored.append if stored is not None else None
    return InstanceIngest(InstanceStore(tmp_path / "store"), on_stored=hook, **kwargs)


def uids(ds) -> dict[str, str]:
    return dict(sop_class_uid=ds.SOPClassUID, sop_instance_uid=ds.SOPInstanceUID,
                transfer_syntax_uid=str(ExplicitVRLittleEndian), calling_ae_title="SENDER",
                peer_host="127.0.0.1")


@pytest.mark.parametrize("form", ["bytes", "bytesio", "mmap"])
def test_each_form_of_data_set_is_stored_as_received_behind_the_node_file_meta(tmp_path, ct, form):
    data = encoded(ct)
    stored: list[StoredInstance] = []
    ingest = ingest_of(tmp_path, stored)
    spool = tmp_path / "spool"
    spool.write_bytes(data)
    with spool.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        given = {"bytes": data, "bytesio": io.BytesIO(data), "mmap": mapped}[form]
        result = ingest.ingest(given, **uids(ct))

    assert result.stored and result.status == StoreStatus.SUCCESS and result.reason is None
    assert result.study_instance_uid == ct.StudyInstanceUID
    assert result.series_instance_uid == ct.SeriesInstanceUID
    written = (tmp_path / "store" / result.relative_path).read_bytes()
    meta, offset = split_file_meta(written, complete=True)
    assert written[offset:] == data
    assert meta.media_storage_sop_instance_uid == ct.SOPInstanceUID
    assert [s.sop_instance_uid for s in stored] == [ct.SOPInstanceUID]
    assert stored[0].calling_ae_title == "SENDER" and stored[0].header.PatientID == ct.PatientID


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"sop_class_uid": "1.2.3.4"}, StoreStatus.SOP_CLASS_NOT_SUPPORTED),
        ({"transfer_syntax_uid": "1.2.3.4"}, StoreStatus.TRANSFER_SYNTAX_NOT_SUPPORTED),
        ({"sop_instance_uid": "1.2.3.4"}, StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS),
        ({"study_instance_uid": "1.2.3.4"}, StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS),
    ],
)
def test_refusals_return_the_c_store_status_and_leave_nothing_stored(tmp_path, ct, change, status):
    stored: list[StoredInstance] = []
    ingest = ingest_of(tmp_path, stored)

    result = ingest.ingest(encoded(ct), **{**uids(ct), **change})

    assert (result.status, result.stored) == (status, False)
    assert result.reason and result.relative_path is None
    assert stored == []
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []


def test_a_truncated_data_set_cannot_be_understood(tmp_path, ct):
    result = ingest_of(tmp_path).ingest(encoded(ct)[:-10], **uids(ct))
    assert result.status in (StoreStatus.CANNOT_UNDERSTAND,
                             StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS)
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []


def test_a_hook_refusal_removes_the_file_and_answers_by_transience(tmp_path, ct):
    def refuse(instance: StoredInstance) -> None:
        raise StoreRefusedError("index down", transient=True)

    ingest = InstanceIngest(InstanceStore(tmp_path / "store"), on_stored=refuse)
    result = ingest.ingest(encoded(ct), **uids(ct))

    assert result.status == StoreStatus.OUT_OF_RESOURCES and result.reason == "index down"
    assert result.study_instance_uid == ct.StudyInstanceUID
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []
