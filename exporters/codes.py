"""Coded concepts for RadGround's outputs: our finding labels → SNOMED CT / DCM codes.

The table (documented in ``exporters/CODES.md``) maps the English names of the
things our models ground (``engine.vocabulary``: Chest ImaGenome structures,
CT/MR organs, MedRegA lesions, NIH ChestX-ray14 classes) to the code that
goes into the DICOM SR "Finding" (DCM 121071) content item and, where it
adds information, a "Finding Site" (SCT 363698007) with laterality (CID 244).
The same codes serve the FHIR ``Observation.code`` / ``bodySite``.

Codes are taken from the DICOM standard's own tables (PS3.16 context groups,
as shipped in pydicom's concept dictionary) where they exist there, otherwise
from SNOMED CT. A private scheme, ``99RADGROUND``, is used only where no
standard concept fits (e.g. the radiographic "cardiac silhouette"), and
labels not in the table fall back to the generic SNOMED CT concepts
"Anatomical Structure" / "Finding" rather than to an invented code. A
finding's own ``concept`` (set by the engine) always wins over the table.

Everything here is built once and cached: highdicom ``CodedConcept`` values
are immutable in use and safe to share between documents.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import highdicom as hd
from highdicom.coding_schemes import CodingSchemeIdentificationItem

from engine.report import CodedConcept, Finding, FindingKind, Presence

__all__ = [
    "CODE_TABLE",
    "PRIVATE_SCHEME",
    "FindingCoding",
    "SiteCode",
    "TableEntry",
    "coding_for",
    "normalize_label",
    "private_coding_scheme",
    "to_hd",
]

#: Coding Scheme Designator of RadGround's private codes (PS3.3 §8.1: "99" prefix).
PRIVATE_SCHEME = "99RADGROUND"


@dataclass(frozen=True)
class SiteCode:
    """A finding site: an anatomic location (CID 4 / 7151) and optional laterality (CID 244)."""

    location: CodedConcept
    laterality: CodedConcept | None = None


@dataclass(frozen=True)
class TableEntry:
    """One row of the code table: the finding type and an optional finding site."""

    finding_type: CodedConcept
    site: SiteCode | None = None


def _sct(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, "SCT", meaning)


def _dcm(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, "DCM", meaning)


def _private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, PRIVATE_SCHEME, meaning)


# -- structures (CID 4 "Anatomic Region" / CID 7151 "Segmentation Property Types") --
LUNG = _sct("39607008", "Lung")
RIGHT_LUNG = _sct("3341006", "Right lung")
LEFT_LUNG = _sct("44029006", "Left lung")
HEART = _sct("80891009", "Heart")
PLEURA = _sct("3120008", "Pleura")
HILUM_OF_LUNG = _sct("46750007", "Hilum of lung")
CLAVICLE = _sct("51299004", "Clavicle")
DIAPHRAGM = _sct("5798000", "Diaphragm")
RIGHT = _sct("24028007", "Right")
LEFT = _sct("7771000", "Left")

#: Generic fallbacks for labels the table does not know (never an invented code).
ANATOMICAL_STRUCTURE = _sct("91723000", "Anatomical Structure")
FINDING = _sct("404684003", "Finding")
MALIGNANT_NEOPLASM = _sct("363346000", "Malignant neoplastic disease")


def _site(location: CodedConcept, laterality: CodedConcept | None = None) -> SiteCode:
    return SiteCode(location, laterality)


_ENTRIES: dict[str, TableEntry] = {
    # Chest ImaGenome structures (MedRegA's grounded chest report)
    "left lung": TableEntry(LEFT_LUNG),
    "right lung": TableEntry(RIGHT_LUNG),
    "mediastinum": TableEntry(_sct("72410000", "Mediastinum")),
    "cardiac silhouette": TableEntry(_private("RG-A0001", "Cardiac silhouette"), _site(HEART)),
    "left hilar structures": TableEntry(HILUM_OF_LUNG, _site(HILUM_OF_LUNG, LEFT)),
    "right hilar structures": TableEntry(HILUM_OF_LUNG, _site(HILUM_OF_LUNG, RIGHT)),
    "left clavicle": TableEntry(CLAVICLE, _site(CLAVICLE, LEFT)),
    "right clavicle": TableEntry(CLAVICLE, _site(CLAVICLE, RIGHT)),
    "left hemidiaphragm": TableEntry(DIAPHRAGM, _site(DIAPHRAGM, LEFT)),
    "right hemidiaphragm": TableEntry(DIAPHRAGM, _site(DIAPHRAGM, RIGHT)),
    "right atrium": TableEntry(_sct("73829009", "Right atrium")),
    "abdomen": TableEntry(_sct("818981001", "Abdomen")),
    # further chest structures our reports name
    "heart": TableEntry(HEART),
    "trachea": TableEntry(_sct("44567001", "Trachea")),
    "spine": TableEntry(_sct("421060004", "Spine")),
    "thoracic spine": TableEntry(_sct("122495006", "Thoracic spine")),
    # CT/MR organs
    "lung": TableEntry(LUNG),
    "liver": TableEntry(_sct("10200004", "Liver")),
    "colon": TableEntry(_sct("71854001", "Colon")),
    "kidney": TableEntry(_sct("64033007", "Kidney")),
    "spleen": TableEntry(_sct("78961009", "Spleen")),
    "pancreas": TableEntry(_sct("15776009", "Pancreas")),
    "brain": TableEntry(_sct("12738006", "Brain")),
    # NIH ChestX-ray14 classes (CID 6102 "Types of Finding for Chest CAD" where listed)
    "atelectasis": TableEntry(_sct("46621007", "Atelectasis"), _site(LUNG)),
    "cardiomegaly": TableEntry(_sct("287272002", "Cardiomegaly"), _site(HEART)),
    "pleural effusion": TableEntry(_sct("60046008", "Pleural effusion"), _site(PLEURA)),
    "infiltrate": TableEntry(_dcm("112121", "Infiltrate"), _site(LUNG)),
    "mass": TableEntry(_sct("4147007", "Mass")),
    "nodule": TableEntry(_sct("27925004", "Nodule")),
    "pneumonia": TableEntry(_sct("233604007", "Pneumonia"), _site(LUNG)),
    "pneumothorax": TableEntry(_sct("36118008", "Pneumothorax")),
    # further chest findings our reports name
    "consolidation": TableEntry(_sct("95436008", "Lung consolidation"), _site(LUNG)),
    "ground glass opacity": TableEntry(_dcm("112120", "Ground glass opacity"), _site(LUNG)),
    "opacity": TableEntry(_dcm("112001", "Opacity")),
    "support device": TableEntry(_sct("49062001", "Device")),
    # MedRegA lesion types: a disorder code where DICOM lists one, otherwise
    # "Malignant neoplastic disease" post-coordinated with the organ as finding site
    "lung cancer": TableEntry(_sct("93880001", "Lung cancer"), _site(LUNG)),
    "pulmonary embolism": TableEntry(_sct("59282003", "Pulmonary embolism")),
    "brain tumor": TableEntry(
        _sct("126952004", "Neoplasm of brain"), _site(_sct("12738006", "Brain"))
    ),
    "ischemic stroke": TableEntry(
        _sct("422504002", "Ischemic stroke"), _site(_sct("12738006", "Brain"))
    ),
    "cerebral hemorrhage": TableEntry(
        _sct("274100004", "Cerebral hemorrhage"), _site(_sct("12738006", "Brain"))
    ),
    "nasopharyngeal carcinoma": TableEntry(
        MALIGNANT_NEOPLASM, _site(_sct("360955006", "Nasopharynx"))
    ),
    "vestibular schwannoma": TableEntry(_private("RG-L0005", "Vestibular schwannoma")),
    "liver cancer": TableEntry(MALIGNANT_NEOPLASM, _site(_sct("10200004", "Liver"))),
    "colon cancer": TableEntry(MALIGNANT_NEOPLASM, _site(_sct("71854001", "Colon"))),
    "kidney cancer": TableEntry(MALIGNANT_NEOPLASM, _site(_sct("64033007", "Kidney"))),
    "pancreas cancer": TableEntry(MALIGNANT_NEOPLASM, _site(_sct("15776009", "Pancreas"))),
    "prostate cancer": TableEntry(MALIGNANT_NEOPLASM, _site(_sct("41216001", "Prostate"))),
}

#: Synonyms (engine.vocabulary writes the canonical names; models and users may not).
_SYNONYMS: dict[str, str] = {
    "effusion": "pleural effusion",
    "infiltration": "infiltrate",
    "left hilum": "left hilar structures",
    "right hilum": "right hilar structures",
    "left hilar structure": "left hilar structures",
    "right hilar structure": "right hilar structures",
    "lungs": "lung",
    "kidneys": "kidney",
    "brain tumour": "brain tumor",
    "ischaemic stroke": "ischemic stroke",
    "cerebral haemorrhage": "cerebral hemorrhage",
    "intracerebral hemorrhage": "cerebral hemorrhage",
    "acoustic neuroma": "vestibular schwannoma",
    "pancreatic cancer": "pancreas cancer",
    "ground glass": "ground glass opacity",
    "ggo": "ground glass opacity",
}

#: The code table, keyed by normalised English label (see :func:`normalize_label`).
CODE_TABLE: Mapping[str, TableEntry] = MappingProxyType(
    {**_ENTRIES, **{k: _ENTRIES[v] for k, v in _SYNONYMS.items()}}
)

# -- fixed concepts of the SR content tree ----------------------------------
#: Qualitative evaluation name for presence and its values (CID 241 plus DCM "Presence
#: Undetermined").
PRESENCE = _dcm("121052", "Presence of property")
PRESENCE_VALUES: Mapping[Presence, CodedConcept] = MappingProxyType(
    {
        Presence.PRESENT: _sct("52101004", "Present"),
        Presence.ABSENT: _sct("272519000", "Absent"),
        Presence.INDETERMINATE: _dcm("121059", "Presence Undetermined"),
    }
)
#: The model's confidence, as in CAD SR (CID 6048): a NUM in percent.
CERTAINTY_OF_FINDING = _dcm("111012", "Certainty of Finding")
PERCENT = CodedConcept("%", "UCUM", "Percent")
#: TEXT content items: the grounded sentence of a finding, the impression.
COMMENT = _dcm("121106", "Comment")
IMPRESSION = _dcm("121073", "Impression")
#: TID 1500 row 12 container for report-level qualitative evaluations.
QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
#: Default Procedure Reported (CID 100): the imaging procedure, not the algorithm.
IMAGING_PROCEDURE = _sct("363679005", "Imaging procedure")
#: Contributing Equipment purpose (CID 7005).
PROCESSING_EQUIPMENT = _dcm("109102", "Processing Equipment")


def normalize_label(label: str) -> str:
    """The form labels are looked up in: NFKC, case-folded, ``_``/``-`` → space, single spaces."""
    folded = unicodedata.normalize("NFKC", label).casefold()
    return " ".join(re.sub(r"[_\-]+", " ", folded).split())


@dataclass(frozen=True)
class FindingCoding:
    """How one finding is coded: finding type, optional site, and where the code came from.

    ``source`` is ``"concept"`` (the finding's own coded concept), ``"table"``
    or ``"generic"`` (label not in the table: generic SNOMED CT concept).
    """

    finding_type: CodedConcept
    site: SiteCode | None
    source: str


def coding_for(finding: Finding) -> FindingCoding:
    """The finding type and site for ``finding`` (its ``concept`` overrides the table).

    The table is looked up by the finding's English label (``"en"``, ``"en-US"``
    or ``"en-GB"``), falling back to its primary label.
    """
    label = finding.label.get("en") or finding.label.get("en-US") or finding.label.get("en-GB")
    entry = CODE_TABLE.get(normalize_label(label or finding.label.primary))
    if finding.concept is not None:
        return FindingCoding(finding.concept, entry.site if entry else None, "concept")
    if entry is not None:
        return FindingCoding(entry.finding_type, entry.site, "table")
    generic = ANATOMICAL_STRUCTURE if finding.kind is FindingKind.ANATOMY else FINDING
    return FindingCoding(generic, None, "generic")


@functools.lru_cache(maxsize=1024)
def to_hd(concept: CodedConcept) -> hd.sr.CodedConcept:
    """The highdicom form of ``concept`` (cached: built once per process)."""
    return hd.sr.CodedConcept(
        value=concept.value,
        scheme_designator=concept.scheme_designator,
        meaning=concept.meaning,
        scheme_version=concept.scheme_version,
    )


@functools.lru_cache(maxsize=1)
def private_coding_scheme() -> CodingSchemeIdentificationItem:
    """Coding Scheme Identification item (PS3.3 C.12.1.1.7) for :data:`PRIVATE_SCHEME`."""
    return CodingSchemeIdentificationItem(
        designator=PRIVATE_SCHEME,
        name="RadGround private codes",
        responsible_organization="RadGround Project",
    )
