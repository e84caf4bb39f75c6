"""Reading and writing the review rows: creating a review from a report, locking it for a
change, and turning rows into findings (shared by the service, the sign-off and the pipeline)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.report import Finding, GroundedReport, finding_from_dict, finding_to_dict
from worklist.context import audit
from worklist.db import utcnow
from worklist.jobs_models import Job, JobState
from worklist.review.errors import ReviewConflictError, ReviewNotFoundError
from worklist.review_models import FindingOrigin, Review, ReviewFinding, ReviewState

__all__ = [
    "create_review",
    "dump_finding",
    "final_finding",
    "finding_class",
    "locked_review",
    "model_finding",
    "next_position",
    "split_tags",
    "supersede_open_reviews",
]


def split_tags(value: str) -> tuple[str, ...]:
    """The language tags of a comma-separated column."""
    return tuple(tag for tag in value.split(",") if tag)


def finding_class(finding: Finding) -> str:
    """The class a finding names: its English label, else its coded concept's meaning, else its
    primary label (the per-class figures group by it)."""
    label = finding.label.get("en")
    if label is None and finding.concept is not None:
        label = finding.concept.meaning
    return (label or finding.label.primary)[:128]


def final_finding(row: ReviewFinding) -> Finding:
    """The finding as it is now."""
    return finding_from_dict(json.loads(row.final_finding))


def model_finding(row: ReviewFinding) -> Finding | None:
    """The finding as the model made it (``None`` for an added one)."""
    return None if row.model_finding is None else finding_from_dict(json.loads(row.model_finding))


def dump_finding(finding: Finding) -> str:
    """A finding as stored in ``review_findings``."""
    return json.dumps(finding_to_dict(finding), ensure_ascii=False, separators=(",", ":"))


def create_review(
    session: Session, job_id: int, report: GroundedReport, *, now: datetime | None = None
) -> Review:
    """Create the open review of a job (one pending row per finding of the model's ``report``);
    the existing one if there is one. The caller commits."""
    existing = session.scalar(select(Review).where(Review.job_id == job_id))
    if existing is not None:
        return existing
    now = now or utcnow()
    review = Review(job_id=job_id, state=ReviewState.OPEN, version=1, opened_at=now)
    session.add(review)
    session.flush()
    _add_model_findings(session, review.id, report.findings)
    session.flush()
    return review


def _add_model_findings(session: Session, review_id: int, findings: Iterable[Finding]) -> None:
    for position, finding in enumerate(findings):
        stored = dump_finding(finding)
        session.add(ReviewFinding(
            review_id=review_id,
            tracking_uid=finding.tracking_uid,
            position=position,
            origin=FindingOrigin.MODEL,
            model_class=finding_class(finding),
            final_class=finding_class(finding),
            model_confidence=finding.confidence,
            model_finding=stored,
            final_finding=stored,
        ))


def locked_review(session: Session, job_id: int, *, version: int | None = None) -> Review:
    """The job's open review, locked for a change (``SELECT ... FOR UPDATE``).

    Raises
    ------
    ReviewNotFoundError
        The job has no review.
    ReviewConflictError
        It is signed or superseded, or ``version`` is not its current version.
    """
    review = session.scalar(
        select(Review).where(Review.job_id == job_id).with_for_update().execution_options(
            populate_existing=True
        )
    )
    if review is None:
        raise ReviewNotFoundError(f"job {job_id} has no review")
    if review.state is ReviewState.SIGNED:
        at = f"{review.signed_at:%Y-%m-%d %H:%M:%S} UTC" if review.signed_at else "an unknown time"
        raise ReviewConflictError(f"job {job_id}: already signed by {review.signed_by} at {at}")
    if review.state is ReviewState.SUPERSEDED:
        raise ReviewConflictError(
            f"job {job_id}: superseded by job {review.superseded_by_job_id}: review that one"
        )
    if version is not None and version != review.version:
        raise ReviewConflictError(
            f"job {job_id}: changed by {_last_changed_by(session, review)} since you loaded it "
            f"(version {review.version}, you had {version}); reload it"
        )
    return review


def _last_changed_by(session: Session, review: Review) -> str:
    """Who changed the review last (the latest decision, the send-back, or the claim)."""
    latest = session.execute(
        select(ReviewFinding.decided_by, ReviewFinding.decided_at)
        .where(ReviewFinding.review_id == review.id, ReviewFinding.decided_at.is_not(None))
        .order_by(ReviewFinding.decided_at.desc())
        .limit(1)
    ).first()
    return (latest[0] if latest else None) or review.sent_back_by or review.claimed_by or "someone"


def next_position(session: Session, review_id: int) -> int:
    """The position after the review's last finding."""
    last = session.scalar(
        select(func.max(ReviewFinding.position)).where(ReviewFinding.review_id == review_id)
    )
    return 0 if last is None else last + 1


def supersede_open_reviews(
    session: Session, *, study_pk: int, route: str, new_job_id: int, actor: str = "node"
) -> list[int]:
    """A study reprocessed while a job of it waits for review on ``route``: that review is
    superseded by ``new_job_id`` and its job cancelled. Returns the cancelled jobs' ids; the
    caller commits."""
    waiting = session.scalars(
        select(Job).where(
            Job.study_pk == study_pk,
            Job.route == route,
            Job.id != new_job_id,
            Job.state == JobState.AWAITING_REVIEW,
        ).with_for_update()
    ).all()
    now = utcnow()
    cancelled = []
    for job in waiting:
        review = session.scalar(select(Review).where(Review.job_id == job.id).with_for_update())
        if review is not None and review.state is ReviewState.OPEN:
            review.state, review.superseded_by_job_id = ReviewState.SUPERSEDED, new_job_id
            review.claimed_by = review.claimed_at = None
            review.version += 1
        job.state, job.updated_at, job.finished_at = JobState.CANCELLED, now, now
        job.last_error = (
            f"superseded by job {new_job_id} (study reprocessed during review)"
        )
        audit(session, actor, "review-superseded", job.id, f"by job {new_job_id}")
        cancelled.append(job.id)
    return cancelled
