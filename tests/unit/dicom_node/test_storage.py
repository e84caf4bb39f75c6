import os

import pytest

from dicom_node.errors import DuplicateInstanceError, InsufficientStorageError, InvalidInstanceError
from dicom_node.storage import DuplicatePolicy, FsyncPolicy, InstanceStore, StoreOutcome

UIDS = {
    "study_instance_uid": "1.2.3",
    "series_instance_uid": "1.2.3.4",
    "sop_instance_uid": "1.2.3.4.5",
}


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_writes_atomically_under_uid_path(tmp_path):
    store = InstanceStore(tmp_path, fsync=FsyncPolicy.ALWAYS)
    result = store.write(b"DICM-bytes", **UIDS)
    assert result.relative_path == "1.2.3/1.2.3.4/1.2.3.4.5.dcm"
    assert result.outcome is StoreOutcome.STORED and result.size == 10
    assert (tmp_path / result.relative_path).read_bytes() == b"DICM-bytes"
    assert files_under(tmp_path) == ["1.2.3/1.2.3.4/1.2.3.4.5.dcm"]  # no temp file left behind


@pytest.mark.parametrize(
    "field, value",
    [
        ("study_instance_uid", "../../etc"),
        ("series_instance_uid", "1.2/../../x"),
        ("sop_instance_uid", "1." + "9" * 64),
        ("sop_instance_uid", "1.2.abc"),
        ("study_instance_uid", ""),
    ],
)
def test_invalid_uids_never_touch_the_file_system(tmp_path, field, value):
    root = tmp_path / "store"
    store = InstanceStore(root)
    with pytest.raises(InvalidInstanceError, match="not a valid DICOM UID"):
        store.write(b"x", **{**UIDS, field: value})
    assert files_under(tmp_path) == []


def test_duplicate_policies(tmp_path):
    ignore = InstanceStore(tmp_path / "a", duplicates=DuplicatePolicy.IGNORE_IF_IDENTICAL)
    ignore.write(b"one", **UIDS)
    assert ignore.write(b"one", **UIDS).outcome is StoreOutcome.IDENTICAL_DUPLICATE
    assert ignore.write(b"two", **UIDS).outcome is StoreOutcome.REPLACED
    assert (tmp_path / "a" / "1.2.3/1.2.3.4/1.2.3.4.5.dcm").read_bytes() == b"two"

    replace = InstanceStore(tmp_path / "b", duplicates=DuplicatePolicy.REPLACE)
    replace.write(b"one", **UIDS)
    assert replace.write(b"one", **UIDS).outcome is StoreOutcome.REPLACED

    reject = InstanceStore(tmp_path / "c", duplicates=DuplicatePolicy.REJECT)
    reject.write(b"one", **UIDS)
    with pytest.raises(DuplicateInstanceError):
        reject.write(b"two", **UIDS)
    # identical: the index decides (a duplicate if it knows the instance, else a file a crash left
    # unindexed)
    assert reject.write(b"one", **UIDS).outcome is StoreOutcome.ALREADY_STORED
    assert (tmp_path / "c" / "1.2.3/1.2.3.4/1.2.3.4.5.dcm").read_bytes() == b"one"
    assert staged_files(tmp_path / "c") == []


def test_reserve_refuses_before_writing(tmp_path):
    store = InstanceStore(tmp_path, reserve_bytes=10**18)
    with pytest.raises(InsufficientStorageError, match="reserve"):
        store.write(b"x" * 100, **UIDS)
    assert files_under(tmp_path) == []


def test_open_refuses_paths_outside_the_root(tmp_path):
    store = InstanceStore(tmp_path / "root")
    with pytest.raises(InvalidInstanceError):
        store.open("../outside.dcm")


def test_files_are_not_world_readable(tmp_path):
    store = InstanceStore(tmp_path)
    path = tmp_path / store.write(b"x", **UIDS).relative_path
    assert os.stat(path).st_mode & 0o007 == 0


PLACE = {"study_instance_uid": "1.2.3", "series_instance_uid": "1.2.3.4"}


def staged_files(root):
    return sorted(p.name for p in (root / ".incoming").iterdir())


