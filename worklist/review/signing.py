"""Signing a review: the radiologist's sign-off number, the job back to exporting, the export
enqueued after the commit (:mod:`worklist.review.signoff` builds the signed set)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worklist import metrics
from worklist.accounts_models import Account
from worklist.context import PipelineContext, audit
from worklist.db import utcnow
from worklist.jobs_models import Artifact, Delivery, Job, JobState
from worklist.review.errors import ReviewConflictError, ReviewInputError, ReviewNotFoundError
from worklist.review.records import final_finding, locked_review
from worklist.review_models import FindingDecision, ReviewFinding, ReviewState

__all__ = ["SIGNABLE_JOB_STATES", "sign"]

logger = logging.getLogger(__name__)

#: The job states a review can be signed in: waiting for it, or finished (the sign-off amends).
SIGNABLE_JOB_STATES = (JobState.AWAITING_REVIEW, JobState.DONE, JobState.FAILED)


def sign(
    ctx: PipelineContext, job_id: int, *, version: int, account: str,
    languages: Sequence[str], source: str = "",
) -> int:
    """Sign the job's review loaded at ``version``; returns the sign-off number *n*.

    In one transaction: the review is marked signed by ``account`` with the reviewed
    ``languages`` (only these are published as verified) and number *n* (1 + the job's highest
    artifact set), the job goes to ``exporting``; after the commit its export is enqueued,
    which builds artifact set *n* (:func:`worklist.review.signoff.signed_export`).

    Raises
    ------
    ReviewNotFoundError
        No such job or review.
    ReviewConflictError
        Already signed (the message names who and when: the loser of two radiologists racing
        to sign), superseded, changed since ``version``, or the job is not finished.
    ReviewInputError
        A finding is still pending, ``languages`` is empty or not the route's, a finding has no
        text in a signed language, or the account is unknown.
    """
    with ctx.sessions.begin() as session:
        # lock order: job, then review (as the export and the delivery steps)
        job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
        if job is None:
            raise ReviewNotFoundError(f"no job {job_id}")
        review = locked_review(session, job_id, version=version)
        if job.state not in SIGNABLE_JOB_STATES:
            raise ReviewConflictError(
                f"job {job_id} is {job.state.value}; it can be signed once it waits for review "
                "or is done or failed"
            )
        signed_languages = _check_languages(job, languages)
        _check_findings(session, review.id, signed_languages)
        verifier = session.scalar(select(Account).where(Account.name == account))
        if verifier is None or verifier.disabled:
            raise ReviewInputError(f"no active account {account!r} to sign with")
        number = 1 + _highest_set(session, job_id)
        now = utcnow()
        review.state, review.signed_by, review.signed_at = ReviewState.SIGNED, account, now
        review.reviewed_languages = ",".join(signed_languages)
        review.signoff = number
        review.claimed_by = review.claimed_at = None
        review.version += 1
        waited, route = (now - review.opened_at).total_seconds(), job.route
        job.state, job.updated_at, job.finished_at = JobState.EXPORTING, now, None
        job.last_error = job.output_errors = None
        audit(session, f"web:{account}", "review-signed", job_id,
              f"sign-off {number}, languages {review.reviewed_languages}", source=source)
    metrics.review_signed(route, waited)
    logger.info("Job %d: review signed (sign-off %d); exporting the signed set", job_id, number)
    ctx.enqueue.export(job_id)
    return number


def _check_languages(job: Job, languages: Sequence[str]) -> tuple[str, ...]:
    from engine.report import GroundedReport

    written = GroundedReport.from_json(job.report_json or "").languages
    if isinstance(languages, str) or not languages:
        raise ReviewInputError("languages: name the languages whose text you reviewed")
    unknown = [tag for tag in languages if tag not in written]
    if unknown:
        raise ReviewInputError(
            f"languages: {', '.join(unknown)} not among the route's ({', '.join(written)})"
        )
    return tuple(tag for tag in written if tag in languages)  # the route's order


def _check_findings(session: Session, review_id: int, languages: Sequence[str]) -> None:
    rows = session.scalars(
        select(ReviewFinding).where(ReviewFinding.review_id == review_id)
        .order_by(ReviewFinding.position)
    ).all()
    pending = [row for row in rows if row.decision is FindingDecision.PENDING]
    if pending:
        raise ReviewInputError(
            f"{len(pending)} finding(s) still pending (positions "
            f"{', '.join(str(r.position + 1) for r in pending)}): accept or reject each first"
        )
    for row in rows:
        if row.decision is not FindingDecision.ACCEPTED:
            continue
        finding = final_finding(row)
        missing = [
            tag for tag in languages if tag not in finding.label or tag not in finding.description
        ]
        if missing:
            raise ReviewInputError(
                f"finding {row.position + 1} has no text in {', '.join(missing)}: write it or "
                "sign without that language"
            )


def _highest_set(session: Session, job_id: int) -> int:
    """The job's highest artifact set so far (artifacts or deliveries; 0: the model's only)."""
    artifacts = session.scalar(
        select(func.max(Artifact.artifact_set)).where(Artifact.job_id == job_id)
    )
    deliveries = session.scalar(
        select(func.max(Delivery.artifact_set)).where(Delivery.job_id == job_id)
    )
    return max(artifacts or 0, deliveries or 0)
