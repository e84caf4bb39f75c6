"""Operator actions on jobs and studies (the caller owns the transaction where one is passed)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from worklist.context import PipelineContext
from worklist.db import utcnow
from worklist.errors import JobActionError
from worklist.jobs_models import AuditEvent, Delivery, DeliveryState, Job, JobState
from worklist.models import RevisionState, Study, StudyRevision

__all__ = ["reprocess_study", "retry_job"]


def retry_job(ctx: PipelineContext, job_id: int, *, actor: str) -> str:
    """Retry a failed or dead job from the step it stopped at; returns what was done.

    A job with outputs that were not built is exported again (same UIDs) and
    its failed deliveries start over; a job that failed in delivery keeps its
    outputs and only its failed deliveries start over; otherwise it goes back
    to inference.
    """
    deliveries: list[int] = []
    export = False
    with ctx.sessions.begin() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None:
            raise JobActionError(f"no job {job_id}")
        if job.state not in (JobState.FAILED, JobState.DEAD):
            raise JobActionError(
                f"job {job_id} is {job.state.value}; only failed or dead jobs can be retried"
            )
        failed = list(session.scalars(select(Delivery).where(
            Delivery.job_id == job_id, Delivery.state == DeliveryState.FAILED)))
        job.retries += 1
        job.updated_at = utcnow()
        job.finished_at = None
        job.last_error = None
        if job.output_errors and job.report_json is not None:
            # some outputs were not built (e.g. a setting was missing): build again, then
            # deliver what failed; what was delivered stays delivered
            job.state, job.output_errors = JobState.EXPORTING, None
            for delivery in failed:
                delivery.state, delivery.attempts, delivery.last_error = (
                    DeliveryState.PENDING,
                    0,
                    None,
                )
                delivery.operation_outcome = None
                # the retry clock starts over; every object is sent again (idempotent at the peer)
                delivery.retry_until, delivery.remaining_objects, delivery.next_attempt_at = (
                    None,
                    None,
                    None,
                )
            message = f"job {job_id}: export runs again, then {len(failed)} failed deliveries"
            export = True
        elif failed and job.report_json is not None:
            job.state = JobState.DELIVERING
            for delivery in failed:
                delivery.state, delivery.attempts, delivery.last_error = (
                    DeliveryState.PENDING,
                    0,
                    None,
                )
                delivery.operation_outcome = None
                # the retry clock starts over; every object is sent again (idempotent at the peer)
                delivery.retry_until, delivery.remaining_objects, delivery.next_attempt_at = (
                    None,
                    None,
                    None,
                )
                deliveries.append(delivery.id)
            message = f"job {job_id}: {len(failed)} failed deliveries start over"
        else:
            job.state, job.inference_starts, job.report_json = JobState.QUEUED, 0, None
            job.worker, job.lease_expires_at = None, None
            job.output_errors = None
            message = f"job {job_id}: queued for inference again"
        session.add(
            AuditEvent(at=utcnow(), actor=actor, action="job-retry", job_id=job_id, detail=message)
        )
    if export:
        ctx.enqueue.export(job_id)
    elif deliveries:
        for delivery_id in deliveries:
            ctx.enqueue.delivery(delivery_id, 0)
    else:
        ctx.enqueue.inference(job_id)
    return message


def reprocess_study(session: Session, study_instance_uid: str, *, actor: str) -> int:
    """Open a new, immediately ready revision of a study; returns its number.

    The completion monitor dispatches it like any ready revision, so the study
    is routed and processed again, with new output UIDs.
    """
    study = session.execute(
        select(Study).where(Study.study_instance_uid == study_instance_uid).with_for_update()
    ).scalar_one_or_none()
    if study is None:
        raise JobActionError(f"no study {study_instance_uid} in the index")
    now = utcnow()
    study.current_revision += 1
    session.add(
        StudyRevision(
            study_pk=study.id,
            revision=study.current_revision,
            state=RevisionState.READY,
            opened_at=now,
            last_received_at=now,
            instances_received=0,
            ready_at=now,
            ready_reason="reprocess",
        )
    )
    session.add(AuditEvent(at=now, actor=actor, action="reprocess", job_id=None,
                           detail=f"revision {study.current_revision}"))
    return study.current_revision
