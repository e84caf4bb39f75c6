"""Request and response bodies of the review API (``/jobs/{id}/review``, ``/reviews``).

Boxes are in the source image's pixel space (x the column, y the row, origin the top-left corner
of the top-left pixel: :class:`engine.report.Box`); frames are 1-based (``None`` for a
single-frame image); texts are keyed by BCP-47 language tag.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from engine.report import Box, CodedConcept, Finding, FindingKind, Region, Text
from worklist.review_models import FindingDecision, FindingOrigin, RejectReason

__all__ = [
    "AddedFinding",
    "BoxBody",
    "ConceptBody",
    "FindingBody",
    "FindingChangeBody",
    "FindingCreateBody",
    "ImageBody",
    "ImageDisplay",
    "LocateBody",
    "RegionBody",
    "ReviewBody",
    "ReviewFindingBody",
    "SendBackBody",
    "SignBody",
    "SignedBody",
    "SuggestionBody",
    "Suggestions",
    "VersionBody",
    "finding_body",
    "region_body",
    "suggestion_body",
]

Version = Annotated[int, Field(ge=1, description="The review's version the change was made on "
                                                "(a stale one is refused with 409).")]
#: Texts per language: {"en": "...", "zh-CN": "..."}.
Texts = dict[Annotated[str, Field(max_length=16)], Annotated[str, Field(max_length=2000)]]
Uid = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9]+(\.[0-9]+)*$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BoxBody(_Body):
    """A box in source pixels (``x_min < x_max``, ``y_min < y_max``)."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float

    def box(self) -> Box:
        """As :class:`engine.report.Box` (raises :class:`engine.report.ReportError`)."""
        return Box(self.x_min, self.y_min, self.x_max, self.y_max)


class RegionBody(_Body):
    """A box on one source image (and frame) of the study."""

    sop_instance_uid: Uid
    frame: Annotated[int | None, Field(ge=1)] = None
    box: BoxBody

    def region(self) -> tuple[str, int | None, Box]:
        """The service's ``(sop_instance_uid, frame, box)``."""
        return self.sop_instance_uid, self.frame, self.box.box()


class ConceptBody(_Body):
    """A coded finding (DICOM code sequence item / FHIR Coding)."""

    value: Annotated[str, Field(min_length=1, max_length=64)]
    scheme_designator: Annotated[str, Field(min_length=1, max_length=64)]
    meaning: Annotated[str, Field(min_length=1, max_length=128)]
    scheme_version: Annotated[str | None, Field(max_length=16)] = None

    def concept(self) -> CodedConcept:
        return CodedConcept(self.value, self.scheme_designator, self.meaning,
                            self.scheme_version)

    @classmethod
    def of(cls, concept: CodedConcept | None) -> ConceptBody | None:
        if concept is None:
            return None
        return cls(value=concept.value, scheme_designator=concept.scheme_designator,
                   meaning=concept.meaning, scheme_version=concept.scheme_version)


class FindingChangeBody(_Body):
    """A change to one finding: only the members given change."""

    version: Version
    decision: FindingDecision | None = None
    reject_reason: RejectReason | None = Field(
        None, description="Needed when rejecting: wrong_place, not_present, duplicate, other.")
    reject_note: Annotated[str, Field(max_length=2000)] = ""
    label: Texts | None = None
    description: Texts | None = Field(None, description="The finding's sentence per language "
                                                        "(the languages given count as edited).")
    region: RegionBody | None = None
    concept: ConceptBody | None = None


class FindingCreateBody(_Body):
    """A finding the radiologist adds (drawn, or a model suggestion taken in)."""

    version: Version
    label: Texts
    description: Texts
    region: RegionBody
    kind: FindingKind = FindingKind.ABNORMALITY
    concept: ConceptBody | None = None
    origin: FindingOrigin = Field(FindingOrigin.RADIOLOGIST,
                                  description="radiologist, or suggestion (a model answer).")
    confidence: Annotated[float | None, Field(ge=0, le=1)] = None


