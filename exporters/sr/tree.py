"""The TID 1500 content tree of RadGround's SR documents, built once and shared across languages.

* :func:`shared_items`: per measurement group, the language-independent
  highdicom content items (finding type, site, algorithm identification,
  certainty, presence, image region), built once for all languages;
* :func:`content_tree`: the tree in one language, built with highdicom's
  templates (``MeasurementReport``, TID 1410/1501 groups) from those items,
  plus the grounded sentence per group and the impression
  (:mod:`exporters.sr.content`);
* :func:`translated_tree`: the tree of another language derived from a built
  one by replacing only its language-dependent items (TID 1204 language,
  Tracking Identifier texts, sentences, impression) — the rest is shared;
* :func:`add_translations`: the other languages' sentences and impression
  added to a tree, each marked with its own TID 1204 language (the optional
  bilingual document).

The tests check that documents built this way equal, byte for byte, what
highdicom's own constructor builds from freshly built items.

Signed documents (a radiologist's :class:`~exporters.protocol.SignOff`)
-----------------------------------------------------------------------
The radiologist appears as a TID 1002 *person* observer (name as PN, account as
login name, organisation, roles "Physician" and "Verifying"), built by :func:`person_observer`:

* at document level, in TID 1001 beside the model's device observer, which stays
  (the algorithm made the findings; the person verified the whole document);
* inside the measurement group of each finding the radiologist changed or added
  (:attr:`SignOff.edited`), as HAS OBS CONTEXT items right after the Tracking
  Identifier and Tracking UID. PS3.3 C.17.5 lets observation context change at any
  node of the tree for that node's descendants, and TID 1500's measurement group
  templates are extensible; this is the attribution that survives when a reader
  pulls one group out of the document (an IHE AIR consumer listing findings), which
  a document-level person observer alone would not give. dciodvfy, dsrdump and
  PixelMed's TID 1500 check accept it (see the tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes

from engine.report import CodedConcept, GroundedReport
from exporters import codes
from exporters.errors import ExportError
from exporters.protocol import Verifier
from exporters.regions import PlannedFinding, PlannedRegion
from exporters.sr.content import (
    comment_item,
    impression_item,
    in_language,
    language_item,
    report_qualitative_evaluations,
)

__all__ = [
    "SharedItems",
    "add_translations",
    "content_tree",
    "person_observer",
    "shared_items",
    "translated_tree",
]


def _algorithm_id(report: GroundedReport) -> hd.sr.AlgorithmIdentification:
    # The manufacturer is in Contributing Equipment and the device observer context;
    # TID 4019's newer "Algorithm Manufacturer" row is left out (PixelMed's 2022 tables warn on it).
    # What the model reports and what it does not ("not reported by this model: ...") go in
    # as TID 4019 Algorithm Parameters (111002, DCM), one TEXT each.
    return hd.sr.AlgorithmIdentification(
        name=report.model.name,
        version=report.model.version,
        parameters=list(report.model.parameters) or None,
    )


#: CID 7452 "Organizational Roles": DCM 121081 "Physician" (the code PixelMed's
#: tables and older readers know; CID 7452 has no radiologist of its own).
PHYSICIAN = hd.sr.CodedConcept("121081", "DCM", "Physician")
#: CID 7453 "Performing Roles": DCM 121098 "Verifying".
VERIFYING = hd.sr.CodedConcept("121098", "DCM", "Verifying")


def person_observer(verifier: Verifier, person_name: str) -> hd.sr.ObserverContext:
    """TID 1002 person observer context of the verifying radiologist: Person Observer
    Name (``person_name``, a DICOM PN), Login Name (the account), Organization Name (when
    the account has one), Role in the Organization "Physician" (CID 7452) and Role in this
    Procedure "Verifying" (CID 7453)."""
    return hd.sr.ObserverContext(
        observer_type=dcm_codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name=person_name,
            login_name=verifier.identifier,
            organization_name=verifier.organisation.strip() or None,
            role_in_organization=PHYSICIAN,
            role_in_procedure=VERIFYING,
        ),
    )


def _observation_context(
    report: GroundedReport, person: hd.sr.ObserverContext | None = None
) -> hd.sr.ObservationContext:
    model = report.model
    return hd.sr.ObservationContext(
        observer_person_context=person,
        observer_device_context=hd.sr.ObserverContext(
            observer_type=dcm_codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=model.device_uid,
                name=model.name,
                manufacturer_name=model.manufacturer,
                model_name=f"{model.name} {model.version}",
            ),
        ),
    )


_LANGUAGE_NAME = hd.sr.CodedConcept("121049", "DCM", "Language of Content Item and Descendants")
_IMAGING_MEASUREMENTS = hd.sr.CodedConcept("126010", "DCM", "Imaging Measurements")
_TRACKING_IDENTIFIER = hd.sr.CodedConcept("112039", "DCM", "Tracking Identifier")
_TRACKING_IDENTIFIER_CONCEPT = CodedConcept("112039", "DCM", "Tracking Identifier")
_MEASUREMENT_GROUP = hd.sr.CodedConcept("125007", "DCM", "Measurement Group")


def _code_value(item: Dataset) -> str:
    """Code Value of a content item's concept name (without building a CodedConcept)."""
    return item.ConceptNameCodeSequence[0].CodeValue


