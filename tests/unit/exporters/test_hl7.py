"""HL7 v2.5.1 ORU^R01: built with hl7apy, parsed back (STRICT) and checked field by field."""

from __future__ import annotations

import copy
import dataclasses
import re

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from engine.report import Text
from exporters.errors import SourceError
from exporters.hl7 import (
    HL7ExportError,
    ProcessingId,
    build_oru_r01,
    message_control_id,
)

DELIMITERS = "Opacity | 50% ^ zone & rim ~ edge \\ tail, see C:\\F\\x"
CHINESE = "右肺见一结节影｜边界清楚。"


def _parse(er7: str):
    message = parse_message(er7, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert message.validate()
    return message


def _observations(message):
    group = message.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION
    return [o.obx for o in group.ORU_R01_OBSERVATION]


def _components(field) -> list[str]:
    """The unescaped components of a parsed field (hl7apy leaves escapes in er7)."""
    return [_unescape(c.to_er7()) for c in field.children] if field.children else [""]


def _unescape(text: str) -> str:
    """HL7 v2.5.1 §2.7.4 escape sequences decoded in one pass (a receiver's view)."""
    chars = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}
    return re.sub(r"\\([FSTRE])\\", lambda m: chars[m.group(1)], text)


def _build(report, sources, **kwargs):
    kwargs.setdefault("control_id", message_control_id(report, revision=1))
    return build_oru_r01(report, sources, **kwargs)


def test_msh_fields(grounded_report, source_images):
    oru = _build(
        grounded_report,
        source_images,
        sending_facility="RG-NODE-1",
        receiving_application="EHR",
        receiving_facility="HOSP",
        processing_id=ProcessingId.TRAINING,
    )
    assert "\r" in oru.er7 and "\n" not in oru.er7
    msh = _parse(oru.er7).msh
    assert msh.msh_3.to_er7() == "RadGround"
    assert msh.msh_4.to_er7() == "RG-NODE-1"
    assert msh.msh_5.to_er7() == "EHR" and msh.msh_6.to_er7() == "HOSP"
    assert msh.msh_7.to_er7() == "20260310102000+0000"
    assert msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
    assert msh.msh_10.to_er7() == oru.control_id == message_control_id(grounded_report, revision=1)
    assert msh.msh_11.to_er7() == "T"
    assert msh.msh_12.to_er7() == "2.5.1"
    assert msh.msh_18.to_er7() == "UNICODE UTF-8"
    assert msh.msh_19.to_er7() == "en^English^ISO639"


def test_pid_pv1_orc_obr_from_headers(grounded_report, source_images):
    for ds in source_images:
        item = Dataset()
        item.PlacerOrderNumberImagingServiceRequest = "PL-77"
        item.FillerOrderNumberImagingServiceRequest = "FI-88"
        ds.RequestAttributesSequence = Sequence([item])
    message = _parse(_build(grounded_report, source_images).er7)
    patient = message.ORU_R01_PATIENT_RESULT.ORU_R01_PATIENT
    pid = patient.pid
    assert pid.pid_3.cx_1.to_er7() == "RG-0042"
    # 23 characters: too long for HD-1 (IS, 20) -> local universal ID
    assert pid.pid_3.cx_4.to_er7() == "&RADGROUND-TEST-HOSPITAL&L"
    names = [p.to_er7() for p in pid.children.get("PID_5")]
    assert names == ["Zhang^Wei^^^^^^A", "张^伟^^^^^^I"]
    assert pid.pid_7.to_er7() == "19580417" and pid.pid_8.to_er7() == "M"
    assert patient.ORU_R01_VISIT.pv1.pv1_2.to_er7() == "U"
    order = message.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION
    assert order.orc.orc_1.to_er7() == "RE"
    assert order.orc.orc_2.to_er7() == "PL-77" and order.orc.orc_3.to_er7() == "FI-88"
    obr = order.obr
    assert obr.obr_2.to_er7() == "PL-77" and obr.obr_3.to_er7() == "FI-88"
    assert obr.obr_4.to_er7() == "36572-6^XR Chest AP and PA^LN"
    assert obr.obr_7.to_er7() == "20260310101500"
    assert obr.obr_18.to_er7() == "ACC20260310-7"
    assert obr.obr_25.to_er7() == "P"


def test_short_issuer_is_the_namespace_id(grounded_report, source_images):
    for ds in source_images:
        ds.IssuerOfPatientID = "HOSP-A"
    pid = _parse(
        _build(grounded_report, source_images).er7
    ).ORU_R01_PATIENT_RESULT.ORU_R01_PATIENT.pid
    assert pid.pid_3.to_er7() == "RG-0042^^^HOSP-A^PI"


def test_minimal_headers(grounded_report, source_images_minimal):
    message = _parse(_build(grounded_report, source_images_minimal).er7)
    pid = message.ORU_R01_PATIENT_RESULT.ORU_R01_PATIENT.pid
    assert pid.pid_3.to_er7() == "RG-0042^^^^PI"
    assert pid.pid_5.to_er7() == "^^^^^^U"
    assert pid.pid_7.to_er7() == "" and pid.pid_8.to_er7() == ""
    obr = message.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION.obr
    assert obr.obr_4.to_er7() == "^Imaging study AI analysis"
    assert obr.obr_18.to_er7() == ""


