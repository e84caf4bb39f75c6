"""GroundedReport → DICOM Comprehensive 3D SR, TID 1500 Measurement Report (IHE AI Results).

One SR document per language (default), sharing tracking UIDs across
languages and with the GSPS and FHIR copies of each finding. Content tree
(PS3.16 TID 1500):

* TID 1204 language of the document (RFC 5646 tag), observer context (device
  = the model version, Device UID = ``ModelInfo.device_uid``), Procedure
  Reported = the *imaging* procedure (default SCT 363679005 "Imaging
  procedure", CID 100);
* Imaging Measurements: per region of a finding one TID 1410 planar ROI
  group: Tracking Identifier (label + finding number) and Tracking UID
  (:func:`exporters.sr_content.region_tracking_uid`), Finding (coded via
  :mod:`exporters.codes`), Finding Site, Image Region SCOORD — a closed
  5-point POLYLINE in source pixel coordinates (clipped to the image) on the
  exact source SOP instance and frame —, TID 4019 algorithm identification,
  Certainty of Finding (percent) only when the model gave a confidence,
  presence as a qualitative evaluation and the grounded sentence as TEXT
  "Comment". Findings without (remaining) regions become TID 1501 groups with
  the same items but no SCOORD;
* Qualitative Evaluations (TID 1500 row 12): the impression as TEXT.

Document level: Specific Character Set ISO_IR 192 always, Verification Flag
UNVERIFIED, Preliminary Flag PRELIMINARY, Completion Flag COMPLETE, a new
series per language ("AI findings (unverified) – EN"), evidence references
to all source images, patient/study modules copied from the first source,
Contributing Equipment "Processing Equipment" (DCM 109102) with the model's
manufacturer, name, version and Device UID. UIDs come from
:func:`exporters.uids.output_uid`; content, series and contribution dates
and times from the report's ``created_at``, so the same job gives the same
documents (only highdicom's Instance Creation Date/Time stamps differ).

Speed (``bench/exporters.py``): :func:`export_sr` plans and codes the
regions once, builds the language-independent content items once, builds
the first language's tree with highdicom's templates and derives the other
languages' trees from it by replacing only the language-dependent items
(TID 1204 language, Tracking Identifier texts, sentences, impression), and
wraps each tree with :class:`~exporters.sr_document.AssembledComprehensive3DSR`
instead of highdicom's constructor, which would deep-copy, re-parse and
search the whole tree. The tests check that the result equals, byte for
byte, what highdicom's own constructor builds from freshly built items
(``build_sr(..., assemble=False)``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes

from engine.report import CodedConcept, GroundedReport
from exporters import codes
from exporters.errors import ExportError
from exporters.sr_content import (
    PlannedFinding,
    PlannedRegion,
    RegionNote,
    comment_item,
    impression_item,
    in_language,
    language_item,
    plan_findings,
    report_qualitative_evaluations,
)
from exporters.sr_document import AssembledComprehensive3DSR
from exporters.uids import OutputKind, output_uid

__all__ = [
    "DEFAULT_SR_SERIES_NUMBER",
    "SRExport",
    "build_sr",
    "complete_languages",
    "export_sr",
    "series_description",
]

logger = logging.getLogger(__name__)

#: Series Number of the first SR series; each further language adds one.
DEFAULT_SR_SERIES_NUMBER = 9100


def series_description(language: str) -> str:
    """Series Description of the SR series of ``language``, e.g. "AI findings (unverified) – EN"."""
    return f"AI findings (unverified) – {language.upper()}"


@dataclass(frozen=True)
class SRExport:
    """The SR documents of one report and what had to be done to its regions.

    Parameters
    ----------
    documents
        One Comprehensive 3D SR per language, keyed by BCP-47 tag (a
        bilingual document is keyed by its first language). The documents share their language-independent content items (the same
        objects appear in each tree): treat them as read-only, or deep-copy a
        document before changing it.
    notes
        Regions clipped to their image or dropped (no patient data), also logged.
    """

    documents: Mapping[str, hd.sr.Comprehensive3DSR]
    notes: tuple[RegionNote, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "documents", MappingProxyType(dict(self.documents)))


def _algorithm_id(report: GroundedReport) -> hd.sr.AlgorithmIdentification:
    # The manufacturer is in Contributing Equipment and the device observer context;
    # TID 4019's newer "Algorithm Manufacturer" row is left out (PixelMed's 2022 tables warn on it).
    return hd.sr.AlgorithmIdentification(name=report.model.name, version=report.model.version)


def _observation_context(report: GroundedReport) -> hd.sr.ObservationContext:
    model = report.model
    return hd.sr.ObservationContext(
        observer_person_context=None,
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
class _Parts:
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
) -> _Parts:
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
    return _Parts(
        codes.to_hd(planned.coding.finding_type),
        sites,
        algorithm_id,
        measurements,
        evaluations,
        image_region,
    )


def _all_parts(report: GroundedReport, plan: Sequence[PlannedFinding]) -> list[tuple]:
    """(planned finding, planned region or None, parts) for every group, in document order."""
    algorithm_id = _algorithm_id(report)
    items: list[tuple] = []
    for planned in plan:
        for region in planned.regions or (None,):
            items.append((planned, region, _parts(planned, region, algorithm_id)))
    return items


def _safe_parts(report: GroundedReport, plan: Sequence[PlannedFinding]) -> list[tuple]:
    try:
        return _all_parts(report, plan)
    except (ValueError, TypeError) as exc:  # highdicom refuses non-conformant values
        raise ExportError(f"the SR content could not be built: {exc}") from exc


def _group(planned: PlannedFinding, region: PlannedRegion | None, language: str, parts: _Parts):
    """TID 1410 (with a region) or TID 1501 (text-only) group in ``language``."""
    common = {
        "tracking_identifier": _tracking(planned, region, language),
        "finding_type": parts.finding_type,
        "finding_sites": parts.finding_sites,
        "algorithm_id": parts.algorithm_id,
        "measurements": parts.measurements,
        "qualitative_evaluations": parts.qualitative_evaluations,
    }
    if parts.image_region is None:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(**common)
    else:
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=parts.image_region, **common
        )
    group[0].ContentSequence.append(comment_item(_sentence(planned, language)))
    return group


def complete_languages(report: GroundedReport) -> tuple[str, ...]:
    """The report's languages in which every text (labels, sentences, impression) exists.

    A language some texts lack is left out (and logged): its SR would mix
    languages under one TID 1204 declaration.
    """
    complete = tuple(
        language
        for language in report.languages
        if language in report.impression
        and all(language in f.label and language in f.description for f in report.findings)
    )
    for language in report.languages:
        if language not in complete:
            logger.warning(
                "language %s is missing from some texts of the report: no SR in it", language
            )
    return complete


def _check_language(report: GroundedReport, language: str) -> None:
    missing = [
        n
        for n, f in enumerate(report.findings)
        if language not in f.label or language not in f.description
    ]
    if language not in report.impression:
        missing.append("impression")
    if missing:
        raise ExportError(
            f"language {language!r} is missing from the report's texts ({missing[:5]})"
        )


def build_sr(
    report: GroundedReport,
    sources: Sequence[Dataset],
    *,
    language: str,
    revision: int,
    series_number: int = DEFAULT_SR_SERIES_NUMBER,
    instance_number: int = 1,
    institution_name: str | None = None,
    procedure_reported: Sequence[CodedConcept] = (codes.IMAGING_PROCEDURE,),
    assemble: bool = True,
    _parts: list[tuple] | None = None,
) -> hd.sr.Comprehensive3DSR:
    """One Comprehensive 3D SR (TID 1500) with the report's findings in ``language``.

    Parameters
    ----------
    report
        The grounded report.
    sources
        Headers of the source images (pydicom datasets, pixel data not needed)
        of the report's study; every region's image must be among them. The
        first gives the patient and study modules; all are listed as evidence.
    language
        BCP-47 tag of the document's language; every text of the report must
        have it (otherwise :class:`ExportError`).
    revision
        Study revision (goes into the deterministic UIDs).
    series_number, instance_number
        Series Number (0020,0011) and Instance Number (0020,0013).
    institution_name
        Institution Name (0008,0080) of the node, if configured.
    procedure_reported
        TID 1500 row 4 "Procedure reported" codes (CID 100): the imaging
        procedure, never the algorithm.
    assemble
        ``True`` (default): wrap the content tree with
        :class:`~exporters.sr_document.AssembledComprehensive3DSR` (no copy and
        re-parse of the tree); ``False``: highdicom's own
        :class:`~highdicom.sr.Comprehensive3DSR` constructor. Both give the
        same dataset.

    Raises
    ------
    SourceError
        The sources do not fit the report (see :func:`~exporters.sr_content.plan_findings`).
    ExportError
        The report cannot be expressed in ``language``, or has no findings.
    """
    _check_language(report, language)
    if _parts is None:
        _parts = _safe_parts(report, plan_findings(report, sources)[0])
    if not _parts:
        raise ExportError("report has no findings: nothing to put in an SR")
    try:
        content = _content(report, language, _parts, procedure_reported)
        return _document(
            report,
            sources,
            content,
            language=language,
            revision=revision,
            parts=_parts,
            series_number=series_number,
            instance_number=instance_number,
            institution_name=institution_name,
            assemble=assemble,
        )
    except (ValueError, TypeError) as exc:  # highdicom refuses non-conformant values
        raise ExportError(f"the SR could not be built: {exc}") from exc


def _content(
    report: GroundedReport,
    language: str,
    parts: list[tuple],
    procedure_reported: Sequence[CodedConcept],
) -> hd.sr.MeasurementReport:
    """The TID 1500 tree in ``language``, built with highdicom's templates."""
    groups = [_group(planned, region, language, shared) for planned, region, shared in parts]
    content = hd.sr.MeasurementReport(
        observation_context=_observation_context(report),
        procedure_reported=[codes.to_hd(c) for c in procedure_reported],
        imaging_measurements=groups,
        language_of_content_item_and_descendants=language_item(language),
    )
    content[0].ContentSequence.append(report_qualitative_evaluations(report.impression[language]))
    return content


