"""The job pipeline: study ready → inference → export → deliveries.

Each step is a function that takes IDs, re-checks state in the database before
acting, and is idempotent: a step that runs twice (a broker redelivery after a
crash, a visibility timeout, a sweeper re-enqueue) produces no duplicate
objects — output UIDs are deterministic, artifacts and deliveries are unique
per job, and state transitions are conditional updates. Steps enqueue the next
one only after their transaction committed. The Celery tasks
(:mod:`worklist.tasks`) are thin wrappers around these functions.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicom_node.private_files import PRIVATE_FILE_MODE, make_private_directories
from dicom_node.uids import short_uid
from engine.report import GroundedReport, Task
from exporters.protocol import Artifact as BuiltArtifact
from exporters.protocol import Exporter, ExportOptions, OutputKind
from worklist import metrics
from worklist.completion import StudyReady
from worklist.context import PipelineContext, StepError, audit, insert_ignore
from worklist.db import updated_rows, utcnow
from worklist.delivery import settle_job
from worklist.export_requests import ExportRequest, export_requests, per_destination_label
from worklist.jobs_models import MODEL_SET, Artifact, Delivery, DeliveryState, Job, JobState
from worklist.leases import Heartbeat, claim_inference, holds, lease_lapsed, requeue_lapsed
from worklist.models import RevisionOutcome, Study, StudyRevision
from worklist.routing import (
    ReviewPolicy,
    Route,
    choose_route,
    explain_routes,
    no_route_reason,
    study_instance_facts,
)

if TYPE_CHECKING:
    from worklist.review.signoff import SignedSet

__all__ = [
    "create_jobs",
    "make_study_ready_hook",
    "record_crash",
    "requeue_stale",
    "run_export",
    "run_inference",
]

logger = logging.getLogger(__name__)


# -- study ready → jobs ------------------------------------------------------


def create_jobs(ctx: PipelineContext, session: Session, ready: StudyReady) -> list[int]:
    """Create the job for a ready study revision (idempotent) and record the
    revision's outcome (a job, no route matched and why, own outputs only);
    the caller commits."""
    study = session.execute(
        select(Study).where(Study.study_instance_uid == ready.study_instance_uid)
    ).scalar_one()
    facts = study_instance_facts(session, study.id)
    token = short_uid(ready.study_instance_uid)
    if not facts:
        _record_outcome(session, study.id, ready.revision, RevisionOutcome.OWN_OUTPUT, None)
        metrics.revision_routed(RevisionOutcome.OWN_OUTPUT)
        logger.info(
            "Study %s revision %d: only RadGround outputs, nothing to process",
            token,
            ready.revision,
        )
        return []
    route = choose_route(ctx.routes, facts)
    if route is None:
        why = no_route_reason(explain_routes(ctx.routes, facts))
        _record_outcome(session, study.id, ready.revision, RevisionOutcome.NO_ROUTE, why)
        metrics.revision_routed(RevisionOutcome.NO_ROUTE)
        logger.info(
            "Study %s revision %d: no route matches (%s); not processed", token, ready.revision, why
        )
        return []
    now = utcnow()
    created = insert_ignore(
        session,
        Job,
        study_pk=study.id,
        revision=ready.revision,
        route=route.name,
        model=route.model,
        state=JobState.QUEUED.value,
        inference_starts=0,
        retries=0,
        created_at=now,
        updated_at=now,
    )
    job = session.execute(
        select(Job).where(
            Job.study_pk == study.id, Job.revision == ready.revision, Job.route == route.name
        )
    ).scalar_one()
    _record_outcome(session, study.id, ready.revision, RevisionOutcome.JOB, route.name)
    # a re-dispatched revision (its enqueue failed: broker down) finds its job made already
    if created:
        from worklist.review.records import supersede_open_reviews

        metrics.revision_routed(RevisionOutcome.JOB)
        audit(
            session, "node", "job-created", job.id, f"route={route.name} revision={ready.revision}"
        )
        supersede_open_reviews(session, study_pk=study.id, route=route.name, new_job_id=job.id)
        logger.info(
            "Study %s revision %d: job %d on route %s", token, ready.revision, job.id, route.name
        )
    return [job.id] if job.state is JobState.QUEUED else []


def _record_outcome(session: Session, study_pk: int, revision: int, outcome: RevisionOutcome,
                    detail: str | None) -> None:
    session.execute(
        update(StudyRevision)
        .where(StudyRevision.study_pk == study_pk, StudyRevision.revision == revision)
        .values(outcome=outcome, outcome_detail=None if detail is None else detail[:200])
    )


def make_study_ready_hook(ctx: PipelineContext) -> Callable[[StudyReady], None]:
    """The completion monitor's hook: create jobs, commit, then enqueue them."""

    def on_study_ready(ready: StudyReady) -> None:
        with ctx.sessions.begin() as session:
            job_ids = create_jobs(ctx, session, ready)
        for job_id in job_ids:
            _enqueue_inference(ctx, job_id)

    return on_study_ready