def _tracking_text(planned: PlannedFinding, region: PlannedRegion | None, language: str) -> str:
    """Tracking Identifier: ``F<finding number>[.<region number>] <label in language>``."""
    label = planned.finding.label.get(language) or planned.finding.label.primary
    number = f"F{planned.index + 1}"
    if region is not None and len(planned.finding.regions) > 1:
        number += f".{region.region_index + 1}"
    return f"{number} {label}"


def _sentence(planned: PlannedFinding, language: str) -> str:
    finding = planned.finding
    return finding.description.get(language) or finding.description.primary


def _tracking(
    planned: PlannedFinding, region: PlannedRegion | None, language: str
) -> hd.sr.TrackingIdentifier:
    uid = region.tracking_uid if region is not None else planned.finding.tracking_uid
    return hd.sr.TrackingIdentifier(uid=uid, identifier=_tracking_text(planned, region, language))


@dataclass(frozen=True)
class SharedItems:
    """The language-independent highdicom items of one measurement group, built once
    and shared by the groups of every language (highdicom's templates insert
    these items as they are; nothing modifies them afterwards)."""

    finding_type: hd.sr.CodedConcept
    finding_sites: list | None
    algorithm_id: hd.sr.AlgorithmIdentification
    measurements: list | None
    qualitative_evaluations: list
    image_region: hd.sr.ImageRegion | None


def _parts(
    planned: PlannedFinding,
    region: PlannedRegion | None,
    algorithm_id: hd.sr.AlgorithmIdentification,
) -> SharedItems:
    finding = planned.finding
    site = planned.coding.site
    sites = None
    if site is not None:
        sites = [
            hd.sr.FindingSite(
                anatomic_location=codes.to_hd(site.location),
                laterality=codes.to_hd(site.laterality) if site.laterality is not None else None,
            )
        ]
    measurements = None
    if finding.confidence is not None:
        measurements = [
            hd.sr.Measurement(
                name=codes.to_hd(codes.CERTAINTY_OF_FINDING),
                value=round(finding.confidence * 100.0, 6),
                unit=codes.to_hd(codes.PERCENT),
            )
        ]
    evaluations = [
        hd.sr.QualitativeEvaluation(
            name=codes.to_hd(codes.PRESENCE),
            value=codes.to_hd(codes.PRESENCE_VALUES[finding.presence]),
        )
    ]
    image_region = None
    if region is not None:
        frame = region.image.frame_number
        image_region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=np.array(region.box.polyline(), dtype=np.float64),
            source_image=hd.sr.SourceImageForRegion(
                referenced_sop_class_uid=region.image.sop_class_uid,
                referenced_sop_instance_uid=region.image.sop_instance_uid,
                referenced_frame_numbers=[frame] if frame is not None else None,
            ),
        )
    return SharedItems(
        codes.to_hd(planned.coding.finding_type),
        sites,
        algorithm_id,
        measurements,
        evaluations,
        image_region,
    )


