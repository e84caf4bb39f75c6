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
  (:func:`exporters.regions.region_tracking_uid`), Finding (coded via
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

Signed documents: with a radiologist's :class:`~exporters.protocol.SignOff` the
report given is the reviewed one, and each document is VERIFIED (Verifying
Observer Sequence: the verifier's name as PN, organisation, account as
identification code, the time of signing), FINAL and COMPLETE, names in its
Predecessor Documents Sequence the unverified SR of its language it replaces,
has the radiologist as a person observer (document level, and in the groups of
the findings they changed or added; see :mod:`exporters.sr.tree`), new UIDs
derived with the sign-off number and the Series Description "AI findings
(verified by radiologist) – EN".

Speed (``bench/exporters.py``): :func:`export_sr` plans and codes the
regions once, builds the language-independent content items once, builds
the first language's tree with highdicom's templates and derives the other
languages' trees from it by replacing only the language-dependent items
(TID 1204 language, Tracking Identifier texts, sentences, impression; see
:mod:`exporters.sr.tree`), and wraps each tree with
:class:`~exporters.sr.document.AssembledComprehensive3DSR` instead of highdicom's
constructor, which would deep-copy, re-parse and search the whole tree. The tests
check that the result equals, byte for byte, what highdicom's own constructor
builds from freshly built items
(``build_sr(..., assemble=False)``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

import highdicom as hd
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset

from engine.report import (
    CodedConcept,
    Finding,
    FindingKind,
    GroundedReport,
    Presence,
    Text,
    derive_uid,
)
from exporters import codes
from exporters._highdicom_cache import with_memoised_iod_lookups
from exporters.errors import ExportError
from exporters.protocol import OutputKind, PredecessorDocument, SignOff
from exporters.regions import RegionNote, RegionPlan, plan_findings, plan_regions
from exporters.signoff import dicom_person_name, signoff_number
from exporters.sr import tree as sr_tree
from exporters.sr.document import AssembledComprehensive3DSR, Verification, mark_verified
from exporters.uids import output_uid

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


#: Coding Scheme Designator of the verifier's account in the Verifying Observer
#: Identification Code Sequence (a local scheme, PS3.3 §8.1: "99" prefix); its Coding
#: Scheme Name is the account's identifier system (``urn:radground:<AE>:account``).
ACCOUNT_SCHEME = "99RGACCOUNT"
#: Verifying Organization (type 1) when the verifier's account names no organisation.
UNKNOWN_ORGANIZATION = "Organisation not recorded"


def series_description(language: str, *, verified: bool = False) -> str:
    """Series Description of the SR series of ``language``, e.g. "AI findings (unverified) – EN",
    or "AI findings (verified by radiologist) – EN" for a signed document."""
    state = "verified by radiologist" if verified else "unverified"
    return f"AI findings ({state}) – {language.upper()}"


def _verification(sign_off: SignOff) -> Verification:
    verifier = sign_off.verifier
    name = dicom_person_name(verifier.name)
    return Verification(
        verifying_observer_name=name,
        verifying_organization=(verifier.organisation.strip() or UNKNOWN_ORGANIZATION)[:64],
        verification_datetime=sign_off.verified_at,
        verifying_observer_identification=hd.sr.CodedConcept(
            value=verifier.identifier, scheme_designator=ACCOUNT_SCHEME, meaning=name
        ),
    )


def _account_coding_scheme(sign_off: SignOff) -> CodingSchemeIdentificationItem:
    return CodingSchemeIdentificationItem(
        designator=ACCOUNT_SCHEME, name=sign_off.verifier.identifier_system
    )


def _predecessors(sign_off: SignOff, language: str) -> tuple[PredecessorDocument, ...]:
    """The sign-off's predecessors of a document in ``language`` (``"en+zh-CN"``: bilingual)."""
    languages = set(language.split("+"))
    return tuple(p for p in sign_off.predecessors if p.language in languages)


@dataclass(frozen=True)
class SRExport:
    """The SR documents of one report and what had to be done to its regions.

    Parameters
    ----------
    documents
        One Comprehensive 3D SR per language, keyed by BCP-47 tag (a
        bilingual document is keyed by its first language). The documents share
        their language-independent content items (the same objects appear in
        each tree): treat them as read-only, or deep-copy a document before
        changing it.
    notes
        Regions clipped to their image or dropped (no patient data), also logged.
    """

    documents: Mapping[str, hd.sr.Comprehensive3DSR]
    notes: tuple[RegionNote, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "documents", MappingProxyType(dict(self.documents)))


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
    missing: list[int | str] = [
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
    sign_off: SignOff | None = None,
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
        :class:`~exporters.sr.document.AssembledComprehensive3DSR` (no copy and
        re-parse of the tree); ``False``: highdicom's own
        :class:`~highdicom.sr.Comprehensive3DSR` constructor. Both give the
        same dataset.
    sign_off
        The radiologist's sign-off (``report`` is then the reviewed report): a
        VERIFIED document replacing the sign-off's predecessor in ``language``.

    Raises
    ------
    SourceError
        The sources do not fit the report (see :func:`~exporters.regions.plan_findings`).
    ExportError
        The report cannot be expressed in ``language``, or has no findings.
    """
    _check_language(report, language)
    if _parts is None:
        _parts = sr_tree.shared_items(report, plan_findings(report, sources)[0])
    if not _parts:
        raise ExportError("report has no findings: nothing to put in an SR")
    try:
        content = sr_tree.content_tree(
            report, language, _parts, procedure_reported, **_observers(sign_off)
        )
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
            sign_off=sign_off,
        )
    except (ValueError, TypeError) as exc:  # highdicom refuses non-conformant values
        raise ExportError(f"the SR could not be built: {exc}") from exc


def _observers(sign_off: SignOff | None) -> dict[str, Any]:
    """The person-observer arguments of :func:`exporters.sr.tree.content_tree`."""
    if sign_off is None:
        return {}
    person = sr_tree.person_observer(sign_off.verifier, dicom_person_name(sign_off.verifier.name))
    return {"person": person, "edited": frozenset(sign_off.edited)}


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
    sign_off: SignOff | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The SR document around ``content`` (document-level modules, UIDs, equipment;
    verification and predecessors with ``sign_off``).

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
    signoff = signoff_number(sign_off)
    coding_schemes = [codes.private_coding_scheme()] if uses_private else []
    verified: dict[str, Any] = {}
    if sign_off is not None:
        coding_schemes.append(_account_coding_scheme(sign_off))
        if assemble:
            verified = {
                "is_verified": True,
                "verification": _verification(sign_off),
                "predecessor_documents": _predecessors(sign_off, language),
            }
    document = AssembledComprehensive3DSR if assemble else hd.sr.Comprehensive3DSR
    built = document(
        evidence=list(sources),
        content=content,
        series_instance_uid=output_uid(
            report,
            revision=revision,
            kind=OutputKind.SR,
            language=language,
            role="series",
            signoff=signoff,
        ),
        series_number=series_number,
        sop_instance_uid=output_uid(
            report,
            revision=revision,
            kind=OutputKind.SR,
            language=language,
            role="instance",
            signoff=signoff,
        ),
        instance_number=instance_number,
        manufacturer=report.model.manufacturer,
        manufacturer_model_name=report.model.name,
        software_versions=report.model.version,
        is_complete=True,
        is_final=sign_off is not None,
        institution_name=institution_name,
        contributing_equipment=[equipment],
        specific_character_set="ISO_IR 192",
        series_description=series_description(language, verified=sign_off is not None),
        content_date=created.date(),
        content_time=created.time().replace(tzinfo=None),
        series_date=created.date(),
        series_time=created.time().replace(tzinfo=None),
        coding_schemes=coding_schemes or None,
        **verified,
    )
    if sign_off is not None and not assemble:
        # highdicom's constructor stamps the wall-clock time and no identification code
        mark_verified(built, _verification(sign_off), _predecessors(sign_off, language))
    return built


#: "Finding" with presence "Absent": how a negative report's one measurement group
#: reads (TID 1500 needs at least one group; highdicom enforces it).
_NO_FINDING_LABEL = {
    "en": "Finding",
    "en-US": "Finding",
    "en-GB": "Finding",
    "zh-CN": "异常所见",
    "zh-TW": "異常所見",
    "de": "Befund",
    "fr": "Anomalie",
    "es": "Hallazgo",
}


def _with_negative_finding(report: GroundedReport) -> GroundedReport:
    """A report that found nothing, as one text-only group: finding absent, the
    impression as its sentence, so the SR says explicitly that nothing was found."""
    label = Text(
        {lang: _NO_FINDING_LABEL.get(lang, "Finding") for lang in report.impression.languages}
    )
    negative = Finding(
        kind=FindingKind.ABNORMALITY,
        label=label,
        description=report.impression,
        regions=(),
        tracking_uid=derive_uid(
            report.study_instance_uid, report.model.device_uid, "negative-report"
        ),
        presence=Presence.ABSENT,
    )
    return dataclasses.replace(report, findings=(negative,))


@with_memoised_iod_lookups
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
    plan: RegionPlan | None = None,
    sign_off: SignOff | None = None,
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

    ``plan`` is the job's region plan (:func:`exporters.regions.plan_regions`),
    made here if omitted. A report without findings gets one text-only group
    saying so (its plan has no regions).

    ``sign_off``: the radiologist's sign-off of ``report`` (the reviewed report); each
    document is then VERIFIED and replaces the sign-off's predecessor of its language
    (see the module docstring).
    """
    langs = tuple(languages) if languages is not None else complete_languages(report)
    if not langs:
        raise ExportError("no language has every text of the report: nothing to put in an SR")
    for language in langs:
        _check_language(report, language)
    if not report.findings:
        report = _with_negative_finding(report)
        planned, notes = plan_findings(report, sources)
    else:
        if plan is None:
            plan = plan_regions(report, sources)
        planned, notes = plan.findings, plan.notes
    parts = sr_tree.shared_items(report, planned)
    if not parts:
        raise ExportError("report has no findings: nothing to put in an SR")
    documents: dict[str, hd.sr.Comprehensive3DSR] = {}
    first: hd.sr.MeasurementReport | None = None
    try:
        observers = _observers(sign_off)
        if bilingual and len(langs) > 1:
            content = sr_tree.content_tree(report, langs[0], parts, procedure_reported, **observers)
            sr_tree.add_translations(content, report, langs[1:], parts)
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
                sign_off=sign_off,
            )
            return SRExport(documents=documents, notes=notes)
        for i, language in enumerate(langs):
            if first is None:
                content = first = sr_tree.content_tree(
                    report, language, parts, procedure_reported, **observers
                )
            else:
                content = sr_tree.translated_tree(first, report, language, parts)
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
                sign_off=sign_off,
            )
    except (ValueError, TypeError) as exc:  # highdicom refuses non-conformant values
        raise ExportError(f"the SR could not be built: {exc}") from exc
    return SRExport(documents=documents, notes=notes)