def _enqueue_inference(ctx: PipelineContext, job_id: int) -> None:
    ctx.enqueue.inference(job_id)
    with ctx.sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow()))


# -- inference -----------------------------------------------------------------


def _route(ctx: PipelineContext, name: str) -> Route:
    for route in ctx.routes:
        if route.name == name:
            return route
    raise StepError(f"route {name!r} is no longer configured")


def run_inference(ctx: PipelineContext, job_id: int) -> None:
    """Run the model on the job's study revision; then enqueue the export."""
    from engine.analyze import NotApplicableError, analyze_study
    from engine.errors import EngineError

    with ctx.sessions.begin() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.state not in (JobState.QUEUED, JobState.INFERRING):
            return  # already past this step (a redelivered message)
        if job.state is JobState.INFERRING and not lease_lapsed(
            job, now=utcnow(), lease_seconds=ctx.lease_seconds
        ):
            return  # a duplicate message while another worker runs it; a dead worker's lease lapses
        if job.inference_starts >= ctx.max_task_starts:
            job.state, job.updated_at, job.finished_at = JobState.DEAD, utcnow(), utcnow()
            job.last_error = (
                f"inference started {job.inference_starts} times without finishing "
                "(worker killed or out of memory?); not retried automatically: `radground jobs "
                "retry` after checking the worker"
            )
            audit(session, ctx.actor, "job-dead", job_id, job.last_error)
            logger.error("Job %d is dead: %s", job_id, job.last_error)
            return
        attempt = claim_inference(
            job, worker=ctx.actor, now=utcnow(), lease_seconds=ctx.lease_seconds
        )
        audit(session, ctx.actor, "inference-started", job_id, f"attempt {attempt}")
        metrics.queue_wait(job.enqueued_at or job.created_at, utcnow())
        route_name, study_pk, revision = job.route, job.study_pk, job.revision
        facts = study_instance_facts(session, study_pk)
        study_uid = session.get_one(Study, study_pk).study_instance_uid
    started = time.perf_counter()
    heartbeat = Heartbeat(
        ctx.sessions, job_id, attempt, worker=ctx.actor, lease_seconds=ctx.lease_seconds
    )
    try:
        heartbeat.start()
        route = _route(ctx, route_name)
        loaded = ctx.models(route.model)
        datasets = [dcmread(ctx.storage_root / f.path, defer_size="64 KB") for f in facts]
        report = analyze_study(
            datasets,
            loaded.model,
            selection=route.image_selection(),
            languages=route.languages,
            task=Task(route.task),
            targets=route.targets,
            generate=loaded.generate,
            regional_cot=route.regional_cot,
        # skips the images the model is not made for (model.applicability), each in report.problems
        )
    except NotApplicableError as exc:
        # never a 'normal' report for images the model cannot read
        _fail(ctx, job_id, f"not analysed: {exc}", attempt=attempt)
        return
    except (EngineError, StepError, OSError) as exc:
        _fail(ctx, job_id, f"inference: {exc}", attempt=attempt)
        return
    finally:
        heartbeat.stop()
    elapsed = time.perf_counter() - started
    if report.study_instance_uid != study_uid:
        _fail(ctx, job_id, "inference: the report is about another study", attempt=attempt)
        return
    with ctx.sessions.begin() as session:
        moved = updated_rows(
            session.execute(
                update(Job)
                # fenced: the result of an attempt that lost its lease is dropped
                .where(holds(job_id, attempt, worker=ctx.actor))
                .values(
                    state=JobState.EXPORTING,
                    report_json=report.to_json(),
                    inference_seconds=elapsed,
                    updated_at=utcnow(),
                    last_error=None,
                    lease_expires_at=None,
                )
            )
        )
        if moved:
            audit(
                session,
                ctx.actor,
                "inferred",
                job_id,
                f"attempt {attempt}: {len(report.findings)} findings, "
                f"{len(report.problems)} problems, {elapsed:.2f} s",
            )
    if moved:
        metrics.stage_finished("inference", elapsed)
        logger.info(
            "Job %d: %d findings in %.2f s (revision %d)",
            job_id,
            len(report.findings),
            elapsed,
            revision,
        )
        ctx.enqueue.export(job_id)
    else:
        logger.warning(
            "Job %d: attempt %d no longer holds the job; its result is discarded", job_id, attempt
        )