def _build_shared(report: GroundedReport, plan: Sequence[PlannedFinding]) -> list[tuple]:
    """(planned finding, planned region or None, parts) for every group, in document order."""
    algorithm_id = _algorithm_id(report)
    items: list[tuple] = []
    for planned in plan:
        for region in planned.regions or (None,):
            items.append((planned, region, _parts(planned, region, algorithm_id)))
    return items


def shared_items(report: GroundedReport, plan: Sequence[PlannedFinding]) -> list[tuple]:
    """``(planned finding, planned region or None, SharedItems)`` for every measurement
    group, in document order: one per remaining region, one for a finding without any.

    Raises
    ------
    ExportError
        highdicom refused a value (e.g. a code meaning longer than 64 characters).
    """
    try:
        return _build_shared(report, plan)
    except (ValueError, TypeError) as exc:  # highdicom refuses non-conformant values
        raise ExportError(f"the SR content could not be built: {exc}") from exc


_MeasurementGroup = (
    hd.sr.MeasurementsAndQualitativeEvaluations
    | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
)


def _group(
    planned: PlannedFinding,
    region: PlannedRegion | None,
    language: str,
    parts: SharedItems,
    observer: hd.sr.ObserverContext | None = None,
) -> _MeasurementGroup:
    """TID 1410 (with a region) or TID 1501 (text-only) group in ``language``; with
    ``observer``, that person observer context follows the Tracking Identifier and UID."""
    common: dict[str, Any] = {
        "tracking_identifier": _tracking(planned, region, language),
        "finding_type": parts.finding_type,
        "finding_sites": parts.finding_sites,
        "algorithm_id": parts.algorithm_id,
        "measurements": parts.measurements,
        "qualitative_evaluations": parts.qualitative_evaluations,
    }
    group: _MeasurementGroup
    if parts.image_region is None:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(**common)
    else:
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=parts.image_region, **common
        )
    group[0].ContentSequence.append(comment_item(_sentence(planned, language)))
    if observer is not None:
        items = group[0].ContentSequence
        # slice assignment: ContentSequence.__setitem__ takes a single item in highdicom 0.28
        items[2:2] = list(observer)
    return group


def content_tree(
    report: GroundedReport,
    language: str,
    parts: list[tuple],
    procedure_reported: Sequence[CodedConcept],
    *,
    person: hd.sr.ObserverContext | None = None,
    edited: frozenset[str] = frozenset(),
) -> hd.sr.MeasurementReport:
    """The TID 1500 tree in ``language``, built with highdicom's templates.

    ``person`` (see :func:`person_observer`) is the verifying radiologist: a document-level
    observer beside the model's device, and the observer of the groups of the findings whose
    tracking UIDs are in ``edited``.
    """
    if edited and person is None:
        raise ValueError("edited findings need the person observer who edited them")
    groups = [
        _group(
            planned,
            region,
            language,
            shared,
            person if planned.finding.tracking_uid in edited else None,
        )
        for planned, region, shared in parts
    ]
    content = hd.sr.MeasurementReport(
        observation_context=_observation_context(report, person),
        procedure_reported=[codes.to_hd(c) for c in procedure_reported],
        imaging_measurements=groups,
        language_of_content_item_and_descendants=language_item(language),
    )
    content[0].ContentSequence.append(report_qualitative_evaluations(report.impression[language]))
    return content


