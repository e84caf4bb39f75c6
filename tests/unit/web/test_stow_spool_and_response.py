"""A STOW-RS part spooled to disk, and the Store Instances Response Module."""

from __future__ import annotations

import json

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.factories import make_ct, write_dataset
from web.stow.response import InstanceOutcome, http_status, store_instances_response
from web.stow.spool import MAX_HEAD_BYTES, SpooledPart


@pytest.mark.parametrize("chunk", [1, 100, 1 << 20])
def test_a_part_file_meta_is_read_and_its_data_set_spooled_whatever_the_chunking(tmp_path, chunk):
    ct = make_ct(study_instance_uid=generate_uid(), series_instance_uid=generate_uid(),
                 rows=16, columns=16)
    data = write_dataset(ct, tmp_path / "ct.dcm").read_bytes()
    part = SpooledPart(tmp_path)
    for start in range(0, len(data), chunk):
        part.write(data[start : start + chunk])
    part.finish()

    assert part.error is None and part.meta is not None
    assert part.meta.media_storage_sop_instance_uid == ct.SOPInstanceUID
    file_meta = dcmread(tmp_path / "ct.dcm").file_meta
    assert part.meta.transfer_syntax_uid == file_meta.TransferSyntaxUID
    data_set_starts = 132 + 12 + file_meta.FileMetaInformationGroupLength
    with part.data_set() as data_set:
        assert bytes(data_set) == data[data_set_starts:]
    part.close()
    assert list(tmp_path.iterdir()) == [tmp_path / "ct.dcm"]  # the spool file left no name


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"not dicom" * 100, "no DICM prefix"),
        (bytes(10), "shorter than its preamble"),
        (bytes(128) + b"DICM" + b"\x02\x00\x10\x00UI\x40\x00", "ends inside an element"),
        (bytes(128) + b"DICM" + b"\x02\x00\x01\x00OB\x00\x00\x00\xff\xff\x00"
         + bytes(MAX_HEAD_BYTES),
         "longer than"),
    ],
)
def test_a_part_that_is_no_part_10_file_is_marked_with_why(tmp_path, data, error):
    part = SpooledPart(tmp_path)
    part.write(data)
    part.finish()
    assert part.meta is None and error in (part.error or "")
    with part.data_set() as data_set:
        assert data_set == b""


def outcome(status: int, *, uid: str | None = "1.2.3") -> InstanceOutcome:
    return InstanceOutcome("1.2.840.10008.5.1.4.1.1.2" if uid else None, uid, status)


@pytest.mark.parametrize(
    ("statuses", "http"),
    [([0, 0], 200), ([0, 0xC000], 202), ([0xA900, 0xC000], 409), ([], 409)],
)
def test_http_status_follows_ps3_18_table_10_5_3_1(statuses, http):
    assert http_status([outcome(s) for s in statuses]) == http


def test_the_response_lists_stored_and_failed_instances_with_the_c_store_status():
    outcomes = [
        outcome(0, uid="1.2.3.1"), outcome(0xA900, uid="1.2.3.2"), outcome(0xC000, uid=None)
    ]
    response = store_instances_response(outcomes, study_url="http://node/dicomweb/studies/1.2")

    round_trip = Dataset.from_json(json.loads(response.to_json()))
    assert round_trip.RetrieveURL == "http://node/dicomweb/studies/1.2"
    assert [i.ReferencedSOPInstanceUID for i in round_trip.ReferencedSOPSequence] == ["1.2.3.1"]
    failed = round_trip.FailedSOPSequence
    assert [i.FailureReason for i in failed] == [0xA900, 0xC000]
    assert failed[0].ReferencedSOPInstanceUID == "1.2.3.2"
    assert "ReferencedSOPInstanceUID" not in failed[1]
    empty = store_instances_response([outcome(0xC000)], study_url=None)
    assert "RetrieveURL" in empty and not empty.RetrieveURL