def _fail(ctx: PipelineContext, job_id: int, reason: str, *, attempt: int | None = None) -> None:
    """Mark the job failed; with ``attempt``, only while that inference attempt still holds it."""
    with ctx.sessions.begin() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.state in (
            JobState.DONE, JobState.FAILED, JobState.DEAD, JobState.CANCELLED
        ):
            return
        if attempt is not None and (
            job.state is not JobState.INFERRING
            or job.inference_starts != attempt
            or job.worker != ctx.actor
        ):
            return  # a superseded attempt (re-queued after its lease lapsed) decides nothing
        job.state, job.last_error = JobState.FAILED, reason[:4000]
        job.updated_at = job.finished_at = utcnow()
        audit(session, ctx.actor, "job-failed", job_id, reason[:500])
    logger.warning("Job %d failed: %s", job_id, reason)


# -- export --------------------------------------------------------------------


def _source_headers(
    ctx: PipelineContext, session: Session, job: Job, report: GroundedReport
) -> list[Dataset]:
    facts = study_instance_facts(session, job.study_pk)
    by_uid = {f.sop_instance_uid: f for f in facts}
    wanted = [
        by_uid[ref.sop_instance_uid] for ref in report.images if ref.sop_instance_uid in by_uid
    ]
    if not wanted and facts:
        wanted = facts[:1]  # a negative report still needs the study's patient/study modules
    return [dcmread(ctx.storage_root / f.path) for f in wanted]


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all, ``0600`` in ``0700`` folders (outputs name the
    patient)."""
    make_private_directories(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # a file a crashed attempt left keeps no other mode
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def run_export(ctx: PipelineContext, job_id: int) -> None:
    """Build the route's outputs (SR, presentation states, and what its
    destinations ask for: Secondary Capture, Key Object Selection, a FHIR Bundle
    per FHIR endpoint, an ORU^R01 per HL7 receiver), record them as artifacts,
    create one delivery per destination, then enqueue those.

    The model's outputs are artifact set 0. A route that holds outputs for review
    (``review = "before_ehr" | "before_all"``) delivers set 0 only to the destinations it
    does not hold, and the job waits for review (``awaiting_review``, its review created in
    the same transaction). A job whose review is signed builds the sign-off's set *n* from the
    reviewed report instead (:mod:`worklist.review.signoff`) and delivers it everywhere.

    Each output kind is built on its own: one that cannot be built (e.g. a FHIR
    Bundle without a usable patient identifier system) is recorded in the job's
    ``output_errors`` while the others are kept and delivered; a destination
    that would only get outputs that were not built fails at once with that
    reason. The job ends ``failed`` if anything was not built or not delivered.
    """
    from worklist.review.records import create_review
    from worklist.review.signoff import built_again, destinations_now, signed_set

    with ctx.sessions() as session:
        job = session.get(Job, job_id)
        if job is None or job.state is not JobState.EXPORTING:
            return
        route = _route(ctx, job.route)
        if job.report_json is None:
            raise RuntimeError(f"job {job_id} is exporting but holds no report")
        try:
            signed = signed_set(ctx, session, job)
        except StepError as exc:
            _fail(ctx, job_id, f"export: {exc}")
            return
        report = GroundedReport.from_json(job.report_json) if signed is None else signed.report
        sources = _source_headers(ctx, session, job, report)
        study_uid = session.get_one(Study, job.study_pk).study_instance_uid
        revision = job.revision
    artifact_set = MODEL_SET if signed is None else signed.number
    started = time.perf_counter()
    try:
        built = _build_outputs(ctx, route, report, sources, revision, signed=signed)
    except StepError as exc:
        _fail(ctx, job_id, f"export: {exc}")
        return
    if not built.outputs:
        _fail(
            ctx,
            job_id,
            "export: " + "; ".join(f"{kind}: {why}" for kind, why in built.failures.items()),
        )
        return
    folder = ctx.outputs_root / study_uid / f"r{revision}"
    if signed is not None:
        folder = folder / f"signoff{signed.number}"
        with ctx.sessions() as session:
            again = built_again(session, job_id, signed.number,
                                {o.object_uid: o.kind for o in built.outputs})
        if again:
            _fail(ctx, job_id, f"export: sign-off {signed.number}: {again}")
            return
    now = utcnow()
    with ctx.sessions.begin() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.state is not JobState.EXPORTING:
            return
        for output in built.outputs:
            path = folder / output.filename
            _write_atomically(path, output.data)
            insert_ignore(
                session,
                Artifact,
                job_id=job_id,
                kind=output.kind,
                language=output.language,
                object_uid=output.object_uid,
                series_instance_uid=output.series_instance_uid,
                sop_class_uid=output.sop_class_uid,
                path=str(path.relative_to(ctx.outputs_root)),
                created_at=now,
                artifact_set=artifact_set,
            )
        for name in destinations_now(ctx, route, signed):
            target = ctx.destinations.get(name)
            # the delivery reports it missing
            protocol = target.type if target is not None else "dicom"
            not_sent = _not_sent_reason(ctx, name, built)
            insert_ignore(
                session,
                Delivery,
                job_id=job_id,
                destination=name,
                protocol=protocol,
                state=(DeliveryState.FAILED if not_sent else DeliveryState.PENDING).value,
                attempts=0,
                last_error=not_sent,
                artifact_set=artifact_set,
            )
            if not_sent:  # a retried job whose output still cannot be built
                session.execute(
                    update(Delivery)
                    .where(
                        Delivery.job_id == job_id,
                        Delivery.destination == name,
                        Delivery.artifact_set == artifact_set,
                        Delivery.state == DeliveryState.PENDING,
                    )
                    .values(state=DeliveryState.FAILED, last_error=not_sent)
                )
        job.output_errors = (
            "\n".join(f"{kind}: {why}" for kind, why in built.failures.items()) or None
        )
        job.export_seconds = export_seconds = time.perf_counter() - started
        job.updated_at = now
        awaiting = signed is None and route.review is not ReviewPolicy.NONE
        job.state = JobState.AWAITING_REVIEW if awaiting else JobState.DELIVERING
        detail = f"{len(built.outputs)} objects"
        if signed is not None:
            detail += f" (sign-off {signed.number})"
        if built.failures:
            detail += f"; not built: {', '.join(built.failures)}"
        if built.local_patient_system:
            detail += (
                f"; FHIR Patient.identifier.system is this node's own {built.local_patient_system}"
            )
        audit(session, ctx.actor, "exported", job_id, detail)
        if awaiting:
            create_review(session, job_id, report, now=now)
            audit(session, ctx.actor, "review-awaited", job_id, f"review = {route.review.value}")
        settle_job(session, job_id, ctx.actor)
        deliveries = [
            (d.id, d.attempts)
            for d in session.scalars(
                select(Delivery).where(
                    Delivery.job_id == job_id,
                    Delivery.artifact_set == artifact_set,
                    Delivery.state == DeliveryState.PENDING,
                )
            )
        ]
    metrics.stage_finished("export", export_seconds)
    logger.info("Job %d: %d objects exported%s", job_id, len(built.outputs),
                f", not built: {', '.join(built.failures)}" if built.failures else "")
    for delivery_id, attempts in deliveries:
        ctx.enqueue.delivery(delivery_id, attempts)


@dataclass(frozen=True)
class _Output:
    kind: str
    language: str
    object_uid: str
    series_instance_uid: str | None
    sop_class_uid: str | None
    filename: str
    data: bytes


@dataclass
class _Built:
    """What the export built, and which output kinds it could not build and why."""

    outputs: list[_Output] = field(default_factory=list)
    #: "sr", "gsps", "kos", "fhir" (the local Bundle), "fhir for NAME", "hl7 for NAME" → the reason.
    failures: dict[str, str] = field(default_factory=dict)
    #: The node's own patient identifier system when a Bundle had to use it.
    local_patient_system: str | None = None


def _not_sent_reason(ctx: PipelineContext, name: str, built: _Built) -> str | None:
    """Why a destination gets nothing (what it takes was not built), or None."""
    from exporters.registry import artifact_kinds, exporter_for

    for kind, what, targets in ((OutputKind.FHIR_BUNDLE, "FHIR Bundle", ctx.fhir_targets),
                                (OutputKind.HL7_ORU, "HL7 message", ctx.hl7_targets)):
        if name in targets:
            why = built.failures.get(per_destination_label(kind, name))
            return None if why is None else f"not sent: its {what} was not built: {why}"
    target = ctx.dicom_targets.get(name)
    if target is None:
        return None  # the delivery step reports a destination that is no longer configured
    requested = dict.fromkeys(exporter_for(kind).kind.value for kind in target.outputs)
    failed = [kind for kind in requested if kind in built.failures]
    produced = {o.kind for o in built.outputs}
    if failed and not any(kind.value in produced for kind in artifact_kinds(target.outputs)):
        reasons = "; ".join(f"{kind}: {built.failures[kind]}" for kind in failed)
        return f"not sent: none of its outputs was built ({reasons})"
    return None


def _build_kind(built: _Built, kind: str, build: Callable[[], None]) -> None:
    """Run one output kind's builder; record its failure instead of failing the job."""
    from engine.errors import EngineError
    from exporters.errors import ExportError

    try:
        build()
    except (ExportError, EngineError) as exc:
        built.failures[kind] = str(exc)[:1000]
        logger.warning("Output %s not built (%s)", kind, type(exc).__name__)
    except Exception as exc:
        built.failures[kind] = f"internal error ({type(exc).__name__}); see the worker log"
        logger.exception("Output %s not built", kind)


