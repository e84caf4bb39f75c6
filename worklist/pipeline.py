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

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicom_node.uids import short_uid
from engine.report import GroundedReport, Task
from worklist.completion import StudyReady
from worklist.context import PipelineContext, StepError, audit, insert_ignore
from worklist.db import utcnow
from worklist.delivery import settle_job
from worklist.jobs_models import Artifact, Delivery, DeliveryState, Job, JobState
from worklist.models import Study
from worklist.routing import Route, choose_route, study_instance_facts

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
    """Create the job for a ready study revision (idempotent); the caller commits."""
    study = session.execute(select(Study).where(Study.study_instance_uid == ready.study_instance_uid)).scalar_one()
    facts = study_instance_facts(session, study.id)
    token = short_uid(ready.study_instance_uid)
    if not facts:
        logger.info("Study %s revision %d: only RadGround outputs, nothing to process", token, ready.revision)
        return []
    route = choose_route(ctx.routes, facts)
    if route is None:
        logger.info("Study %s revision %d: no route matches; not processed", token, ready.revision)
        return []
    now = utcnow()
    insert_ignore(session, Job, study_pk=study.id, revision=ready.revision, route=route.name, model=route.model,
                   state=JobState.QUEUED.value, inference_starts=0, retries=0, created_at=now, updated_at=now)
    job = session.execute(
        select(Job).where(Job.study_pk == study.id, Job.revision == ready.revision, Job.route == route.name)
    ).scalar_one()
    audit(session, "node", "job-created", job.id, f"route={route.name} revision={ready.revision}")
    logger.info("Study %s revision %d: job %d on route %s", token, ready.revision, job.id, route.name)
    return [job.id] if job.state is JobState.QUEUED else []


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
    from engine.analyze import AnalysisError, NotApplicableError, analyze_study
    from engine.model import ModelError
    from engine.pixels import ImageSelection, PixelError, VolumeStrategy

    with ctx.sessions.begin() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.state not in (JobState.QUEUED, JobState.INFERRING):
            return  # already past this step (a redelivered message)
        lease = timedelta(seconds=ctx.task_time_limit_seconds)
        if job.state is JobState.INFERRING and job.inference_started_at > utcnow() - lease:
            return  # a duplicate message while another worker runs it; a crashed run is retried after the lease
        if job.inference_starts >= ctx.max_task_starts:
            job.state, job.updated_at, job.finished_at = JobState.DEAD, utcnow(), utcnow()
            job.last_error = (
                f"inference started {job.inference_starts} times without finishing (worker killed or out of "
                "memory?); not retried automatically: `radground jobs retry` after checking the worker"
            )
            audit(session, ctx.actor, "job-dead", job_id, job.last_error)
            logger.error("Job %d is dead: %s", job_id, job.last_error)
            return
        job.state, job.inference_starts = JobState.INFERRING, job.inference_starts + 1
        job.inference_started_at = job.updated_at = utcnow()
        route_name, study_pk, revision = job.route, job.study_pk, job.revision
        facts = study_instance_facts(session, study_pk)
        study_uid = session.get(Study, study_pk).study_instance_uid
    started = time.perf_counter()
    try:
        route = _route(ctx, route_name)
        loaded = ctx.models(route.model)
        datasets = [dcmread(ctx.storage_root / f.path, defer_size="64 KB") for f in facts]
        selection = ImageSelection(
            modalities=route.modalities,
            body_parts=route.body_parts,
            view_positions=route.view_positions,
            sop_class_uids=route.sop_classes,
            series_description=route.series_description or None,
            volume_strategy=VolumeStrategy(route.volume_strategy),
            slice_count=route.slice_count,
        )
        report = analyze_study(
            datasets,
            loaded.model,
            selection=selection,
            languages=route.languages,
            task=Task(route.task),
            targets=route.targets,
            generate=loaded.generate,
            regional_cot=route.regional_cot,
        )  # skips the images the model is not made for (model.applicability), each in report.problems
    except NotApplicableError as exc:
        _fail(ctx, job_id, f"not analysed: {exc}")  # never a 'normal' report for an image it cannot read
        return
    except (AnalysisError, PixelError, ModelError, StepError, OSError) as exc:
        _fail(ctx, job_id, f"inference: {exc}")
        return
    elapsed = time.perf_counter() - started
    if report.study_instance_uid != study_uid:
        _fail(ctx, job_id, "inference: the report is about another study")
        return
    with ctx.sessions.begin() as session:
        moved = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.INFERRING)
            .values(state=JobState.EXPORTING, report_json=report.to_json(), inference_seconds=elapsed,
                    updated_at=utcnow(), last_error=None)
        ).rowcount
        if moved:
            audit(session, ctx.actor, "inferred", job_id,
                   f"{len(report.findings)} findings, {len(report.problems)} problems, {elapsed:.2f} s")
    if moved:
        logger.info("Job %d: %d findings in %.2f s (revision %d)", job_id, len(report.findings), elapsed, revision)
        ctx.enqueue.export(job_id)


