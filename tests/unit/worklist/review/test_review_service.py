"""The review service (worklist.review): opening, deciding finding by finding, adding a
finding, sending back, signing; on SQLite and the real PostgreSQL server."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from engine.report import Box, CodedConcept, derive_uid
from tests.unit.worklist.review.conftest import add_reviewed_job, job_state
from worklist import metrics
from worklist.db import utcnow
from worklist.jobs_models import AuditEvent, Job, JobState
from worklist.review import (
    FindingChange,
    ReviewConflictError,
    ReviewInputError,
    ReviewNotFoundError,
    add_finding,
    awaiting_reviews,
    decide,
    get_review,
    open_review,
    send_back,
    sign,
)
from worklist.review.records import supersede_open_reviews
from worklist.review_models import FindingDecision, FindingOrigin, RejectReason, Review
from worklist.routing import ReviewPolicy, Route

ACCEPT = FindingChange(decision=FindingDecision.ACCEPTED)


def _audit(ctx, job_id):
    with ctx.sessions() as session:
        return [(e.actor, e.action, e.detail) for e in session.scalars(
            select(AuditEvent).where(AuditEvent.job_id == job_id).order_by(AuditEvent.id))]


def test_open_claims_the_review_and_shows_another_accounts_claim(ctx):
    job = add_reviewed_job(ctx)
    route = Route(name="cxr", modalities=frozenset({"DX"}), review=ReviewPolicy.BEFORE_EHR)
    with ctx.sessions.begin() as session:
        view = open_review(session, job.job_id, account="ann", routes=(route,))
    assert (view.state, view.job_state, view.version) == ("open", "awaiting_review", 1)
    assert view.claimed_by == "ann" and view.policy == "before_ehr"
    assert view.languages == ("en", "zh-CN")
    assert [f.tracking_uid for f in view.findings] == job.uids
    assert all(f.decision == "pending" and f.origin == "model" for f in view.findings)
    assert view.findings[0].model == view.findings[0].final == job.report.findings[0]
    assert [i.sop_instance_uid for i in view.images] == [job.image_uid]
    with ctx.sessions.begin() as session:
        other = open_review(session, job.job_id, account="bob")
    assert other.claimed_by == "ann" and other.policy == "unknown"  # shown, not taken


def test_a_finished_job_gets_a_review_on_opening_one_in_progress_does_not(ctx):
    done = add_reviewed_job(ctx, state=JobState.DONE, review=False)
    with ctx.sessions.begin() as session:
        with pytest.raises(ReviewNotFoundError, match="has no review"):
            get_review(session, done.job_id)
        view = open_review(session, done.job_id, account="ann")
    assert view.state == "open" and len(view.findings) == 3
    assert _audit(ctx, done.job_id)[-1][:2] == ("web:ann", "review-opened")
    running = add_reviewed_job(ctx, state=JobState.DELIVERING, review=False)
    with ctx.sessions.begin() as session:
        with pytest.raises(ReviewNotFoundError, match="is delivering"):
            open_review(session, running.job_id, account="ann")
        with pytest.raises(ReviewNotFoundError, match="no job 4242"):
            open_review(session, 4242, account="ann")


def test_decisions_raise_the_version_and_a_stale_one_is_refused_naming_who(ctx):
    job = add_reviewed_job(ctx)
    first, second, third = job.uids
    with ctx.sessions.begin() as session:
        version = decide(session, job.job_id, first, ACCEPT, version=1, account="ann")
    assert version == 2
    with ctx.sessions.begin() as session:
        with pytest.raises(ReviewConflictError, match=r"changed by ann since .*version 2"):
            decide(session, job.job_id, second, ACCEPT, version=1, account="bob")
        with pytest.raises(ReviewInputError, match="needs a reason"):
            decide(session, job.job_id, second,
                   FindingChange(decision=FindingDecision.REJECTED), version=2, account="bob")
        with pytest.raises(ReviewInputError, match="nothing to change"):
            decide(session, job.job_id, second, FindingChange(), version=2, account="bob")
        with pytest.raises(ReviewNotFoundError, match="no finding"):
            decide(session, job.job_id, derive_uid("x"), ACCEPT, version=2, account="bob")
    with ctx.sessions.begin() as session:
        version = decide(
            session, job.job_id, second,
            FindingChange(decision=FindingDecision.REJECTED,
                          reject_reason=RejectReason.NOT_PRESENT, reject_note="old scar"),
            version=2, account="bob", source="10.0.0.7",
        )
    with ctx.sessions() as session:
        view = get_review(session, job.job_id)
    rejected = view.findings[1]
    assert (rejected.decision, rejected.reject_reason, rejected.reject_note) == (
        "rejected", "not_present", "old scar")
    assert rejected.decided_by == "bob" and view.version == version == 3
    assert view.findings[2].decision == "pending"
    actor, action, detail = _audit(ctx, job.job_id)[-1]
    assert (actor, action) == ("web:bob", "review-decision")
    assert "rejected (not_present)" in detail and third not in detail and second not in detail


def test_moving_a_box_records_the_iou_with_the_models_box(ctx):
    job = add_reviewed_job(ctx)
    moved = Box(60, 10, 160, 60)  # half of the model's 10..110 box overlaps
    with ctx.sessions.begin() as session:
        decide(session, job.job_id, job.uids[0],
               FindingChange(region=(job.image_uid, None, moved)), version=1, account="ann")
        with pytest.raises(ReviewInputError, match="not one of the study's images"):
            decide(session, job.job_id, job.uids[0],
                   FindingChange(region=(derive_uid("other"), None, moved)),
                   version=2, account="ann")
    with ctx.sessions() as session:
        finding = get_review(session, job.job_id).findings[0]
    assert finding.box_moved and finding.box_iou == pytest.approx(50 * 50 / (100 * 50 * 2 - 2500))
    assert finding.final.regions[0].box == moved
    assert finding.model.regions[0].box == Box(10, 10, 110, 60)
    assert finding.decision == "pending"  # moving is not deciding


def test_edited_texts_and_concept_are_recorded_per_language(ctx):
    job = add_reviewed_job(ctx)
    concept = CodedConcept("8186001", "SCT", "Cardiomegaly")
    with ctx.sessions.begin() as session:
        decide(session, job.job_id, job.uids[0],
               FindingChange(description={"zh-CN": "心影增大。"}, concept=concept),
               version=1, account="ann")
        with pytest.raises(ReviewInputError, match="'fr' is not one of the route's"):
            decide(session, job.job_id, job.uids[0],
                   FindingChange(description={"fr": "Cardiomégalie."}), version=2, account="ann")
        with pytest.raises(ReviewInputError, match="the en text is empty"):
            decide(session, job.job_id, job.uids[0],
                   FindingChange(label={"en": "  "}), version=2, account="ann")
    with ctx.sessions() as session:
        finding = get_review(session, job.job_id).findings[0]
    assert finding.edited_languages == ("zh-CN",)
    assert finding.final.description.as_dict() == {"en": "Cardiomegaly is seen.",
                                                   "zh-CN": "心影增大。"}
    assert finding.final.concept == concept and finding.model.concept is None


def test_an_added_finding_is_accepted_with_a_uid_derived_from_job_review_and_position(ctx):
    job = add_reviewed_job(ctx)
    with ctx.sessions.begin() as session:
        tracking_uid, version = add_finding(
            session, job.job_id, version=1, account="ann",
            label={"en": "Pneumothorax"}, description={"en": "Small apical pneumothorax."},
            region=(job.image_uid, None, Box(5, 5, 50, 40)),
        )
        review_id = session.scalar(select(Review.id).where(Review.job_id == job.job_id))
        with pytest.raises(ReviewInputError, match="label: at least one language"):
            add_finding(session, job.job_id, version=2, account="ann", label={},
                        description={"en": "x"}, region=(job.image_uid, None, Box(5, 5, 50, 40)))
    assert version == 2
    assert tracking_uid == derive_uid("radground-review-finding", job.job_id, review_id, 3)
    with ctx.sessions() as session:
        added = get_review(session, job.job_id).findings[3]
    assert (added.tracking_uid, added.origin, added.decision, added.position) == (
        tracking_uid, FindingOrigin.RADIOLOGIST.value, "accepted", 3)
    assert added.model is None and added.final.label.as_dict() == {"en": "Pneumothorax"}


def test_send_back_releases_the_claim_and_keeps_the_decisions(ctx):
    job = add_reviewed_job(ctx)
    with ctx.sessions.begin() as session:
        open_review(session, job.job_id, account="ann")
        version = decide(session, job.job_id, job.uids[0], ACCEPT, version=1, account="ann")
        version = send_back(session, job.job_id, version=version, account="ann",
                            note="needs the prior study")
    with ctx.sessions() as session:
        view = get_review(session, job.job_id)
    assert (view.claimed_by, view.sent_back_by, view.sent_back_note) == (
        None, "ann", "needs the prior study")
    assert view.findings[0].decision == "accepted" and view.version == version == 3
    assert job_state(ctx, job.job_id) is JobState.AWAITING_REVIEW


def _decide_all(ctx, job, version=1, account="ann"):
    with ctx.sessions.begin() as session:
        for uid in job.uids:
            version = decide(session, job.job_id, uid, ACCEPT, version=version, account=account)
    return version


def test_sign_refuses_pending_findings_and_foreign_languages(ctx, radiologists):
    job = add_reviewed_job(ctx)
    with pytest.raises(ReviewInputError, match=r"3 finding\(s\) still pending"):
        sign(ctx, job.job_id, version=1, account="ann", languages=["en"])
    version = _decide_all(ctx, job)
    with pytest.raises(ReviewInputError, match="fr not among the route's"):
        sign(ctx, job.job_id, version=version, account="ann", languages=["fr"])
    with pytest.raises(ReviewInputError, match="name the languages"):
        sign(ctx, job.job_id, version=version, account="ann", languages=[])
    with pytest.raises(ReviewInputError, match="no active account 'eve'"):
        sign(ctx, job.job_id, version=version, account="eve", languages=["en"])
    assert ctx.enqueue.sent == []
    assert job_state(ctx, job.job_id) is JobState.AWAITING_REVIEW


def test_sign_marks_the_review_signed_and_enqueues_the_signed_export(ctx, radiologists):
    job = add_reviewed_job(ctx)
    version = _decide_all(ctx, job)
    before = metrics.REVIEW_SIGNOFFS.labels("cxr")._value.get()
    assert sign(ctx, job.job_id, version=version, account="ann", languages=["zh-CN"]) == 1
    assert ctx.enqueue.sent == [("export", job.job_id)]
    assert metrics.REVIEW_SIGNOFFS.labels("cxr")._value.get() == before + 1
    assert job_state(ctx, job.job_id) is JobState.EXPORTING
    with ctx.sessions() as session:
        view = get_review(session, job.job_id)
    assert (view.state, view.signed_by, view.signoff, view.reviewed_languages) == (
        "signed", "ann", 1, ("zh-CN",))
    with ctx.sessions.begin() as session, pytest.raises(
        ReviewConflictError, match=r"already signed by ann at \d{4}-"
    ):
        decide(session, job.job_id, job.uids[0], ACCEPT, version=view.version, account="bob")
    assert ("web:ann", "review-signed", "sign-off 1, languages zh-CN") in _audit(ctx, job.job_id)


def test_a_reprocessed_study_supersedes_the_open_review(ctx):
    old = add_reviewed_job(ctx)
    new = add_reviewed_job(ctx, state=JobState.QUEUED, review=False, study_pk=old.study_pk,
                           revision=2)
    with ctx.sessions.begin() as session:
        assert supersede_open_reviews(session, study_pk=old.study_pk, route="cxr",
                                      new_job_id=new.job_id) == [old.job_id]
    with ctx.sessions() as session:
        job = session.get_one(Job, old.job_id)
        assert job.state is JobState.CANCELLED
        assert job.last_error == (
            f"superseded by job {new.job_id} (study reprocessed during review)")
        view = get_review(session, old.job_id)
    assert view.state == "superseded" and view.superseded_by_job_id == new.job_id
    with ctx.sessions.begin() as session, pytest.raises(
        ReviewConflictError, match=f"superseded by job {new.job_id}: review that one"
    ):
        decide(session, old.job_id, old.uids[0], ACCEPT, version=view.version, account="ann")


def test_the_radiologists_worklist_lists_open_reviews_oldest_first(ctx):
    first = add_reviewed_job(ctx)
    second = add_reviewed_job(ctx, findings=1)
    add_reviewed_job(ctx, state=JobState.DONE)  # reviewed after the fact: not waiting
    with ctx.sessions.begin() as session:
        review = session.scalars(select(Review).where(Review.job_id == first.job_id)).one()
        review.opened_at = utcnow() - timedelta(hours=2)
    with ctx.sessions() as session:
        page = awaiting_reviews(session)
        assert [r.job_id for r in page.items] == [first.job_id, second.job_id]
        assert page.total == 2 and page.items[1].finding_count == 1
        assert page.items[0].modality == "DX" and page.items[0].priority == "routine"
        assert page.items[0].study != first.study_uid and len(page.items[0].study) == 8
        assert [r.job_id for r in awaiting_reviews(
            session, min_wait=timedelta(hours=1)).items] == [first.job_id]
        assert awaiting_reviews(session, modality="CT").total == 0
