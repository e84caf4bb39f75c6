"""What a sign-off makes the export build (worklist.review.signoff), what the jobs' operator
actions do around a review (worklist.jobs), how the latest set settles a job, and the awaiting
gauge; on SQLite and the real PostgreSQL server."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.scu import Destination
from exporters.protocol import SignOff
from tests.index_rows import add_delivery
from tests.unit.worklist.review.conftest import add_reviewed_job
from worklist.context import DicomTarget, FhirTarget, Hl7Target
from worklist.delivery import settle_job
from worklist.destinations.security import HttpAuth
from worklist.errors import JobActionError
from worklist.export_requests import export_requests
from worklist.jobs import cancel_job, retry_delivery, retry_job
from worklist.jobs_models import Artifact, Delivery, DeliveryState, Job, JobState
from worklist.metrics import QueueDepthCollector
from worklist.review import FindingChange, decide, sign
from worklist.review.signoff import destinations_now, signed_set
from worklist.review_models import FindingDecision, RejectReason
from worklist.routing import ReviewPolicy, Route

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture
def wired(ctx):
    """The context with a PACS, an EHR and an HL7 receiver."""
    return dataclasses.replace(ctx, destinations={
        "PACS": DicomTarget(Destination("PACS", "127.0.0.1", 104), name="PACS"),
        "EHR": FhirTarget(url="https://ehr.example/fhir", auth=HttpAuth.none(), name="EHR",
                          primary_language="zh-CN"),
        "RIS": Hl7Target(host="127.0.0.1", port=2575, name="RIS"),
    })


def _route(policy: ReviewPolicy) -> Route:
    return Route(name="cxr", destinations=("PACS", "EHR", "RIS"), review=policy)


def test_a_route_holding_for_review_delivers_the_models_set_to_the_pacs_only(wired):
    assert destinations_now(wired, _route(ReviewPolicy.NONE), None) == ["PACS", "EHR", "RIS"]
    assert destinations_now(wired, _route(ReviewPolicy.BEFORE_EHR), None) == ["PACS"]
    assert destinations_now(wired, _route(ReviewPolicy.BEFORE_ALL), None) == []


def _write_sr(path: Path, study_uid: str) -> tuple[str, str]:
    """A stand-in for the model's SR file: the UIDs the predecessor reference reads."""
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SR_CLASS, generate_uid()
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), study_uid
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds.SOPInstanceUID, ds.SeriesInstanceUID


def _signed_job(ctx, *, ehr_reached: bool):
    """A reviewed job: finding 1 accepted, 2 rejected, 3 edited (zh-CN text, box moved), a
    model SR per language in set 0, signed in zh-CN only."""
    job = add_reviewed_job(ctx, state=JobState.AWAITING_REVIEW)
    predecessors = {}
    with ctx.sessions.begin() as session:
        db_job = session.get_one(Job, job.job_id)
        for language in ("en", "zh-CN"):
            path = f"{job.study_uid}/r1/sr-{language}.dcm"
            uid, series = _write_sr(ctx.outputs_root / path, job.study_uid)
            predecessors[language] = uid
            session.add(Artifact(job_id=job.job_id, kind="sr", language=language,
                                 object_uid=uid, series_instance_uid=series,
                                 sop_class_uid=SR_CLASS, path=path, created_at=db_job.created_at))
        add_delivery(session, db_job, destination="PACS")
        add_delivery(session, db_job, destination="EHR", protocol="fhir",
                     state=DeliveryState.DONE if ehr_reached else DeliveryState.FAILED)
    first, second, third = job.uids
    changes = [
        (first, FindingChange(decision=FindingDecision.ACCEPTED)),
        (second, FindingChange(decision=FindingDecision.REJECTED,
                               reject_reason=RejectReason.WRONG_PLACE)),
        (third, FindingChange(decision=FindingDecision.ACCEPTED,
                              description={"zh-CN": "小结节。"})),
    ]
    version = 1
    with ctx.sessions.begin() as session:
        for uid, change in changes:
            version = decide(session, job.job_id, uid, change, version=version, account="ann")
    assert sign(ctx, job.job_id, version=version, account="bob", languages=["zh-CN"]) == 1
    return job, predecessors


