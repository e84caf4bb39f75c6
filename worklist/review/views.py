"""What the review service returns and takes: frozen values, never ORM objects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from engine.report import Box, CodedConcept, Finding, ModelInfo
from worklist.review_models import FindingDecision, RejectReason

__all__ = [
    "AwaitingReview",
    "FindingChange",
    "ReviewFindingView",
    "ReviewImage",
    "ReviewView",
]


@dataclass(frozen=True)
class ReviewFindingView:
    """One finding of the review page.

    Parameters
    ----------
    tracking_uid
        The finding's Tracking UID (shared by its SR, GSPS and FHIR copies).
    position
        Display order (the model's order, added findings after).
    origin, decision, reject_reason, reject_note
        ``FindingOrigin``, ``FindingDecision`` and ``RejectReason`` values.
    model
        The finding as the model made it (``None`` for an added finding).
    final
        The finding as it is now.
    edited_languages
        Languages whose text the radiologist changed.
    box_moved, box_iou
        Whether the box was moved or resized, and the IoU of the model's and the final box.
    decided_by, decided_at
        The account that last changed it, and when.
    """

    tracking_uid: str
    position: int
    origin: str
    decision: str
    reject_reason: str | None
    reject_note: str
    model: Finding | None
    final: Finding
    edited_languages: tuple[str, ...]
    box_moved: bool
    box_iou: float | None
    decided_by: str | None
    decided_at: datetime | None


@dataclass(frozen=True)
class ReviewImage:
    """A source image the review page shows (``rows``/``columns`` 0 and ``frame_count`` 1 when
    its header could not be read)."""

    sop_instance_uid: str
    sop_class_uid: str
    frame_count: int
    rows: int
    columns: int
    series_description: str
    instance_number: int | None


@dataclass(frozen=True)
class ReviewView:
    """A job's review as the page shows it.

    ``version`` is what the next change must name; ``languages`` are the route's languages (the
    report's); ``policy`` the route's ``review`` setting (``"unknown"`` when the caller gave no
    routes or the route is no longer configured).
    """

    job_id: int
    study_instance_uid: str
    revision: int
    route: str
    policy: str
    job_state: str
    state: str
    version: int
    claimed_by: str | None
    signed_by: str | None
    signed_at: datetime | None
    signoff: int | None
    reviewed_languages: tuple[str, ...]
    sent_back_by: str | None
    sent_back_note: str
    superseded_by_job_id: int | None
    languages: tuple[str, ...]
    model: ModelInfo
    findings: tuple[ReviewFindingView, ...]
    images: tuple[ReviewImage, ...]


@dataclass(frozen=True)
class FindingChange:
    """A change to one finding; only what is given changes.

    Parameters
    ----------
    decision
        Accept, reject (needs ``reject_reason``) or back to pending.
    reject_reason, reject_note
        Why it was rejected (with a rejection, or to change the reason of a rejected finding).
    label, description
        New texts by language tag (each a language of the route, non-empty).
    region
        ``(sop_instance_uid, frame_number or None, box in the image's pixels)``: the finding's
        one region from now on.
    concept
        The coded finding it now names.
    """

    decision: FindingDecision | None = None
    reject_reason: RejectReason | None = None
    reject_note: str = ""
    label: Mapping[str, str] | None = None
    description: Mapping[str, str] | None = None
    region: tuple[str, int | None, Box] | None = None
    concept: CodedConcept | None = None

    @property
    def is_empty(self) -> bool:
        """Whether it changes nothing."""
        return (
            self.decision is None and self.reject_reason is None and not self.reject_note
            and self.label is None and self.description is None and self.region is None
            and self.concept is None
        )


@dataclass(frozen=True)
class AwaitingReview:
    """One row of the radiologists' worklist.

    ``study`` is the short, non-reversible token of the Study Instance UID
    (:func:`dicom_node.uids.short_uid`); ``priority`` the source's Requested Procedure Priority
    (0040,1003) or Study Priority ID (0032,000C), lower case, else ``"routine"``.
    """

    job_id: int
    study: str
    route: str
    modality: str
    study_description: str
    priority: str
    waiting_since: datetime
    claimed_by: str | None
    finding_count: int
