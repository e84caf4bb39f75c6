"""Damaged instances are refused before Success and leave nothing behind (issue: the node
once acknowledged, stored and indexed instances whose structure was broken).

dcmtk's storescu will not read a file whose structure is broken ("ignoring file"), so the
damaged files go out through pynetdicom as raw bytes (no decode, as a broken sender or a
cut connection delivers them); an instance that is whole but whose Pixel Data is short of
its Rows goes out through storescu. Run on SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, _config

from tests.damaged import (
    DAMAGE_KINDS,
    dataset_offset,
    intact_ct,
    write_damaged,
    write_short_of_rows,
)
from tests.factories import write_series
from tests.integration.dcmtk import storescu
from tests.integration.ingest_node import indexed, running_node, staged_files, stored_files

CANNOT_UNDERSTAND = 0xC000

EXPECTED_COMMENT = {
    "truncated-pixel-data": "(7FE0,0010) at byte",
    "length-past-end": "(7FE0,0010) at byte",
    "huge-length": "(0029,1010) at byte",
    "unterminated-sequences": "no Item Delimitation",
}


@pytest.fixture
def node(database_url, tmp_path):
    with running_node(database_url, tmp_path / "instances") as started:
        yield started


def send_raw(port: int, files: list[Path]) -> list:
    """C-STORE each file's bytes as they are on disk (pynetdicom streams them, never decodes)."""
    ae = AE(ae_title="RAWSCU")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="RADGROUND")
        assert assoc.is_established
        responses = [assoc.send_c_store(path) for path in files]
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    return responses


def test_each_damaged_instance_is_refused_and_its_neighbours_are_stored(node, tmp_path):
    study, series = generate_uid(), generate_uid()
    good = write_series(tmp_path / "good", len(DAMAGE_KINDS) + 1, study_instance_uid=study)
    damaged = [write_damaged(kind, tmp_path / f"{kind}.dcm", study_instance_uid=study, series_instance_uid=series)
               for kind in DAMAGE_KINDS]
    interleaved = [good[0]]
    for bad, neighbour in zip(damaged, good[1:], strict=True):
        interleaved += [bad, neighbour]

    responses = send_raw(node.address[1], interleaved)

    assert [r.Status for r in responses[0::2]] == [0] * len(good)
    for kind, response in zip(DAMAGE_KINDS, responses[1::2], strict=True):
        assert response.Status == CANNOT_UNDERSTAND, (kind, hex(response.Status))
        assert EXPECTED_COMMENT[kind] in response.ErrorComment, (kind, response.ErrorComment)
        assert len(response.ErrorComment) <= 64
    good_uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in good}
    assert set(indexed(node)) == good_uids
    assert sorted(p.stem for p in stored_files(node)) == sorted(good_uids)
    assert staged_files(node) == []


def test_storescu_sending_pixel_data_short_of_its_rows_gets_data_set_does_not_match(node, tmp_path):
    study = generate_uid()
    good = write_series(tmp_path / "good", 2, study_instance_uid=study)
    short = write_short_of_rows(tmp_path / "short.dcm", study_instance_uid=study, series_instance_uid=generate_uid())

    run = storescu(node.address[1], [good[0], short, good[1]])

    assert run.responses == ["Success", "Error: DataSetDoesNotMatchSOPClass", "Success"], run.output
    assert set(indexed(node)) == {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in good}
    assert len(stored_files(node)) == 2 and staged_files(node) == []


@pytest.mark.parametrize("kind", DAMAGE_KINDS)
def test_storescu_will_not_read_the_damaged_files(kind, tmp_path):
    """Why the damaged files go out through pynetdicom: dcmtk refuses to read them."""
    path = write_damaged(kind, tmp_path / "x.dcm", study_instance_uid=generate_uid(),
                         series_instance_uid=generate_uid())
    run = storescu(1, [path])  # nothing listens on port 1: storescu stops at reading the file
    assert "ignoring file" in run.output and run.responses == [], run.output


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
                                    DeflatedExplicitVRLittleEndian])
def test_whole_instances_in_every_native_syntax_are_stored_and_a_cut_deflate_stream_is_not(node, syntax, tmp_path):
    """Valid data is never refused: nested sequences of undefined length before and after Pixel
    Data, in each native transfer syntax pynetdicom encodes (deflated: the header is read from
    the bytes the check inflated)."""
    whole = intact_ct(study_instance_uid=generate_uid(), series_instance_uid=generate_uid())
    whole.file_meta.TransferSyntaxUID = syntax  # pynetdicom encodes it in this syntax
    ae = AE(ae_title="SCU")
    ae.add_requested_context(CTImageStorage, [syntax])
    assoc = ae.associate("127.0.0.1", node.address[1], ae_title="RADGROUND")
    assert assoc.is_established and str(assoc.accepted_contexts[0].transfer_syntax[0]) == syntax
    assert assoc.send_c_store(whole).Status == 0
    assoc.release()
    row = indexed(node)[str(whole.SOPInstanceUID)]
    assert row.transfer_syntax_uid == syntax
    assert dcmread(Path(node.settings.storage.root) / row.path).PixelData == whole.PixelData

    if syntax == DeflatedExplicitVRLittleEndian:
        path = tmp_path / "whole.dcm"
        whole.SOPInstanceUID = whole.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        whole.save_as(path, enforce_file_format=True)
        raw = path.read_bytes()
        cut = tmp_path / "cut.dcm"
        cut.write_bytes(raw[:dataset_offset(raw) + (len(raw) - dataset_offset(raw)) // 2])
        ae = AE(ae_title="RAWSCU")
        ae.add_requested_context(CTImageStorage, [syntax])
        previous = _config.STORE_SEND_CHUNKED_DATASET
        _config.STORE_SEND_CHUNKED_DATASET = True
        try:
            assoc = ae.associate("127.0.0.1", node.address[1], ae_title="RADGROUND")
            response = assoc.send_c_store(cut)
            assoc.release()
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = previous
        assert response.Status == CANNOT_UNDERSTAND
        assert response.ErrorComment.startswith("deflate stream ends before its last block")
        assert len(indexed(node)) == 1 and staged_files(node) == []
