"""SQLite engine settings: what a commit survives."""

import pytest
from sqlalchemy import text

from radground.runtime import build_context
from radground.settings import DatabaseSettings, Settings, StorageSettings
from worklist.db import create_db_engine

_SYNCHRONOUS = {1: "NORMAL", 2: "FULL"}


def _pragma(engine, name: str):
    with engine.connect() as connection:
        return connection.execute(text(f"PRAGMA {name}")).scalar()


def test_sqlite_commits_survive_a_power_loss_by_default(tmp_path):
    engine = create_db_engine(f"sqlite:///{tmp_path / 'index.db'}")
    try:
        assert _pragma(engine, "journal_mode") == "wal"
        assert _SYNCHRONOUS[_pragma(engine, "synchronous")] == "FULL"
    finally:
        engine.dispose()


@pytest.mark.parametrize(("fsync", "expected"), [("always", "FULL"), ("never", "NORMAL")])
def test_the_storage_fsync_policy_decides_for_the_index_too(tmp_path, fsync, expected):
    settings = Settings(storage=StorageSettings(root=tmp_path / "instances", fsync=fsync),
                        database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'index.db'}"))
    ctx = build_context(settings, enqueue=None)
    engine = ctx.sessions.kw["bind"]
    try:
        assert _SYNCHRONOUS[_pragma(engine, "synchronous")] == expected
    finally:
        engine.dispose()


@pytest.mark.parametrize(("fsync", "expected"), [("always", "FULL"), ("never", "NORMAL")])
def test_the_node_index_engine_follows_the_storage_fsync_policy(tmp_path, fsync, expected):
    """The listener's index hook and the completion monitor use the same engine factory."""
    from radground import node

    settings = Settings(storage=StorageSettings(root=tmp_path / "instances", fsync=fsync),
                        database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'index.db'}"))
    engine = node.database_engine(settings)
    try:
        assert _SYNCHRONOUS[_pragma(engine, "synchronous")] == expected
    finally:
        engine.dispose()