def _build_outputs(
    ctx: PipelineContext,
    route: Route,
    report: GroundedReport,
    sources: Sequence[Dataset],
    revision: int,
    *,
    signed: SignedSet | None = None,
) -> _Built:
    """Plan the regions once, then run every requested exporter with that plan;
    the DICOM objects built first are handed to the later ones (KOS, FHIR, HL7)
    as references."""
    from exporters.errors import ExportError
    from exporters.fhir import local_system_used
    from exporters.regions import RegionPlan, plan_regions
    from exporters.registry import exporter_for

    if not sources:
        raise StepError("none of the study's images is in the index any more")
    built = _Built()
    requests = export_requests(ctx, route, revision, signed)
    plan_error: str | None = None
    try:
        plan = plan_regions(report, sources)
    # the report's regions do not fit its images: no DICOM output can use them
    except ExportError as exc:
        plan_error = str(exc)[:1000]
        plan = RegionPlan.empty()  # the FHIR Bundle and the HL7 message do not draw regions
        logger.warning("Regions not planned (%s)", type(exc).__name__)
    references: list[BuiltArtifact] = []
    for request in requests:
        exporter = exporter_for(request.kind)
        if plan_error is not None and request.kind.is_dicom:
            built.failures[request.label] = (
                f"the regions could not be placed on their images: {plan_error}"
            )
            continue
        options = dataclasses.replace(request.options, references=tuple(references))

        def build(
            exporter: Exporter = exporter,
            options: ExportOptions = options,
            request: ExportRequest = request,
        ) -> None:
            artifacts = exporter.export(report, sources, plan, options)
            if request.kind is OutputKind.FHIR_BUNDLE:
                local = local_system_used(sources, options)
                if local is not None:
                    built.local_patient_system = local
                    _log_local_system_once(local)
            references.extend(a for a in artifacts if a.dataset is not None)
            built.outputs.extend(
                _Output(
                    a.kind.value,
                    a.language,
                    a.object_uid,
                    a.series_instance_uid,
                    a.sop_class_uid,
                    a.filename,
                    a.to_bytes(),
                )
                for a in artifacts
            )

        _build_kind(built, request.label, build)
    return built