def test_the_signed_set_carries_the_reviewed_report_and_the_sign_off(wired, radiologists):
    job, predecessors = _signed_job(wired, ehr_reached=True)
    with wired.sessions() as session:
        signed = signed_set(wired, session, session.get_one(Job, job.job_id))
    assert signed is not None and signed.number == 1
    # rejected finding removed; only the reviewed language, also in the impression
    assert [f.tracking_uid for f in signed.report.findings] == [job.uids[0], job.uids[2]]
    assert signed.report.languages == ("zh-CN",)
    assert signed.report.findings[1].description.as_dict() == {"zh-CN": "小结节。"}
    off = signed.sign_off
    # bob has no full name: the account name stands in
    assert (off.verifier.name, off.verifier.organisation, off.verifier.identifier) == (
        "bob", "General Hospital", "bob")
    assert off.verifier.identifier_system == "urn:radground:RADGROUND:account"
    assert off.verified_at.tzinfo is not None and off.number == 1
    assert [f.tracking_uid for f in off.withdrawn] == [job.uids[1]]
    assert off.withdrawn[0] == job.report.findings[1]  # as the model made it, both languages
    assert off.edited == frozenset({job.uids[2]})
    assert {(p.language, p.sop_instance_uid, p.study_instance_uid)
            for p in off.predecessors} == {(lang, uid, job.study_uid)
                                           for lang, uid in predecessors.items()}
    # the EHR got the preliminary report (its set-0 delivery is done): its copy amends
    assert signed.for_destination("EHR").amends and not signed.for_destination("RIS").amends
    assert not off.amends

    requests = {r.label: r.options for r in export_requests(wired, _route(ReviewPolicy.BEFORE_EHR),
                                                            1, signed)}
    assert requests["sr"].sign_off == off and requests["sr"].languages == ("zh-CN",)
    assert requests["fhir for EHR"].sign_off == dataclasses.replace(off, amends=True)
    assert requests["fhir for EHR"].languages == ("zh-CN",)
    assert requests["hl7 for RIS"].sign_off == off and requests["hl7 for RIS"].languages == (
        "zh-CN",)
    unsigned = export_requests(wired, _route(ReviewPolicy.BEFORE_EHR), 1)
    assert all(r.options.sign_off is None for r in unsigned)
    assert isinstance(off, SignOff)


def test_a_failed_ehr_delivery_of_the_models_set_is_not_amended(wired, radiologists):
    job, _ = _signed_job(wired, ehr_reached=False)
    with wired.sessions() as session:
        signed = signed_set(wired, session, session.get_one(Job, job.job_id))
    assert not signed.for_destination("EHR").amends


def test_an_unsigned_review_builds_the_models_set(wired):
    job = add_reviewed_job(wired)
    with wired.sessions() as session:
        assert signed_set(wired, session, session.get_one(Job, job.job_id)) is None


def test_only_the_latest_set_settles_the_job(ctx):
    job = add_reviewed_job(ctx, state=JobState.DELIVERING)
    with ctx.sessions.begin() as session:
        db_job = session.get_one(Job, job.job_id)
        add_delivery(session, db_job, destination="PACS", state=DeliveryState.FAILED,
                     last_error="refused")
        add_delivery(session, db_job, destination="PACS", artifact_set=1)
    with ctx.sessions.begin() as session:
        settle_job(session, job.job_id, "node")
    with ctx.sessions() as session:
        assert session.get_one(Job, job.job_id).state is JobState.DONE
    waiting = add_reviewed_job(ctx, state=JobState.AWAITING_REVIEW)
    with ctx.sessions.begin() as session:
        settle_job(session, waiting.job_id, "node")
    with ctx.sessions() as session:
        assert session.get_one(Job, waiting.job_id).state is JobState.AWAITING_REVIEW