def _document(
    report: GroundedReport,
    sources: Sequence[Dataset],
    content: hd.sr.MeasurementReport,
    *,
    language: str,
    revision: int,
    parts: list[tuple],
    series_number: int,
    instance_number: int,
    institution_name: str | None,
    assemble: bool,
) -> hd.sr.Comprehensive3DSR:
    """The SR document around ``content`` (document-level modules, UIDs, equipment).

    ``language`` is the document's language tag, or the tags joined by ``+``
    for a bilingual document: it goes into the UIDs and the Series Description.
    """
    uses_private = any(
        p.coding.finding_type.scheme_designator == codes.PRIVATE_SCHEME for p, _, _ in parts
    )
    created: datetime = report.created_at
    equipment = hd.ContributingEquipment(
        manufacturer=report.model.manufacturer,
        purpose_of_reference=codes.to_hd(codes.PROCESSING_EQUIPMENT),
        manufacturer_model_name=report.model.name,
        software_versions=report.model.version,
        contribution_datetime=created,
        contribution_description="AI findings generated by a region-aware model",
    )
    equipment.DeviceUID = (
        report.model.device_uid
    )  # Device UID (0018,1002): highdicom has no argument for it
    document = AssembledComprehensive3DSR if assemble else hd.sr.Comprehensive3DSR
    return document(
        evidence=list(sources),
        content=content,
        series_instance_uid=output_uid(
            report, revision=revision, kind=OutputKind.SR, language=language, role="series"
        ),
        series_number=series_number,
        sop_instance_uid=output_uid(
            report, revision=revision, kind=OutputKind.SR, language=language, role="instance"
        ),
        instance_number=instance_number,
        manufacturer=report.model.manufacturer,
        manufacturer_model_name=report.model.name,
        software_versions=report.model.version,
        is_complete=True,
        is_final=False,
        is_verified=False,
        institution_name=institution_name,
        contributing_equipment=[equipment],
        specific_character_set="ISO_IR 192",
        series_description=series_description(language),
        content_date=created.date(),
        content_time=created.time().replace(tzinfo=None),
        series_date=created.date(),
        series_time=created.time().replace(tzinfo=None),
        coding_schemes=[codes.private_coding_scheme()] if uses_private else None,
    )


