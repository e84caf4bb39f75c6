"""The GroundedReport contract: values validate at construction and round-trip through JSON."""

import numpy as np
import pytest

from engine.report import (
    Box,
    Finding,
    GroundedReport,
    ImageRef,
    ModelInfo,
    Region,
    ReportError,
    Text,
    derive_uid,
)

CR = "1.2.840.10008.5.1.4.1.1.1"


def make_report(**overrides):
    label = Text({"en": "right lung", "zh-CN": "右肺"})
    sentence = Text({"en": "No focal consolidation.", "zh-CN": "未见局灶性实变。"})
    mask = np.zeros((4, 6), dtype=bool)
    mask[1:3, 2:5] = True
    finding = Finding(
        kind="anatomy",
        label=label,
        description=sentence,
        regions=(Region(ImageRef("1.2.3.4", CR), Box(10, 20, 30.5, 40), mask=mask),),
        tracking_uid=derive_uid("study", 0),
        confidence=0.75,
    )
    fields = dict(
        study_instance_uid="1.2.3",
        findings=(finding,),
        impression=sentence,
        model=ModelInfo.for_version(name="demo", version="1.0", manufacturer="RadGround"),
        task="grounded_report",
        raw_output="<ref>right lung</ref><box>[[1,2,3,4]]</box>: x",
    )
    fields.update(overrides)
    return GroundedReport(**fields)


def test_json_round_trip_keeps_everything_including_chinese_and_masks():
    report = make_report()
    again = GroundedReport.from_json(report.to_json())
    assert again == report
    assert again.findings[0].description["zh-CN"] == "未见局灶性实变。"
    np.testing.assert_array_equal(
        again.findings[0].regions[0].mask, report.findings[0].regions[0].mask
    )
    assert "未见" in report.to_json()  # stored as UTF-8 text, not \u escapes


@pytest.mark.parametrize(
    "args, message",
    [
        ((10, 0, 10, 5), "x_min < x_max"),
        ((0, 5, 10, 1), "y_min < y_max"),
        ((0, 0, float("nan"), 5), "finite"),
        (("0", 0, 1, 1), "number"),
    ],
)
def test_bad_boxes_raise_naming_the_problem(args, message):
    with pytest.raises(ReportError, match=message):
        Box(*args)


def test_unknown_language_and_empty_label_raise():
    with pytest.raises(ReportError, match="unknown language tag 'klingon'"):
        Text({"klingon": "x"})
    with pytest.raises(ReportError, match="non-empty"):
        Text({"en": "  "})
    with pytest.raises(ReportError, match="at least one language"):
        Text({})


def test_bad_uids_and_confidence_raise():
    with pytest.raises(ReportError, match="sop_instance_uid"):
        ImageRef("../../etc", CR)
    with pytest.raises(ReportError, match="frame_number"):
        ImageRef("1.2", CR, frame_number=0)
    report = make_report()
    with pytest.raises(ReportError, match="confidence"):
        Finding(**{**report.findings[0].__dict__, "confidence": 1.5})
    with pytest.raises(ReportError, match="distinct tracking_uid"):
        make_report(findings=report.findings * 2)
    with pytest.raises(ReportError, match="timezone-aware"):
        from datetime import datetime

        make_report(created_at=datetime(2026, 1, 1))


def test_box_geometry():
    box = Box(-5, 10, 20, 30)
    assert box.clip(15, 25) == Box(0, 10, 15, 25)
    assert Box(100, 100, 120, 120).clip(50, 50) is None
    assert box.polyline()[0] == box.polyline()[-1] and len(box.polyline()) == 5
    assert Box(0, 0, 10, 10).iou(Box(5, 0, 15, 10)) == pytest.approx(1 / 3)


def test_derived_uids_are_deterministic_valid_and_distinct():
    from engine.uids import is_valid_uid

    a, b = derive_uid("s", 1, "sr", "en"), derive_uid("s", 1, "sr", "zh-CN")
    assert a == derive_uid("s", 1, "sr", "en") and a != b
    assert is_valid_uid(a) and len(a) <= 64
    model_1 = ModelInfo.for_version(name="m", version="1", manufacturer="x")
    model_2 = ModelInfo.for_version(name="m", version="2", manufacturer="x")
    assert model_1.device_uid != model_2.device_uid
