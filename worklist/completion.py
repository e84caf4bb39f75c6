"""Study completion: deciding when a study revision is ready, exactly once.

A revision becomes ready when no instance has arrived for ``idle_seconds``
(default 30 s), or ``force_after_seconds`` after it opened for a stream that
never stops. The transition ``receiving → ready`` is one conditional UPDATE,
so it happens once however many monitors run. The ready event is then
dispatched from the database (an outbox): a monitor claims the revision with a
lease, calls the hook and records ``dispatched_at``. A crash between the
transition and the dispatch only delays it: the next monitor (after a restart)
finds the undispatched revision and dispatches it. Timers are not in memory,
so pending studies resume after a restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.uids import short_uid
from worklist.db import updated_rows, utcnow
from worklist.models import RevisionState, Study, StudyRevision

__all__ = ["CompletionMonitor", "StudyReady"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyReady:
    """A study revision that is complete and ready for processing."""

    study_instance_uid: str
    revision: int
    instances_received: int
    ready_at: datetime
    reason: str


class CompletionMonitor:
    """Makes idle study revisions ready and dispatches them to ``on_study_ready``.

    Parameters
    ----------
    session_factory
        Creates database sessions (one per pass).
    on_study_ready
        Called once per ready revision (at least once across crashes: make it
        idempotent on ``(study_instance_uid, revision)``). An exception leaves
        the revision undispatched; it is retried after ``claim_lease_seconds``.
    idle_seconds
        Quiet time after the last instance before a revision is ready.
    force_after_seconds
        A revision is ready this long after it opened, even if instances keep arriving.
    poll_seconds
        How often :meth:`run_forever` checks.
    claim_lease_seconds
        How long a dispatch claim protects a revision from other monitors.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        on_study_ready: Callable[[StudyReady], None],
        *,
        idle_seconds: float = 30.0,
        force_after_seconds: float = 600.0,
        poll_seconds: float = 1.0,
        claim_lease_seconds: float = 60.0,
    ) -> None:
        if idle_seconds <= 0 or force_after_seconds <= 0 or poll_seconds <= 0:
            raise ValueError("idle_seconds, force_after_seconds and poll_seconds must be > 0")
        self._sessions = session_factory
        self._on_study_ready = on_study_ready
        self.idle = timedelta(seconds=idle_seconds)
        self.force_after = timedelta(seconds=force_after_seconds)
        self.poll_seconds = poll_seconds
        self.claim_lease = timedelta(seconds=claim_lease_seconds)
        self._stop = threading.Event()

    def run_once(self, now: datetime | None = None) -> list[StudyReady]:
        """Make due revisions ready, then dispatch every undispatched ready revision.

        Returns the revisions dispatched in this pass.
        """
        now = now or utcnow()
        self._mark_ready(now)
        return self._dispatch(now)

    def run_forever(self) -> None:
        """Poll until :meth:`stop`; database errors are logged and retried next poll."""
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - the monitor must survive a database outage
                logger.error("Completion monitor pass failed (%s); retrying", type(exc).__name__)
            self._stop.wait(self.poll_seconds)

    def stop(self) -> None:
        self._stop.set()

    def _mark_ready(self, now: datetime) -> None:
        for reason, condition in (
            ("idle", StudyRevision.last_received_at <= now - self.idle),
            ("force-complete", StudyRevision.opened_at <= now - self.force_after),
        ):
            with self._sessions.begin() as session:
                session.execute(
                    update(StudyRevision)
                    .where(StudyRevision.state == RevisionState.RECEIVING, condition)
                    .values(state=RevisionState.READY, ready_at=now, ready_reason=reason)
                )

    def _dispatch(self, now: datetime) -> list[StudyReady]:
        with self._sessions() as session:
            candidates = session.execute(
                select(StudyRevision.id)
                .where(
                    StudyRevision.state == RevisionState.READY,
                    StudyRevision.dispatched_at.is_(None),
                    or_(
                        StudyRevision.dispatch_claimed_at.is_(None),
                        StudyRevision.dispatch_claimed_at <= now - self.claim_lease,
                    ),
                )
                .order_by(StudyRevision.ready_at)
            ).scalars().all()
        dispatched = []
        for revision_pk in candidates:
            event = self._claim(revision_pk, now)
            if event is None:
                continue
            try:
                self._on_study_ready(event)
            except Exception as exc:  # noqa: BLE001 - the hook's failure must not stop other studies
                logger.error(
                    "Study %s revision %d: ready hook failed (%s); will retry",
                    short_uid(event.study_instance_uid), event.revision, type(exc).__name__,
                )
                continue
            with self._sessions.begin() as session:
                session.execute(
                    update(StudyRevision)
                    .where(StudyRevision.id == revision_pk)
                    .values(dispatched_at=utcnow())
                )
            logger.info(
                "Study %s revision %d ready (%s, %d instances)",
                short_uid(event.study_instance_uid),
                event.revision,
                event.reason,
                event.instances_received,
            )
            dispatched.append(event)
        return dispatched

    def _claim(self, revision_pk: int, now: datetime) -> StudyReady | None:
        with self._sessions.begin() as session:
            claimed = updated_rows(session.execute(
                update(StudyRevision)
                .where(
                    StudyRevision.id == revision_pk,
                    StudyRevision.dispatched_at.is_(None),
                    or_(
                        StudyRevision.dispatch_claimed_at.is_(None),
                        StudyRevision.dispatch_claimed_at <= now - self.claim_lease,
                    ),
                )
                .values(dispatch_claimed_at=now)
            ))
            if claimed != 1:
                return None
            row = session.execute(
                select(Study.study_instance_uid, StudyRevision)
                .join(Study, Study.id == StudyRevision.study_pk)
                .where(StudyRevision.id == revision_pk)
            ).one()
            study_uid, revision = row
            if revision.ready_at is None:
                raise RuntimeError(
                    f"revision {revision_pk} was claimed for dispatch but is not ready"
                )
            return StudyReady(
                study_instance_uid=study_uid,
                revision=revision.revision,
                instances_received=revision.instances_received,
                ready_at=revision.ready_at,
                reason=revision.ready_reason or "idle",
            )