def test_one_obx_group_per_finding(grounded_report, source_images):
    sr_uids = ["1.2.826.0.1.3680043.10.1.1", "1.2.826.0.1.3680043.10.1.2"]
    message = _parse(_build(grounded_report, source_images, sr_sop_instance_uids=sr_uids).er7)
    obxs = _observations(message)
    assert [o.obx_1.to_er7() for o in obxs] == [str(n) for n in range(1, len(obxs) + 1)]
    assert {o.obx_11.to_er7() for o in obxs} == {"P"}
    cardiomegaly = [o for o in obxs if o.obx_4.to_er7() == "3"]
    by_code = {o.obx_3.ce_1.to_er7(): o for o in cardiomegaly}
    finding = by_code["121071"]
    assert finding.obx_2.to_er7() == "CWE"
    assert _components(finding.obx_5)[:3] == ["287272002", "Cardiomegaly", "SCT"]
    assert _components(finding.obx_5)[8] == "cardiomegaly"
    assert _components(by_code["363698007"].obx_5)[:3] == ["80891009", "Heart", "SCT"]
    assert _components(by_code["121052"].obx_5)[:3] == ["52101004", "Present", "SCT"]
    certainty = by_code["111012"]
    assert certainty.obx_2.to_er7() == "NM" and float(certainty.obx_5.to_er7()) == 88.0
    assert certainty.obx_6.to_er7() == "%^Percent^UCUM"
    texts = [o for o in cardiomegaly if o.obx_2.to_er7() == "TX"]
    assert [(o.obx_3.ce_4.to_er7(), _unescape(o.obx_5.to_er7())) for o in texts] == [
        ("TEXT-en", grounded_report.findings[2].description["en"]),
        ("TEXT-zh-CN", grounded_report.findings[2].description["zh-CN"]),
    ]
    # a finding without confidence has no NM
    heart = [o for o in obxs if o.obx_4.to_er7() == "6"]
    assert all(o.obx_2.to_er7() != "NM" for o in heart)
    impressions = [o for o in obxs if o.obx_3.ce_1.to_er7() == "121073"]
    assert [_unescape(o.obx_5.to_er7()) for o in impressions] == [
        grounded_report.impression["en"],
        grounded_report.impression["zh-CN"],
    ]
    references = [o for o in obxs if o.obx_2.to_er7() == "RP"]
    assert [_components(o.obx_5)[0] for o in references] == sr_uids
    assert {o.obx_3.to_er7() for o in references} == {"SR^Structured Report Document^DCM"}
    study = [o for o in obxs if o.obx_3.ce_1.to_er7() == "110180"]
    assert [o.obx_5.to_er7() for o in study] == [grounded_report.study_instance_uid]


def test_delimiters_and_chinese_round_trip(grounded_report, source_images):
    first = grounded_report.findings[0]
    odd = dataclasses.replace(
        first,
        description=Text({"en": DELIMITERS, "zh-CN": CHINESE}),
        label=Text({"en": "a^b|c", "zh-CN": "右肺"}),
    )
    report = dataclasses.replace(grounded_report, findings=(odd,))
    oru = _build(report, source_images)
    encoded = oru.er7.encode("utf-8")
    assert CHINESE.encode("utf-8") in encoded
    assert (
        "Opacity \\F\\ 50% \\S\\ zone \\T\\ rim \\R\\ edge \\E\\ tail, see C:\\E\\F\\E\\x"
        in oru.er7
    )
    obxs = _observations(_parse(encoded.decode("utf-8")))
    texts = {
        o.obx_3.ce_4.to_er7(): _unescape(o.obx_5.to_er7())
        for o in obxs
        if o.obx_2.to_er7() == "TX" and o.obx_4.to_er7() == "1"
    }
    assert texts == {"TEXT-en": DELIMITERS, "TEXT-zh-CN": CHINESE}
    finding = next(o for o in obxs if o.obx_3.ce_1.to_er7() == "121071")
    assert _components(finding.obx_5)[8] == "a^b|c"
    # every segment is still a segment: no raw delimiter leaked into a field
    assert [s[:3] for s in oru.er7.split("\r")].count("OBX") == len(obxs)


def test_no_findings_sends_the_impression(grounded_report, source_images):
    report = dataclasses.replace(
        grounded_report,
        findings=(),
        impression=Text({"en": "No acute findings.", "zh-CN": "未见急性异常。"}),
    )
    obxs = _observations(_parse(_build(report, source_images).er7))
    assert [
        (o.obx_3.ce_1.to_er7(), _unescape(o.obx_5.to_er7()))
        for o in obxs
        if o.obx_2.to_er7() == "TX"
    ] == [("121073", "No acute findings."), ("121073", "未见急性异常。")]


def test_languages_can_be_chosen(grounded_report, source_images):
    obxs = _observations(_parse(_build(grounded_report, source_images, languages=["zh-CN"]).er7))
    assert {o.obx_3.ce_4.to_er7() for o in obxs if o.obx_2.to_er7() == "TX"} == {"TEXT-zh-CN"}
    with pytest.raises(HL7ExportError, match="languages"):
        _build(grounded_report, source_images, languages=["de"])


def test_control_id_is_deterministic(grounded_report, source_images):
    first = message_control_id(grounded_report, revision=1)
    assert first == message_control_id(grounded_report, revision=1)
    assert len(first) == 20
    assert message_control_id(grounded_report, revision=2) != first
    assert message_control_id(grounded_report, revision=1, part="amended") != first
    assert _build(grounded_report, source_images).er7 == _build(grounded_report, source_images).er7


def test_bad_arguments(grounded_report, source_images):
    with pytest.raises(HL7ExportError, match="control_id"):
        _build(grounded_report, source_images, control_id="x" * 21)
    with pytest.raises(HL7ExportError, match="processing_id"):
        _build(grounded_report, source_images, processing_id="X")
    with pytest.raises(HL7ExportError, match="sr_sop_instance_uids"):
        _build(grounded_report, source_images, sr_sop_instance_uids=["not a uid"])
    headless = copy.deepcopy(source_images)
    headless[0].PatientID = ""
    with pytest.raises(SourceError, match="PatientID"):
        _build(grounded_report, headless)
