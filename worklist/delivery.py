"""Delivery steps: sending a job's artifacts to one configured destination.

Each attempt is claimed by its number (a duplicate or stale message does
nothing), the destination's type does the sending through the destination
protocol (:mod:`worklist.destinations`), and the outcome is recorded in the
database. A retryable failure is tried again on the one retry policy
(:class:`~worklist.destinations.RetryPolicy`: capped exponential backoff with
equal jitter, for ``retry_for`` after the first failure); the schedule is kept in
``deliveries.next_attempt_at`` / ``retry_until``, and the node's sweeper
(:func:`worklist.pipeline.requeue_stale`) sends again a retry whose message was lost.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from worklist import metrics
from worklist.atna.hooks import delivery_attempted
from worklist.context import PipelineContext, audit
from worklist.db import utcnow
from worklist.destinations import (
    ArtifactFile,
    DeliveryOutcome,
    DeliveryStatus,
    UnknownDestinationTypeError,
    destination_for,
)
from worklist.jobs_models import Artifact, Delivery, DeliveryState, Job, JobState

__all__ = ["run_delivery", "settle_job"]

logger = logging.getLogger(__name__)

#: Separates object UIDs in ``deliveries.remaining_objects``.
_UID_SEPARATOR = "\n"


def run_delivery(ctx: PipelineContext, delivery_id: int, attempt: int) -> None:
    """Attempt delivery ``attempt + 1``; a stale or duplicate message does nothing."""
    with ctx.sessions.begin() as session:
        claimed = cast(
            CursorResult,
            session.execute(
                update(Delivery)
                .where(
                    Delivery.id == delivery_id,
                    Delivery.state == DeliveryState.PENDING,
                    Delivery.attempts == attempt,
                )
                .values(attempts=attempt + 1, next_attempt_at=None)
            ),
        ).rowcount
        delivery = session.get(Delivery, delivery_id)
        if not claimed or delivery is None:
            return
        job_id, name, artifact_set = delivery.job_id, delivery.destination, delivery.artifact_set
        remaining = (
            set(delivery.remaining_objects.split(_UID_SEPARATOR))
            if delivery.remaining_objects
            else None
        )
        artifacts = [
            ArtifactFile(a.kind, a.language, a.object_uid, ctx.outputs_root / a.path)
            for a in session.scalars(
                # its own set only: the model's (0) or a sign-off's
                select(Artifact)
                .where(Artifact.job_id == job_id, Artifact.artifact_set == artifact_set)
                .order_by(Artifact.id)
            )
            if remaining is None or a.object_uid in remaining
        ]
    started = time.perf_counter()
    outcome = _attempt(ctx, name, artifacts)
    metrics.stage_finished("delivery", time.perf_counter() - started)
    _record_delivery(ctx, delivery_id, attempt + 1, outcome)
    delivery_attempted(ctx, delivery_id, name, outcome)


def _attempt(ctx: PipelineContext, name: str, artifacts: list[ArtifactFile]) -> DeliveryOutcome:
    target = ctx.destinations.get(name)
    if target is None:
        return DeliveryOutcome.final(f"destination {name!r} is no longer configured")
    try:
        destination = destination_for(target.type, name=name)
    except UnknownDestinationTypeError as exc:
        return DeliveryOutcome.final(str(exc))
    return destination.deliver(artifacts, target)


def _record_delivery(
    ctx: PipelineContext, delivery_id: int, attempts: int, outcome: DeliveryOutcome
) -> None:
    """Record an attempt's outcome. Its transaction is retried on a database
    conflict: the attempt has happened, and a lost record would leave the
    delivery pending until the sweeper."""
    for attempt in range(1, 4):
        try:
            _record_delivery_once(ctx, delivery_id, attempts, outcome)
            return
        except OperationalError:
            if attempt == 3:
                raise
            logger.warning("Recording delivery %d hit a database conflict; retrying", delivery_id)
            time.sleep(0.05 * attempt)


def _record_delivery_once(
    ctx: PipelineContext, delivery_id: int, attempts: int, outcome: DeliveryOutcome
) -> None:
    retry_at: datetime | None = None
    with ctx.sessions.begin() as session:
        # lock order: job, then delivery — two deliveries of one job settle it
        # without deadlocking each other (PostgreSQL)
        job_id = session.scalar(select(Delivery.job_id).where(Delivery.id == delivery_id))
        session.get(Job, job_id, with_for_update=True)
        delivery = session.get(Delivery, delivery_id, with_for_update=True)
        if delivery is None:  # deleted meanwhile: nothing to record
            return
        destination = delivery.destination
        now = utcnow()
        target = ctx.destinations.get(delivery.destination)
        policy = ctx.retry_policy.with_retry_for(
            target.retry_for_seconds if target is not None else None
        )
        if outcome.ok:
            delivery.state, delivery.delivered_at, delivery.last_error = (
                DeliveryState.DONE,
                now,
                None,
            )
            delivery.remaining_objects = None
            audit(
                session,
                ctx.actor,
                "delivered",
                delivery.job_id,
                f"{delivery.destination} attempt {attempts}",
            )
        elif outcome.status is DeliveryStatus.RETRYABLE:
            if delivery.retry_until is None:  # the first failure starts the clock
                delivery.retry_until = policy.deadline(now)
            retry_at = policy.next_attempt_at(
                attempts,
                failed_at=now,
                retry_until=delivery.retry_until,
                retry_after=outcome.retry_after,
            )
        delivery.operation_outcome = outcome.peer_document if not outcome.ok else None
        if retry_at is not None:
            delivery.last_error = outcome.answer[:4000]
            delivery.next_attempt_at = retry_at
            if outcome.remaining:
                delivery.remaining_objects = _UID_SEPARATOR.join(outcome.remaining)
            audit(
                session,
                ctx.actor,
                "delivery-retry",
                delivery.job_id,
                f"{delivery.destination} attempt {attempts}, next at "
                f"{retry_at:%Y-%m-%d %H:%M:%S} UTC",
            )
        elif not outcome.ok:
            delivery.state, delivery.last_error = DeliveryState.FAILED, outcome.answer[:4000]
            if outcome.status is DeliveryStatus.RETRYABLE:
                hours = policy.retry_for_seconds / 3600
                delivery.last_error = (f"gave up after {attempts} attempts over {hours:g} h "
                                       f"(retry_for): {outcome.answer}")[:4000]
            audit(session, ctx.actor, "delivery-failed", delivery.job_id, f"{delivery.destination}")
        job_id = delivery.job_id
        settle_job(session, job_id, ctx.actor)
    metrics.delivery_recorded(destination, outcome.status, retry=retry_at is not None)
    if retry_at is not None:
        retry_in = max(0.0, (retry_at - now).total_seconds())
        logger.warning(
            "Delivery %d (job %d) failed, retrying in %.0f s: %s",
            delivery_id,
            job_id,
            retry_in,
            outcome.loggable,
        )
        ctx.enqueue.delivery(delivery_id, attempts, countdown=retry_in)
    elif not outcome.ok:
        logger.error("Delivery %d (job %d) failed: %s", delivery_id, job_id, outcome.loggable)


def settle_job(session: Session, job_id: int, actor: str) -> None:
    """End a delivering job once no delivery of its latest artifact set is pending: ``done``
    when every output was built and every delivery succeeded, else ``failed`` with what
    was not built and what was not delivered (the rest did go out).

    Only the latest set counts: once a radiologist's sign-off (set *n*) went out, how the
    model's set (0) fared no longer decides the job. A job awaiting review is never moved.
    """
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.state is not JobState.DELIVERING:
        return
    latest = session.scalar(
        select(func.max(Delivery.artifact_set)).where(Delivery.job_id == job_id)
    )
    deliveries = list(
        session.scalars(
            select(Delivery)
            .where(Delivery.job_id == job_id, Delivery.artifact_set == (latest or 0))
            .order_by(Delivery.id)
        )
    )
    if any(d.state is DeliveryState.PENDING for d in deliveries):
        return
    now = utcnow()
    failed = [d for d in deliveries if d.state is DeliveryState.FAILED]
    if not failed and not job.output_errors:
        job.state, job.finished_at, job.updated_at = JobState.DONE, now, now
        audit(session, actor, "job-done", job_id)
        return
    problems = [f"not built: {line}" for line in (job.output_errors or "").splitlines()]
    # a destination that got nothing because its output was not built: the line above says why
    problems += [
        f"delivery to {d.destination}: "
        + ("not sent" if d.attempts == 0 and job.output_errors else str(d.last_error))
        for d in failed
    ]
    delivered = [d.destination for d in deliveries if d.state is DeliveryState.DONE]
    if delivered:
        problems.append(f"delivered to {', '.join(delivered)}")
    job.state, job.finished_at, job.updated_at = JobState.FAILED, now, now
    job.last_error = "; ".join(problems)[:4000]
    audit(
        session,
        actor,
        "job-failed",
        job_id,
        "delivery failed"
        if not job.output_errors
        else "outputs not built" + (" and delivery failed" if failed else ""),
    )