def _fail(ctx: PipelineContext, job_id: int, reason: str) -> None:
    with ctx.sessions.begin() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.state in (JobState.DONE, JobState.FAILED, JobState.DEAD):
            return
        job.state, job.last_error = JobState.FAILED, reason[:4000]
        job.updated_at = job.finished_at = utcnow()
        audit(session, ctx.actor, "job-failed", job_id, reason[:500])
    logger.warning("Job %d failed: %s", job_id, reason)


# -- export --------------------------------------------------------------------


def _source_headers(ctx: PipelineContext, session: Session, job: Job, report: GroundedReport) -> list[Dataset]:
    facts = study_instance_facts(session, job.study_pk)
    by_uid = {f.sop_instance_uid: f for f in facts}
    wanted = [by_uid[ref.sop_instance_uid] for ref in report.images if ref.sop_instance_uid in by_uid]
    if not wanted and facts:
        wanted = facts[:1]  # a negative report still needs the study's patient/study modules
    return [dcmread(ctx.storage_root / f.path) for f in wanted]


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _dataset_bytes(ds: Dataset) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def run_export(ctx: PipelineContext, job_id: int) -> None:
    """Build SR, presentation states (and optional key images, FHIR bundles), record
    them as artifacts, create one delivery per destination, then enqueue those."""
    from exporters.errors import ExportError

    with ctx.sessions() as session:
        job = session.get(Job, job_id)
        if job is None or job.state is not JobState.EXPORTING:
            return
        route = _route(ctx, job.route)
        report = GroundedReport.from_json(job.report_json)
        sources = _source_headers(ctx, session, job, report)
        study_uid = session.get(Study, job.study_pk).study_instance_uid
        revision = job.revision
    started = time.perf_counter()
    try:
        outputs = _build_outputs(ctx, route, report, sources, revision)
    except (ExportError, StepError, ValueError) as exc:
        _fail(ctx, job_id, f"export: {exc}")
        return
    folder = ctx.outputs_root / study_uid / f"r{revision}"
    now = utcnow()
    with ctx.sessions.begin() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.state is not JobState.EXPORTING:
            return
        for output in outputs:
            path = folder / output.filename
            _write_atomically(path, output.data)
            insert_ignore(session, Artifact, job_id=job_id, kind=output.kind, language=output.language,
                           object_uid=output.object_uid, series_instance_uid=output.series_instance_uid,
                           sop_class_uid=output.sop_class_uid,
                           path=str(path.relative_to(ctx.outputs_root)), created_at=now)
        for name in route.destinations:
            protocol = "fhir" if name in ctx.fhir_targets else "dicom"
            insert_ignore(session, Delivery, job_id=job_id, destination=name, protocol=protocol,
                           state=DeliveryState.PENDING.value, attempts=0)
        job.export_seconds = time.perf_counter() - started
        job.updated_at = now
        job.state = JobState.DELIVERING if route.destinations else JobState.DONE
        if not route.destinations:
            job.finished_at = now
        audit(session, ctx.actor, "exported", job_id, f"{len(outputs)} objects")
        deliveries = [(d.id, d.attempts) for d in session.scalars(
            select(Delivery).where(Delivery.job_id == job_id, Delivery.state == DeliveryState.PENDING))]
    logger.info("Job %d: %d objects exported", job_id, len(outputs))
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


