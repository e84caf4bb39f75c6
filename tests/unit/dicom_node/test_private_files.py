"""Received instances and the SQLite files are created 0600 in 0700 folders whatever the
umask of the process that writes them (the entry points set 0077 too; these tests use a
permissive 0002, as a shell or a service manager may hand down)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from dicom_node.private_files import create_private_file, make_private_directories
from dicom_node.storage import FsyncPolicy, InstanceStore
from worklist.db import create_db_engine

STUDY, SERIES, SOP = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", "1.2.3.4"


@pytest.fixture
def permissive_umask():
    previous = os.umask(0o002)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("fsync", list(FsyncPolicy))
def test_a_stored_instance_and_every_folder_to_it_are_private(tmp_path, permissive_umask, fsync):
    root = tmp_path / "var" / "instances"
    store = InstanceStore(root, fsync=fsync)
    store.write(b"DICM" * 64, study_instance_uid=STUDY, series_instance_uid=SERIES,
                sop_instance_uid=SOP)
    stored = root / STUDY / SERIES / f"{SOP}.dcm"
    assert mode(stored) == 0o600
    for folder in (tmp_path / "var", root, root / ".incoming", root / STUDY, root / STUDY / SERIES):
        assert mode(folder) == 0o700, folder


def test_existing_folders_keep_their_mode(tmp_path, permissive_umask):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    shared.chmod(0o750)
    created = make_private_directories(shared / "a" / "b")
    assert created == [shared / "a", shared / "a" / "b"]
    assert mode(shared) == 0o750
    assert mode(shared / "a") == mode(shared / "a" / "b") == 0o700


def test_folders_made_by_several_threads_at_once(tmp_path, permissive_umask):
    target = tmp_path / "x" / "y" / "z"
    errors = []

    def make():
        try:
            make_private_directories(target)
        except OSError as exc:  # pragma: no cover - the failure this test looks for
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and mode(target) == 0o700


def test_a_file_where_a_folder_should_be_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises((NotADirectoryError, FileExistsError)):
        make_private_directories(tmp_path / "file")


def test_sqlite_database_and_its_wal_and_shm_files_are_private(tmp_path, permissive_umask):
    database = tmp_path / "var" / "radground.db"
    engine = create_db_engine(f"sqlite:///{database}")
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (name TEXT)"))
            connection.execute(text("INSERT INTO t VALUES ('DOE^JANE')"))
        files = sorted(p.name for p in database.parent.iterdir())
        assert {"radground.db", "radground.db-wal", "radground.db-shm"} <= set(files)
        for name in files:
            assert mode(database.parent / name) == 0o600, name
        assert mode(database.parent) == 0o700
    finally:
        engine.dispose()


def test_create_private_file_leaves_an_existing_file_alone(tmp_path, permissive_umask):
    existing = tmp_path / "existing.db"
    existing.write_bytes(b"content")
    existing.chmod(0o640)
    create_private_file(existing)
    assert existing.read_bytes() == b"content" and mode(existing) == 0o640
    new = tmp_path / "new" / "broker.sqlite"
    create_private_file(new)
    assert mode(new) == 0o600 and mode(new.parent) == 0o700 and new.read_bytes() == b""