def test_staged_write_is_placed_by_the_header_read_later(tmp_path):
    store = InstanceStore(tmp_path, fsync=FsyncPolicy.ALWAYS)
    staged = store.stage([b"DICM", b"-bytes"], sop_instance_uid="1.2.3.4.5")
    assert len(staged_files(tmp_path)) == 1 and files_under(tmp_path / "1.2.3") == []

    pending = staged.place(study_instance_uid="1.2.3", series_instance_uid="1.2.3.4")
    assert pending.result.outcome is StoreOutcome.STORED
    # moved by wait(), once its fsync is done
    assert not (tmp_path / pending.result.relative_path).exists()
    result = pending.wait()

    assert result.relative_path == "1.2.3/1.2.3.4/1.2.3.4.5.dcm" and result.size == 10
    assert (tmp_path / result.relative_path).read_bytes() == b"DICM-bytes"
    assert staged_files(tmp_path) == []


@pytest.mark.parametrize("policy", list(DuplicatePolicy))
def test_refused_placement_leaves_no_staged_file_and_the_stored_one_unchanged(tmp_path, policy):
    store = InstanceStore(tmp_path, duplicates=policy)
    store.write(b"one", **UIDS)
    with pytest.raises(InvalidInstanceError):
        store.stage(b"two", sop_instance_uid="1.2.3.4.5").place(
            study_instance_uid="../x", series_instance_uid="1.2"
        )
    if policy is DuplicatePolicy.REJECT:
        with pytest.raises(DuplicateInstanceError):
            store.stage(b"two", sop_instance_uid="1.2.3.4.5").place(study_instance_uid="1.2.3",
                                                                     series_instance_uid="1.2.3.4")
    store.stage(b"three", sop_instance_uid="1.2.3.4.5").discard()

    assert staged_files(tmp_path) == []
    assert (tmp_path / "1.2.3/1.2.3.4/1.2.3.4.5.dcm").read_bytes() == b"one"


def test_staging_refuses_an_invalid_sop_instance_uid_before_writing(tmp_path):
    store = InstanceStore(tmp_path)
    with pytest.raises(InvalidInstanceError, match="SOPInstanceUID"):
        store.stage(b"x", sop_instance_uid="../../etc/passwd")
    assert files_under(tmp_path) == []


def test_staged_files_a_crash_left_are_removed_at_start(tmp_path):
    # another process's, in flight
    InstanceStore(tmp_path).stage(b"fresh", sop_instance_uid="1.2.3.4.6")
    stale = tmp_path / ".incoming" / ".1.2.3.4.5.999.1.tmp"
    stale.write_bytes(b"half an instance")
    os.utime(stale, (0, 0))

    InstanceStore(tmp_path)

    assert not stale.exists()
    assert len(staged_files(tmp_path)) == 1


def test_abandoned_writes_leave_what_was_there(tmp_path):
    store = InstanceStore(tmp_path)
    placed_path = tmp_path / "1.2.3/1.2.3.4/1.2.3.4.5.dcm"
    store.stage(b"one", sop_instance_uid="1.2.3.4.5").place(**PLACE).abandon()  # before it moved
    assert not placed_path.exists() and staged_files(tmp_path) == []

    new = store.stage(b"one", sop_instance_uid="1.2.3.4.5").place(**PLACE)
    new.wait()
    new.abandon()  # a new file in place: removed again
    assert not placed_path.exists()

    store.write(b"one", **UIDS)
    replacing = store.stage(b"two", sop_instance_uid="1.2.3.4.5").place(**PLACE)
    assert replacing.result.outcome is StoreOutcome.REPLACED
    replacing.wait()
    replacing.abandon()  # a replaced file is not brought back, nor removed
    assert placed_path.read_bytes() == b"two"


def test_fsync_is_under_way_before_stage_returns(tmp_path, monkeypatch):
    """The caller goes on with Python work (the header, the index): its fsync must
    not wait for the caller to release the GIL."""
    from dicom_node import storage

    events = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        events.append("fsync entered")
        real_fsync(fd)

    monkeypatch.setattr(storage.os, "fsync", recording_fsync)
    # the mechanism, not the machine's speed
    monkeypatch.setattr(storage, "FSYNC_START_WAIT_SECONDS", 5.0)
    store = InstanceStore(tmp_path, fsync=FsyncPolicy.ALWAYS)
    store.write(b"first", **UIDS)  # the directories exist (their creation is synced too)
    events.clear()

    staged = store.stage(b"x" * 4096, sop_instance_uid="1.2.3.4.6")
    events.append("stage returned")

    assert events == ["fsync entered", "stage returned"]
    staged.place(**PLACE).wait()
