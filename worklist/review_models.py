"""A radiologist's review of a job's findings, and each decision in it.

A job whose route holds outputs for review (``review = "before_ehr" | "before_all"``) gets a
*review* when it is exported; a radiologist may also open one on a finished job (its sign-off
then amends what was sent). Every finding the model made, and every finding the radiologist
added, has one *review finding* row: the model's version, the final version, the decision and
who made it. These rows are the data :mod:`worklist.review` exports for training and turns into
per-class acceptance figures. No patient data: findings carry image UIDs, boxes and texts.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from worklist.db import Base, UTCDateTime, string_enum

__all__ = [
    "FindingDecision",
    "FindingOrigin",
    "RejectReason",
    "Review",
    "ReviewFinding",
    "ReviewState",
]



class ReviewState(enum.StrEnum):
    """Where a review stands."""

    #: Waiting for, or in the hands of, a radiologist.
    OPEN = "open"
    #: Signed: the job's signed artifact set was (or is being) built and delivered.
    SIGNED = "signed"
    #: The study was reprocessed while this review was open; the new revision's job has its own.
    SUPERSEDED = "superseded"


class FindingDecision(enum.StrEnum):
    """What the radiologist decided about one finding."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class RejectReason(enum.StrEnum):
    """Why a finding was rejected (the short list the review page offers)."""

    WRONG_PLACE = "wrong_place"
    NOT_PRESENT = "not_present"
    DUPLICATE = "duplicate"
    OTHER = "other"


class FindingOrigin(enum.StrEnum):
    """Who proposed a finding."""

    #: In the model's grounded report.
    MODEL = "model"
    #: A model answer to a region task (region → text, text → region) the radiologist took in.
    SUGGESTION = "suggestion"
    #: Drawn and written by the radiologist.
    RADIOLOGIST = "radiologist"


class Review(Base):
    """The review of one job (one study revision along one route)."""

    __tablename__ = "reviews"
    # the figures and the dataset export of a period (signed reviews by signing time)
    __table_args__ = (Index("ix_reviews_state_signed_at", "state", "signed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), unique=True)
    state: Mapped[ReviewState] = mapped_column(
        string_enum(ReviewState, "review_state"), default=ReviewState.OPEN
    )
    #: Raised by every change; a change made against an older version is refused (409), so two
    #: radiologists never overwrite each other's decisions and only one can sign.
    version: Mapped[int] = mapped_column(Integer, default=1)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: The account that has the review open now (others see who), and since when.
    claimed_by: Mapped[str | None] = mapped_column(String(64), default=None)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: The radiologist who signed, when, and the languages whose text they reviewed
    #: (comma-separated BCP-47 tags; only these are published as verified).
    signed_by: Mapped[str | None] = mapped_column(String(64), default=None)
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    reviewed_languages: Mapped[str] = mapped_column(String(64), default="")
    #: The sign-off's number: the ``artifact_set`` of the outputs it made (1 for the first).
    signoff: Mapped[int | None] = mapped_column(Integer, default=None)
    #: A radiologist sent it back unsigned: who, and their note for the next reader.
    sent_back_by: Mapped[str | None] = mapped_column(String(64), default=None)
    sent_back_note: Mapped[str] = mapped_column(Text, default="")
    #: The job of the new revision that superseded this review.
    superseded_by_job_id: Mapped[int | None] = mapped_column(Integer, default=None)

    findings: Mapped[list[ReviewFinding]] = relationship(
        back_populates="review", order_by="ReviewFinding.position"
    )


class ReviewFinding(Base):
    """One finding under review: the model's version, the final one, and the decision."""

    __tablename__ = "review_findings"
    __table_args__ = (
        UniqueConstraint("review_id", "tracking_uid"),
        # per-class figures over a period
        Index("ix_review_findings_decided_at", "decided_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    review_id: Mapped[int] = mapped_column(ForeignKey("reviews.id"), index=True)
    #: The finding's Tracking UID (the model's, or a new one for an added finding).
    tracking_uid: Mapped[str] = mapped_column(String(64))
    #: Display order (the model's order, added findings after).
    position: Mapped[int] = mapped_column(Integer)
    origin: Mapped[FindingOrigin] = mapped_column(string_enum(FindingOrigin, "finding_origin"))
    decision: Mapped[FindingDecision] = mapped_column(
        string_enum(FindingDecision, "finding_decision"), default=FindingDecision.PENDING
    )
    reject_reason: Mapped[RejectReason | None] = mapped_column(
        string_enum(RejectReason, "reject_reason"), default=None
    )
    reject_note: Mapped[str] = mapped_column(Text, default="")
    #: The finding's class as the model named it (English label, or the coded concept's
    #: meaning), and as it is now; the per-class figures group by ``model_class``.
    model_class: Mapped[str | None] = mapped_column(String(128), default=None)
    final_class: Mapped[str | None] = mapped_column(String(128), default=None)
    #: The model's confidence (None: the model gives none, or the radiologist added it).
    model_confidence: Mapped[float | None] = mapped_column(Float, default=None)
    #: ``engine.report.finding_to_dict`` JSON: as the model made it (None for an added finding)
    #: and as it is now (edited label/sentences/box/concept).
    model_finding: Mapped[str | None] = mapped_column(Text, default=None)
    final_finding: Mapped[str] = mapped_column(Text)
    #: Languages whose sentence the radiologist edited (comma-separated tags).
    edited_languages: Mapped[str] = mapped_column(String(64), default="")
    #: Whether the box was moved or resized, and the IoU of the model's and the final box.
    box_moved: Mapped[bool] = mapped_column(default=False)
    box_iou: Mapped[float | None] = mapped_column(Float, default=None)
    decided_by: Mapped[str | None] = mapped_column(String(64), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    review: Mapped[Review] = relationship(back_populates="findings")
