"""The database engine a RadGround process uses, from its settings."""

from __future__ import annotations

from sqlalchemy import Engine

from dicom_node.storage import FsyncPolicy
from radground.settings import Settings
from worklist.db import create_db_engine

__all__ = ["database_engine"]


def database_engine(settings: Settings) -> Engine:
    """This process's engine for the index and job database. Its commits are synced
    exactly when the storage syncs files (``storage.fsync``): Success for an
    instance then means its file and its index row both survive a power loss."""
    return create_db_engine(
        settings.database.url, durable_commits=settings.storage.fsync is FsyncPolicy.ALWAYS
    )
