"""A RadGround node on an ephemeral port, and what it stored, for ingest tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from radground.node import Node
from radground.settings import (
    CompletionSettings,
    DatabaseSettings,
    NodeSettings,
    Settings,
    StorageSettings,
)
from worklist.db import create_db_engine, make_session_factory
from worklist.models import Instance, Study

__all__ = ["indexed", "running_node", "staged_files", "stored_files", "study_counts"]


@contextmanager
def running_node(database_url: str, root: Path, **storage: Any) -> Iterator[Node]:
    """A node (one listener process) storing under ``root``; ``storage`` overrides settings."""
    settings = Settings(
        node=NodeSettings(port=0, listener_processes=1),
        storage=StorageSettings(root=root, reserve_mb=0, **storage),
        database=DatabaseSettings(url=database_url),
        completion=CompletionSettings(idle_seconds=30, poll_seconds=3600),
    )
    node = Node(settings)
    node.start()
    try:
        yield node
    finally:
        node.stop()


def _query(node: Node, statement: Any) -> list[Any]:
    engine = create_db_engine(node.settings.database.url)
    try:
        with make_session_factory(engine)() as session:
            return list(session.scalars(statement))
    finally:
        engine.dispose()


def indexed(node: Node) -> dict[str, Instance]:
    """The index's instances by SOP Instance UID."""
    return {i.sop_instance_uid: i for i in _query(node, select(Instance))}


def study_counts(node: Node) -> dict[str, int]:
    """Each indexed study's instance count, by Study Instance UID."""
    return {s.study_instance_uid: s.instance_count for s in _query(node, select(Study))}


def stored_files(node: Node) -> list[Path]:
    """The instance files under the storage root (staging area excluded)."""
    return sorted(p for p in Path(node.settings.storage.root).rglob("*.dcm") if ".incoming" not in p.parts)


def staged_files(node: Node) -> list[Path]:
    """What is left in the staging area ``<root>/.incoming``."""
    return sorted((Path(node.settings.storage.root) / ".incoming").glob("*"))
