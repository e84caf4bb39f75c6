"""The two reads the console needs beyond :mod:`worklist.views`: what changed (for the live
refresh) and the source images of a job's report (for its picture)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.report import GroundedReport, ImageRef, ReportError
from worklist.jobs_models import AuditEvent, Job
from worklist.models import Instance, RevisionState, Study, StudyRevision
from worklist.routing import study_instance_facts
from worklist.views import queue_depths

__all__ = ["JobPicture", "LiveState", "job_pictures", "live_state"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveState:
    """What the live refresh compares: ``stamp`` changes whenever a study, job or delivery does."""

    stamp: str
    #: Study revisions still receiving, jobs with work ahead and deliveries pending.
    running: int


def live_state(session: Session) -> LiveState:
    """The node's change stamp and how much is in flight.

    Every job and delivery transition writes an audit event; instances arriving move a study's
    ``last_received_at``; so the newest audit event and the newest arrival say whether anything
    a page shows may have changed.
    """
    last_event = session.scalar(select(func.max(AuditEvent.id))) or 0
    studies, last_received = session.execute(
        select(func.count(Study.id), func.max(Study.last_received_at))
    ).one()
    receiving = session.scalar(
        select(func.count()).select_from(StudyRevision).where(
            StudyRevision.state == RevisionState.RECEIVING
        )
    ) or 0
    queue = queue_depths(session)
    stamp = f"{last_event}.{studies}.{last_received.timestamp() if last_received else 0:.6f}"
    return LiveState(
        stamp=stamp,
        running=receiving + queue.jobs_waiting + queue.revisions_waiting
        + queue.deliveries_pending,
    )


@dataclass(frozen=True)
class JobPicture:
    """A source image of a job and where its file is (relative to ``storage.root``)."""

    image: ImageRef
    path: str


def job_pictures(session: Session, job_id: int) -> tuple[GroundedReport, list[JobPicture]] | None:
    """A job's report and the source images its findings are on (the study's first image for a
    report without regions); ``None`` when the job is unknown or holds no (readable) report."""
    job = session.get(Job, job_id)
    if job is None or job.report_json is None:
        return None
    try:
        report = GroundedReport.from_json(job.report_json)
    except ReportError as exc:
        logger.warning("job %d: its stored report cannot be read: %s", job_id, exc)
        return None
    refs = report.images
    if refs:
        paths = {
            uid: path
            for uid, path in session.execute(
                select(Instance.sop_instance_uid, Instance.path).where(
                    Instance.sop_instance_uid.in_([r.sop_instance_uid for r in refs])
                )
            )
        }
        return report, [
            JobPicture(ref, paths[ref.sop_instance_uid])
            for ref in refs
            if ref.sop_instance_uid in paths
        ]
    facts = study_instance_facts(session, job.study_pk)
    if not facts:
        return report, []
    first = facts[0]
    return report, [JobPicture(ImageRef(first.sop_instance_uid, first.sop_class_uid), first.path)]
