"""``/node`` (status: listeners, associations, disk, queues, workers) and ``/dashboard`` (a day's
counts)."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from web.api.common import PROBLEMS, Context, DbSession
from web.auth import Reader
from web.runtime_info import Listener
from worklist.db import utcnow
from worklist.views import Dashboard, QueueDepths, WorkerLease, dashboard, queue_depths
from worklist.views import worker_leases as leases

__all__ = ["NodeStatus", "StorageStatus", "router"]

router = APIRouter(tags=["node"], responses=PROBLEMS)


class StorageStatus(BaseModel):
    """Free space of a folder the node writes (bytes)."""

    free_bytes: int
    total_bytes: int
    #: What the node keeps free: it refuses instances below this (0 for the outputs folder).
    reserve_bytes: int
    above_reserve: bool


class NodeStatus(BaseModel):
    """The node now. ``null`` where this process cannot know (the web server runs without the
    node: ``radground web``)."""

    listeners: list[Listener] | None
    associations_open: int | None
    #: ``storage.root`` (received instances).
    storage: StorageStatus | None
    #: ``workers.outputs_root`` (what the jobs produced).
    outputs: StorageStatus | None
    queue: QueueDepths
    #: Workers holding inference attempts, from their leases in the database.
    worker_leases: list[WorkerLease]
    #: Celery workers that answered a ping, where the node asked.
    workers_answering: list[str] | None


def _storage(path: Path, reserve: int) -> StorageStatus | None:
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return StorageStatus(free_bytes=usage.free, total_bytes=usage.total, reserve_bytes=reserve,
                         above_reserve=usage.free > reserve)


@router.get("/node", response_model=NodeStatus, summary="Node status")
def node_status(principal: Reader, session: DbSession, context: Context) -> NodeStatus:
    """Listeners, associations open now, disk free against the reserve, queue depths and the
    workers alive."""
    runtime = context.node_probe() if context.node_probe is not None else None
    now = utcnow()
    return NodeStatus(
        listeners=list(runtime.listeners) if runtime and runtime.listeners is not None else None,
        associations_open=runtime.associations_open if runtime else None,
        storage=_storage(Path(context.pipeline.storage_root), context.storage_reserve_bytes),
        outputs=_storage(Path(context.pipeline.outputs_root), 0),
        queue=queue_depths(session, now=now),
        worker_leases=list(leases(session, now=now)),
        workers_answering=(
            list(runtime.workers_answering)
            if runtime and runtime.workers_answering is not None
            else None
        ),
    )


@router.get("/dashboard", response_model=Dashboard, summary="A day at a glance")
def day_counts(
    principal: Reader,
    session: DbSession,
    day: Annotated[date | None, Query(description="The day (UTC); today when left out.")] = None,
) -> Dashboard:
    """Received, processed, failed and waiting in the day; queue depth now; delivery failures by
    destination."""
    return dashboard(session, day or utcnow().date())
