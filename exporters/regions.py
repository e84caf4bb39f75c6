"""Region planning: every region of a report checked, clipped and placed once per job.

:func:`plan_regions` is called once per job by the pipeline and its
:class:`RegionPlan` handed to every exporter (SR, presentation states,
Secondary Capture, Key Object Selection), so that they all draw, list and
count the same regions:

* each region is checked against its source image header (the image is
  among the sources, of the same SOP class, the frame exists; a multi-frame
  image needs a frame), its box is clipped to the image (``Box.clip`` with
  the source Columns/Rows) and a box with nothing inside the image is
  dropped; both are recorded as :class:`RegionNote` (no patient data);
* each finding is coded once (:func:`exporters.codes.coding_for`);
* each region gets its tracking UID (:func:`region_tracking_uid`): a finding
  with one region uses the finding's ``tracking_uid``; a finding with several
  gives region *k* (0-based index in ``Finding.regions``) the UID
  ``derive_uid(tracking_uid, "region", k)`` — deterministic and independent of
  clipping, so GSPS graphics and SR measurement groups of one region share it.

Coordinates are in the source image's pixel space (PS3.3 C.10.5.1.2, Graphic
Annotation Units PIXEL; :class:`engine.report.Box`). The plan is
language-independent: every language of every output shares one.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from engine.report import Box, Finding, GroundedReport, ImageRef, derive_uid
from exporters import codes
from exporters.errors import SourceError

__all__ = [
    "OverlayPlan",
    "PlacedRegion",
    "PlannedFinding",
    "PlannedRegion",
    "RegionAction",
    "RegionNote",
    "RegionPlan",
    "plan_findings",
    "plan_regions",
    "region_tracking_uid",
    "source_index",
]

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class PlacedRegion:
    """A region ready to draw: its finding, its image and its clipped box.

    Attributes
    ----------
    finding
        The finding the region belongs to.
    finding_index
        Its 0-based position in the report.
    region_index
        The region's 0-based position in ``finding.regions``.
    tracking_uid
        The region's Tracking UID, the same as the SR's measurement group
        (:func:`region_tracking_uid`: the finding's UID
        when it has one region).
    image
        The exact source image (and frame).
    box
        The box, clipped to the image.
    clipped
        Whether the original box extended past the image.
    columns, rows
        The image's size in pixels.
    """

    finding: Finding
    finding_index: int
    region_index: int
    tracking_uid: str
    image: ImageRef
    box: Box
    clipped: bool
    columns: int
    rows: int


@dataclass(frozen=True)
class OverlayPlan:
    """What will be drawn, and what could not be drawn as given.

    Attributes
    ----------
    regions
        Regions to draw, in report order.
    problems
        One message per clipped or dropped region (finding tracking UIDs are
        hashed, see :func:`engine.uids.short_uid`), for the operator and the audit trail.
    """

    regions: tuple[PlacedRegion, ...]
    problems: tuple[str, ...]


@dataclass(frozen=True)
class RegionPlan:
    """Every region of one report, checked, clipped and placed: made once per job.

    Attributes
    ----------
    findings
        The report's findings in report order, each with its coding and its
        exportable regions (empty: a text-only finding).
    notes
        One note per region that was clipped to its image or dropped.
    overlays
        The same regions as the presentation states and key images draw them
        (with their image size, for labels), and one problem message per note.
    """

    findings: tuple[PlannedFinding, ...]
    notes: tuple[RegionNote, ...]
    overlays: OverlayPlan

    @classmethod
    def empty(cls) -> RegionPlan:
        """A plan with nothing in it (for outputs that draw no regions when planning failed)."""
        return cls((), (), OverlayPlan((), ()))

    @property
    def has_regions(self) -> bool:
        """Whether any finding has a region left to draw."""
        return bool(self.overlays.regions)


def plan_regions(report: GroundedReport, sources: Sequence[Dataset]) -> RegionPlan:
    """The region plan of ``report`` on ``sources`` (see the module docstring).

    Parameters
    ----------
    report
        The grounded report.
    sources
        Headers of the source images (pixel data not needed); every region's
        image must be among them.

    Raises
    ------
    SourceError
        As :func:`plan_findings`.
    """
    findings, notes = plan_findings(report, sources)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    placed = []
    for item in findings:
        for region in item.regions:
            source = by_uid[region.image.sop_instance_uid]
            placed.append(
                PlacedRegion(
                    finding=item.finding,
                    finding_index=item.index,
                    region_index=region.region_index,
                    tracking_uid=region.tracking_uid,
                    image=region.image,
                    box=region.box,
                    clipped=region.was_clipped,
                    columns=int(source.Columns),
                    rows=int(source.Rows),
                )
            )
    problems = tuple(note.describe() for note in notes)
    return RegionPlan(findings, notes, OverlayPlan(tuple(placed), problems))
