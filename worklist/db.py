"""Database engines and sessions for the embedded (SQLite) and cluster (PostgreSQL) modes.

Engines are created explicitly by the application (never at import) and, in a
forked worker, after the fork (STYLE.md §8): pooled connections must not cross
a fork.
"""

from __future__ import annotations

import enum
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    CursorResult,
    DateTime,
    Engine,
    Enum,
    MetaData,
    Result,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, sessionmaker
from sqlalchemy.types import TypeDecorator

from dicom_node.private_files import create_private_file

__all__ = [
    "Base",
    "UTCDateTime",
    "create_db_engine",
    "make_session_factory",
    "string_enum",
    "updated_rows",
    "utcnow",
]

logger = logging.getLogger(__name__)

_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every table RadGround keeps."""

    metadata = MetaData(naming_convention=_NAMING)


def string_enum(cls: type[enum.Enum], name: str) -> Enum:
    """A column type for ``cls`` stored as its values in a VARCHAR(16) (no database enum type: a
    new member needs no migration)."""
    return Enum(
        cls, name=name, values_callable=lambda e: [m.value for m in e], native_enum=False, length=16
    )


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def updated_rows(result: Result[Any]) -> int:
    """The number of rows an UPDATE or DELETE matched (SQLAlchemy returns a CursorResult for them).

    Raises
    ------
    TypeError
        ``result`` is not a statement's CursorResult (e.g. the result of an ORM bulk operation).
    """
    if not isinstance(result, CursorResult):
        raise TypeError(f"expected the CursorResult of an UPDATE, got {type(result).__name__}")
    return result.rowcount


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always returned timezone-aware.

    SQLite has no time zones; storing naive UTC there and ``timestamptz`` in
    PostgreSQL makes comparisons in SQL behave the same on both.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UTCDateTime needs a timezone-aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def create_db_engine(url: str, *, echo: bool = False, durable_commits: bool = True) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://…``).

    SQLite runs in WAL mode with a busy timeout, foreign keys on, and
    ``BEGIN IMMEDIATE`` transactions, so several listener processes can write
    without "database is locked" failures from lock upgrades.

    ``durable_commits``: a committed SQLite transaction survives a power loss
    (``synchronous=FULL``: the WAL is synced at every commit), as PostgreSQL's
    commits do by default; an instance answered Success then keeps its index
    row. ``False`` (``synchronous=NORMAL``) saves that sync, and a power loss
    may roll back the last commits (the node does so with ``storage.fsync =
    "never"``, where the files themselves are not synced either).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            # 0600 before SQLite opens it: its -wal, -shm and -journal files take this mode
            create_private_file(parsed.database)
        engine = create_engine(
            url, echo=echo, connect_args={"timeout": 30, "isolation_level": None}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={'FULL' if durable_commits else 'NORMAL'}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin_immediate(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed, echo=echo, pool_pre_ping=True, pool_size=5, max_overflow=10)


def make_session_factory(engine: Engine) -> sessionmaker:
    """Sessions bound to ``engine``; the caller owns each transaction."""
    return sessionmaker(engine, expire_on_commit=False)
