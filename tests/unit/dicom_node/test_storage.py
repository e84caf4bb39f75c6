import os

import pytest

from dicom_node.errors import DuplicateInstanceError, InsufficientStorageError, InvalidInstanceError
from dicom_node.storage import DuplicatePolicy, FsyncPolicy, InstanceStore, StoreOutcome

UIDS = dict(study_instance_uid="1.2.3", series_instance_uid="1.2.3.4", sop_instance_uid="1.2.3.4.5")


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
    assert (tmp_path / "c" / "1.2.3/1.2.3.4/1.2.3.4.5.dcm").read_bytes() == b"one"


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
