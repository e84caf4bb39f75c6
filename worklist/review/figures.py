"""Per-class figures of signed reviews over a period: how often radiologists keep what the model
found, why they reject it, and how far they move its boxes.

A finding counts in the period when its review was **signed** in it (``since <= signed_at <
until``): only signed decisions are final, and these are the findings ``radground review
export`` writes for the same period and :func:`worklist.metrics.record_signed_review` counts.
Model findings are grouped by the class the model gave them (``ReviewFinding.model_class``);
findings the radiologist added (drawn, or taken in from a region-task suggestion) are counted
per their final class in :attr:`ClassFigures.added`. Two grouped queries, whatever the number of
findings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session

from worklist.review.errors import InvalidPeriodError
from worklist.review_models import (
    FindingDecision,
    FindingOrigin,
    RejectReason,
    Review,
    ReviewFinding,
    ReviewState,
)

__all__ = ["TOTAL", "ClassFigures", "check_period", "class_figures", "total_figures"]

#: The ``finding_class`` of :func:`total_figures`' row.
TOTAL = "all"


@dataclass(frozen=True)
class ClassFigures:
    """What radiologists decided about one class of finding over a period.

    Attributes
    ----------
    finding_class
        The class as the model named it (``""`` when it named none).
    reviewed
        Model findings of this class in signed reviews.
    accepted, rejected
        Of those, kept (possibly edited or moved) and rejected.
    rejected_by_reason
        Rejections per :class:`~worklist.review_models.RejectReason` value (every reason, 0
        included).
    edited
        Model findings whose sentence was edited in at least one language.
    moved
        Model findings whose box was moved or resized.
    relabelled
        Accepted model findings whose final class differs from the model's.
    iou_count, mean_iou
        Accepted model findings with a model and a final box, and the mean IoU of the two
        (1.0: not moved; ``None`` when there are none): the mean box shift.
    added
        Findings of this (final) class the radiologists added: the model missed them.
    """

    finding_class: str
    reviewed: int = 0
    accepted: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(
        default_factory=lambda: {reason.value: 0 for reason in RejectReason}
    )
    edited: int = 0
    moved: int = 0
    relabelled: int = 0
    iou_count: int = 0
    mean_iou: float | None = None
    added: int = 0

    @property
    def acceptance_rate(self) -> float | None:
        """``accepted / reviewed`` (``None`` with nothing reviewed)."""
        return self.accepted / self.reviewed if self.reviewed else None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready values, the acceptance rate included."""
        return {
            "class": self.finding_class,
            "reviewed": self.reviewed,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "acceptance_rate": self.acceptance_rate,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "edited": self.edited,
            "moved": self.moved,
            "relabelled": self.relabelled,
            "mean_iou": self.mean_iou,
            "iou_count": self.iou_count,
            "added": self.added,
        }


def check_period(since: datetime, until: datetime) -> None:
    """Raise :class:`InvalidPeriodError` unless both are timezone-aware and ``since < until``."""
    if since.tzinfo is None or until.tzinfo is None:
        raise InvalidPeriodError("since and until must be timezone-aware (UTC) datetimes")
    if not since < until:
        raise InvalidPeriodError(
            f"the period is empty: since {since.isoformat()} is not before until "
            f"{until.isoformat()}"
        )


def _signed_in(since: datetime, until: datetime) -> ColumnElement[bool]:
    """Reviews signed in ``[since, until)``."""
    return and_(
        Review.state == ReviewState.SIGNED, Review.signed_at >= since, Review.signed_at < until
    )


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    """How many rows of the group meet ``condition`` (0, never NULL)."""
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def class_figures(session: Session, since: datetime, until: datetime) -> list[ClassFigures]:
    """Per-class figures of the reviews signed in ``[since, until)``, by class name.

    Raises
    ------
    InvalidPeriodError
        When the period is empty or its ends are naive datetimes.
    """
    check_period(since, until)
    accepted = ReviewFinding.decision == FindingDecision.ACCEPTED
    with_iou = and_(accepted, ReviewFinding.box_iou.is_not(None))
    model_class = func.coalesce(ReviewFinding.model_class, "")
    columns: list[ColumnElement[Any]] = [
        model_class.label("finding_class"),
        func.count().label("reviewed"),
        _count(accepted).label("accepted"),
        _count(ReviewFinding.decision == FindingDecision.REJECTED).label("rejected"),
        *(
            _count(
                and_(
                    ReviewFinding.decision == FindingDecision.REJECTED,
                    ReviewFinding.reject_reason == reason,
                )
            ).label(f"reason_{reason.value}")
            for reason in RejectReason
        ),
        _count(ReviewFinding.edited_languages != "").label("edited"),
        _count(ReviewFinding.box_moved.is_(True)).label("moved"),
        _count(
            and_(accepted, func.coalesce(ReviewFinding.final_class, "") != model_class)
        ).label("relabelled"),
        _count(with_iou).label("iou_count"),
        func.avg(case((with_iou, ReviewFinding.box_iou), else_=None)).label("mean_iou"),
    ]
    reviewed_rows = session.execute(
        select(*columns)
        .join(Review, ReviewFinding.review_id == Review.id)
        .where(_signed_in(since, until), ReviewFinding.origin == FindingOrigin.MODEL)
        .group_by(model_class)
    ).all()
    added_class = func.coalesce(ReviewFinding.final_class, "")
    added_rows = session.execute(
        select(added_class, func.count())
        .join(Review, ReviewFinding.review_id == Review.id)
        .where(
            _signed_in(since, until),
            ReviewFinding.origin != FindingOrigin.MODEL,
            ReviewFinding.decision == FindingDecision.ACCEPTED,
        )
        .group_by(added_class)
    ).all()
    figures: dict[str, ClassFigures] = {}
    for row in reviewed_rows:
        figures[row.finding_class] = ClassFigures(
            finding_class=row.finding_class,
            reviewed=int(row.reviewed),
            accepted=int(row.accepted),
            rejected=int(row.rejected),
            rejected_by_reason={
                reason.value: int(getattr(row, f"reason_{reason.value}")) for reason in RejectReason
            },
            edited=int(row.edited),
            moved=int(row.moved),
            relabelled=int(row.relabelled),
            iou_count=int(row.iou_count),
            mean_iou=None if row.mean_iou is None else float(row.mean_iou),
        )
    for name, count in added_rows:
        figures[name] = replace(figures.get(name, ClassFigures(name)), added=int(count))
    return [figures[name] for name in sorted(figures, key=lambda n: (n == "", n.casefold()))]


def total_figures(figures: Sequence[ClassFigures]) -> ClassFigures:
    """All classes together (:data:`TOTAL`); the mean IoU weighted by each class's count."""
    iou_count = sum(f.iou_count for f in figures)
    weighted = sum(f.mean_iou * f.iou_count for f in figures if f.mean_iou is not None)
    return ClassFigures(
        finding_class=TOTAL,
        reviewed=sum(f.reviewed for f in figures),
        accepted=sum(f.accepted for f in figures),
        rejected=sum(f.rejected for f in figures),
        rejected_by_reason={
            reason.value: sum(f.rejected_by_reason.get(reason.value, 0) for f in figures)
            for reason in RejectReason
        },
        edited=sum(f.edited for f in figures),
        moved=sum(f.moved for f in figures),
        relabelled=sum(f.relabelled for f in figures),
        iou_count=iou_count,
        mean_iou=weighted / iou_count if iou_count else None,
        added=sum(f.added for f in figures),
    )
