"""Operator actions on jobs, deliveries and studies (the caller owns the transaction where a
session is passed). Each writes an audit event naming the actor and where it came from
(``source``: the client address of a web request) and raises
:class:`~worklist.errors.NotFoundError` for an unknown ID, :class:`~worklist.errors.JobActionError`
when the action does not apply in the current state."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from worklist.context import PipelineContext
from worklist.db import updated_rows, utcnow
from worklist.errors import JobActionError, NotFoundError
from worklist.jobs_models import AuditEvent, Delivery, DeliveryState, Job, JobState
from worklist.models import RevisionState, Study, StudyRevision
from worklist.review_models import Review, ReviewState

__all__ = ["cancel_job", "reprocess_study", "retry_delivery", "retry_job"]

#: The states an operator retry applies to.
RETRYABLE_STATES = (JobState.FAILED, JobState.DEAD, JobState.CANCELLED)


def retry_job(ctx: PipelineContext, job_id: int, *, actor: str, source: str = "") -> str:
    """Retry a failed, dead or cancelled job from the step it stopped at; returns what was done.

    A job with outputs that were not built is exported again (same UIDs) and
    its failed deliveries start over; a job that failed in delivery keeps its
    outputs and only its failed deliveries start over; otherwise it goes back
    to inference. Only the deliveries of the job's latest artifact set count: a signed job
    retries its sign-off's set. A signed job that failed in its export is exported again
    (the signed set, never the model's); a job with a review open is not inferred again
    (reprocess the study: that supersedes the review).
    """
    deliveries: list[int] = []
    export = False
    with ctx.sessions.begin() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None:
            raise NotFoundError(f"no job {job_id}")
        if job.state not in RETRYABLE_STATES:
            raise JobActionError(
                f"job {job_id} is {job.state.value}; only failed, dead or cancelled jobs can be "
                "retried"
            )
        review_row = session.execute(
            select(Review.state, Review.signoff, Review.superseded_by_job_id)
            .where(Review.job_id == job_id)
        ).first()
        review, signoff, superseded_by = review_row or (None, None, None)
        if review is ReviewState.SUPERSEDED:
            raise JobActionError(
                f"job {job_id} was superseded by job {superseded_by} (study "
                "reprocessed during review); retry that one"
            )
        latest = session.scalar(
            select(func.max(Delivery.artifact_set)).where(Delivery.job_id == job_id)) or 0
        if review is ReviewState.SIGNED and signoff:
            latest = max(latest, signoff)  # its set's deliveries may not exist yet
        failed = list(session.scalars(select(Delivery).where(
            Delivery.job_id == job_id, Delivery.artifact_set == latest,
            Delivery.state == DeliveryState.FAILED)))
        signed = review is ReviewState.SIGNED and job.report_json is not None
        if review is ReviewState.OPEN and not failed and not job.output_errors:
            raise JobActionError(
                f"job {job_id} has a review open; it is not inferred again under it: reprocess "
                "the study (its review then starts again on the new revision)"
            )
        job.retries += 1
        job.updated_at = utcnow()
        job.finished_at = None
        job.last_error = None
        if (job.output_errors or (signed and not failed)) and job.report_json is not None:
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
            if signed:
                message += " (the signed set)"
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
            AuditEvent(at=utcnow(), actor=actor, action="job-retry", job_id=job_id, detail=message,
                       source=source)
        )
    if export:
        ctx.enqueue.export(job_id)
    elif deliveries:
        for delivery_id in deliveries:
            ctx.enqueue.delivery(delivery_id, 0)
    else:
        ctx.enqueue.inference(job_id)
    return message


def reprocess_study(
    session: Session, study_instance_uid: str, *, actor: str, source: str = ""
) -> int:
    """Open a new, immediately ready revision of a study; returns its number.

    The completion monitor dispatches it like any ready revision, so the study
    is routed and processed again, with new output UIDs.
    """
    study = session.execute(
        select(Study).where(Study.study_instance_uid == study_instance_uid).with_for_update()
    ).scalar_one_or_none()
    if study is None:
        raise NotFoundError(f"no study {study_instance_uid} in the index")
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
                           detail=f"revision {study.current_revision}", source=source))
    return study.current_revision


def retry_delivery(
    ctx: PipelineContext, delivery_id: int, *, actor: str, source: str = ""
) -> str:
    """Try one failed delivery again from the start; returns what was done.

    The delivery goes back to pending with its attempts and retry clock reset (every object is
    sent again: destinations are idempotent) and is enqueued after the commit; a failed job
    goes back to delivering and settles again when its deliveries end; a job awaiting review
    keeps waiting (a delivery its route did not hold, e.g. the PACS's).
    """
    with ctx.sessions.begin() as session:
        delivery = session.get(Delivery, delivery_id, with_for_update=True)
        if delivery is None:
            raise NotFoundError(f"no delivery {delivery_id}")
        job = session.get_one(Job, delivery.job_id, with_for_update=True)
        if delivery.state is not DeliveryState.FAILED:
            raise JobActionError(
                f"delivery {delivery_id} is {delivery.state.value}; only a failed delivery can "
                "be retried"
            )
        if job.state not in (JobState.FAILED, JobState.DELIVERING, JobState.AWAITING_REVIEW):
            raise JobActionError(
                f"job {job.id} of delivery {delivery_id} is {job.state.value}; retry the job"
            )
        if job.output_errors and delivery.attempts == 0:
            raise JobActionError(
                f"delivery {delivery_id} was never sent because its outputs were not built; "
                f"retry job {job.id} to build them again"
            )
        delivery.state, delivery.attempts = DeliveryState.PENDING, 0
        delivery.last_error = delivery.operation_outcome = None
        delivery.retry_until = delivery.remaining_objects = delivery.next_attempt_at = None
        now = utcnow()
        if job.state is JobState.FAILED:
            job.state, job.finished_at, job.last_error = JobState.DELIVERING, None, None
        job.retries += 1
        job.updated_at = now
        message = f"delivery {delivery_id} to {delivery.destination} starts over"
        session.add(
            AuditEvent(at=now, actor=actor, action="delivery-retry", job_id=job.id, detail=message,
                       source=source)
        )
    ctx.enqueue.delivery(delivery_id, 0)
    return message


def cancel_job(session: Session, job_id: int, *, actor: str, source: str = "") -> str:
    """Cancel a queued job: no step runs it (a message already sent finds it cancelled and
    does nothing); ``retry_job`` queues it again. Returns what was done.

    A job awaiting review is not cancelled: a radiologist signs it or sends it back, and
    reprocessing the study supersedes its review (the old job then ends cancelled).
    """
    now = utcnow()
    cancelled = updated_rows(
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.QUEUED)
            .values(
                state=JobState.CANCELLED,
                updated_at=now,
                finished_at=now,
                last_error=f"cancelled by {actor}",
            )
        )
    )
    if not cancelled:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id}")
        if job.state is JobState.AWAITING_REVIEW:
            raise JobActionError(
                f"job {job_id} is awaiting review; only a queued job can be cancelled (a "
                "radiologist signs or sends back its review; reprocessing the study supersedes "
                "it)"
            )
        raise JobActionError(
            f"job {job_id} is {job.state.value}; only a queued job can be cancelled"
        )
    message = f"job {job_id} cancelled"
    session.add(AuditEvent(at=now, actor=actor, action="job-cancel", job_id=job_id, detail=message,
                           source=source))
    return message