_logged_local_systems: set[str] = set()


def _log_local_system_once(system: str) -> None:
    """Say once per process which identifier system the node chose (no patient data)."""
    if system in _logged_local_systems:
        return
    _logged_local_systems.add(system)
    logger.warning(
        "A source without a usable Issuer of Patient ID: FHIR Patient.identifier.system is this "
        "node's own namespace %s; set destinations.<name>.patient_identifier_system to the site's "
        "assigning authority",
        system,
    )


# -- the safety net ------------------------------------------------------------


def record_crash(ctx: PipelineContext, *, job_id: int | None = None, delivery_id: int | None = None,
                 step: str, error: BaseException) -> None:
    """An unexpected exception in a step: fail the job (or delivery) with the
    exception's type, so the sweeper does not re-run a step that cannot succeed.
    The message is not recorded: it may quote data (the traceback is in the worker log)."""
    reason = (
        f"{step}: internal error ({type(error).__name__}); see the worker log, then "
        "`radground jobs retry`"
    )
    if delivery_id is not None:
        with ctx.sessions.begin() as session:
            delivery = session.get(Delivery, delivery_id, with_for_update=True)
            if delivery is None or delivery.state is not DeliveryState.PENDING:
                return
            delivery.state, delivery.last_error = DeliveryState.FAILED, reason
            settle_job(session, delivery.job_id, ctx.actor)
    elif job_id is not None:
        _fail(ctx, job_id, reason)