def test_a_job_awaiting_review_is_not_cancelled_but_its_pacs_delivery_can_be_retried(ctx):
    job = add_reviewed_job(ctx, state=JobState.AWAITING_REVIEW)
    with ctx.sessions.begin() as session:
        failed = add_delivery(session, session.get_one(Job, job.job_id), destination="PACS",
                              state=DeliveryState.FAILED, last_error="refused").id
    with ctx.sessions.begin() as session, pytest.raises(JobActionError, match="awaiting review"):
        cancel_job(session, job.job_id, actor="operator:ann")
    assert "starts over" in retry_delivery(ctx, failed, actor="operator:ann")
    with ctx.sessions() as session:
        assert session.get_one(Job, job.job_id).state is JobState.AWAITING_REVIEW
        assert session.get_one(Delivery, failed).state is DeliveryState.PENDING


def test_retrying_a_failed_signed_job_rebuilds_the_signed_set(wired, radiologists):
    job, _ = _signed_job(wired, ehr_reached=False)
    with wired.sessions.begin() as session:
        db_job = session.get_one(Job, job.job_id)
        db_job.state, db_job.last_error = JobState.FAILED, "export: the images are gone"
    message = retry_job(wired, job.job_id, actor="operator:ann")
    # the set-0 EHR failure is not retried: set 1 replaces it
    assert message == f"job {job.job_id}: export runs again, then 0 failed deliveries " \
                      "(the signed set)"
    assert wired.enqueue.sent[-1] == ("export", job.job_id)
    with wired.sessions() as session:
        assert session.get_one(Job, job.job_id).state is JobState.EXPORTING
        assert session.scalars(select(Delivery.state).where(
            Delivery.destination == "EHR")).all() == [DeliveryState.FAILED]


def test_a_job_with_an_open_review_is_not_inferred_again(ctx):
    job = add_reviewed_job(ctx, state=JobState.FAILED)
    with pytest.raises(JobActionError, match="has a review open"):
        retry_job(ctx, job.job_id, actor="operator:ann")


def test_the_awaiting_gauge_counts_jobs_by_route(ctx):
    add_reviewed_job(ctx)
    add_reviewed_job(ctx)
    add_reviewed_job(ctx, state=JobState.DONE)
    registry = CollectorRegistry()
    registry.register(QueueDepthCollector(ctx.sessions, routes=["cxr", "ct"]))
    assert registry.get_sample_value("radground_jobs_awaiting_review", {"route": "cxr"}) == 2
    assert registry.get_sample_value("radground_jobs_awaiting_review", {"route": "ct"}) == 0


def test_a_delivery_sends_only_its_own_sets_artifacts(wired, monkeypatch):
    from tests.index_rows import add_artifact
    from worklist import delivery as delivery_module
    from worklist.delivery import run_delivery
    from worklist.destinations import DeliveryOutcome

    sent: list[list[str]] = []

    class Recording:
        def deliver(self, artifacts, target):
            sent.append([a.object_uid for a in artifacts])
            return DeliveryOutcome.delivered()

    monkeypatch.setattr(delivery_module, "destination_for", lambda kind, name: Recording())
    job = add_reviewed_job(wired, state=JobState.DELIVERING)
    with wired.sessions.begin() as session:
        db_job = session.get_one(Job, job.job_id)
        model = add_artifact(session, db_job, path="a/sr-en.dcm").object_uid
        signed = add_artifact(session, db_job, path="a/signoff1/sr-en.dcm")
        signed.artifact_set = 1
        add_delivery(session, db_job, destination="PACS")
        pending = add_delivery(session, db_job, destination="PACS", artifact_set=1,
                               state=DeliveryState.PENDING, attempts=0).id
        signed_uid = signed.object_uid
    run_delivery(wired, pending, 0)
    assert sent == [[signed_uid]] and model != signed_uid
    with wired.sessions() as session:
        assert session.get_one(Job, job.job_id).state is JobState.DONE
