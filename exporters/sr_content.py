"""Pieces of the SR content tree that highdicom does not build, and region planning.

* :func:`plan_findings` checks every region against its source image header,
  clips boxes to the image (``Box.clip`` with the source Columns/Rows), drops
  boxes with nothing inside the image, and assigns each region its tracking
  UID. The plan is language-independent, so the SR, GSPS and FHIR builders and
  every language share one.
* :func:`region_tracking_uid`: a finding with one region uses the finding's
  ``tracking_uid``; a finding with several regions gives region *k* (0-based
  index in ``Finding.regions``) the UID ``derive_uid(tracking_uid, "region", k)``
  — deterministic and independent of clipping, so GSPS graphics and SR
  measurement groups of the same region carry the same UID.
* :func:`comment_item`, :func:`report_qualitative_evaluations`,
  :func:`language_item`, :func:`in_language`: TEXT / CONTAINER content items
  for the grounded sentence (DCM 121106 "Comment" in each TID 1410/1501
  measurement group), the impression (TID 1500 row 12 "Qualitative
  Evaluations", row 14 TEXT), the TID 1204 language of the document, and the
  TID 1204 modifier on a text in another language (bilingual documents).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import highdicom as hd
from pydicom.dataset import Dataset

from engine.report import Box, Finding, GroundedReport, ImageRef, derive_uid
from exporters import codes
from exporters.errors import SourceError

__all__ = [
    "LANGUAGE_NAMES",
    "PlannedFinding",
    "PlannedRegion",
    "RegionAction",
    "RegionNote",
    "comment_item",
    "impression_item",
    "in_language",
    "language_item",
    "plan_findings",
    "region_tracking_uid",
    "report_qualitative_evaluations",
    "source_index",
]

logger = logging.getLogger(__name__)

#: Code Meanings of the RFC 5646 language tags as CID 5000 "Languages" spells them (TID 1204).
LANGUAGE_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "en": "English",
        "en-US": "English (United States)",
        "en-GB": "English (United Kingdom)",
        "zh-CN": "Chinese (S)",
        "zh-TW": "Chinese (T)",
        "de": "German",
        "fr": "French",
        "es": "Spanish",
    }
)


class RegionAction(enum.StrEnum):
    """What the exporter had to do to a region."""

    CLIPPED = "clipped"
    DROPPED = "dropped"


@dataclass(frozen=True)
class RegionNote:
    """A region the exporter clipped to its image or dropped, for the caller and audit.

    Holds no patient data: indices, UIDs and coordinates only.
    """

    finding_index: int
    region_index: int
    tracking_uid: str
    sop_instance_uid: str
    frame_number: int | None
    action: RegionAction
    original: Box
    clipped: Box | None
    image_size: tuple[int, int]

    def describe(self) -> str:
        """One line for logs and audit trails (no patient data)."""
        columns, rows = self.image_size
        what = (
            f"clipped to {self.clipped.x_min:g},{self.clipped.y_min:g},{self.clipped.x_max:g},{self.clipped.y_max:g}"
            if self.clipped is not None
            else "dropped (no area inside the image)"
        )
        return (
            f"finding {self.finding_index} region {self.region_index} "
            f"({self.original.x_min:g},{self.original.y_min:g},{self.original.x_max:g},{self.original.y_max:g} "
            f"on a {columns}x{rows} image) {what}"
        )


@dataclass(frozen=True)
class PlannedRegion:
    """A region ready to export: its (clipped) box on a checked source image."""

    region_index: int
    tracking_uid: str
    image: ImageRef
    box: Box
    was_clipped: bool


@dataclass(frozen=True)
class PlannedFinding:
    """A finding with its coding and its exportable regions (empty → text-only)."""

    index: int
    finding: Finding
    coding: codes.FindingCoding
    regions: tuple[PlannedRegion, ...]


def region_tracking_uid(finding: Finding, region_index: int) -> str:
    """The tracking UID of region ``region_index`` of ``finding`` (see module docstring)."""
    if not 0 <= region_index < len(finding.regions):
        raise IndexError(f"finding has {len(finding.regions)} regions, no index {region_index}")
    if len(finding.regions) == 1:
        return finding.tracking_uid
    return derive_uid(finding.tracking_uid, "region", region_index)


def source_index(report: GroundedReport, sources: Sequence[Dataset]) -> dict[str, Dataset]:
    """Source headers by SOP Instance UID, checked against the report's study.

    Raises
    ------
    SourceError
        No sources, a source without the UIDs or image size an export needs, a
        source of another study, or two sources with one SOP Instance UID.
    """
    if not sources:
        raise SourceError("sources: at least one source image header is needed")
    by_uid: dict[str, Dataset] = {}
    for n, ds in enumerate(sources):
        for keyword in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"):
            if not ds.get(keyword):
                raise SourceError(f"sources[{n}] lacks {keyword}")
        if ds.StudyInstanceUID != report.study_instance_uid:
            raise SourceError(f"sources[{n}] belongs to another study than the report")
        if ds.SOPInstanceUID in by_uid:
            raise SourceError(f"sources[{n}] repeats the SOP Instance UID of an earlier source")
        by_uid[ds.SOPInstanceUID] = ds
    return by_uid


def _image_size(ds: Dataset, where: str) -> tuple[int, int]:
    columns, rows = ds.get("Columns"), ds.get("Rows")
    if not columns or not rows:
        raise SourceError(f"{where}: the source image header lacks Columns/Rows")
    return int(columns), int(rows)


def _check_frame(ref: ImageRef, ds: Dataset, where: str) -> None:
    frames = int(ds.get("NumberOfFrames") or 1)
    if ref.frame_number is None:
        if frames > 1:
            raise SourceError(
                f"{where}: the source image has {frames} frames; the region must name one"
            )
    elif ref.frame_number > frames:
        raise SourceError(f"{where}: frame {ref.frame_number} of an image with {frames} frame(s)")


def plan_findings(
    report: GroundedReport, sources: Sequence[Dataset]
) -> tuple[tuple[PlannedFinding, ...], tuple[RegionNote, ...]]:
    """Check, clip and code every finding's regions once (language-independent).

    Returns
    -------
    findings, notes
        The planned findings in report order, and a note for every region that
        was clipped or dropped.

    Raises
    ------
    SourceError
        A region on an image not among ``sources`` (or of another SOP class),
        a frame the image does not have, or a multi-frame image without a frame.
    """
    by_uid = source_index(report, sources)
    planned: list[PlannedFinding] = []
    notes: list[RegionNote] = []
    for f_index, finding in enumerate(report.findings):
        regions: list[PlannedRegion] = []
        for r_index, region in enumerate(finding.regions):
            where = f"finding {f_index} region {r_index}"
            ds = by_uid.get(region.image.sop_instance_uid)
            if ds is None:
                raise SourceError(f"{where}: its image is not among the source headers given")
            if ds.SOPClassUID != region.image.sop_class_uid:
                raise SourceError(f"{where}: SOP Class UID differs from the source image's")
            _check_frame(region.image, ds, where)
            size = _image_size(ds, where)
            uid = region_tracking_uid(finding, r_index)
            clipped = region.box.clip(*size)
            if clipped != region.box:
                note = RegionNote(
                    finding_index=f_index,
                    region_index=r_index,
                    tracking_uid=uid,
                    sop_instance_uid=region.image.sop_instance_uid,
                    frame_number=region.image.frame_number,
                    action=RegionAction.CLIPPED if clipped is not None else RegionAction.DROPPED,
                    original=region.box,
                    clipped=clipped,
                    image_size=size,
                )
                notes.append(note)
                logger.info("region %s", note.describe())
            if clipped is not None:
                regions.append(
                    PlannedRegion(r_index, uid, region.image, clipped, clipped != region.box)
                )
        planned.append(PlannedFinding(f_index, finding, codes.coding_for(finding), tuple(regions)))
    return tuple(planned), tuple(notes)


def language_item(language: str) -> hd.sr.LanguageOfContentItemAndDescendants:
    """TID 1204 "Language of Content Item and Descendants" for a BCP-47 tag (RFC 5646)."""
    if language not in LANGUAGE_NAMES:
        raise ValueError(
            f"language: unsupported tag {language!r}; supported: {', '.join(LANGUAGE_NAMES)}"
        )
    return hd.sr.LanguageOfContentItemAndDescendants(
        hd.sr.CodedConcept(
            value=language, scheme_designator="RFC5646", meaning=LANGUAGE_NAMES[language]
        )
    )


def comment_item(text: str) -> hd.sr.TextContentItem:
    """TEXT (DCM 121106 "Comment"), CONTAINS: the grounded sentence in a measurement group.

    TEXT is UT (up to 2**32-2 bytes): the sentence is kept whole.
    """
    return hd.sr.TextContentItem(
        name=codes.to_hd(codes.COMMENT),
        value=text,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )


def impression_item(impression: str) -> hd.sr.TextContentItem:
    """TEXT (DCM 121073 "Impression"), CONTAINS (TID 1500 row 14)."""
    return hd.sr.TextContentItem(
        name=codes.to_hd(codes.IMPRESSION),
        value=impression,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )


def report_qualitative_evaluations(impression: str) -> hd.sr.ContainerContentItem:
    """TID 1500 row 12 CONTAINER "Qualitative Evaluations" holding the impression (row 14 TEXT)."""
    container = hd.sr.ContainerContentItem(
        name=codes.to_hd(codes.QUALITATIVE_EVALUATIONS),
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    # (highdicom annotates ContentItem.__setattr__ too narrowly: it wraps a list)
    container.ContentSequence = [impression_item(impression)]  # type: ignore[assignment]
    return container


def in_language(item: hd.sr.TextContentItem, language: str) -> hd.sr.TextContentItem:
    """``item`` with a TID 1204 "Language of Content Item and Descendants" modifier
    (HAS CONCEPT MOD child): a text in another language than the document's."""
    # (highdicom annotates ContentItem.__setattr__ too narrowly: it wraps a list)
    item.ContentSequence = list(language_item(language))  # type: ignore[assignment]
    return item