def requeue_stale(ctx: PipelineContext, now: datetime | None = None) -> int:
    """Enqueue again what a lost message left behind (broker restarted, worker
    killed without redelivery, enqueue failed after commit). Idempotent steps
    make a duplicate harmless. Returns how many messages were sent."""
    now = now or utcnow()
    stale = now - timedelta(seconds=ctx.requeue_after_seconds)
    with ctx.sessions.begin() as session:
        inferring = requeue_lapsed(session, now=now, lease_seconds=ctx.lease_seconds)
    with ctx.sessions() as session:
        queued = session.scalars(
            select(Job.id).where(
                Job.state == JobState.QUEUED,
                (Job.enqueued_at.is_(None)) | (Job.enqueued_at <= stale),
            )
        ).all()
        exporting = session.scalars(select(Job.id).where(
            Job.state == JobState.EXPORTING, Job.updated_at <= stale)).all()
        deliveries = session.execute(select(Delivery.id, Delivery.attempts).join(Job).where(
            Delivery.state == DeliveryState.PENDING,
            ((Delivery.next_attempt_at.is_(None)) & (Job.updated_at <= stale))
            | (Delivery.next_attempt_at <= stale))).all()
    for job_id in (j for j in queued if j not in inferring):
        logger.warning("Job %d: no worker took it; enqueuing it again", job_id)
        _enqueue_inference(ctx, job_id)
    for job_id in inferring:  # re-queued: its worker's lease lapsed
        _enqueue_inference(ctx, job_id)
    for job_id in exporting:
        ctx.enqueue.export(job_id)
    for delivery_id, attempts in deliveries:
        ctx.enqueue.delivery(delivery_id, attempts)
        with ctx.sessions.begin() as session:
            session.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id, Delivery.attempts == attempts)
                .values(next_attempt_at=now)
            )
    return len(set(queued) | set(inferring)) + len(exporting) + len(deliveries)
