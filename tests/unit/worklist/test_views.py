"""The read views (worklist.views) on SQLite and the real PostgreSQL server."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from tests.index_rows import add_artifact, add_delivery, add_job, add_study
from worklist.db import make_session_factory
from worklist.errors import InvalidFilterError
from worklist.jobs_models import AuditEvent, DeliveryState, JobState
from worklist.models import RevisionOutcome, RevisionState
from worklist.routing import Route
from worklist.views import (
    JobFilter,
    StudyFilter,
    dashboard,
    dry_run_routes,
    get_artifact,
    get_job,
    get_study,
    list_jobs,
    list_studies,
    queue_depths,
    worker_leases,
)

NOON = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture
def session(migrated_engine) -> Session:
    with make_session_factory(migrated_engine)() as session:
        yield session


@pytest.fixture
def index(session):
    """Five studies received an hour apart (oldest first) and their jobs."""
    done = add_study(session, received_at=NOON - timedelta(hours=4), revisions=2,
                     outcome=RevisionOutcome.JOB, outcome_detail="cxr")
    add_job(session, done, revision=1, created_at=NOON - timedelta(hours=5),
            finished_at=NOON - timedelta(hours=5) + timedelta(seconds=9))
    done_job = add_job(session, done, created_at=NOON - timedelta(hours=4),
                       finished_at=NOON - timedelta(hours=4) + timedelta(seconds=10))
    ct = add_study(session, received_at=NOON - timedelta(hours=3), modality="CT",
                   outcome=RevisionOutcome.NO_ROUTE, outcome_detail="modality")
    failed = add_study(session, received_at=NOON - timedelta(hours=2), calling_ae_title="WARD",
                       outcome=RevisionOutcome.JOB, outcome_detail="cxr")
    failed_job = add_job(session, failed, route="cxr-ward", state=JobState.FAILED,
                         created_at=NOON - timedelta(hours=2),
                         finished_at=NOON - timedelta(hours=2) + timedelta(seconds=30),
                         last_error="delivery to EHR: HTTP 500")
    own = add_study(session, received_at=NOON - timedelta(hours=1),
                    outcome=RevisionOutcome.OWN_OUTPUT, own_output=True)
    receiving = add_study(session, received_at=NOON, state=RevisionState.RECEIVING, instances=3)
    session.commit()
    return {
        "done": done, "ct": ct, "failed": failed, "own": own, "receiving": receiving,
        "done_job": done_job, "failed_job": failed_job,
    }


def test_studies_newest_first_with_every_revision_and_its_outcome(session, index):
    page = list_studies(session)
    assert page.total == 5 and not page.has_more
    uids = [s.study_instance_uid for s in page.items]
    assert uids == [index[k].study_instance_uid for k in ("receiving", "own", "failed", "ct",
                                                          "done")]
    by_key = {k: page.items[uids.index(index[k].study_instance_uid)] for k in index if
              k in ("receiving", "own", "failed", "ct", "done")}
    done = by_key["done"]
    assert [r.revision for r in done.revisions] == [1, 2]
    assert [r.outcome.kind for r in done.revisions] == ["job", "job"]
    assert done.outcome.jobs[0].id == index["done_job"].id
    assert done.outcome.text == f"job {index['done_job'].id} done"
    assert by_key["ct"].outcome.kind == "no-route"
    assert by_key["ct"].outcome.text == "skipped: no route (modality)"
    assert by_key["own"].outcome.kind == "own-output"
    assert by_key["receiving"].outcome.kind == "receiving"
    assert by_key["receiving"].state is RevisionState.RECEIVING
    assert by_key["receiving"].instance_count == 3
    assert by_key["ct"].modalities == ("CT",) and by_key["ct"].series_count == 1
    assert by_key["failed"].outcome.jobs[0].state is JobState.FAILED


def test_studies_pages(session, index):
    first = list_studies(session, offset=0, limit=2)
    second = list_studies(session, offset=2, limit=2)
    last = list_studies(session, offset=4, limit=2)
    assert (first.total, second.total, last.total) == (5, 5, 5)
    assert first.has_more and second.has_more and not last.has_more
    seen = [s.study_instance_uid for p in (first, second, last) for s in p.items]
    assert len(seen) == len(set(seen)) == 5


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (StudyFilter(modality="ct"), {"ct"}),
        (StudyFilter(calling_ae_title="WARD"), {"failed"}),
        (StudyFilter(state=RevisionState.RECEIVING), {"receiving"}),
        (StudyFilter(job_state=JobState.FAILED), {"failed"}),
        (StudyFilter(outcome=RevisionOutcome.NO_ROUTE), {"ct"}),
        (
            StudyFilter(received_from=NOON - timedelta(hours=3),
                        received_until=NOON - timedelta(hours=1)),
            {"ct", "failed"},
        ),
        (StudyFilter(modality="DX", calling_ae_title="MODALITY", received_until=NOON),
         {"done", "own"}),
    ],
)
def test_study_filters(session, index, filters, expected):
    page = list_studies(session, filters)
    assert {s.study_instance_uid for s in page.items} == {
        index[k].study_instance_uid for k in expected
    }
    assert page.total == len(expected)


def test_study_uid_prefix_filter(session, index):
    uid = index["ct"].study_instance_uid
    assert [s.study_instance_uid for s in list_studies(
        session, StudyFilter(study_instance_uid=uid)).items] == [uid]
    assert list_studies(session, StudyFilter(study_instance_uid="9.9.9.%")).total == 0


def test_one_study(session, index):
    study = get_study(session, index["own"].study_instance_uid)
    assert study is not None
    assert study.calling_ae_titles == ("MODALITY",)
    [series] = study.series
    assert series.modality == "DX" and series.instance_count == 1 and series.own_output
    assert get_study(session, "1.2.3.4") is None


@pytest.mark.parametrize(
    ("build", "parameter"),
    [
        (lambda: StudyFilter(received_from=NOON, received_until=NOON), "received_until"),
        (lambda: StudyFilter(received_from=datetime(2026, 1, 1)), "received_from"),
        (lambda: StudyFilter(modality=" "), "modality"),
        (lambda: JobFilter(calling_ae_title="X" * 17), "calling_ae_title"),
        (lambda: JobFilter(created_from=NOON, created_until=NOON - timedelta(1)),
         "created_until"),
    ],
)
def test_bad_filters_name_the_parameter(build, parameter):
    with pytest.raises(InvalidFilterError) as raised:
        build()
    assert raised.value.parameter == parameter


@pytest.mark.parametrize(("offset", "limit", "parameter"),
                         [(-1, 10, "offset"), (0, 0, "limit"), (0, 501, "limit")])
def test_bad_pages_name_the_parameter(session, offset, limit, parameter):
    with pytest.raises(InvalidFilterError) as raised:
        list_jobs(session, offset=offset, limit=limit)
    assert raised.value.parameter == parameter


def test_jobs_newest_first_with_filters(session, index):
    page = list_jobs(session)
    assert page.total == 3
    assert page.items[0].id == index["failed_job"].id
    assert page.items[0].modalities == ("DX",)
    assert page.items[0].study_instance_uid == index["failed"].study_instance_uid

    def ids(**kwargs):
        return [j.id for j in list_jobs(session, JobFilter(**kwargs)).items]

    assert ids(states=[JobState.FAILED]) == [index["failed_job"].id]
    assert ids(states=["failed", "done"])[0] == index["failed_job"].id
    assert ids(route="cxr-ward") == [index["failed_job"].id]
    assert ids(calling_ae_title="WARD") == [index["failed_job"].id]
    assert ids(modality="CT") == []
    assert ids(created_from=NOON - timedelta(hours=4, minutes=30),
               created_until=NOON - timedelta(hours=3)) == [index["done_job"].id]
    assert len(ids(study_instance_uid=index["done"].study_instance_uid)) == 2


def test_one_job_with_timings_artifacts_deliveries_and_audit(session, index):
    job = index["failed_job"]
    sr = add_artifact(session, job, kind="sr", path="x/r1/sr-en.dcm")
    fhir = add_artifact(session, job, kind="fhir", language="en", path="x/r1/fhir.json")
    retry_at = NOON + timedelta(minutes=5)
    add_delivery(session, job, destination="PACS")
    add_delivery(session, job, destination="EHR", protocol="fhir", state=DeliveryState.FAILED,
                 attempts=4, last_error="HTTP 500", operation_outcome='{"issue": []}')
    add_delivery(session, job, destination="VNA", protocol="dicomweb",
                 state=DeliveryState.PENDING, attempts=2, last_error="HTTP 503",
                 next_attempt_at=retry_at, retry_until=NOON + timedelta(hours=8))
    session.add(AuditEvent(at=NOON, actor="operator:ann", action="job-retry", job_id=job.id,
                           detail="retried"))
    session.commit()

    detail = get_job(session, job.id)
    assert detail is not None
    assert detail.summary.state is JobState.FAILED
    assert detail.summary.next_attempt_at == retry_at
    timings = detail.timings
    assert timings.queued_seconds == 2.0
    assert timings.inference_seconds == 1.5
    assert timings.total_seconds == 30.0
    assert [(a.kind, a.media_type) for a in detail.artifacts] == [
        ("sr", "application/dicom"), ("fhir", "application/fhir+json")]
    assert [d.destination for d in detail.deliveries] == ["PACS", "EHR", "VNA"]
    ehr = detail.deliveries[1]
    assert (ehr.state, ehr.attempts, ehr.last_error, ehr.operation_outcome) == (
        DeliveryState.FAILED, 4, "HTTP 500", '{"issue": []}')
    assert detail.deliveries[2].retry_until == NOON + timedelta(hours=8)
    assert [e.action for e in detail.audit] == ["job-created", "job-retry"]
    assert detail.audit[1].actor == "operator:ann"

    assert get_artifact(session, job.id, sr.id).path == "x/r1/sr-en.dcm"
    assert get_artifact(session, index["done_job"].id, fhir.id) is None
    assert get_job(session, 999_999) is None


def test_dashboard_counts_a_day(session, index):
    add_delivery(session, index["failed_job"], destination="EHR", protocol="fhir",
                 state=DeliveryState.FAILED, attempts=3, last_error="HTTP 500")
    queued_study = add_study(session, received_at=NOON + timedelta(minutes=5))
    add_job(session, queued_study, state=JobState.QUEUED, created_at=NOON + timedelta(minutes=5))
    retrying = add_job(session, index["ct"], route="ct", state=JobState.DELIVERING,
                       created_at=NOON)
    add_delivery(session, retrying, destination="VNA", protocol="dicomweb",
                 state=DeliveryState.PENDING, attempts=1, last_error="HTTP 503",
                 next_attempt_at=NOON + timedelta(hours=1))
    yesterday = add_study(session, received_at=NOON - timedelta(days=1))
    add_job(session, yesterday, state=JobState.FAILED, created_at=NOON - timedelta(days=1),
            finished_at=NOON - timedelta(days=1))
    session.commit()

    day = dashboard(session, date(2026, 12, 6), now=NOON)
    assert day.received == 7  # six studies' revisions today (one with two) and not yesterday's
    assert (day.processed, day.failed) == (2, 1)
    assert day.queue.jobs == {"queued": 1, "inferring": 0, "exporting": 0, "delivering": 1}
    assert day.queue.deliveries_pending == 1 and day.queue.deliveries_retrying == 1
    assert day.waiting == 2 + day.queue.revisions_waiting
    assert [(f.destination, f.failed, f.retrying) for f in day.delivery_failures] == [
        ("EHR", 1, 0), ("VNA", 0, 1)]
    assert dashboard(session, date(2026, 12, 5), now=NOON).failed == 1


def test_worker_leases_and_queue_depths(session, index):
    study = add_study(session)
    add_job(session, study, route="a", state=JobState.INFERRING, worker="worker:gpu1:7",
            lease_expires_at=NOON + timedelta(seconds=20))
    add_job(session, study, route="b", state=JobState.INFERRING, worker="worker:gpu2:9",
            lease_expires_at=NOON - timedelta(seconds=20))
    session.commit()
    leases = worker_leases(session, now=NOON)
    assert [(w.worker, w.jobs, w.alive) for w in leases] == [
        ("worker:gpu1:7", 1, True), ("worker:gpu2:9", 1, False)]
    assert queue_depths(session, now=NOON).jobs["inferring"] == 2


def test_route_dry_run(session, index):
    routes = (
        Route("ct", modalities=frozenset({"CT"})),
        Route("cxr", modalities=frozenset({"DX"})),
        Route("any"),
    )
    run = dry_run_routes(session, index["done"].study_instance_uid, routes)
    assert run is not None and run.chosen == "cxr" and run.instances == 1
    assert [(r.route, r.matched, r.chosen) for r in run.routes] == [
        ("ct", 0, False), ("cxr", 1, True), ("any", 1, False)]
    assert str(run.routes[0].mismatches[0]) == "modality is DX, wanted CT"
    own = dry_run_routes(session, index["own"].study_instance_uid, routes)
    assert own is not None and own.chosen is None and own.own_outputs == 1
    assert dry_run_routes(session, "1.2.3", routes) is None