def export_sr(
    report: GroundedReport,
    sources: Sequence[Dataset],
    *,
    revision: int,
    languages: Sequence[str] | None = None,
    series_number: int = DEFAULT_SR_SERIES_NUMBER,
    institution_name: str | None = None,
    procedure_reported: Sequence[CodedConcept] = (codes.IMAGING_PROCEDURE,),
    bilingual: bool = False,
) -> SRExport:
    """One SR per language (default: :func:`complete_languages`), plus region notes.

    The regions are checked, clipped and coded once, and their
    language-independent content items (image regions, codes, measurements,
    evaluations, algorithm identification) are built once and shared by the
    documents of all languages; language *i* gets Series Number
    ``series_number + i``.

    With ``bilingual=True`` (and several languages) one document holds them
    all instead: its language (TID 1204 at the root) is the first one; each
    measurement group and the impression carry one TEXT per language, the
    others marked with their own TID 1204 "Language of Content Item and
    Descendants" modifier (PS3.16 TID 1204 applies to a content item and its
    descendants). Tracking Identifiers are in the first language. The
    document is returned under the first language's tag, with Series
    Description "AI findings (unverified) – EN+ZH-CN" and UIDs derived from
    all its languages.
    """
    langs = tuple(languages) if languages is not None else complete_languages(report)
    if not langs:
        raise ExportError("no language has every text of the report: nothing to put in an SR")
    for language in langs:
        _check_language(report, language)
    plan, notes = plan_findings(report, sources)
    parts = _safe_parts(report, plan)
    if not parts:
        raise ExportError("report has no findings: nothing to put in an SR")
    documents: dict[str, hd.sr.Comprehensive3DSR] = {}
    first: hd.sr.MeasurementReport | None = None
    try:
        if bilingual and len(langs) > 1:
            content = _content(report, langs[0], parts, procedure_reported)
            _add_translations(content, report, langs[1:], parts)
            documents[langs[0]] = _document(
                report,
                sources,
                content,
                language="+".join(langs),
                revision=revision,
                parts=parts,
                series_number=series_number,
                instance_number=1,
                institution_name=institution_name,
                assemble=True,
            )
            return SRExport(documents=documents, notes=notes)
        for i, language in enumerate(langs):
            if first is None:
                content = first = _content(report, language, parts, procedure_reported)
            else:
                content = _translated_content(first, report, language, parts)
            documents[language] = _document(
                report,
                sources,
                content,
                language=language,
                revision=revision,
                parts=parts,
                series_number=series_number + i,
                instance_number=1,
                institution_name=institution_name,
                assemble=True,
            )
    except (ValueError, TypeError) as exc:  # highdicom refuses non-conformant values
        raise ExportError(f"the SR could not be built: {exc}") from exc
    return SRExport(documents=documents, notes=notes)


def _add_translations(
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


def _translated_content(
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
        group.ContentSequence = [
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
    measurements.ContentSequence = groups
    new_root = hd.sr.ContainerContentItem(name=root.name, template_id="1500")
    new_root.ContentSequence = [
        *language_item(language),
        *root_items[1:-2],
        measurements,
        report_qualitative_evaluations(report.impression[language]),
    ]
    # the tree has the shape MeasurementReport builds; give it that type as
    # highdicom's own MeasurementReport.from_sequence does (without its copy)
    tree = hd.sr.ContentSequence([new_root], is_root=True)
    tree.__class__ = hd.sr.MeasurementReport
    return tree
