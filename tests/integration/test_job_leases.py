"""Inference attempts hold leases: a dead worker's job is queued again as soon as its
lease lapses, and an attempt that lost its lease cannot store its result.

Runs on the pipeline world of ``test_pipeline`` (in-process node, real databases,
an in-test queue), with two pipeline contexts standing for two gpu workers.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta

from sqlalchemy import select

from tests.integration import test_pipeline
from tests.integration.test_pipeline import QueueRecorder, cxr_file, drain, jobs
from worklist.completion import CompletionMonitor
from worklist.db import utcnow
from worklist.jobs_models import AuditEvent, Job, JobState
from worklist.leases import Heartbeat, claim_inference, lapse_leases_of, requeue_lapsed, worker_id
from worklist.pipeline import make_study_ready_hook, requeue_stale, run_inference

# the pipeline world and the peers it delivers to
world, pacs, ehr = test_pipeline.world, test_pipeline.pacs, test_pipeline.ehr


def audit_trail(ctx, job_id: int) -> list[tuple[str, str, str]]:
    """(action, actor, detail) of a job's audit events, in order."""
    with ctx.sessions() as session:
        return [(e.action, e.actor, e.detail) for e in session.scalars(
            select(AuditEvent).where(AuditEvent.job_id == job_id).order_by(AuditEvent.id))]


def test_a_killed_workers_job_is_queued_again_once_its_lease_lapses(world, shared_data):
    world.send([cxr_file(world.tmp, shared_data)])
    world.ready()
    [message] = world.queue.messages
    world.queue.messages.clear()
    job_id = message[1]
    # worker A claims the job and is killed (no heartbeat renews its lease any more)
    with world.ctx.sessions.begin() as session:
        claim_inference(session.get(Job, job_id), worker="worker:host-a:1", now=utcnow(),
                        lease_seconds=world.ctx.lease_seconds)
    assert requeue_stale(world.ctx, utcnow()) == 0  # the lease still holds: nothing to do yet
    # one lease later (not the task time limit of 15 minutes) the sweeper queues it again
    assert requeue_stale(world.ctx, utcnow() + timedelta(seconds=world.ctx.lease_seconds + 1)) == 1
    assert world.queue.messages == [("infer", job_id)]
    drain(world.ctx, world.queue)
    [job] = jobs(world.ctx)
    assert (job.state, job.inference_starts, job.worker) == (JobState.DONE, 2, world.ctx.actor), job.last_error
    trail = [(action, actor, detail) for action, actor, detail in audit_trail(world.ctx, job_id)
             if action in ("inference-started", "job-requeued", "inferred")]
    assert [(a, d.split(":")[0]) for a, _, d in trail] == [
        ("job-requeued", "attempt 1"), ("inference-started", "attempt 2"), ("inferred", "attempt 2")]
    assert "worker:host-a:1" in trail[0][2]


def test_an_attempt_that_lost_its_lease_cannot_overwrite_the_attempt_that_replaced_it(world, shared_data):
    """Worker A is alive but stalls past its lease (a paused VM); the job is queued
    again and worker B finishes it. When A comes back its result is discarded, and
    the audit trail shows that the attempts never overlapped."""
    world.send([cxr_file(world.tmp, shared_data)])
    world.ready()
    [message] = world.queue.messages
    world.queue.messages.clear()
    job_id = message[1]
    entered, release = threading.Event(), threading.Event()

    def stalled_models(name):
        entered.set()
        release.wait(60)
        return world.ctx.models(name)

    worker_a = dataclasses.replace(world.ctx, actor="worker:host-a:1", models=stalled_models,
                                   enqueue=QueueRecorder())
    worker_b = dataclasses.replace(world.ctx, actor="worker:host-b:2")
    a = threading.Thread(target=run_inference, args=(worker_a, job_id))
    a.start()
    try:
        assert entered.wait(60)
        assert requeue_stale(world.ctx, utcnow() + timedelta(seconds=world.ctx.lease_seconds + 1)) == 1
        drain(worker_b, world.queue)
        [job] = jobs(world.ctx)
        assert job.state is JobState.DONE, job.last_error
        report_of_b = job.report_json
    finally:
        release.set()
        a.join(60)
    [job] = jobs(world.ctx)
    assert (job.state, job.inference_starts, job.report_json) == (JobState.DONE, 2, report_of_b)
    assert worker_a.enqueue.messages == []  # A sent no export
    trail = [(action, actor, detail) for action, actor, detail in audit_trail(world.ctx, job_id)
             if action in ("inference-started", "job-requeued", "inferred")]
    assert [(action, actor) for action, actor, _ in trail] == [
        ("inference-started", "worker:host-a:1"),
        ("job-requeued", "node"),
        ("inference-started", "worker:host-b:2"),
        ("inferred", "worker:host-b:2"),
    ]


