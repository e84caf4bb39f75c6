"""Delivery steps: sending a job's artifacts to a DICOM peer or a FHIR server.

Each attempt is claimed by its number (a duplicate or stale message does
nothing), its outcome is recorded in the database, and a transient failure is
retried with exponential backoff and jitter scheduled there (the sweeper in
:mod:`worklist.pipeline` re-sends a retry whose message was lost).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from dicom_node.scu import SendResult, StorageSCU
from exporters.protocol import OutputKind
from exporters.registry import artifact_kinds
from worklist.context import PipelineContext, audit
from worklist.db import updated_rows, utcnow
from worklist.errors import InvalidFhirRequestError
from worklist.fhir_delivery import (
    PermanentFhirError,
    TransientFhirError,
    post_transaction,
    retry_delay,
)
from worklist.jobs_models import Artifact, Delivery, DeliveryState, Job, JobState

__all__ = ["run_delivery", "settle_job"]

logger = logging.getLogger(__name__)

#: C-STORE statuses worth retrying: nothing sent (connection, association), Out of Resources.
_TRANSIENT_STORE_STATUSES = range(0xA700, 0xA800)


def run_delivery(ctx: PipelineContext, delivery_id: int, attempt: int) -> None:
    """Attempt delivery ``attempt + 1``; a stale or duplicate message does nothing."""
    with ctx.sessions.begin() as session:
        claimed = updated_rows(session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.state == DeliveryState.PENDING, Delivery.attempts == attempt)
            .values(attempts=attempt + 1, next_attempt_at=None)
        ))
        if not claimed:
            return
        delivery = session.get_one(Delivery, delivery_id)
        job_id, name, protocol = delivery.job_id, delivery.destination, delivery.protocol
        artifacts = [(a.kind, a.language, a.path) for a in session.scalars(
            select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.id))]
    if protocol == "fhir":
        outcome = _deliver_fhir(ctx, name, artifacts)
    else:
        outcome = _deliver_dicom(ctx, name, artifacts)
    _record_delivery(ctx, delivery_id, attempt + 1, outcome)


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    transient: bool = False
    error: str = ""
    operation_outcome: str | None = None
    retry_after: float | None = None
    max_attempts: int = 10
    #: What goes to the log: no server-supplied text (an EHR may echo patient data).
    log_text: str = ""

    @property
    def loggable(self) -> str:
        return self.log_text or self.error


def _deliver_dicom(ctx: PipelineContext, name: str, artifacts: list[tuple[str, str, str]]) -> _Outcome:
    target = ctx.dicom_targets.get(name)
    if target is None:
        return _Outcome(False, error=f"destination {name!r} is no longer configured")
    wanted = {kind.value for kind in artifact_kinds(target.outputs)}
    files = [ctx.outputs_root / path for kind, language, path in artifacts
             if kind in wanted and (not target.languages or language in target.languages)]
    if not files:
        return _Outcome(True, max_attempts=target.max_attempts)
    results = StorageSCU(ctx.scu_ae_title, pynetdicom_patches=ctx.scu_pynetdicom_patches).send(files, target.destination)
    failed = [r for r in results if not r.ok]
    if not failed:
        return _Outcome(True, max_attempts=target.max_attempts)
    transient = all(_transient(r) for r in failed)
    first = failed[0]
    # With a status the peer answered; without one the reason says what happened
    # (could not connect, no response, not sent after the association was lost).
    why = f"status 0x{first.status:04X} {first.reason}".strip() if first.status is not None else first.reason
    return _Outcome(False, transient=transient, max_attempts=target.max_attempts,
                    error=f"{len(failed)} of {len(results)} objects not stored at {target.destination}: {why}")


def _transient(result: SendResult) -> bool:
    return result.status is None or result.status in _TRANSIENT_STORE_STATUSES


def _deliver_fhir(ctx: PipelineContext, name: str, artifacts: list[tuple[str, str, str]]) -> _Outcome:
    target = ctx.fhir_targets.get(name)
    if target is None:
        return _Outcome(False, error=f"FHIR endpoint {name!r} is no longer configured")
    bundles = [path for kind, _, path in artifacts if kind == OutputKind.FHIR_BUNDLE and Path(path).name == f"fhir-{name}.json"]
    if not bundles:
        return _Outcome(False, error=f"no FHIR bundle was exported for {name!r}")
    try:
        post_transaction(target.url, (ctx.outputs_root / bundles[0]).read_bytes(), auth=target.auth,
                         timeout=target.timeout_seconds)
    except TransientFhirError as exc:
        return _Outcome(False, transient=True, error=f"FHIR {name}: {exc}", max_attempts=target.max_attempts,
                        retry_after=exc.retry_after, log_text=f"FHIR {name}: HTTP {exc.status_code or '-'}")
    except PermanentFhirError as exc:
        return _Outcome(False, error=f"FHIR {name}: {exc}", max_attempts=target.max_attempts,
                        operation_outcome=exc.operation_outcome, log_text=f"FHIR {name}: HTTP {exc.status_code}")
    except InvalidFhirRequestError as exc:  # the endpoint or bundle is unusable (bad URL, not a transaction)
        return _Outcome(False, error=f"FHIR {name}: {exc}", max_attempts=target.max_attempts)
    return _Outcome(True, max_attempts=target.max_attempts)


def _record_delivery(ctx: PipelineContext, delivery_id: int, attempts: int, outcome: _Outcome) -> None:
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


def _record_delivery_once(ctx: PipelineContext, delivery_id: int, attempts: int, outcome: _Outcome) -> None:
    retry_in: float | None = None
    with ctx.sessions.begin() as session:
        # lock order: job, then delivery — two deliveries of one job settle it
        # without deadlocking each other (PostgreSQL)
        job_id = session.scalar(select(Delivery.job_id).where(Delivery.id == delivery_id))
        session.get(Job, job_id, with_for_update=True)
        delivery = session.get_one(Delivery, delivery_id, with_for_update=True)
        now = utcnow()
        if outcome.ok:
            delivery.state, delivery.delivered_at, delivery.last_error = DeliveryState.DONE, now, None
            audit(session, ctx.actor, "delivered", delivery.job_id, f"{delivery.destination} attempt {attempts}")
        elif outcome.transient and attempts < outcome.max_attempts:
            retry_in = retry_delay(attempts, retry_after=outcome.retry_after)
            delivery.last_error = outcome.error[:4000]
            delivery.next_attempt_at = now + timedelta(seconds=retry_in)
            audit(session, ctx.actor, "delivery-retry", delivery.job_id,
                   f"{delivery.destination} attempt {attempts}, next in {retry_in:.0f} s")
        else:
            delivery.state, delivery.last_error = DeliveryState.FAILED, outcome.error[:4000]
            delivery.operation_outcome = outcome.operation_outcome
            if outcome.transient:
                delivery.last_error = f"gave up after {attempts} attempts: {outcome.error}"[:4000]
            audit(session, ctx.actor, "delivery-failed", delivery.job_id, f"{delivery.destination}")
        job_id = delivery.job_id
        settle_job(session, job_id, ctx.actor)
    if retry_in is not None:
        logger.warning("Delivery %d (job %d) failed, retrying in %.0f s: %s", delivery_id, job_id, retry_in,
                       outcome.loggable)
        ctx.enqueue.delivery(delivery_id, attempts, countdown=retry_in)
    elif not outcome.ok:
        logger.error("Delivery %d (job %d) failed: %s", delivery_id, job_id, outcome.loggable)


def settle_job(session: Session, job_id: int, actor: str) -> None:
    """End a delivering job once no delivery is pending: ``done`` when every
    output was built and every delivery succeeded, else ``failed`` with what
    was not built and what was not delivered (the rest did go out)."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.state is not JobState.DELIVERING:
        return
    deliveries = list(session.scalars(select(Delivery).where(Delivery.job_id == job_id).order_by(Delivery.id)))
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
    problems += [f"delivery to {d.destination}: " + ("not sent" if d.attempts == 0 and job.output_errors
                                                      else str(d.last_error)) for d in failed]
    delivered = [d.destination for d in deliveries if d.state is DeliveryState.DONE]
    if delivered:
        problems.append(f"delivered to {', '.join(delivered)}")
    job.state, job.finished_at, job.updated_at = JobState.FAILED, now, now
    job.last_error = "; ".join(problems)[:4000]
    audit(session, actor, "job-failed", job_id,
          "delivery failed" if not job.output_errors else "outputs not built" + (" and delivery failed" if failed else ""))
