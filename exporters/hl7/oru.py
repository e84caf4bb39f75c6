"""GroundedReport → HL7 v2.5.1 ORU^R01 (unsolicited observation result), built with hl7apy.

Most EHRs take imaging results as ORU^R01 over MLLP. The message:

* **MSH** — sending application ``RadGround``, facilities and receiving
  application as configured, MSH-7 = the report's ``created_at``, MSH-10 a
  control ID derived from the study, revision and model version
  (:func:`message_control_id`: a redelivered job sends the same ID so the
  receiver can deduplicate), MSH-11 processing ID, MSH-12 ``2.5.1``,
  MSH-18 ``UNICODE UTF-8``, MSH-19 the principal language (ISO 639);
* **PID** — PID-3 Patient ID with its issuer as CX-4 (assigning authority:
  HD-1 when it fits 20 characters, otherwise HD-2 with HD-3 ``L``; the
  universal entity ID of the issuer's qualifiers as HD-2/HD-3), PID-5 the alphabetic and
  ideographic name groups (XPN-8 ``A`` / ``I``), PID-7 birth date, PID-8 sex;
* **PV1** — PV1-2 patient class (default ``U``, unknown: DICOM has none);
* **ORC / OBR** — order control ``RE``, placer / filler order numbers when
  the header has them, OBR-4 universal service ID from the Procedure Code
  Sequence (or the requested procedure / study description as text), OBR-7
  study date/time, OBR-18 accession number (IHE RAD), OBR-22 the report
  time, OBR-24 ``RAD``, OBR-25 result status ``P``;
* **OBX** per finding, grouped by OBX-4 sub-ID = finding number (1-based):
  the coded finding (CWE, DCM 121071 "Finding"; CWE-9 original text = the
  model's label), its site and laterality
  (CWE, SCT 363698007 / 272741003), its presence (CWE, DCM 121052), the
  model's confidence in percent (NM, DCM 111012, only when the model gave
  one) and the sentence once per language (TX, DCM 121106 "Comment"). HL7
  v2.5.1 OBX has no language field: each TX's OBX-3 carries, as its
  alternate code (CE-4..6), RadGround's local code ``TEXT-<tag>`` in scheme
  ``99RADGROUND``, so a receiver can pick a language;
* **OBX** for the impression per language (TX, DCM 121073 "Impression"),
  the Study Instance UID (ST, DCM 110180) and a reference pointer (RP) to
  each RadGround SR document (OBX-3 DCM "SR" "Structured Report Document",
  RP-1 = SOP Instance UID). A report without findings still has the
  impression ("no findings"). Every OBX-11 is ``P``.

Text goes through hl7apy's base data types (``ST``, ``TX``), which escape
the delimiters (``| ^ & ~ \\`` → ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``). The
message is built at hl7apy's STRICT validation level (data types and
lengths checked as values are set) and checked against the HL7 v2.5.1 ORU^R01 structure by hl7apy's
validator before it is returned. Composite values of OBX-5 (CWE, RP) are
escaped per component by those data types and parsed by hl7apy into OBX-5:
hl7apy 1.3.5 drops named components of OBX-5 once its datatype is set
(crs4/hl7apy#144).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from hl7apy import load_library
from hl7apy.base_datatypes import TextualDataType
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Element, Group, Message, Segment
from hl7apy.exceptions import HL7apyException
from hl7apy.v2_5_1 import ID, NM, ST, TX
from pydicom.dataset import Dataset

from engine.report import CodedConcept, Finding, GroundedReport, is_valid_uid
from exporters import codes
from exporters.errors import ExportError
from exporters.hl7.enum import ProcessingId, ResultStatus, ValueType
from exporters.hl7.header import OrderHeader, PatientHeader, read_order, read_patient
from exporters.protocol import SignOff, Verifier
from exporters.signoff import name_parts

__all__ = [
    "CHARACTER_SET",
    "HL7_VERSION",
    "HL7ExportError",
    "ORUMessage",
    "build_oru_r01",
    "message_control_id",
]

HL7_VERSION = "2.5.1"
#: MSH-18 character set (HL7 table 0211): every message is UTF-8.
CHARACTER_SET = "UNICODE UTF-8"
SENDING_APPLICATION = "RadGround"

#: hl7apy's base data types of v2.5.1 by name (ST, ID, IS, TX, NM, ...): each
#: escapes the HL7 delimiters in its value when the message is encoded.
_BASE_DATATYPES = load_library(HL7_VERSION).get_base_datatypes()

_FINDING = CodedConcept("121071", "DCM", "Finding")
_FINDING_SITE = CodedConcept("363698007", "SCT", "Finding Site")
_LATERALITY = CodedConcept("272741003", "SCT", "Laterality")
_STUDY_INSTANCE_UID = CodedConcept("110180", "DCM", "Study Instance UID")
_SR_DOCUMENT = CodedConcept("SR", "DCM", "Structured Report Document")
_LANGUAGE_NAMES = {
    "en": "English",
    "zh": "Chinese",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
}


class HL7ExportError(ExportError):
    """The ORU^R01 could not be built or does not conform to the v2.5.1 structure."""


@dataclass(frozen=True)
class ORUMessage:
    """An ORU^R01 message.

    Parameters
    ----------
    message
        The hl7apy message (validated against the v2.5.1 ORU^R01 structure).
    er7
        Its ER7 encoding, segments separated by ``\\r`` (to be sent as UTF-8).
    control_id
        MSH-10 Message Control ID.
    """

    message: Message
    er7: str
    control_id: str


def message_control_id(
    report: GroundedReport, *, revision: int, part: str = "", signoff: int = 0
) -> str:
    """A deterministic MSH-10 Message Control ID (20 characters, the v2.5.1 maximum).

    The same study, revision, model version, ``part`` and sign-off number (0: the
    model's preliminary result) give the same ID, so a receiver deduplicates a
    redelivered message (HL7 v2.5.1 §2.10.1) but not the final result that follows
    a preliminary one.
    """
    parts = ["radground-hl7", report.study_instance_uid, str(revision), report.model.device_uid]
    parts.append(part)
    if signoff:
        parts += ["signoff", str(signoff)]
    seed = "\x1f".join(parts)
    return "RG" + hashlib.sha256(seed.encode("utf-8")).hexdigest()[:18].upper()


def build_oru_r01(
    report: GroundedReport,
    sources: Sequence[Dataset],
    *,
    control_id: str,
    sr_sop_instance_uids: Sequence[str] = (),
    languages: Sequence[str] | None = None,
    sending_facility: str | None = None,
    receiving_application: str | None = None,
    receiving_facility: str | None = None,
    processing_id: ProcessingId | str = ProcessingId.PRODUCTION,
    patient_class: str = "U",
    sign_off: SignOff | None = None,
) -> ORUMessage:
    """An HL7 v2.5.1 ORU^R01 carrying ``report``'s findings (see module docstring).

    Parameters
    ----------
    report
        The grounded report.
    sources
        Source image headers of the study; the first gives PID and ORC/OBR.
    control_id
        MSH-10 (1-20 characters, e.g. from :func:`message_control_id`).
    sr_sop_instance_uids
        SOP Instance UIDs of RadGround's SR documents of this job (one RP OBX each).
    languages
        BCP-47 tags of the texts to send (default: all of the report's).
    sending_facility, receiving_application, receiving_facility
        MSH-4, MSH-5, MSH-6 namespace IDs.
    processing_id
        MSH-11: ``P`` production, ``T`` training, ``D`` debugging.
    patient_class
        PV1-2 (HL7 table 0004), ``U`` unknown by default.
    sign_off
        The radiologist's sign-off of ``report`` (the reviewed report): OBR-25 and
        every OBX-11 ``F`` (final), or ``C`` (corrected) when a preliminary result
        already reached this receiver (``SignOff.amends``); OBR-32 Principal Result
        Interpreter = the radiologist (account, family and given name, the account's
        identifier system as assigning authority; NDL-2 the time of signing);
        MSH-7 and OBR-22 the time of signing.

    Raises
    ------
    HL7ExportError
        A bad argument, or a message hl7apy finds non-conformant.
    exporters.errors.SourceError
        The first source lacks a Patient ID.
    """
    if (
        not isinstance(control_id, str)
        or not 0 < len(control_id) <= 20
        or not control_id.isprintable()
    ):
        raise HL7ExportError(f"control_id must be 1-20 printable characters, got {control_id!r}")
    try:
        processing = ProcessingId(processing_id)
    except ValueError:
        raise HL7ExportError(
            f"processing_id must be one of {[p.value for p in ProcessingId]}, got {processing_id!r}"
        ) from None
    for uid in sr_sop_instance_uids:
        if not is_valid_uid(uid):
            raise HL7ExportError(f"sr_sop_instance_uids: not a DICOM UID: {uid!r}")
    langs = tuple(languages) if languages is not None else report.languages
    unknown = [lang for lang in langs if lang not in report.languages]
    if not langs or unknown:
        raise HL7ExportError(
            f"languages must be some of the report's {list(report.languages)}, got {list(langs)}"
        )
    patient, order = read_patient(sources), read_order(sources)
    status = ResultStatus.PRELIMINARY
    if sign_off is not None:
        status = ResultStatus.CORRECTED if sign_off.amends else ResultStatus.FINAL
    reported_at = report.created_at if sign_off is None else sign_off.verified_at
    try:
        message = Message("ORU_R01", version=HL7_VERSION, validation_level=VALIDATION_LEVEL.STRICT)
        _msh(
            message.msh,
            reported_at,
            control_id,
            processing,
            langs[0],
            sending_facility,
            receiving_application,
            receiving_facility,
        )
        result = message.add_group("ORU_R01_PATIENT_RESULT")
        patient_group = result.add_group("ORU_R01_PATIENT")
        _pid(patient_group.pid, patient)
        _put(patient_group.add_group("ORU_R01_VISIT").pv1, "pv1_2", patient_class)
        observation = result.add_group("ORU_R01_ORDER_OBSERVATION")
        _orc(observation.orc, order)
        _obr(observation.obr, order, reported_at, status)
        if sign_off is not None:
            _principal_result_interpreter(observation.obr, sign_off.verifier, reported_at)
        writer = _ObxWriter(observation, status)
        for number, finding in enumerate(report.findings, start=1):
            _finding_obx(writer, finding, number, langs)
        for lang in langs:
            text = report.impression.get(lang)
            if text:
                writer.add(ValueType.TEXT, _text_code(codes.IMPRESSION, lang), [_tx(text)])
        writer.add(ValueType.STRING, _STUDY_INSTANCE_UID, [_st(report.study_instance_uid)])
        for uid in sr_sop_instance_uids:
            writer.add(
                ValueType.REFERENCE_POINTER,
                _SR_DOCUMENT,
                [_st(uid), _st(SENDING_APPLICATION), _id("AP"), _st("DICOM")],
            )
        message.validate()
        er7 = message.to_er7()
    except HL7apyException as exc:
        raise HL7ExportError(f"the ORU^R01 could not be built: {exc}") from exc
    return ORUMessage(message=message, er7=er7, control_id=control_id)


def _literal(text: str) -> str:
    """``text`` with each backslash written as the escape sequence ``\\E\\``.

    hl7apy escapes ``| ^ & ~`` and a lone backslash, but leaves a backslash
    that already forms an escape sequence (``\\F\\``, ``\\H\\``, ...) as is,
    taking it for pre-escaped text; model text is never pre-escaped, so every
    backslash is made an ``\\E\\`` sequence first, which hl7apy then keeps.
    """
    return text.replace("\\", "\\E\\")


def _st(text: str) -> ST:
    return ST(_literal(text))


def _tx(text: str) -> TX:
    return TX(_literal(text))


def _id(text: str) -> ID:
    return ID(_literal(text))


def _put(parent: Element, name: str, value: str) -> None:
    """Set child ``name`` of ``parent`` to ``value`` as that child's own base data type
    (hl7apy creates the child; the data type escapes delimiters on encoding)."""
    child = getattr(parent, name)
    cls = _BASE_DATATYPES[child.datatype]
    child.value = cls(_literal(value) if issubclass(cls, TextualDataType) else value)


def _ts(moment: datetime) -> str:
    """HL7 TS: YYYYMMDDHHMMSS+ZZZZ."""
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def _msh(
    msh: Segment,
    reported_at: datetime,
    control_id: str,
    processing: ProcessingId,
    language: str,
    sending_facility: str | None,
    receiving_application: str | None,
    receiving_facility: str | None,
) -> None:
    _put(msh.msh_3, "hd_1", SENDING_APPLICATION)
    if sending_facility:
        _put(msh.msh_4, "hd_1", sending_facility)
    if receiving_application:
        _put(msh.msh_5, "hd_1", receiving_application)
    if receiving_facility:
        _put(msh.msh_6, "hd_1", receiving_facility)
    msh.msh_7.ts_1 = _ts(reported_at)
    _put(msh.msh_9, "msg_1", "ORU")
    _put(msh.msh_9, "msg_2", "R01")
    _put(msh.msh_9, "msg_3", "ORU_R01")
    _put(msh, "msh_10", control_id)
    _put(msh.msh_11, "pt_1", processing.value)
    _put(msh.msh_12, "vid_1", HL7_VERSION)
    _put(msh, "msh_18", CHARACTER_SET)
    iso = language.split("-")[0]
    _put(msh.msh_19, "ce_1", iso)
    _put(msh.msh_19, "ce_2", _LANGUAGE_NAMES.get(iso, iso))
    _put(msh.msh_19, "ce_3", "ISO639")


def _pid(pid: Segment, patient: PatientHeader) -> None:
    pid.pid_1 = "1"
    _put(pid.pid_3, "cx_1", patient.patient_id)
    _assigning_authority(pid.pid_3.cx_4, patient)
    _put(pid.pid_3, "cx_5", "PI")
    for index, (representation, name) in enumerate(patient.names):
        field = pid.pid_5 if index == 0 else pid.add_field("PID_5")
        if name.family_name:
            _put(field.xpn_1, "fn_1", name.family_name)
        if name.given_name:
            _put(field, "xpn_2", name.given_name)
        if name.middle_name:
            _put(field, "xpn_3", name.middle_name)
        if name.name_suffix:
            _put(field, "xpn_4", name.name_suffix)
        if name.name_prefix:
            _put(field, "xpn_5", name.name_prefix)
        _put(field, "xpn_8", representation)
    if not patient.names:  # PID-5 is required: name type "U" (unspecified, table 0200)
        _put(pid.pid_5, "xpn_7", "U")
    if patient.birth_date:
        pid.pid_7.ts_1 = patient.birth_date
    if patient.sex:
        _put(pid, "pid_8", patient.sex)


#: HD-1 Namespace ID is IS, at most 20 characters in v2.5.1.
_NAMESPACE_ID_LENGTH = 20


def _assigning_authority(hd: Element, patient: PatientHeader) -> None:
    """CX-4 from the issuer: HD-1 namespace when it fits, the universal ID from the
    Issuer of Patient ID Qualifiers (HD-2/HD-3) when the header has one, and a longer
    issuer as a local universal ID (HD-3 ``L``, table 0301) rather than cut short."""
    if patient.issuer and len(patient.issuer) <= _NAMESPACE_ID_LENGTH:
        _put(hd, "hd_1", patient.issuer)
    if patient.issuer_universal_id is not None:
        _put(hd, "hd_2", patient.issuer_universal_id[0])
        _put(hd, "hd_3", patient.issuer_universal_id[1])
    elif patient.issuer and len(patient.issuer) > _NAMESPACE_ID_LENGTH:
        _put(hd, "hd_2", patient.issuer)
        _put(hd, "hd_3", "L")


def _orc(orc: Segment, order: OrderHeader) -> None:
    _put(orc, "orc_1", "RE")
    if order.placer_order_number:
        _put(orc.orc_2, "ei_1", order.placer_order_number)
    if order.filler_order_number:
        _put(orc.orc_3, "ei_1", order.filler_order_number)


def _obr(obr: Segment, order: OrderHeader, reported_at: datetime, status: ResultStatus) -> None:
    obr.obr_1 = "1"
    if order.placer_order_number:
        _put(obr.obr_2, "ei_1", order.placer_order_number)
    if order.filler_order_number:
        _put(obr.obr_3, "ei_1", order.filler_order_number)
    if order.procedure_code:
        value, meaning, scheme = order.procedure_code
        _put(obr.obr_4, "ce_1", value)
        _put(obr.obr_4, "ce_2", meaning or order.procedure_text or value)
        _put(obr.obr_4, "ce_3", scheme)
    else:
        _put(obr.obr_4, "ce_2", order.procedure_text or "Imaging study AI analysis")
    if order.study_datetime:
        obr.obr_7.ts_1 = order.study_datetime
    if order.accession_number:
        _put(obr, "obr_18", order.accession_number)
    obr.obr_22.ts_1 = _ts(reported_at)
    _put(obr, "obr_24", "RAD")
    _put(obr, "obr_25", status.value)


def _principal_result_interpreter(obr: Segment, verifier: Verifier, at: datetime) -> None:
    """OBR-32 (NDL): CNN-1 the account, CNN-2/3 family and given name, CNN-10/11 the
    account's identifier system (a URI) as assigning authority; NDL-2 the time of signing."""
    parts = name_parts(verifier.name)
    name = obr.obr_32.ndl_1
    _put(name, "cnn_1", verifier.identifier)
    if parts.family:
        _put(name, "cnn_2", parts.family)
    if parts.given:
        _put(name, "cnn_3", parts.given[0])
    if len(parts.given) > 1:
        _put(name, "cnn_4", " ".join(parts.given[1:]))
    _put(name, "cnn_10", verifier.identifier_system)
    _put(name, "cnn_11", "URI")
    obr.obr_32.ndl_2 = _ts(at)


def _text_code(concept: CodedConcept, language: str) -> tuple[CodedConcept, CodedConcept]:
    """OBX-3 of a text: the concept, with RadGround's per-language local code as alternate."""
    local = CodedConcept(
        f"TEXT-{language}", codes.PRIVATE_SCHEME, f"{concept.meaning} ({language})"
    )
    return concept, local


class _ObxWriter:
    """Appends numbered OBX segments (OBX-1 Set ID) to an ORDER_OBSERVATION group."""

    def __init__(self, group: Group, status: ResultStatus) -> None:
        self.group = group
        self.status = status
        self.count = 0

    def add(
        self,
        value_type: ValueType,
        code: CodedConcept | tuple[CodedConcept, CodedConcept],
        values: list,
        *,
        sub_id: str | None = None,
        units: CodedConcept | None = None,
    ) -> None:
        self.count += 1
        obx = self.group.add_group("ORU_R01_OBSERVATION").obx
        obx.obx_1 = str(self.count)
        _put(obx, "obx_2", value_type.value)
        concept, alternate = code if isinstance(code, tuple) else (code, None)
        _put(obx.obx_3, "ce_1", concept.value)
        _put(obx.obx_3, "ce_2", concept.meaning)
        _put(obx.obx_3, "ce_3", concept.scheme_designator)
        if alternate is not None:
            _put(obx.obx_3, "ce_4", alternate.value)
            _put(obx.obx_3, "ce_5", alternate.meaning)
            _put(obx.obx_3, "ce_6", alternate.scheme_designator)
        if sub_id is not None:
            _put(obx, "obx_4", sub_id)
        # OBX-5 "varies": each component escaped by its base data type, then
        # parsed by hl7apy (it rejects a datatype set on OBX-5, crs4/hl7apy#144)
        separator = obx.encoding_chars["COMPONENT"]
        obx.obx_5 = separator.join(v.to_er7(obx.encoding_chars) for v in values)
        if units is not None:
            _put(obx.obx_6, "ce_1", units.value)
            _put(obx.obx_6, "ce_2", units.meaning)
            _put(obx.obx_6, "ce_3", units.scheme_designator)
        _put(obx, "obx_11", self.status.value)


def _coded(concept: CodedConcept) -> list:
    return [_st(concept.value), _st(concept.meaning), _id(concept.scheme_designator)]


def _finding_obx(
    writer: _ObxWriter, finding: Finding, number: int, languages: Sequence[str]
) -> None:
    coding = codes.coding_for(finding)
    sub_id = str(number)
    # CWE-9 original text: the model's own label, in the first language sent
    label = finding.label.get(languages[0]) or finding.label.primary
    finding_type = [*_coded(coding.finding_type), *(_st("") for _ in range(5)), _st(label)]
    writer.add(ValueType.CODED, _FINDING, finding_type, sub_id=sub_id)
    if coding.site is not None:
        writer.add(ValueType.CODED, _FINDING_SITE, _coded(coding.site.location), sub_id=sub_id)
        if coding.site.laterality is not None:
            writer.add(ValueType.CODED, _LATERALITY, _coded(coding.site.laterality), sub_id=sub_id)
    writer.add(
        ValueType.CODED,
        codes.PRESENCE,
        _coded(codes.PRESENCE_VALUES[finding.presence]),
        sub_id=sub_id,
    )
    if finding.confidence is not None:
        writer.add(
            ValueType.NUMERIC,
            codes.CERTAINTY_OF_FINDING,
            [NM(round(finding.confidence * 100, 1))],
            sub_id=sub_id,
            units=codes.PERCENT,
        )
    for lang in languages:
        text = finding.description.get(lang)
        if text:
            writer.add(ValueType.TEXT, _text_code(codes.COMMENT, lang), [_tx(text)], sub_id=sub_id)
