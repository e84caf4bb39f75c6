"""Inference attempts hold a lease on their job and renew it while they run.

A gpu worker that is killed (the OOM killer, SIGKILL, a machine that is gone)
cannot say so, and its broker message comes back only after the broker's
visibility timeout (Redis: an hour), or never. So each inference attempt
*claims* its job: the job row names the worker (``worker:<host>:<pid>``) and
the time its claim lapses (``lease_expires_at``), and a thread of the running
attempt renews the claim every third of the lease (:class:`Heartbeat`). The
node's sweeper queues a job whose lease lapsed again (:func:`requeue_lapsed`),
so a dead worker's job runs again within one lease plus one sweep, in the
embedded and the cluster mode alike: the lease lives in the shared database,
not in the broker.

The attempt number (``Job.inference_starts``) is a fencing token. The renewal
and the attempt's result are compare-and-set writes on (job id, state
``inferring``, attempt, worker) (:func:`holds`): once the sweeper re-queued the job or a
new attempt claimed it, the old attempt's writes match no row, so a worker that
was only slow (a paused VM, a machine cut off from the database for longer
than a lease) cannot overwrite the attempt that replaced it; its heartbeat sees
the loss and says so in its log. A new attempt is claimed only once the
previous lease has lapsed, checked under the job's row lock, so two attempts
never hold a job at the same time.
"""

from __future__ import annotations

import logging
import socket
import threading
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Result, and_, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from worklist.db import utcnow
from worklist.jobs_models import AuditEvent, Job, JobState

__all__ = [
    "Heartbeat",
    "claim_inference",
    "holds",
    "lapse_leases_of",
    "lease_lapsed",
    "requeue_lapsed",
    "worker_id",
]

logger = logging.getLogger(__name__)


def worker_id(pid: int, *, hostname: str | None = None) -> str:
    """The name a worker process claims jobs under: ``worker:<host>:<pid>``."""
    return f"worker:{hostname or socket.gethostname()}:{pid}"


def lease_lapsed(job: Job, *, now: datetime, lease_seconds: float) -> bool:
    """Whether nobody holds ``job``'s inference claim any longer.

    A job claimed before leases existed (no ``lease_expires_at``) counts as held
    for ``lease_seconds`` after its inference started.
    """
    expires = job.lease_expires_at
    if expires is None and job.inference_started_at is not None:
        expires = job.inference_started_at + timedelta(seconds=lease_seconds)
    return expires is None or expires <= now


def claim_inference(job: Job, *, worker: str, now: datetime, lease_seconds: float) -> int:
    """Start a new inference attempt on ``job`` (locked by the caller); returns its number.

    The caller has checked that no other attempt holds the job
    (:func:`lease_lapsed`) and commits.
    """
    job.state = JobState.INFERRING
    job.inference_starts += 1
    job.worker = worker
    job.lease_expires_at = now + timedelta(seconds=lease_seconds)
    job.inference_started_at = job.updated_at = now
    return job.inference_starts


def holds(job_id: int, attempt: int, *, worker: str | None) -> ColumnElement[bool]:
    """The condition under which inference attempt ``attempt`` of ``worker`` still owns job ``job_id``.

    The worker is part of the token because an operator's retry starts the
    attempt count again.
    """
    held_by = Job.worker.is_(None) if worker is None else Job.worker == worker
    return and_(Job.id == job_id, Job.state == JobState.INFERRING, Job.inference_starts == attempt, held_by)


class Heartbeat:
    """Renews an inference attempt's lease from a thread while the attempt runs.

    :meth:`start` it when the model call begins and :meth:`stop` it when the call ended. :attr:`lost` is set when a
    renewal found the job no longer held by this attempt (the sweeper re-queued
    it after the lease lapsed): the attempt's result is then discarded by the
    fenced write that would have stored it.

    Parameters
    ----------
    sessions
        Session factory of the job database.
    job_id, attempt
        The job and the attempt number :func:`claim_inference` returned.
    worker
        The claiming worker ("worker:<host>:<pid>").
    lease_seconds
        Length of the lease; it is renewed every third of it.
    """

    def __init__(self, sessions: sessionmaker[Session], job_id: int, attempt: int, *, worker: str,
                 lease_seconds: float) -> None:
        self._sessions = sessions
        self.job_id, self.attempt, self.worker = job_id, attempt, worker
        self._lease = timedelta(seconds=lease_seconds)
        self._interval = lease_seconds / 3
        self._done = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-job-{job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (the attempt ended); the lease then lapses unless the job moved on."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def renew(self) -> bool:
        """Extend the lease once; ``False`` when this attempt no longer holds the job."""
        with self._sessions.begin() as session:
            renewed = _rowcount(session.execute(
                update(Job).where(holds(self.job_id, self.attempt, worker=self.worker))
                .values(lease_expires_at=utcnow() + self._lease)
            ))
        return bool(renewed)

    def _run(self) -> None:
        while not self._done.wait(self._interval):
            try:
                held = self.renew()
            except SQLAlchemyError as exc:  # the database is briefly away: try again next beat
                logger.warning("Job %d: lease renewal failed (%s)", self.job_id, type(exc).__name__)
                continue
            if not held:
                self.lost.set()
                logger.error("Job %d: attempt %d lost its lease (re-queued after it lapsed); its result "
                             "will be discarded", self.job_id, self.attempt)
                return


def requeue_lapsed(session: Session, *, now: datetime, lease_seconds: float, actor: str = "node") -> list[int]:
    """Put jobs whose inference attempt stopped renewing its lease back to ``queued``.

    Each job moves with a compare-and-set on its attempt, so a renewal that
    races the sweep wins or loses as a whole. Every re-queue is audited with
    the attempt and the worker that held it. Returns the re-queued job ids;
    the caller commits, then enqueues them.
    """
    unleased_since = now - timedelta(seconds=lease_seconds)
    lapsed = or_(Job.lease_expires_at <= now,
                 and_(Job.lease_expires_at.is_(None), Job.inference_started_at <= unleased_since))
    candidates = session.execute(
        select(Job.id, Job.inference_starts, Job.worker).where(Job.state == JobState.INFERRING, lapsed)
    ).all()
    requeued = []
    for job_id, attempt, worker in candidates:
        moved = _rowcount(session.execute(
            update(Job).where(holds(job_id, attempt, worker=worker), lapsed)
            .values(state=JobState.QUEUED, worker=None, lease_expires_at=None, enqueued_at=None, updated_at=now)
        ))
        if moved:
            requeued.append(job_id)
            session.add(AuditEvent(at=now, actor=actor, action="job-requeued", job_id=job_id,
                                   detail=f"attempt {attempt}: {worker or 'its worker'} stopped renewing its "
                                          "lease (worker gone)"))
            logger.warning("Job %d: the worker of attempt %d stopped renewing its lease; queued again",
                           job_id, attempt)
    return requeued


def _rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE matched (its result is a cursor result)."""
    return cast(CursorResult[Any], result).rowcount


def lapse_leases_of(session: Session, worker: str, *, now: datetime) -> list[int]:
    """End the leases a worker known to be dead still holds (its supervisor saw it exit),
    so the next sweep re-queues its jobs without waiting for them to lapse. Returns the job ids."""
    held = session.scalars(select(Job.id).where(
        Job.state == JobState.INFERRING, Job.worker == worker, Job.lease_expires_at > now)).all()
    if held:
        session.execute(update(Job).where(Job.id.in_(held), Job.worker == worker, Job.state == JobState.INFERRING)
                        .values(lease_expires_at=now))
    return list(held)