def add_translations(
    content: hd.sr.MeasurementReport,
    report: GroundedReport,
    languages: Sequence[str],
    parts: list[tuple],
) -> None:
    """Add each group's sentence and the impression in ``languages`` to ``content``,
    each TEXT marked with its TID 1204 language (bilingual documents)."""
    items = list(content[0].ContentSequence)
    measurements, evaluations = items[-2], items[-1]
    for group, (planned, _, _) in zip(measurements.ContentSequence, parts, strict=True):
        for language in languages:
            group.ContentSequence.append(
                in_language(comment_item(_sentence(planned, language)), language)
            )
    for language in languages:
        evaluations.ContentSequence.append(
            in_language(impression_item(report.impression[language]), language)
        )


def translated_tree(
    built: hd.sr.MeasurementReport, report: GroundedReport, language: str, parts: list[tuple]
) -> hd.sr.MeasurementReport:
    """The content tree ``built`` (by highdicom's templates, in another language) with its
    language-dependent items replaced: TID 1204 language, each group's Tracking
    Identifier TEXT and Comment TEXT, the impression. Every other content item is
    shared with ``built``: the items of the two trees are the same objects, which
    is valid because nothing modifies them after construction."""
    root = built[0]
    root_items = list(root.ContentSequence)
    language_old, measurements_old, evaluations_old = root_items[0], root_items[-2], root_items[-1]
    if (
        _code_value(language_old) != _LANGUAGE_NAME.value
        or _code_value(measurements_old) != _IMAGING_MEASUREMENTS.value
        or _code_value(evaluations_old) != codes.QUALITATIVE_EVALUATIONS.value
    ):
        raise ExportError("unexpected TID 1500 layout: cannot translate the content tree")
    tracking_name = codes.to_hd(_TRACKING_IDENTIFIER_CONCEPT)
    groups = []
    for group_old, (planned, region, shared) in zip(
        measurements_old.ContentSequence, parts, strict=True
    ):
        items = list(group_old.ContentSequence)
        if (
            _code_value(items[0]) != _TRACKING_IDENTIFIER.value
            or _code_value(items[-1]) != codes.COMMENT.value
        ):
            raise ExportError(
                "unexpected measurement group layout: cannot translate the content tree"
            )
        group = hd.sr.ContainerContentItem(
            name=_MEASUREMENT_GROUP,
            template_id="1501" if shared.image_region is None else "1410",
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        # (ContentItem wraps the list in a ContentSequence, which checks each item)
        # (highdicom annotates ContentItem.__setattr__ too narrowly: it wraps a list)
        group.ContentSequence = [  # type: ignore[assignment]
            hd.sr.TextContentItem(
                name=tracking_name,
                value=_tracking_text(planned, region, language),
                relationship_type=hd.sr.RelationshipTypeValues.HAS_OBS_CONTEXT,
            ),
            *items[1:-1],
            comment_item(_sentence(planned, language)),
        ]
        groups.append(group)
    measurements = hd.sr.ContainerContentItem(
        name=_IMAGING_MEASUREMENTS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    # (highdicom annotates ContentItem.__setattr__ too narrowly: it wraps a list)
    measurements.ContentSequence = groups  # type: ignore[assignment]
    new_root = hd.sr.ContainerContentItem(name=root.name, template_id="1500")
    # (highdicom annotates ContentItem.__setattr__ too narrowly: it wraps a list)
    new_root.ContentSequence = [  # type: ignore[assignment]
        *language_item(language),
        *root_items[1:-2],
        measurements,
        report_qualitative_evaluations(report.impression[language]),
    ]
    # the tree has the shape MeasurementReport builds; give it that type as
    # highdicom's own MeasurementReport.from_sequence does (without its copy)
    tree = hd.sr.ContentSequence([new_root], is_root=True)
    tree.__class__ = hd.sr.MeasurementReport
    return cast(hd.sr.MeasurementReport, tree)
