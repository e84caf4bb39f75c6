"""A SOP Instance UID that arrives again, under each duplicate policy, on SQLite and
PostgreSQL: files and index keep telling the same story (issue: with
"ignore-if-identical" a re-send in another study moved the index row, left the old
file unindexed and made both studies' instance counts stale).

Policy (PS3.4 B.4.1, PS3.3 C.12.1.1.1): a re-send in the same study and series is a
duplicate, handled by ``storage.duplicates``; the same SOP Instance UID in another study
or series is a conflict, refused 0xA900 under every policy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from tests.factories import make_ct
from tests.integration.ingest_node import (
    indexed,
    running_node,
    staged_files,
    stored_files,
    study_counts,
)

SUCCESS, DUPLICATE_SOP_INSTANCE, DATA_SET_DOES_NOT_MATCH = 0x0000, 0x0111, 0xA900
POLICIES = ("ignore-if-identical", "replace", "reject")


def send(port: int, datasets) -> list:
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="RADGROUND")
    assert assoc.is_established
    responses = [assoc.send_c_store(ds) for ds in datasets]
    assoc.release()
    return responses


def ct(study: str, series: str, *, sop: str, number: int = 1):
    return make_ct(study_instance_uid=study, series_instance_uid=series, instance_number=number,
                   rows=16, columns=16, sop_instance_uid=sop)


def assert_files_and_index_agree(node) -> None:
    """Every indexed instance is a file at its path with its UIDs; every file is indexed."""
    rows = indexed(node)
    root = Path(node.settings.storage.root)
    assert sorted(root / row.path for row in rows.values()) == stored_files(node)
    for sop, row in rows.items():
        on_disk = dcmread(root / row.path)
        assert str(on_disk.SOPInstanceUID) == sop
        assert row.size == (root / row.path).stat().st_size
        assert row.instance_number == on_disk.InstanceNumber
    assert staged_files(node) == []


@pytest.mark.parametrize("policy", POLICIES)
def test_re_sends_in_the_same_study_follow_the_policy_and_in_another_study_are_refused(
    policy, database_url, tmp_path
):
    study, series, other_study, other_series = (generate_uid() for _ in range(4))
    sop = generate_uid()
    with running_node(database_url, tmp_path / "instances", duplicates=policy) as node:
        port = node.address[1]
        first = send(port, [ct(study, series, sop=sop, number=1),
                            ct(other_study, other_series, sop=generate_uid(), number=7)])
        assert [r.Status for r in first] == [SUCCESS, SUCCESS]

        identical, changed = send(port, [ct(study, series, sop=sop, number=1), ct(study, series, sop=sop, number=2)])
        if policy == "reject":
            assert (identical.Status, changed.Status) == (DUPLICATE_SOP_INSTANCE, DUPLICATE_SOP_INSTANCE)
            expected_number = 1
        else:
            assert (identical.Status, changed.Status) == (SUCCESS, SUCCESS)
            expected_number = 2  # the changed content replaced the stored one

        (elsewhere, other_series_re_send) = send(port, [ct(other_study, other_series, sop=sop, number=3),
                                                         ct(study, generate_uid(), sop=sop, number=4)])
        assert elsewhere.Status == DATA_SET_DOES_NOT_MATCH
        assert elsewhere.ErrorComment == "SOP Instance UID is already stored in another study"
        assert other_series_re_send.Status == DATA_SET_DOES_NOT_MATCH
        assert other_series_re_send.ErrorComment == "SOP Instance UID is already stored in another series"

        rows = indexed(node)
        assert rows[sop].path == f"{study}/{series}/{sop}.dcm"
        assert rows[sop].instance_number == expected_number
        assert study_counts(node) == {study: 1, other_study: 1}
        assert len(stored_files(node)) == 2
        assert_files_and_index_agree(node)


def test_reject_indexes_a_file_a_crash_left_unindexed_when_it_is_sent_again(database_url, tmp_path):
    """A crash between a file's rename and its index commit leaves the file without its row,
    and the sender without Success. With "reject", its identical re-send used to be refused
    as a duplicate forever, the instance never indexed; now the index, not the file, decides."""
    root = tmp_path / "instances"
    instance = ct(generate_uid(), generate_uid(), sop=generate_uid())
    # The first node's index is lost with it: only the file stays.
    with running_node(f"sqlite:///{tmp_path / 'lost.db'}", root, duplicates="reject") as first:
        assert send(first.address[1], [instance])[0].Status == SUCCESS
    with running_node(database_url, root, duplicates="reject") as node:
        assert len(stored_files(node)) == 1 and indexed(node) == {}
        again, once_more = send(node.address[1], [instance, instance])
        assert again.Status == SUCCESS
        assert once_more.Status == DUPLICATE_SOP_INSTANCE
        assert set(indexed(node)) == {str(instance.SOPInstanceUID)}
        assert study_counts(node) == {str(instance.StudyInstanceUID): 1}
        assert_files_and_index_agree(node)
