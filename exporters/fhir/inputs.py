"""What the FHIR exporter reads: the source image headers and our output series.

The source headers (pydicom datasets of the images the report is about) give
the patient, the study and its series; :class:`OutputSeriesRef` values name the
series RadGround itself wrote (SR, GSPS) so that the FHIR ImagingStudy lists
them beside the source series.

DICOM values become FHIR values here, once:

* dates and times (DA, TM, TimezoneOffsetFromUTC) become FHIR ``dateTime``
  strings (FHIR R4 datatypes.html#dateTime: a time needs a timezone, so a time
  with no known offset is dropped and only the date is kept);
* Person Name groups (PS3.5 §6.2.1.1: alphabetic, ideographic, phonetic) are
  decoded by pydicom under the source's Specific Character Set (ISO_IR 100,
  ISO_IR 192, ...) and kept as separate components;
* the patient identifier and its issuer (Patient ID (0010,0020), Issuer of
  Patient ID (0010,0021), Issuer of Patient ID Qualifiers Sequence
  (0010,0024)) become a FHIR ``Identifier`` system and value.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo

from pydicom.dataset import Dataset
from pydicom.valuerep import DA, TM, PersonName

from engine.report import derive_uid
from engine.uids import is_valid_uid

from ..errors import ExportError, SourceError

__all__ = [
    "OutputInstanceRef",
    "OutputSeriesRef",
    "PatientHeader",
    "SeriesHeader",
    "StudyHeader",
    "local_patient_identifier_system",
    "output_series_from_datasets",
    "patient_identifier_system",
    "read_study_header",
]

_log = logging.getLogger(__name__)

_URI_PATTERN = re.compile(r"^(urn:[a-z0-9][a-z0-9-]{0,31}:\S+|https?://\S+)$", re.IGNORECASE)
_OFFSET_PATTERN = re.compile(r"^([+-])(\d{2})(\d{2})$")


@dataclass(frozen=True)
class OutputInstanceRef:
    """One instance RadGround wrote (an SR document, a presentation state).

    Parameters
    ----------
    sop_instance_uid
        SOP Instance UID (0008,0018) of the written object.
    sop_class_uid
        SOP Class UID (0008,0016), e.g. Comprehensive 3D SR ``1.2.840.10008.5.1.4.1.1.88.34``.
    instance_number
        Instance Number (0020,0013), when the object has one.
    """

    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None = None

    def __post_init__(self) -> None:
        _require_uid("sop_instance_uid", self.sop_instance_uid)
        _require_uid("sop_class_uid", self.sop_class_uid)
        _require_count("instance_number", self.instance_number, optional=True)


@dataclass(frozen=True)
class OutputSeriesRef:
    """One series RadGround wrote, for ``ImagingStudy.series``.

    Parameters
    ----------
    series_instance_uid
        Series Instance UID (0020,000E) of the output series.
    modality
        Modality (0008,0060) of the series: ``"SR"`` or ``"PR"``.
    instances
        The instances of the series (at least one).
    series_number
        Series Number (0020,0011), when set.
    series_description
        Series Description (0008,103E), e.g. ``"AI findings (unverified) – EN"``.
    """

    series_instance_uid: str
    modality: str
    instances: tuple[OutputInstanceRef, ...]
    series_number: int | None = None
    series_description: str | None = None

    def __post_init__(self) -> None:
        _require_uid("series_instance_uid", self.series_instance_uid)
        if not isinstance(self.modality, str) or not re.fullmatch(
            r"[A-Z0-9_]{1,16}", self.modality
        ):
            raise ExportError(
                f"OutputSeriesRef.modality must be a DICOM modality like 'SR', "
                f"got {self.modality!r}"
            )
        instances = tuple(self.instances)
        if not instances or not all(isinstance(i, OutputInstanceRef) for i in instances):
            raise ExportError("OutputSeriesRef.instances must hold at least one OutputInstanceRef")
        object.__setattr__(self, "instances", instances)
        _require_count("series_number", self.series_number, optional=True)
        if self.series_description is not None and (
            not isinstance(self.series_description, str) or not self.series_description.strip()
        ):
            raise ExportError(
                "OutputSeriesRef.series_description must be a non-empty string or None, "
                f"got {self.series_description!r}"
            )


@dataclass(frozen=True)
class InstanceHeader:
    """A source instance: SOP Instance UID, SOP Class UID, Instance Number."""

    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None


@dataclass(frozen=True)
class SeriesHeader:
    """A series of the study (source or output) as ``ImagingStudy.series`` needs it."""

    series_instance_uid: str
    modality: str
    series_number: int | None
    description: str | None
    started: str | None
    instances: tuple[InstanceHeader, ...]


@dataclass(frozen=True)
class PatientHeader:
    """The patient as the source headers describe them.

    ``names`` holds the non-empty Person Name component groups as
    ``(representation, PersonName)`` with representation ``"ABC"``
    (alphabetic), ``"IDE"`` (ideographic) or ``"SYL"`` (phonetic).
    """

    identifier_system: str
    identifier_value: str
    names: tuple[tuple[str, PersonName], ...]
    birth_date: date | None
    gender: str | None


@dataclass(frozen=True)
class StudyHeader:
    """The study as the source headers describe it."""

    study_instance_uid: str
    patient: PatientHeader
    started: str | None
    accession_number: str | None
    description: str | None
    series: tuple[SeriesHeader, ...]


def _require_uid(name: str, value: object) -> None:
    if not is_valid_uid(value):
        raise ExportError(f"{name} must be a valid DICOM UID, got {value!r}")


def _require_count(name: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ExportError(
            f"{name} must be a non-negative int{' or None' if optional else ''}, got {value!r}"
        )


def _text(ds: Dataset, keyword: str) -> str | None:
    """A string attribute, stripped; ``None`` when absent or empty (type 2/3)."""
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        _log.warning("ignoring non-integer %s in a source header", keyword)
        return None
    return number if number >= 0 else None


def _timezone(ds: Dataset, default: tzinfo | None) -> tzinfo | None:
    """Timezone Offset From UTC (0008,0201), ``"+HHMM"``/``"-HHMM"``, else ``default``."""
    raw = _text(ds, "TimezoneOffsetFromUTC")
    if raw is None:
        return default
    match = _OFFSET_PATTERN.match(raw)
    if match is None or int(match[2]) > 14 or int(match[3]) > 59:
        _log.warning("ignoring malformed TimezoneOffsetFromUTC in a source header")
        return default
    sign = -1 if match[1] == "-" else 1
    return timezone(sign * timedelta(hours=int(match[2]), minutes=int(match[3])))


def fhir_datetime(
    ds: Dataset, date_keyword: str, time_keyword: str, *, default_timezone: tzinfo | None
) -> str | None:
    """A FHIR ``dateTime`` from a DICOM date and time pair.

    Returns ``None`` without a (valid) date, the date alone (``YYYY-MM-DD``)
    when there is no time or no timezone is known (FHIR requires an offset
    on any value with a time, and RadGround does not guess one), else the
    full date and time with the offset from TimezoneOffsetFromUTC
    (0008,0201) or ``default_timezone``. A partial DICOM time (``HH`` or
    ``HHMM``) is completed with zeros; fractional seconds are kept.
    """
    raw_date = _text(ds, date_keyword)
    if raw_date is None:
        return None
    try:
        day = DA(raw_date)
    except ValueError:
        _log.warning("ignoring malformed %s in a source header", date_keyword)
        return None
    if not isinstance(day, date):
        return None
    plain = date(day.year, day.month, day.day)
    raw_time = _text(ds, time_keyword)
    if raw_time is None:
        return plain.isoformat()
    try:
        moment = TM(raw_time)
    except ValueError:
        _log.warning("ignoring malformed %s in a source header", time_keyword)
        return plain.isoformat()
    zone = _timezone(ds, default_timezone)
    if zone is None:
        return plain.isoformat()
    clock = time(moment.hour, moment.minute, moment.second, moment.microsecond)
    stamp = datetime.combine(plain, clock).replace(tzinfo=zone)
    return stamp.isoformat(timespec="microseconds" if clock.microsecond else "seconds")


def _person_names(ds: Dataset) -> tuple[tuple[str, PersonName], ...]:
    value = ds.get("PatientName")
    if value is None or str(value).strip(" ^=") == "":
        return ()
    name = value if isinstance(value, PersonName) else PersonName(str(value))
    groups = (("ABC", name.alphabetic), ("IDE", name.ideographic), ("SYL", name.phonetic))
    return tuple(
        (representation, PersonName(group))
        for representation, group in groups
        if group and group.strip("^ ")
    )


_GENDER = {"M": "male", "F": "female", "O": "other"}


def _birth_date(ds: Dataset) -> date | None:
    raw = _text(ds, "PatientBirthDate")
    if raw is None:
        return None
    try:
        value = DA(raw)
    except ValueError:
        _log.warning("ignoring malformed PatientBirthDate in a source header")
        return None
    return date(value.year, value.month, value.day) if isinstance(value, date) else None


def _as_system(issuer: str) -> str | None:
    """A FHIR identifier system for an issuer that already is an OID or a URI."""
    if is_valid_uid(issuer):
        return f"urn:oid:{issuer}"
    if _URI_PATTERN.match(issuer):
        return issuer
    return None


#: The namespace of :func:`local_patient_identifier_system`'s UIDs (part of each derivation).
LOCAL_PATIENT_ID_NAMESPACE = "radground-patient-id-namespace"


def local_patient_identifier_system(node: str, issuer: str = "") -> str:
    """The node's own identifier system for Patient IDs it cannot place in a known namespace.

    ``urn:oid:2.25.<n>``: an ISO OID under the UUID arc (ITU-T X.667, PS3.5
    §B.2), derived from the node (its AE title) and the source's Issuer of
    Patient ID text (``""`` when missing). It is stable (every study from the
    same issuer gets the same system, so the EHR's conditional create finds
    the same Patient again), it is never the EHR's own MRN system (a Patient ID
    of unknown origin can create a separate Patient but never be matched to
    another namespace's patient), and two different issuer texts never share
    one. An integrator maps it to the site's assigning authority, or sets
    ``patient_identifier_system`` so it is not used.
    """
    return f"urn:oid:{derive_uid(LOCAL_PATIENT_ID_NAMESPACE, node, issuer)}"


def patient_identifier_system(
    ds: Dataset,
    configured: str | Mapping[str, str] | None,
    *,
    local_node: str | None = None,
) -> str:
    """The ``Identifier.system`` for the source's Patient ID.

    In order: the Issuer of Patient ID Qualifiers Sequence's Universal Entity
    ID when its type is ``ISO`` (an OID) or ``URI``; the Issuer of Patient ID
    itself when it is an OID or a URI; else ``configured``: a mapping from
    the issuer text (``""`` for a missing issuer) to a system URI, or one
    system URI used for every issuer that is not an OID or URI (a site with
    one patient-ID namespace); else, when ``local_node`` is given, the node's
    own system for that issuer (:func:`local_patient_identifier_system`).
    Without any of these the identity of the patient is ambiguous, and
    :class:`SourceError` is raised rather than risk matching another
    namespace's patient in the EHR.
    """
    for item in ds.get("IssuerOfPatientIDQualifiersSequence") or ():
        entity = _text(item, "UniversalEntityID")
        kind = (_text(item, "UniversalEntityIDType") or "").upper()
        if entity and kind == "ISO" and is_valid_uid(entity):
            return f"urn:oid:{entity}"
        if entity and kind == "URI" and _URI_PATTERN.match(entity):
            return entity
    issuer = _text(ds, "IssuerOfPatientID") or ""
    if issuer:
        system = _as_system(issuer)
        if system is not None:
            return system
    if isinstance(configured, Mapping):
        system = configured.get(issuer)
    else:
        system = configured
    if system is None and local_node is not None:
        return local_patient_identifier_system(local_node, issuer)
    if system is None:
        raise SourceError(
            "the source's Issuer of Patient ID is "
            + ("missing" if not issuer else "neither an OID nor a URI")
            + " and no patient_identifier_system is configured for it"
        )
    if not isinstance(system, str) or not _URI_PATTERN.match(system):
        raise ExportError(
            f"patient_identifier_system must be a URI (urn:… or http(s)://…), got {system!r}"
        )
    return system


def read_study_header(
    sources: Sequence[Dataset],
    *,
    study_instance_uid: str,
    patient_identifier_system_config: str | Mapping[str, str] | None,
    default_timezone: tzinfo | None,
    local_node: str | None = None,
) -> StudyHeader:
    """Read patient, study and series from the source headers.

    Raises
    ------
    SourceError
        No sources, a source of another study, sources of different
        patients, an empty Patient ID, or no usable identifier system.
    """
    if not sources:
        raise SourceError("build_fhir_bundle needs at least one source image header")
    for ds in sources:
        if not isinstance(ds, Dataset):
            raise SourceError(f"sources must be pydicom Datasets, got {type(ds).__name__}")
        if _text(ds, "StudyInstanceUID") != study_instance_uid:
            raise SourceError("a source image belongs to another study than the report")
    first = sources[0]
    patient_ids = {_text(ds, "PatientID") for ds in sources}
    if len(patient_ids) != 1:
        raise SourceError("the source images name different Patient IDs")
    patient_id = patient_ids.pop()
    if patient_id is None:
        raise SourceError(
            "the source has an empty Patient ID (0010,0020); the patient cannot be identified"
        )
    patient = PatientHeader(
        identifier_system=patient_identifier_system(
            first, patient_identifier_system_config, local_node=local_node
        ),
        identifier_value=patient_id,
        names=_person_names(first),
        birth_date=_birth_date(first),
        gender=_GENDER.get((_text(first, "PatientSex") or "").upper()),
    )
    by_series: dict[str, list[Dataset]] = {}
    for ds in sources:
        uid = _text(ds, "SeriesInstanceUID")
        if uid is None or not is_valid_uid(uid):
            raise SourceError("a source image has no valid Series Instance UID (0020,000E)")
        by_series.setdefault(uid, []).append(ds)
    series = []
    for uid, datasets in by_series.items():
        instances: dict[str, InstanceHeader] = {}
        for ds in datasets:
            sop_uid, sop_class = _text(ds, "SOPInstanceUID"), _text(ds, "SOPClassUID")
            if not is_valid_uid(sop_uid) or not is_valid_uid(sop_class):
                raise SourceError("a source image has no valid SOP Instance UID or SOP Class UID")
            instances.setdefault(
                sop_uid, InstanceHeader(sop_uid, sop_class, _int(ds, "InstanceNumber"))
            )
        head = datasets[0]
        modality = _text(head, "Modality")
        if modality is None:
            raise SourceError("a source series has no Modality (0008,0060)")
        series.append(
            SeriesHeader(
                series_instance_uid=uid,
                modality=modality,
                series_number=_int(head, "SeriesNumber"),
                description=_text(head, "SeriesDescription"),
                started=fhir_datetime(
                    head, "SeriesDate", "SeriesTime", default_timezone=default_timezone
                ),
                instances=tuple(instances.values()),
            )
        )
    return StudyHeader(
        study_instance_uid=study_instance_uid,
        patient=patient,
        started=fhir_datetime(first, "StudyDate", "StudyTime", default_timezone=default_timezone),
        accession_number=_text(first, "AccessionNumber"),
        description=_text(first, "StudyDescription"),
        series=tuple(series),
    )


def output_series_header(ref: OutputSeriesRef) -> SeriesHeader:
    """An :class:`OutputSeriesRef` as a :class:`SeriesHeader`."""
    return SeriesHeader(
        series_instance_uid=ref.series_instance_uid,
        modality=ref.modality,
        series_number=ref.series_number,
        description=ref.series_description,
        started=None,
        instances=tuple(
            InstanceHeader(i.sop_instance_uid, i.sop_class_uid, i.instance_number)
            for i in ref.instances
        ),
    )


def output_series_from_datasets(datasets: Iterable[Dataset]) -> tuple[OutputSeriesRef, ...]:
    """:class:`OutputSeriesRef` values for objects RadGround wrote (SR documents,
    presentation states), grouped by Series Instance UID in first-seen order.

    Raises
    ------
    ExportError
        An object lacks its series or SOP UIDs or its Modality, or two objects
        of one series disagree on the Modality.
    """
    grouped: dict[str, list[Dataset]] = {}
    for ds in datasets:
        uid = _text(ds, "SeriesInstanceUID")
        if uid is None:
            raise ExportError("an output object has no Series Instance UID")
        grouped.setdefault(uid, []).append(ds)
    refs = []
    for uid, members in grouped.items():
        modalities = {_text(ds, "Modality") for ds in members}
        if len(modalities) != 1 or None in modalities:
            raise ExportError("the objects of an output series must share one Modality")
        instances = tuple(
            OutputInstanceRef(
                sop_instance_uid=_text(ds, "SOPInstanceUID") or "",
                sop_class_uid=_text(ds, "SOPClassUID") or "",
                instance_number=_int(ds, "InstanceNumber"),
            )
            for ds in members
        )
        head = members[0]
        refs.append(
            OutputSeriesRef(
                series_instance_uid=uid,
                modality=modalities.pop(),
                instances=instances,
                series_number=_int(head, "SeriesNumber"),
                series_description=_text(head, "SeriesDescription"),
            )
        )
    return tuple(refs)
