"""Read views of jobs: the list, one job with its timings, artifacts, deliveries and audit trail.

Every function takes an open session and returns frozen dataclasses (never ORM objects).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from worklist.jobs_models import Artifact, AuditEvent, Delivery, DeliveryState, Job, JobState
from worklist.models import Series, Study
from worklist.views.common import (
    Page,
    check_page,
    check_period,
    check_text,
    in_period,
    studies_from_calling_ae,
    studies_with_modality,
)

__all__ = [
    "ACTIVE_JOB_STATES",
    "ArtifactView",
    "AuditEntry",
    "DeliveryView",
    "JobDetail",
    "JobFilter",
    "JobSummary",
    "StageTimings",
    "artifact_media_type",
    "get_artifact",
    "get_job",
    "list_jobs",
]

#: Jobs that still have work ahead of them.
ACTIVE_JOB_STATES = (JobState.QUEUED, JobState.INFERRING, JobState.EXPORTING, JobState.DELIVERING)


@dataclass(frozen=True)
class JobFilter:
    """Which jobs :func:`list_jobs` returns; every field left empty matches all.

    Times are timezone-aware; periods include their start and exclude their end.
    """

    #: Any of these states (empty: any state).
    states: Collection[JobState] = field(default=())
    route: str | None = None
    #: Created at or after this time.
    created_from: datetime | None = None
    #: Created before this time.
    created_until: datetime | None = None
    #: The study has a series of this modality (e.g. "DX").
    modality: str | None = None
    #: The study has an instance sent by this calling AE title.
    calling_ae_title: str | None = None
    #: The job's study (its Study Instance UID, exactly).
    study_instance_uid: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "states", tuple(JobState(s) for s in self.states))
        check_period(
            self.created_from, self.created_until,
            start_name="created_from", end_name="created_until",
        )
        check_text("route", self.route, max_length=64)
        check_text("modality", self.modality, max_length=16)
        check_text("calling_ae_title", self.calling_ae_title, max_length=16)
        check_text("study_instance_uid", self.study_instance_uid, max_length=64)

    def clauses(self) -> list[ColumnElement[bool]]:
        """The WHERE clauses over ``Job``."""
        found = in_period(Job.created_at, self.created_from, self.created_until)
        if self.states:
            found.append(Job.state.in_(list(self.states)))
        if self.route is not None:
            found.append(Job.route == self.route)
        if self.modality is not None:
            found.append(Job.study_pk.in_(studies_with_modality(self.modality)))
        if self.calling_ae_title is not None:
            found.append(Job.study_pk.in_(studies_from_calling_ae(self.calling_ae_title)))
        if self.study_instance_uid is not None:
            found.append(
                Job.study_pk.in_(
                    select(Study.id).where(Study.study_instance_uid == self.study_instance_uid)
                )
            )
        return found


@dataclass(frozen=True)
class JobSummary:
    """A row of the jobs list."""

    id: int
    study_instance_uid: str
    revision: int
    route: str
    model: str
    state: JobState
    #: The study's modalities, sorted.
    modalities: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    #: Why it failed, for the operator.
    last_error: str | None
    #: The earliest retry a delivery of the job waits for.
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class StageTimings:
    """How long each stage of a job took (seconds; ``None`` where it has not happened).

    ``queued_seconds`` runs from creation to the start of the latest inference attempt;
    ``delivery_seconds`` from the end of the export to the job's end.
    """

    created_at: datetime
    enqueued_at: datetime | None
    inference_started_at: datetime | None
    finished_at: datetime | None
    queued_seconds: float | None
    inference_seconds: float | None
    export_seconds: float | None
    delivery_seconds: float | None
    total_seconds: float | None


@dataclass(frozen=True)
class ArtifactView:
    """An object the job produced; ``path`` is relative to ``workers.outputs_root``."""

    id: int
    kind: str
    language: str
    #: SOP Instance UID, the Bundle's id (FHIR) or MSH-10 (HL7).
    object_uid: str
    series_instance_uid: str | None
    sop_class_uid: str | None
    path: str
    media_type: str
    created_at: datetime
    #: 0: the model's (unverified) outputs; n: those of a radiologist's sign-off n.
    artifact_set: int = 0


@dataclass(frozen=True)
class DeliveryView:
    """Sending the job's artifacts to one destination."""

    id: int
    destination: str
    #: "dicom", "dicomweb", "fhir" or "hl7".
    protocol: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    retry_until: datetime | None
    #: How many objects a partial failure left to send (``None``: all of them).
    remaining_objects: int | None
    #: The peer's last answer.
    last_error: str | None
    #: The peer's whole answer where it has one (FHIR OperationOutcome, HL7 ACK).
    operation_outcome: str | None
    delivered_at: datetime | None
    #: The artifact set it sends: 0, the model's; n, a radiologist's sign-off n.
    artifact_set: int = 0


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit trail."""

    at: datetime
    #: "node", "worker:<host>:<pid>", "operator:<user>", ...
    actor: str
    action: str
    detail: str


@dataclass(frozen=True)
class JobDetail:
    """One job and everything the operator needs to judge it."""

    summary: JobSummary
    #: The worker running the current inference attempt, and until when its lease holds.
    worker: str | None
    lease_expires_at: datetime | None
    inference_starts: int
    #: How often an operator retried it.
    retries: int
    #: Outputs the export could not build, one "kind: reason" each.
    output_errors: tuple[str, ...]
    #: Whether the model's report is kept (inference finished).
    has_report: bool
    timings: StageTimings
    artifacts: tuple[ArtifactView, ...]
    deliveries: tuple[DeliveryView, ...]
    audit: tuple[AuditEntry, ...]


def artifact_media_type(kind: str) -> str:
    """The media type of an artifact of ``kind`` ("application/dicom" for the DICOM kinds),
    from the exporter that builds it."""
    from exporters.registry import exporter_for

    try:
        return exporter_for(kind).media_type
    except (KeyError, ValueError):  # a kind this version no longer builds
        return "application/octet-stream"


def list_jobs(
    session: Session, filters: JobFilter | None = None, *, offset: int = 0, limit: int = 50
) -> Page[JobSummary]:
    """Jobs matching ``filters``, the newest first.

    Raises
    ------
    worklist.errors.InvalidFilterError
        ``offset`` or ``limit`` is out of range (``parameter`` names it).
    """
    check_page(offset, limit)
    clauses = (filters or JobFilter()).clauses()
    total = session.scalar(select(func.count()).select_from(Job).where(*clauses)) or 0
    jobs = list(
        session.scalars(
            select(Job)
            .where(*clauses)
            .order_by(Job.created_at.desc(), Job.id.desc())
            .offset(offset)
            .limit(limit)
        )
    )
    return Page(tuple(_summaries(session, jobs)), total, offset, limit)


def get_job(session: Session, job_id: int) -> JobDetail | None:
    """One job with its timings, artifacts, deliveries and audit trail; ``None`` if unknown."""
    job = session.get(Job, job_id)
    if job is None:
        return None
    [summary] = _summaries(session, [job])
    artifacts = tuple(
        _artifact_view(a)
        for a in session.scalars(
            select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.id)
        )
    )
    deliveries = tuple(
        _delivery_view(d)
        for d in session.scalars(
            select(Delivery).where(Delivery.job_id == job_id).order_by(Delivery.id)
        )
    )
    audit = tuple(
        AuditEntry(at=e.at, actor=e.actor, action=e.action, detail=e.detail)
        for e in session.scalars(
            select(AuditEvent).where(AuditEvent.job_id == job_id).order_by(AuditEvent.id)
        )
    )
    return JobDetail(
        summary=summary,
        worker=job.worker,
        lease_expires_at=job.lease_expires_at,
        inference_starts=job.inference_starts,
        retries=job.retries,
        output_errors=tuple((job.output_errors or "").splitlines()),
        has_report=job.report_json is not None,
        timings=_timings(job),
        artifacts=artifacts,
        deliveries=deliveries,
        audit=audit,
    )


def get_artifact(session: Session, job_id: int, artifact_id: int) -> ArtifactView | None:
    """An artifact of a job; ``None`` when the job has no such artifact."""
    artifact = session.get(Artifact, artifact_id)
    if artifact is None or artifact.job_id != job_id:
        return None
    return _artifact_view(artifact)


def _summaries(session: Session, jobs: list[Job]) -> list[JobSummary]:
    """Summaries of ``jobs`` (in that order): three queries for the whole page."""
    if not jobs:
        return []
    study_pks = sorted({j.study_pk for j in jobs})
    uids = dict(
        session.execute(
            select(Study.id, Study.study_instance_uid).where(Study.id.in_(study_pks))
        ).all()
    )
    modalities: dict[int, set[str]] = defaultdict(set)
    for study_pk, modality in session.execute(
        select(Series.study_pk, Series.modality).where(Series.study_pk.in_(study_pks))
    ):
        if modality:
            modalities[study_pk].add(modality)
    next_attempts = dict(
        session.execute(
            select(Delivery.job_id, func.min(Delivery.next_attempt_at))
            .where(
                Delivery.job_id.in_([j.id for j in jobs]),
                Delivery.state == DeliveryState.PENDING,
                Delivery.next_attempt_at.is_not(None),
            )
            .group_by(Delivery.job_id)
        ).all()
    )
    return [
        JobSummary(
            id=job.id,
            study_instance_uid=uids.get(job.study_pk, ""),
            revision=job.revision,
            route=job.route,
            model=job.model,
            state=job.state,
            modalities=tuple(sorted(modalities[job.study_pk])),
            created_at=job.created_at,
            updated_at=job.updated_at,
            finished_at=job.finished_at,
            last_error=job.last_error,
            next_attempt_at=next_attempts.get(job.id),
        )
        for job in jobs
    ]


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start is not None and end is not None else None


def _timings(job: Job) -> StageTimings:
    delivery = None
    if job.finished_at is not None and job.inference_started_at is not None and (
        job.export_seconds is not None
    ):
        spent = _seconds(job.inference_started_at, job.finished_at) or 0.0
        delivery = max(0.0, spent - (job.inference_seconds or 0.0) - job.export_seconds)
    return StageTimings(
        created_at=job.created_at,
        enqueued_at=job.enqueued_at,
        inference_started_at=job.inference_started_at,
        finished_at=job.finished_at,
        queued_seconds=_seconds(job.created_at, job.inference_started_at),
        inference_seconds=job.inference_seconds,
        export_seconds=job.export_seconds,
        delivery_seconds=delivery,
        total_seconds=_seconds(job.created_at, job.finished_at),
    )


def _artifact_view(artifact: Artifact) -> ArtifactView:
    return ArtifactView(
        id=artifact.id,
        kind=artifact.kind,
        language=artifact.language,
        object_uid=artifact.object_uid,
        series_instance_uid=artifact.series_instance_uid,
        sop_class_uid=artifact.sop_class_uid,
        path=artifact.path,
        media_type=artifact_media_type(artifact.kind),
        created_at=artifact.created_at,
        artifact_set=artifact.artifact_set,
    )


def _delivery_view(delivery: Delivery) -> DeliveryView:
    return DeliveryView(
        id=delivery.id,
        destination=delivery.destination,
        protocol=delivery.protocol,
        state=delivery.state,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        retry_until=delivery.retry_until,
        remaining_objects=(
            len(delivery.remaining_objects.splitlines()) if delivery.remaining_objects else None
        ),
        last_error=delivery.last_error,
        operation_outcome=delivery.operation_outcome,
        delivered_at=delivery.delivered_at,
        artifact_set=delivery.artifact_set,
    )