def _build_outputs(ctx: PipelineContext, route: Route, report: GroundedReport, sources: Sequence[Dataset],
                   revision: int) -> list[_Output]:
    from exporters.fhir import build_fhir_bundle, bundle_json, output_series_from_datasets
    from exporters.gsps import build_presentation_states
    from exporters.key_image import build_key_images
    from exporters.sr import export_sr
    from exporters.uids import OutputKind, output_uid

    wanted = {kind for name in route.destinations if name in ctx.dicom_targets
              for kind in ctx.dicom_targets[name].outputs}
    datasets: list[tuple[str, str, Dataset]] = []
    # an SR per language, also for a negative report (it says explicitly that nothing was found)
    for language, document in export_sr(report, sources, revision=revision, languages=route.languages).documents.items():
        datasets.append(("sr", language, document))
    if any(f.regions for f in report.findings):
        for language in route.languages:
            for state in build_presentation_states(report, sources, language=language, revision=revision):
                kind = "csps" if str(state.SOPClassUID).endswith(".11.2") else "gsps"
                datasets.append((kind, language, state))
            if "sc" in wanted:
                for image in build_key_images(report, sources, language=language, revision=revision):
                    datasets.append(("sc", language, image))
    outputs = [
        _Output(kind, language, str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPClassUID),
                f"{kind}-{language}-{ds.SOPInstanceUID}.dcm", _dataset_bytes(ds))
        for kind, language, ds in datasets
    ]
    fhir_names = [name for name in route.destinations if name in ctx.fhir_targets]
    if fhir_names:
        series = output_series_from_datasets(ds for _, _, ds in datasets)
        for name in fhir_names:
            target = ctx.fhir_targets[name]
            bundle = build_fhir_bundle(report, sources, revision=revision, output_series=series,
                                       primary_language=target.primary_language,
                                       patient_identifier_system=target.patient_identifier_system)
            bundle_uid = output_uid(report, revision=revision, kind=OutputKind.FHIR,
                                    language=target.primary_language, role="bundle", part=name)
            outputs.append(_Output("fhir", target.primary_language, bundle_uid, None, None,
                                   f"fhir-{name}.json", bundle_json(bundle).encode("utf-8")))
    return outputs

# -- the safety net ------------------------------------------------------------


def record_crash(ctx: PipelineContext, *, job_id: int | None = None, delivery_id: int | None = None,
                 step: str, error: BaseException) -> None:
    """An unexpected exception in a step: fail the job (or delivery) with the
    exception's type, so the sweeper does not re-run a step that cannot succeed.
    The message is not recorded: it may quote data (the traceback is in the worker log)."""
    reason = f"{step}: internal error ({type(error).__name__}); see the worker log, then `radground jobs retry`"
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
    stuck_inferring = now - timedelta(seconds=ctx.task_time_limit_seconds + ctx.requeue_after_seconds)
    with ctx.sessions() as session:
        queued = session.scalars(select(Job.id).where(
            Job.state == JobState.QUEUED, (Job.enqueued_at.is_(None)) | (Job.enqueued_at <= stale))).all()
        inferring = session.scalars(select(Job.id).where(
            Job.state == JobState.INFERRING, Job.inference_started_at <= stuck_inferring)).all()
        exporting = session.scalars(select(Job.id).where(
            Job.state == JobState.EXPORTING, Job.updated_at <= stale)).all()
        deliveries = session.execute(select(Delivery.id, Delivery.attempts).join(Job).where(
            Delivery.state == DeliveryState.PENDING,
            ((Delivery.next_attempt_at.is_(None)) & (Job.updated_at <= stale))
            | (Delivery.next_attempt_at <= stale))).all()
    for job_id in [*queued, *inferring]:
        logger.warning("Job %d: no worker took it; enqueuing it again", job_id)
        _enqueue_inference(ctx, job_id)
    for job_id in exporting:
        ctx.enqueue.export(job_id)
    for delivery_id, attempts in deliveries:
        ctx.enqueue.delivery(delivery_id, attempts)
        with ctx.sessions.begin() as session:
            session.execute(update(Delivery).where(Delivery.id == delivery_id, Delivery.attempts == attempts)
                            .values(next_attempt_at=now))
    return len(queued) + len(inferring) + len(exporting) + len(deliveries)
