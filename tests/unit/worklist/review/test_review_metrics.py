"""Sign-off metrics: each signed review's model findings counted by class, decision and reason,
the IoU of accepted findings' boxes observed, added findings counted; class labels bounded."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from prometheus_client import REGISTRY

from engine.report import Box, Region
from tests.index_rows import add_job, add_study
from tests.review_rows import add_review, add_review_finding, make_finding
from worklist.db import make_session_factory
from worklist.metrics import record_signed_review
from worklist.review_classes import OTHER_CLASS, dataset_class, metric_class
from worklist.review_models import FindingDecision, RejectReason

DAY = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_signed_review_is_counted_by_class_decision_and_reason(migrated_engine):
    before = {
        "accepted": _value("radground_review_findings_decided_total",
                           **{"class": "Effusion", "decision": "accepted", "reason": "none"}),
        "rejected": _value("radground_review_findings_decided_total",
                           **{"class": "Nodule", "decision": "rejected", "reason": "duplicate"}),
        "other": _value("radground_review_findings_decided_total",
                        **{"class": OTHER_CLASS, "decision": "rejected", "reason": "other"}),
        "added": _value("radground_review_findings_added_total", **{"class": "Pneumothorax"}),
        "iou_count": _value("radground_review_box_iou_count", **{"class": "Effusion"}),
        "iou_sum": _value("radground_review_box_iou_sum", **{"class": "Effusion"}),
        "iou_half": _value("radground_review_box_iou_bucket", **{"class": "Effusion", "le": "0.5"}),
    }
    with make_session_factory(migrated_engine).begin() as session:
        study = add_study(session)
        sop = study.series[0].instances[0].sop_instance_uid
        review = add_review(session, add_job(session, study), signed_at=DAY)
        effusion = make_finding("pleural effusion", sop, (0, 0, 100, 100))
        add_review_finding(session, review, model=effusion)  # IoU 1
        moved = make_finding("Effusion", sop, (0, 0, 100, 100))
        add_review_finding(session, review, model=moved, final=replace(
            moved, regions=(Region(moved.regions[0].image, Box(0, 0, 100, 25)),)))  # IoU 0.25
        add_review_finding(session, review, model=make_finding("nodule", sop, (1, 1, 9, 9)),
                           decision=FindingDecision.REJECTED,
                           reject_reason=RejectReason.DUPLICATE)
        add_review_finding(session, review,
                           model=make_finding("a shadow of Mr Smith's", sop, (1, 1, 9, 9)),
                           decision=FindingDecision.REJECTED, reject_reason=RejectReason.OTHER)
        add_review_finding(session, review, model=None,
                           final=make_finding("pneumothorax", sop, (5, 5, 50, 50)))
        record_signed_review(review)

    assert _value("radground_review_findings_decided_total", **{
        "class": "Effusion", "decision": "accepted", "reason": "none"}) == before["accepted"] + 2
    assert _value("radground_review_findings_decided_total", **{
        "class": "Nodule", "decision": "rejected", "reason": "duplicate"}) == before["rejected"] + 1
    # free text from a model never becomes a label value
    assert _value("radground_review_findings_decided_total", **{
        "class": OTHER_CLASS, "decision": "rejected", "reason": "other"}) == before["other"] + 1
    assert _value("radground_review_findings_added_total", **{
        "class": "Pneumothorax"}) == before["added"] + 1
    assert _value("radground_review_box_iou_count", **{"class": "Effusion"}) == (
        before["iou_count"] + 2)
    assert abs(_value("radground_review_box_iou_sum", **{"class": "Effusion"})
               - before["iou_sum"] - 1.25) < 1e-9
    assert _value("radground_review_box_iou_bucket", **{"class": "Effusion", "le": "0.5"}) == (
        before["iou_half"] + 1)


def test_class_names_are_read_through_the_vocabulary():
    names = ("pleural effusion", "胸腔积液", "Infiltration", "NODULE")
    assert [dataset_class(n) for n in names] == ["Effusion", "Effusion", "Infiltrate", "Nodule"]
    assert dataset_class("right lung") is None and dataset_class(None) is None
    assert metric_class("right lung") == "right lung"  # a vocabulary name, not a training class
    assert metric_class("pneumothorax") == "Pneumothorax"
    assert metric_class("something new") == metric_class("") == OTHER_CLASS
