"""Per-class figures of signed reviews, computed in SQL on SQLite and on the real PostgreSQL
server: only reviews signed in the period count; reasons, edits, moves, relabels, mean IoU and
added findings per class; totals."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from engine.report import Box, Region, Text
from tests.index_rows import add_job, add_study
from tests.review_rows import add_review, add_review_finding, make_finding
from worklist.db import make_session_factory
from worklist.review.errors import InvalidPeriodError
from worklist.review.figures import TOTAL, class_figures, total_figures
from worklist.review_models import FindingDecision, RejectReason, ReviewState

DAY = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
BOX = (100.0, 100.0, 200.0, 200.0)
ACCEPTED, REJECTED = FindingDecision.ACCEPTED, FindingDecision.REJECTED


def _moved(finding, box):
    region = finding.regions[0]
    return replace(finding, regions=(Region(region.image, Box(*box)),))


@pytest.fixture
def sessions(migrated_engine):
    factory = make_session_factory(migrated_engine)
    with factory.begin() as session:
        study = add_study(session)
        sop = study.series[0].instances[0].sop_instance_uid
        review = add_review(session, add_job(session, study), signed_at=DAY)

        def model(label, box=BOX):
            return make_finding(label, sop, box)

        effusion = model("pleural effusion")
        add_review_finding(session, review, model=effusion)  # kept as is: IoU 1
        moved = model("pleural effusion")
        # moved by half its width: IoU 50*100 / (2*100*100 - 50*100) = 1/3
        add_review_finding(session, review, model=moved, final=_moved(moved, (150, 100, 250, 200)))
        edited = model("pleural effusion")
        add_review_finding(
            session, review, model=edited, edited_languages="en,zh-CN",
            final=replace(edited, description=Text({"en": "Small left effusion."})),
        )
        add_review_finding(session, review, model=model("pleural effusion"), decision=REJECTED,
                           reject_reason=RejectReason.DUPLICATE)
        add_review_finding(session, review, model=model("nodule"), decision=REJECTED,
                           reject_reason=RejectReason.NOT_PRESENT, reject_note="scar")
        add_review_finding(session, review, model=model("nodule"), decision=REJECTED,
                           reject_reason=RejectReason.WRONG_PLACE)
        relabelled = model("infiltrate")
        add_review_finding(session, review, model=relabelled,
                           final=replace(relabelled, label=Text({"en": "pneumonia"})))
        add_review_finding(session, review, model=None, final=model("mass"))
        add_review_finding(session, review, model=None, final=model("nodule"))

        # signed before the period, and still open: neither counts
        early = add_review(session, add_job(session, add_study(session)),
                           signed_at=DAY - timedelta(days=3))
        add_review_finding(session, early, model=model("pleural effusion"), decision=REJECTED,
                           reject_reason=RejectReason.OTHER)
        still_open = add_review(session, add_job(session, add_study(session)),
                                state=ReviewState.OPEN)
        add_review_finding(session, still_open, model=model("nodule"), decision=REJECTED,
                           reject_reason=RejectReason.OTHER)
    return factory


def test_per_class_figures_of_the_reviews_signed_in_the_period(sessions):
    with sessions() as session:
        rows = class_figures(session, DAY - timedelta(days=1), DAY + timedelta(days=1))
    by_class = {row.finding_class: row for row in rows}
    assert list(by_class) == ["infiltrate", "mass", "nodule", "pleural effusion"]
    effusion = by_class["pleural effusion"]
    assert (effusion.reviewed, effusion.accepted, effusion.rejected) == (4, 3, 1)
    assert effusion.rejected_by_reason == {
        "wrong_place": 0, "not_present": 0, "duplicate": 1, "other": 0
    }
    assert (effusion.edited, effusion.moved, effusion.relabelled, effusion.added) == (1, 1, 0, 0)
    assert effusion.iou_count == 3
    assert effusion.mean_iou == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert effusion.acceptance_rate == pytest.approx(0.75)
    nodule = by_class["nodule"]
    assert (nodule.reviewed, nodule.accepted, nodule.rejected, nodule.added) == (2, 0, 2, 1)
    assert nodule.rejected_by_reason["not_present"] == nodule.rejected_by_reason["wrong_place"] == 1
    assert nodule.mean_iou is None and nodule.acceptance_rate == 0
    assert by_class["infiltrate"].relabelled == 1
    mass = by_class["mass"]
    assert (mass.reviewed, mass.added, mass.acceptance_rate) == (0, 1, None)

    total = total_figures(rows)
    assert total.finding_class == TOTAL
    assert (total.reviewed, total.accepted, total.rejected, total.added) == (7, 4, 3, 2)
    assert total.iou_count == 4
    assert total.mean_iou == pytest.approx((1 + 1 / 3 + 1 + 1) / 4)
    assert sum(total.rejected_by_reason.values()) == 3
    assert total.as_dict()["acceptance_rate"] == pytest.approx(4 / 7)


def test_the_period_excludes_its_end_and_must_not_be_empty(sessions):
    with sessions() as session:
        assert class_figures(session, DAY + timedelta(seconds=1), DAY + timedelta(days=1)) == []
        assert class_figures(session, DAY - timedelta(days=1), DAY) == []
        assert len(class_figures(session, DAY, DAY + timedelta(seconds=1))) == 4
        with pytest.raises(InvalidPeriodError, match="not before"):
            class_figures(session, DAY, DAY)
        with pytest.raises(InvalidPeriodError, match="timezone"):
            class_figures(session, datetime(2026, 12, 1), datetime(2026, 12, 2))


def test_no_reviews_give_no_rows_and_empty_totals(migrated_engine):
    with make_session_factory(migrated_engine)() as session:
        rows = class_figures(session, DAY, DAY + timedelta(days=1))
    assert rows == []
    total = total_figures(rows)
    assert (total.reviewed, total.mean_iou, total.acceptance_rate) == (0, None, None)

