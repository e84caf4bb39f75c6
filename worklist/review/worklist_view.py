"""The radiologists' worklist: jobs waiting for review, oldest first."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicom_node.uids import short_uid
from worklist.db import utcnow
from worklist.errors import InvalidFilterError
from worklist.jobs_models import Job, JobState
from worklist.models import Series, Study
from worklist.review.views import AwaitingReview
from worklist.review_models import Review, ReviewFinding, ReviewState
from worklist.routing import study_instance_facts
from worklist.views.common import Page, check_page, check_text, studies_with_modality

__all__ = ["awaiting_reviews", "source_priority"]

logger = logging.getLogger(__name__)

#: What a study without a priority in its headers is listed as.
ROUTINE = "routine"


def awaiting_reviews(
    session: Session, *, modality: str | None = None, min_wait: timedelta | None = None,
    limit: int = 50, offset: int = 0, storage_root: Path | None = None,
) -> Page[AwaitingReview]:
    """Jobs waiting for a radiologist's sign-off, the longest-waiting first.

    Parameters
    ----------
    modality
        Only studies with a series of this modality.
    min_wait
        Only reviews waiting at least this long.
    limit, offset
        The page.
    storage_root
        Where the source instances are stored: with it, each row's priority is read from the
        first source header (else every row is ``"routine"``).

    Raises
    ------
    InvalidFilterError
        A bad page, modality or wait.
    """
    check_page(offset, limit)
    check_text("modality", modality, max_length=16)
    if min_wait is not None and min_wait < timedelta(0):
        raise InvalidFilterError("min_wait", "must be 0 or more")
    where = [Job.state == JobState.AWAITING_REVIEW, Review.state == ReviewState.OPEN]
    if modality is not None:
        where.append(Job.study_pk.in_(studies_with_modality(modality)))
    if min_wait is not None:
        where.append(Review.opened_at <= utcnow() - min_wait)
    base = select(Job, Review, Study).join(Review, Review.job_id == Job.id).join(
        Study, Study.id == Job.study_pk).where(*where)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.execute(
        base.order_by(Review.opened_at, Job.id).offset(offset).limit(limit)
    ).all()
    counts = dict(session.execute(
        select(ReviewFinding.review_id, func.count())
        .where(ReviewFinding.review_id.in_([review.id for _, review, _ in rows]))
        .group_by(ReviewFinding.review_id)
    ).all())
    items = []
    for job, review, study in rows:
        modalities = session.scalars(
            select(Series.modality).where(Series.study_pk == study.id).distinct()
        ).all()
        items.append(AwaitingReview(
            job_id=job.id, study=short_uid(study.study_instance_uid), route=job.route,
            modality="/".join(sorted(m for m in modalities if m)),
            study_description=study.study_description,
            priority=ROUTINE if storage_root is None else source_priority(
                session, job.study_pk, storage_root),
            waiting_since=review.opened_at, claimed_by=review.claimed_by,
            finding_count=counts.get(review.id, 0),
        ))
    return Page(tuple(items), total, offset, limit)


def source_priority(session: Session, study_pk: int, storage_root: Path) -> str:
    """Requested Procedure Priority (0040,1003), else Study Priority ID (0032,000C), of the
    study's first source image, lower case; ``"routine"`` when neither is there."""
    facts = study_instance_facts(session, study_pk)
    if not facts:
        return ROUTINE
    try:
        ds = dcmread(storage_root / facts[0].path, stop_before_pixels=True,
                     specific_tags=["RequestedProcedurePriority", "StudyPriorityID",
                                    "RequestAttributesSequence"])
    except (OSError, InvalidDicomError) as exc:
        logger.warning("Source header not readable for the priority (%s)", type(exc).__name__)
        return ROUTINE
    requested = [ds] + list(ds.get("RequestAttributesSequence", []))
    value = next(
        (str(item.RequestedProcedurePriority) for item in requested
         if item.get("RequestedProcedurePriority")),
        str(ds.get("StudyPriorityID") or ""),
    )
    return str(value).strip().lower() or ROUTINE
