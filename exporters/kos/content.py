"""Which source images a Key Object Selection lists: the images that carry findings.

A *key image* is a source image (or a set of frames of a multi-frame image)
on which at least one *selected* finding has a region that lies, after
clipping, inside the image — the same regions the SR and the presentation
states draw (:func:`exporters.regions.plan_regions`). By default a finding
is selected when it is an abnormality whose presence is ``present`` or
``indeterminate``: anatomy the model merely located ("right lung") would
otherwise flag every study, which defeats a worklist's "AI-positive" flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from engine.report import FindingKind, GroundedReport, Presence
from exporters.regions import RegionPlan, plan_regions

__all__ = ["DEFAULT_PRESENCES", "KeyImage", "select_key_images"]

#: Presence values of the findings that make an image a key image by default.
DEFAULT_PRESENCES: frozenset[Presence] = frozenset({Presence.PRESENT, Presence.INDETERMINATE})


@dataclass(frozen=True)
class KeyImage:
    """One selected source image.

    Parameters
    ----------
    sop_instance_uid
        Referenced SOP Instance UID (0008,1155) of the source image.
    sop_class_uid
        Referenced SOP Class UID (0008,1150) of the source image.
    frame_numbers
        Referenced Frame Number (0008,1160) values (1-based, ascending) of a
        multi-frame image, or ``()`` for the whole (single-frame) image.
    tracking_uids
        Tracking UIDs of the findings that put this image in the selection, in
        report order (shared with the SR, GSPS and FHIR copies).
    """

    sop_instance_uid: str
    sop_class_uid: str
    frame_numbers: tuple[int, ...]
    tracking_uids: tuple[str, ...]


def select_key_images(
    report: GroundedReport,
    sources: Sequence[Dataset],
    *,
    include_anatomy: bool = False,
    presences: frozenset[Presence] = DEFAULT_PRESENCES,
    plan: RegionPlan | None = None,
) -> tuple[KeyImage, ...]:
    """The images of ``sources`` that carry selected findings, in first-use order.

    Parameters
    ----------
    report
        The grounded report.
    sources
        Headers of the report's source images; every region's image must be
        among them.
    include_anatomy
        Also select findings of kind ``anatomy`` (default: abnormalities only).
    presences
        Presence values a finding must have to be selected.
    plan
        The job's region plan (:func:`exporters.regions.plan_regions`); made
        here if omitted.

    Returns
    -------
    tuple[KeyImage, ...]
        Empty when no selected finding has a region inside its image.

    Raises
    ------
    exporters.errors.SourceError
        A region names an image that is not among ``sources``, a frame the
        image lacks, or another SOP class than the source's.
    """
    planned = (plan or plan_regions(report, sources)).findings
    frames: dict[tuple[str, str], set[int] | None] = {}
    tracking: dict[tuple[str, str], list[str]] = {}
    for item in planned:
        finding = item.finding
        if finding.presence not in presences:
            continue
        if finding.kind is FindingKind.ANATOMY and not include_anatomy:
            continue
        for region in item.regions:
            key = (region.image.sop_instance_uid, region.image.sop_class_uid)
            uids = tracking.setdefault(key, [])
            if finding.tracking_uid not in uids:
                uids.append(finding.tracking_uid)
            if region.image.frame_number is None:
                frames[key] = None  # the whole image
            elif key not in frames:
                frames[key] = {region.image.frame_number}
            elif frames[key] is not None:
                frames[key].add(region.image.frame_number)  # type: ignore[union-attr]
    return tuple(
        KeyImage(
            sop_instance_uid=uid,
            sop_class_uid=sop_class,
            frame_numbers=tuple(sorted(frames[(uid, sop_class)] or ())),
            tracking_uids=tuple(tracking[(uid, sop_class)]),
        )
        for uid, sop_class in frames
    )