def test_a_heartbeat_keeps_a_running_attempts_lease_and_notices_when_it_is_lost(world, shared_data):
    world.send([cxr_file(world.tmp, shared_data)])
    world.ready()
    [(_, job_id)] = world.queue.messages
    lease = world.ctx.lease_seconds
    with world.ctx.sessions.begin() as session:
        job = session.get(Job, job_id)
        attempt = claim_inference(job, worker="worker:host-a:1", now=utcnow() - timedelta(seconds=lease - 1),
                                  lease_seconds=lease)
        claimed_until = job.lease_expires_at
    heartbeat = Heartbeat(world.ctx.sessions, job_id, attempt, worker="worker:host-a:1", lease_seconds=lease)
    assert heartbeat.renew()
    [job] = jobs(world.ctx)
    assert job.lease_expires_at > claimed_until + timedelta(seconds=lease / 2)
    with world.ctx.sessions.begin() as session:
        assert requeue_lapsed(session, now=utcnow() + timedelta(seconds=2), lease_seconds=lease) == []
    with world.ctx.sessions.begin() as session:
        assert requeue_lapsed(session, now=utcnow() + timedelta(seconds=lease + 1), lease_seconds=lease) == [job_id]
    assert not heartbeat.renew()  # the attempt lost the job: its renewals (and its result) match nothing


def test_the_jobs_of_a_worker_seen_dead_are_queued_again_at_the_next_sweep(world, shared_data):
    """The supervisor of an embedded worker saw it exit: its leases end at once."""
    world.send([cxr_file(world.tmp, shared_data)])
    world.ready()
    [(_, job_id)] = world.queue.messages
    world.queue.messages.clear()
    with world.ctx.sessions.begin() as session:
        claim_inference(session.get(Job, job_id), worker=worker_id(4242), now=utcnow(),
                        lease_seconds=world.ctx.lease_seconds)
    with world.ctx.sessions.begin() as session:
        assert lapse_leases_of(session, worker_id(4343), now=utcnow()) == []  # another worker: nothing
        assert lapse_leases_of(session, worker_id(4242), now=utcnow()) == [job_id]
    assert requeue_stale(world.ctx) == 1  # now, not one lease later
    assert world.queue.messages == [("infer", job_id)]


class _BrokerDown:
    """An enqueuer whose broker is unreachable until :attr:`up` is set."""

    def __init__(self, queue: QueueRecorder) -> None:
        self.queue, self.up = queue, False

    def inference(self, job_id: int) -> None:
        if not self.up:
            raise ConnectionRefusedError("broker down")
        self.queue.inference(job_id)

    def export(self, job_id: int) -> None:
        self.queue.export(job_id)

    def delivery(self, delivery_id: int, attempt: int, countdown: float = 0.0) -> None:
        self.queue.delivery(delivery_id, attempt, countdown)


def test_a_ready_study_dispatched_again_while_the_broker_was_down_is_audited_once(world, shared_data):
    broker = _BrokerDown(world.queue)
    ctx = dataclasses.replace(world.ctx, enqueue=broker)
    monitor = CompletionMonitor(ctx.sessions, make_study_ready_hook(ctx), idle_seconds=30, claim_lease_seconds=60)
    world.send([cxr_file(world.tmp, shared_data)])
    later = utcnow() + timedelta(seconds=31)
    for attempt in range(3):  # each pass the hook fails at the enqueue and the revision is dispatched again
        assert monitor.run_once(later + timedelta(seconds=61 * attempt)) == []
    broker.up = True
    assert len(monitor.run_once(later + timedelta(seconds=61 * 3))) == 1
    [job] = jobs(world.ctx)
    assert [action for action, _, _ in audit_trail(world.ctx, job.id)].count("job-created") == 1
    assert world.queue.messages == [("infer", job.id)]
