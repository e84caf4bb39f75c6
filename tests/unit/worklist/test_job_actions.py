"""Operator actions (worklist.jobs): cancel a queued job, retry one delivery, and the pipeline
leaving a cancelled job alone; on SQLite and the real PostgreSQL server."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.index_rows import add_delivery, add_job, add_study
from worklist.context import LoadedModel, PipelineContext
from worklist.db import make_session_factory, utcnow
from worklist.errors import JobActionError, NotFoundError
from worklist.jobs import cancel_job, reprocess_study, retry_delivery, retry_job
from worklist.jobs_models import AuditEvent, Delivery, DeliveryState, Job, JobState
from worklist.pipeline import record_crash, requeue_stale, run_inference


@dataclass
class Recorder:
    """An Enqueuer that keeps what was sent."""

    sent: list[tuple] = field(default_factory=list)

    def inference(self, job_id: int) -> None:
        self.sent.append(("infer", job_id))

    def export(self, job_id: int) -> None:
        self.sent.append(("export", job_id))

    def delivery(self, delivery_id: int, attempt: int, countdown: float = 0.0) -> None:
        self.sent.append(("deliver", delivery_id, attempt))


def _no_model(name: str) -> LoadedModel:
    raise AssertionError(f"a cancelled job must not load model {name!r}")


@pytest.fixture
def ctx(migrated_engine, tmp_path: Path) -> PipelineContext:
    return PipelineContext(
        sessions=make_session_factory(migrated_engine),
        storage_root=tmp_path / "instances",
        outputs_root=tmp_path / "outputs",
        routes=(),
        models=_no_model,
        enqueue=Recorder(),
        requeue_after_seconds=0,
    )


def _audit(ctx, job_id):
    with ctx.sessions() as session:
        return [(e.actor, e.action) for e in session.scalars(
            select(AuditEvent).where(AuditEvent.job_id == job_id).order_by(AuditEvent.id))]


def _queued_job(ctx) -> int:
    with ctx.sessions.begin() as session:
        return add_job(session, add_study(session), state=JobState.QUEUED,
                       created_at=utcnow() - timedelta(minutes=5)).id


def test_cancel_a_queued_job_and_no_step_runs_it(ctx):
    job_id = _queued_job(ctx)
    with ctx.sessions.begin() as session:
        assert cancel_job(session, job_id, actor="operator:ann") == f"job {job_id} cancelled"
    run_inference(ctx, job_id)  # the message sent before the cancel arrives
    assert requeue_stale(ctx) == 0  # the sweeper does not send it again
    record_crash(ctx, job_id=job_id, step="inference", error=RuntimeError())
    with ctx.sessions() as session:
        job = session.get_one(Job, job_id)
        assert job.state is JobState.CANCELLED and job.inference_starts == 0
        assert job.finished_at is not None and job.last_error == "cancelled by operator:ann"
    assert ctx.enqueue.sent == []
    assert _audit(ctx, job_id)[-1] == ("operator:ann", "job-cancel")

    # a retry queues it again
    retried = retry_job(ctx, job_id, actor="operator:bob")
    assert retried == f"job {job_id}: queued for inference again"
    assert ctx.enqueue.sent == [("infer", job_id)]
    with ctx.sessions() as session:
        assert session.get_one(Job, job_id).state is JobState.QUEUED


def test_only_a_queued_job_can_be_cancelled(ctx):
    with ctx.sessions.begin() as session:
        job_id = add_job(session, add_study(session), state=JobState.INFERRING).id
    with ctx.sessions.begin() as session, pytest.raises(JobActionError, match="is inferring"):
        cancel_job(session, job_id, actor="operator:ann")
    with ctx.sessions.begin() as session, pytest.raises(NotFoundError, match="no job 4242"):
        cancel_job(session, 4242, actor="operator:ann")
    with ctx.sessions() as session:
        assert session.get_one(Job, job_id).state is JobState.INFERRING
    assert _audit(ctx, job_id) == [("node", "job-created")]


def _failed_job_with_deliveries(ctx, **job_kwargs) -> tuple[int, int, int]:
    with ctx.sessions.begin() as session:
        job = add_job(session, add_study(session), state=JobState.FAILED,
                      finished_at=utcnow(), last_error="delivery to EHR: HTTP 500", **job_kwargs)
        done = add_delivery(session, job, destination="PACS")
        failed = add_delivery(
            session, job, destination="EHR", protocol="fhir", state=DeliveryState.FAILED,
            attempts=6, last_error="HTTP 500", operation_outcome="{}",
            retry_until=utcnow() - timedelta(minutes=1),
        )
        return job.id, done.id, failed.id


def test_retry_one_failed_delivery_starts_its_clock_over(ctx):
    job_id, done_id, failed_id = _failed_job_with_deliveries(ctx)
    message = retry_delivery(ctx, failed_id, actor="operator:ann")
    assert message == f"delivery {failed_id} to EHR starts over"
    assert ctx.enqueue.sent == [("deliver", failed_id, 0)]
    with ctx.sessions() as session:
        delivery = session.get_one(Delivery, failed_id)
        assert (delivery.state, delivery.attempts, delivery.last_error, delivery.retry_until,
                delivery.operation_outcome) == (DeliveryState.PENDING, 0, None, None, None)
        assert session.get_one(Delivery, done_id).state is DeliveryState.DONE
        job = session.get_one(Job, job_id)
        assert (job.state, job.finished_at, job.last_error, job.retries) == (
            JobState.DELIVERING, None, None, 1)
    assert _audit(ctx, job_id)[-1] == ("operator:ann", "delivery-retry")


def test_retry_delivery_refusals(ctx):
    _, done_id, failed_id = _failed_job_with_deliveries(ctx)
    with pytest.raises(JobActionError, match="only a failed delivery"):
        retry_delivery(ctx, done_id, actor="operator:ann")
    with pytest.raises(NotFoundError, match="no delivery 9999"):
        retry_delivery(ctx, 9999, actor="operator:ann")
    # a destination that got nothing because its outputs were not built: the job must export
    _, _, never_sent = _failed_job_with_deliveries(ctx, output_errors="fhir: no system")
    with ctx.sessions.begin() as session:
        session.get_one(Delivery, never_sent).attempts = 0
    with pytest.raises(JobActionError, match="retry job"):
        retry_delivery(ctx, never_sent, actor="operator:ann")
    assert ctx.enqueue.sent == []
    with ctx.sessions() as session:
        assert session.get_one(Delivery, failed_id).state is DeliveryState.FAILED


def test_unknown_job_and_study_are_not_found(ctx):
    with pytest.raises(NotFoundError):
        retry_job(ctx, 31337, actor="operator:ann")
    with ctx.sessions.begin() as session, pytest.raises(NotFoundError):
        reprocess_study(session, "1.2.3.4", actor="operator:ann")
