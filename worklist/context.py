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
from engine.model import RegionAwareModel
from worklist.atna.actions import audit_action
from worklist.db import Base, utcnow
from worklist.destinations import (
    DestinationTarget,
    DicomTarget,
    DicomWebTarget,
    FhirTarget,
    Hl7Target,
    RetryPolicy,
)
from worklist.errors import WorklistError
from worklist.jobs_models import AuditEvent
from worklist.leases import worker_id
from worklist.routing import Route

__all__ = [
    "DicomTarget",
    "DicomWebTarget",
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
class PipelineContext:
    """Everything the steps need, built once per process by the application."""

    sessions: sessionmaker[Session]
    storage_root: Path
    outputs_root: Path
    routes: tuple[Route, ...]
    models: Callable[[str], LoadedModel]
    enqueue: Enqueuer
    #: The configured destinations by name (``[destinations.NAME]``), each of its type's target
    #: class.
    destinations: Mapping[str, DestinationTarget] = field(default_factory=dict)
    #: When failed deliveries are tried again (a destination may set its own ``retry_for``).
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
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

    @property
    def dicom_targets(self) -> Mapping[str, DicomTarget | DicomWebTarget]:
        """The destinations that take DICOM objects: types ``dicom`` (C-STORE) and ``dicomweb``
        (STOW-RS); their ``outputs`` say which kinds the export builds for them."""
        return {
            n: t
            for n, t in self.destinations.items()
            if isinstance(t, DicomTarget | DicomWebTarget)
        }

    @property
    def fhir_targets(self) -> Mapping[str, FhirTarget]:
        """The destinations of type ``fhir``."""
        return {n: t for n, t in self.destinations.items() if isinstance(t, FhirTarget)}

    @property
    def hl7_targets(self) -> Mapping[str, Hl7Target]:
        """The destinations of type ``hl7`` (each gets an ORU^R01 built for its MSH-5/MSH-6)."""
        return {n: t for n, t in self.destinations.items() if isinstance(t, Hl7Target)}


class StepError(WorklistError):
    """A step failed for a reason the operator can read (the job is marked failed)."""


def audit(
    session: Session, actor: str, action: str, job_id: int | None, detail: str = "", *,
    source: str = "",
) -> None:
    """Add an audit trail entry (``source``: the client's address for the web surface); logins
    and account changes also go to the ATNA audit trail when the transaction commits."""
    session.add(AuditEvent(
        at=utcnow(), actor=actor, action=action, job_id=job_id, detail=detail, source=source[:128]
    ))
    audit_action(session, actor, action, detail, source)


def insert_ignore(session: Session, table_class: type[Base], /, **values: object) -> bool:
    """Insert a row unless it conflicts with a unique key; whether it was inserted."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    table = table_class.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{table_class.__name__} is not mapped to one table")
    statement = (
        insert(table)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(*table.primary_key.columns)
    )
    return session.execute(statement).first() is not None
