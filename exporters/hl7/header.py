"""What the ORU^R01 takes from the source image headers (DICOM → HL7 v2.5.1 values)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName

from exporters.errors import SourceError

__all__ = ["OrderHeader", "PatientHeader", "read_order", "read_patient"]


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = "" if value is None else str(value).strip()
    return text or None


@dataclass(frozen=True)
class PatientHeader:
    """PID values: Patient ID (0010,0020) with Issuer of Patient ID (0010,0021) and the
    Universal Entity ID / Type of its Qualifiers Sequence (0010,0024), the
    alphabetic and ideographic Patient's Name groups (PS3.5 §6.2.1.1), Patient's Birth
    Date (0010,0030) and Patient's Sex (0010,0040)."""

    patient_id: str
    issuer: str | None
    issuer_universal_id: tuple[str, str] | None
    names: tuple[tuple[str, PersonName], ...]
    birth_date: str | None
    sex: str | None


@dataclass(frozen=True)
class OrderHeader:
    """ORC/OBR values: Accession Number (0008,0050), Placer / Filler Order Number
    (0040,2016 / 0040,2017, top level or in the Request Attributes Sequence), the
    procedure (Procedure Code Sequence (0008,1032), Requested Procedure Description
    (0032,1060) or Study Description (0008,1030)) and Study Date/Time."""

    accession_number: str | None
    placer_order_number: str | None
    filler_order_number: str | None
    procedure_code: tuple[str, str, str] | None
    procedure_text: str | None
    study_datetime: str | None


def read_patient(sources: Sequence[Dataset]) -> PatientHeader:
    """The patient as the first source header describes it.

    Raises
    ------
    SourceError
        No sources, or no Patient ID (an ORU without PID-3 cannot be matched).
    """
    if not sources:
        raise SourceError("sources: at least one source image header is needed")
    ds = sources[0]
    patient_id = _text(ds, "PatientID")
    if patient_id is None:
        raise SourceError("sources[0] lacks PatientID: PID-3 cannot be filled")
    names: list[tuple[str, PersonName]] = []
    name = ds.get("PatientName")
    if name:
        name = PersonName(name) if not isinstance(name, PersonName) else name
        for code, group in (("A", name.alphabetic), ("I", name.ideographic)):
            if group:
                names.append((code, PersonName(group)))
    sex = _text(ds, "PatientSex")
    universal = None
    for item in ds.get("IssuerOfPatientIDQualifiersSequence", []):
        entity, kind = _text(item, "UniversalEntityID"), _text(item, "UniversalEntityIDType")
        if entity and kind:
            universal = (entity, kind)  # HL7 table 0301 and DICOM share ISO, DNS, UUID, ...
    return PatientHeader(
        patient_id=patient_id,
        issuer=_text(ds, "IssuerOfPatientID"),
        issuer_universal_id=universal,
        names=tuple(names),
        birth_date=_text(ds, "PatientBirthDate"),
        sex=sex if sex in {"M", "F", "O"} else None,
    )


def _request_value(ds: Dataset, keyword: str) -> str | None:
    value = _text(ds, keyword)
    if value is None:
        for item in ds.get("RequestAttributesSequence", []):
            value = _text(item, keyword)
            if value:
                break
    return value


def read_order(sources: Sequence[Dataset]) -> OrderHeader:
    """The order (imaging service request) the first source header belongs to."""
    ds = sources[0]
    code = None
    procedure = ds.get("ProcedureCodeSequence")
    if procedure:
        item = procedure[0]
        if item.get("CodeValue") and item.get("CodingSchemeDesignator"):
            code = (
                str(item.CodeValue),
                str(item.get("CodeMeaning", "")),
                str(item.CodingSchemeDesignator),
            )
    date, time = _text(ds, "StudyDate"), _text(ds, "StudyTime")
    study_datetime = None if date is None else date + (time.split(".")[0] if time else "")
    return OrderHeader(
        accession_number=_text(ds, "AccessionNumber"),
        placer_order_number=_request_value(ds, "PlacerOrderNumberImagingServiceRequest"),
        filler_order_number=_request_value(ds, "FillerOrderNumberImagingServiceRequest"),
        procedure_code=code,
        procedure_text=_request_value(ds, "RequestedProcedureDescription")
        or _text(ds, "StudyDescription"),
        study_datetime=study_datetime,
    )
