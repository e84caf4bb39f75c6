"""Rows of the study index and the job tables written straight through the ORM, for tests of
what reads them (views, the HTTP API, benchmarks). Made-up values; no patient data."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydicom.uid import generate_uid
from sqlalchemy.orm import Session

from worklist.db import utcnow
from worklist.jobs_models import Artifact, AuditEvent, Delivery, DeliveryState, Job, JobState
from worklist.models import (
    Instance,
    Patient,
    RevisionOutcome,
    RevisionState,
    Series,
    Study,
    StudyRevision,
)

__all__ = ["add_artifact", "add_delivery", "add_job", "add_study"]

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def add_study(
    session: Session,
    *,
    received_at: datetime | None = None,
    modality: str = "DX",
    calling_ae_title: str = "MODALITY",
    instances: int = 1,
    revisions: int = 1,
    state: RevisionState = RevisionState.READY,
    outcome: RevisionOutcome | None = None,
    outcome_detail: str | None = None,
    own_output: bool = False,
    study_instance_uid: str | None = None,
) -> Study:
    """A study with one series of ``instances`` instances and ``revisions`` revisions, the last
    in ``state`` with ``outcome`` (the earlier ones ready and routed to a job)."""
    received_at = received_at or utcnow()
    patient = Patient(patient_id=f"RG-{generate_uid()[-8:]}", issuer_of_patient_id="")
    study = Study(
        study_instance_uid=study_instance_uid or generate_uid(),
        patient=patient,
        study_date="20261206",
        study_description="CHEST PA",
        current_revision=revisions,
        instance_count=instances,
        first_received_at=received_at - timedelta(minutes=1),
        last_received_at=received_at,
    )
    series = Series(
        series_instance_uid=generate_uid(),
        study=study,
        modality=modality,
        series_number=1,
        body_part_examined="CHEST",
    )
    session.add_all([patient, study, series])
    for number in range(1, instances + 1):
        session.add(
            Instance(
                sop_instance_uid=generate_uid(),
                series=series,
                sop_class_uid=CR_STORAGE,
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                instance_number=number,
                size=1024,
                path=f"{study.study_instance_uid}/{number}.dcm",
                calling_ae_title=calling_ae_title,
                received_at=received_at,
                revision=revisions,
                is_own_output=own_output,
            )
        )
    for number in range(1, revisions + 1):
        last = number == revisions
        session.add(
            StudyRevision(
                study=study,
                revision=number,
                state=state if last else RevisionState.READY,
                opened_at=received_at - timedelta(minutes=1),
                last_received_at=received_at,
                instances_received=instances,
                ready_at=None if last and state is RevisionState.RECEIVING else received_at,
                ready_reason=None if last and state is RevisionState.RECEIVING else "idle",
                dispatched_at=received_at if (outcome or not last) else None,
                outcome=outcome if last else RevisionOutcome.JOB,
                outcome_detail=outcome_detail if last else "cxr",
            )
        )
    session.flush()
    return study


def add_job(
    session: Session,
    study: Study,
    *,
    revision: int | None = None,
    route: str = "cxr",
    state: JobState = JobState.DONE,
    created_at: datetime | None = None,
    finished_at: datetime | None = None,
    last_error: str | None = None,
    output_errors: str | None = None,
    worker: str | None = None,
    lease_expires_at: datetime | None = None,
) -> Job:
    """A job of the study's revision (the current one unless given), with its timings."""
    created_at = created_at or utcnow()
    started = created_at + timedelta(seconds=2)
    ran = state not in (JobState.QUEUED, JobState.CANCELLED)
    job = Job(
        study_pk=study.id,
        revision=revision or study.current_revision,
        route=route,
        model="default",
        state=state,
        created_at=created_at,
        updated_at=finished_at or created_at,
        enqueued_at=created_at,
        inference_started_at=started if ran else None,
        inference_starts=1 if ran else 0,
        inference_seconds=1.5 if ran and state is not JobState.INFERRING else None,
        export_seconds=0.5 if state in (JobState.DELIVERING, JobState.DONE) else None,
        finished_at=finished_at,
        last_error=last_error,
        output_errors=output_errors,
        report_json="{}" if ran and state is not JobState.INFERRING else None,
        worker=worker,
        lease_expires_at=lease_expires_at,
    )
    session.add(job)
    session.flush()
    session.add(AuditEvent(at=created_at, actor="node", action="job-created", job_id=job.id))
    session.flush()
    return job


def add_artifact(
    session: Session, job: Job, *, kind: str = "sr", language: str = "en", path: str
) -> Artifact:
    artifact = Artifact(
        job_id=job.id,
        kind=kind,
        language=language,
        object_uid=generate_uid(),
        series_instance_uid=generate_uid(),
        sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34" if kind == "sr" else None,
        path=path,
        created_at=utcnow(),
    )
    session.add(artifact)
    session.flush()
    return artifact


def add_delivery(
    session: Session,
    job: Job,
    *,
    destination: str = "PACS",
    protocol: str = "dicom",
    state: DeliveryState = DeliveryState.DONE,
    attempts: int = 1,
    last_error: str | None = None,
    next_attempt_at: datetime | None = None,
    retry_until: datetime | None = None,
    operation_outcome: str | None = None,
    artifact_set: int = 0,
) -> Delivery:
    delivery = Delivery(
        job_id=job.id,
        destination=destination,
        protocol=protocol,
        state=state,
        attempts=attempts,
        last_error=last_error,
        next_attempt_at=next_attempt_at,
        retry_until=retry_until,
        operation_outcome=operation_outcome,
        delivered_at=utcnow() if state is DeliveryState.DONE else None,
        artifact_set=artifact_set,
    )
    session.add(delivery)
    session.flush()
    return delivery