class LocateBody(_Body):
    """Text → region: where is this finding?"""

    query: Annotated[str, Field(min_length=1, max_length=200)]
    language: Annotated[str, Field(min_length=2, max_length=16)] = "en"


class SignBody(_Body):
    """Sign the review: the languages whose text the radiologist reviewed."""

    version: Version
    languages: Annotated[list[Annotated[str, Field(max_length=16)]], Field(min_length=1)]


class SendBackBody(_Body):
    """Send the review back unsigned, with a note for the next reader."""

    version: Version
    note: Annotated[str, Field(max_length=2000)] = ""


class VersionBody(BaseModel):
    """The review's version after the change."""

    version: int


class AddedFinding(BaseModel):
    """The added finding's Tracking UID and the review's new version."""

    tracking_uid: str
    version: int


class SignedBody(BaseModel):
    """The sign-off's number (the artifact set its outputs get); the outputs are being built."""

    signoff: int
    detail: str


class FindingBody(BaseModel):
    """A finding as the model made it or as it is now."""

    tracking_uid: str
    kind: str
    label: dict[str, str]
    description: dict[str, str]
    confidence: float | None
    concept: ConceptBody | None
    regions: list[RegionBody]


class ReviewFindingBody(BaseModel):
    """One finding under review."""

    tracking_uid: str
    position: int
    origin: str
    decision: str
    reject_reason: str | None
    reject_note: str
    model: FindingBody | None
    final: FindingBody
    edited_languages: list[str]
    box_moved: bool
    box_iou: float | None
    decided_by: str | None
    decided_at: datetime | None


class ImageBody(BaseModel):
    """A source image the review shows."""

    sop_instance_uid: str
    sop_class_uid: str
    frame_count: int
    rows: int
    columns: int
    series_description: str
    instance_number: int | None


class ReviewBody(BaseModel):
    """A job's review: its state, who has it open or signed it, and every finding."""

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
    reviewed_languages: list[str]
    sent_back_by: str | None
    sent_back_note: str
    superseded_by_job_id: int | None
    languages: list[str]
    model: dict[str, Any]
    findings: list[ReviewFindingBody]
    images: list[ImageBody]


class SuggestionBody(BaseModel):
    """A model answer to a region task, which the radiologist may add to the report."""

    label: dict[str, str]
    description: dict[str, str]
    region: RegionBody
    confidence: float | None
    concept: ConceptBody | None


class Suggestions(BaseModel):
    """The model's answers, best first (may be empty)."""

    suggestions: list[SuggestionBody]


class ImageDisplay(BaseModel):
    """How the viewer shows an image first: its default window, and the pixel value range."""

    sop_instance_uid: str
    rows: int
    columns: int
    frame_count: int
    #: The default window (the image's first Window Center/Width, else its value range);
    #: ``None`` for a colour image (no window applies).
    window_center: float | None
    window_width: float | None
    min_value: float | None
    max_value: float | None
    #: Window presets for the modality: name → (centre, width).
    presets: dict[str, tuple[float, float]]


def region_body(region: Region) -> RegionBody:
    box = region.box
    return RegionBody(
        sop_instance_uid=region.image.sop_instance_uid, frame=region.image.frame_number,
        box=BoxBody(x_min=box.x_min, y_min=box.y_min, x_max=box.x_max, y_max=box.y_max),
    )


def _texts(text: Text) -> dict[str, str]:
    return text.as_dict()


def finding_body(finding: Finding) -> FindingBody:
    return FindingBody(
        tracking_uid=finding.tracking_uid, kind=finding.kind.value, label=_texts(finding.label),
        description=_texts(finding.description), confidence=finding.confidence,
        concept=ConceptBody.of(finding.concept),
        regions=[region_body(r) for r in finding.regions],
    )


def suggestion_body(suggestion: Any) -> SuggestionBody:
    """A :class:`worklist.review.assist.RegionSuggestion` as a response member."""
    return SuggestionBody(
        label=_texts(suggestion.label), description=_texts(suggestion.description),
        region=region_body(suggestion.region), confidence=suggestion.confidence,
        concept=ConceptBody.of(suggestion.concept),
    )
