"""What the pipeline steps share: the per-process context, targets and queue interface."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.patches import PYNETDICOM_PATCHES
from dicom_node.scu import Destination
from engine.model import RegionAwareModel
from exporters.hl7.enum import ProcessingId
from exporters.protocol import OutputKind
from worklist.db import Base, utcnow
from worklist.errors import WorklistError
from worklist.fhir_delivery import FhirAuth
from worklist.jobs_models import AuditEvent
from worklist.leases import worker_id
from worklist.routing import Route

__all__ = [
    "DicomTarget",
    "Enqueuer",
    "FhirTarget",
    "Hl7Target",
    "LoadedModel",
    "PipelineContext",
    "StepError",
    "audit",
    "insert_ignore",
]


class Enqueuer(Protocol):
    """Sends the next step to its queue (Celery in production, a list in tests)."""

    def inference(self, job_id: int) -> None: ...

    def export(self, job_id: int) -> None: ...

    def delivery(self, delivery_id: int, attempt: int, countdown: float = 0.0) -> None: ...


@dataclass(frozen=True)
class LoadedModel:
    """A model held by this worker process and how to run batches on it
    (its micro-batcher's ``generate``, so concurrent tasks share batches)."""

    model: RegionAwareModel
    generate: Callable | None = None


@dataclass(frozen=True)
class DicomTarget:
    destination: Destination
    #: The output kinds it gets (a kind names every artifact its exporter
    #: produces: GSPS also covers Colour PS, see :func:`exporters.registry.artifact_kinds`).
    outputs: tuple[OutputKind, ...] = (OutputKind.SR, OutputKind.GSPS, OutputKind.KOS)
    languages: tuple[str, ...] = ()
    max_attempts: int = 10


@dataclass(frozen=True)
class FhirTarget:
    url: str
    auth: FhirAuth
    timeout_seconds: float = 30.0
    max_attempts: int = 10
    primary_language: str = "en"
    patient_identifier_system: str | None = None


@dataclass(frozen=True)
class Hl7Target:
    """An HL7 v2 receiver's message fields: its route's jobs build an ORU^R01 for it
    (MSH-4 sending facility, MSH-5/-6 receiving application and facility, MSH-11
    processing ID; the languages of its texts, empty = the route's)."""

    sending_facility: str | None = None
    receiving_application: str | None = None
    receiving_facility: str | None = None
    processing_id: ProcessingId = ProcessingId.PRODUCTION
    languages: tuple[str, ...] = ()


@dataclass(frozen=True)
class PipelineContext:
    """Everything the steps need, built once per process by the application."""

    sessions: sessionmaker[Session]
    storage_root: Path
    outputs_root: Path
    routes: tuple[Route, ...]
    models: Callable[[str], LoadedModel]
    enqueue: Enqueuer
    dicom_targets: Mapping[str, DicomTarget] = field(default_factory=dict)
    fhir_targets: Mapping[str, FhirTarget] = field(default_factory=dict)
    hl7_targets: Mapping[str, Hl7Target] = field(default_factory=dict)
    scu_ae_title: str = "RADGROUND"
    #: node.pynetdicom_patches, for the SCU that delivers outputs (dicom_node.patches).
    scu_pynetdicom_patches: tuple[str, ...] = PYNETDICOM_PATCHES
    max_task_starts: int = 3
    task_time_limit_seconds: float = 900.0
    requeue_after_seconds: float = 120.0
    #: An inference attempt's claim on its job lapses this long after its last
    #: renewal (see :mod:`worklist.leases`).
    lease_seconds: float = 30.0
    actor: str = field(default_factory=lambda: worker_id(os.getpid()))


class StepError(WorklistError):
    """A step failed for a reason the operator can read (the job is marked failed)."""


def audit(session: Session, actor: str, action: str, job_id: int | None, detail: str = "") -> None:
    session.add(AuditEvent(at=utcnow(), actor=actor, action=action, job_id=job_id, detail=detail))


def insert_ignore(session: Session, table_class: type[Base], /, **values: object) -> bool:
    """Insert a row unless it conflicts with a unique key; whether it was inserted."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    table = table_class.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{table_class.__name__} is not mapped to one table")
    statement = (
        insert(table).values(**values).on_conflict_do_nothing().returning(*table.primary_key.columns)
    )
    return session.execute(statement).first() is not None
