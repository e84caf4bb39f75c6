"""Read views of the node as a whole: a day's counts, queue depths, workers holding leases."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worklist.db import utcnow
from worklist.jobs_models import Delivery, DeliveryState, Job, JobState
from worklist.models import RevisionState, StudyRevision
from worklist.views.jobs import ACTIVE_JOB_STATES

__all__ = [
    "Dashboard",
    "DestinationFailures",
    "QueueDepths",
    "WorkerLease",
    "dashboard",
    "day_bounds",
    "queue_depths",
    "worker_leases",
]


@dataclass(frozen=True)
class QueueDepths:
    """What is waiting now."""

    #: Jobs per state that still has work ahead ("queued", "inferring", "exporting",
    #: "delivering"), every one of them present.
    jobs: dict[str, int]
    #: Deliveries not yet done: being tried or scheduled.
    deliveries_pending: int
    #: Of those, the ones waiting for a retry after a failed attempt.
    deliveries_retrying: int
    #: Study revisions that are ready but not routed yet.
    revisions_waiting: int

    @property
    def jobs_waiting(self) -> int:
        """Jobs with work ahead, in every state."""
        return sum(self.jobs.values())


@dataclass(frozen=True)
class DestinationFailures:
    """Deliveries to one destination that failed (jobs that ended in the day) or are retrying."""

    destination: str
    failed: int
    retrying: int


@dataclass(frozen=True)
class Dashboard:
    """A day at a glance: ``start <= time < end``."""

    start: datetime
    end: datetime
    #: Study revisions opened by arrivals in the day (a reprocess opens none).
    received: int
    #: Jobs that ended done in the day.
    processed: int
    #: Jobs that ended failed or dead in the day.
    failed: int
    #: Jobs with work ahead now (whenever they were created), and ready revisions not yet routed.
    waiting: int
    queue: QueueDepths
    #: Destinations with a failed or retrying delivery, the most failures first.
    delivery_failures: tuple[DestinationFailures, ...]


@dataclass(frozen=True)
class WorkerLease:
    """A worker as the database sees it: the inference attempts it holds."""

    #: "worker:<host>:<pid>".
    worker: str
    jobs: int
    #: The latest expiry of its leases; it renews them while it runs.
    lease_expires_at: datetime | None
    #: Whether a lease is still held (a lapsed one means the worker died or hangs).
    alive: bool


def queue_depths(session: Session, *, now: datetime | None = None) -> QueueDepths:
    """What is waiting now: jobs by state, pending and retrying deliveries, unrouted revisions."""
    now = now or utcnow()
    counts = dict(
        session.execute(
            select(Job.state, func.count())
            .where(Job.state.in_(ACTIVE_JOB_STATES))
            .group_by(Job.state)
        ).all()
    )
    pending, retrying = session.execute(
        select(
            func.count(),
            func.count(Delivery.next_attempt_at).filter(Delivery.next_attempt_at > now),
        ).where(Delivery.state == DeliveryState.PENDING)
    ).one()
    waiting = session.scalar(
        select(func.count()).select_from(StudyRevision).where(
            StudyRevision.state == RevisionState.READY, StudyRevision.dispatched_at.is_(None)
        )
    ) or 0
    return QueueDepths(
        jobs={state.value: counts.get(state, 0) for state in ACTIVE_JOB_STATES},
        deliveries_pending=pending or 0,
        deliveries_retrying=retrying or 0,
        revisions_waiting=waiting,
    )


def day_bounds(day: date, tz: tzinfo = UTC) -> tuple[datetime, datetime]:
    """The start (inclusive) and end (exclusive) of ``day`` in ``tz``, as aware times."""
    start = datetime.combine(day, time(), tzinfo=tz)
    return start, datetime.combine(day + timedelta(days=1), time(), tzinfo=tz)


def dashboard(
    session: Session, day: date, *, tz: tzinfo = UTC, now: datetime | None = None
) -> Dashboard:
    """The counts of ``day`` (in ``tz``) and what is waiting ``now``."""
    start, end = day_bounds(day, tz)
    received = session.scalar(
        select(func.count()).select_from(StudyRevision).where(
            StudyRevision.opened_at >= start,
            StudyRevision.opened_at < end,
            StudyRevision.instances_received > 0,
        )
    ) or 0
    ended = dict(
        session.execute(
            select(Job.state, func.count())
            .where(Job.finished_at >= start, Job.finished_at < end)
            .group_by(Job.state)
        ).all()
    )
    queue = queue_depths(session, now=now)
    failed_by = dict(
        session.execute(
            select(Delivery.destination, func.count())
            .join(Job, Job.id == Delivery.job_id)
            .where(
                Delivery.state == DeliveryState.FAILED,
                Job.finished_at >= start,
                Job.finished_at < end,
            )
            .group_by(Delivery.destination)
        ).all()
    )
    retrying_by = dict(
        session.execute(
            select(Delivery.destination, func.count())
            .where(
                Delivery.state == DeliveryState.PENDING,
                Delivery.attempts > 0,
                Delivery.last_error.is_not(None),
            )
            .group_by(Delivery.destination)
        ).all()
    )
    failures = sorted(
        (
            DestinationFailures(name, failed_by.get(name, 0), retrying_by.get(name, 0))
            for name in set(failed_by) | set(retrying_by)
        ),
        key=lambda f: (-f.failed, -f.retrying, f.destination),
    )
    return Dashboard(
        start=start,
        end=end,
        received=received,
        processed=ended.get(JobState.DONE, 0),
        failed=ended.get(JobState.FAILED, 0) + ended.get(JobState.DEAD, 0),
        waiting=queue.jobs_waiting + queue.revisions_waiting,
        queue=queue,
        delivery_failures=tuple(failures),
    )


def worker_leases(session: Session, *, now: datetime | None = None) -> tuple[WorkerLease, ...]:
    """The workers holding inference attempts, as the jobs table records them.

    A worker that holds no job right now does not appear: the database knows only the
    attempts (``jobs.worker``, ``jobs.lease_expires_at``).
    """
    now = now or utcnow()
    rows = session.execute(
        select(Job.worker, func.count(), func.max(Job.lease_expires_at))
        .where(Job.state == JobState.INFERRING, Job.worker.is_not(None))
        .group_by(Job.worker)
        .order_by(Job.worker)
    )
    return tuple(
        WorkerLease(worker, count, expires, expires is not None and expires > now)
        for worker, count, expires in rows
        if worker is not None
    )
