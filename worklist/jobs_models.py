"""Jobs, artifacts, deliveries and the audit trail.

A *job* processes one study revision along one route: inference (queue
``gpu``), export (queue ``io``), then one *delivery* per destination (queue
``io``). Every object produced is an *artifact*. The audit trail records who
did what when, never patient data.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from worklist.db import Base, UTCDateTime, string_enum

__all__ = [
    "MODEL_SET", "Artifact", "AuditEvent", "Delivery", "DeliveryState", "Job", "JobState"
]



class JobState(enum.StrEnum):
    """Where a job stands (see :mod:`worklist.jobs` for the transitions)."""

    QUEUED = "queued"
    INFERRING = "inferring"
    EXPORTING = "exporting"
    DELIVERING = "delivering"
    DONE = "done"
    #: Ended with an error an operator can read and act on (`radground jobs retry`).
    FAILED = "failed"
    #: Its task kept dying (worker killed, out of memory): not retried automatically.
    DEAD = "dead"
    #: An operator cancelled it while it was queued; no step runs it (a retry queues it again).
    CANCELLED = "cancelled"
    #: Exported; its route holds the outputs it names (the EHR's, or all) until a radiologist
    #: signs the review (:mod:`worklist.review`); the outputs it does not hold go out meanwhile.
    AWAITING_REVIEW = "awaiting_review"


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class Job(Base):
    """Processing of one study revision along one route."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("study_pk", "revision", "route"),
        Index("ix_jobs_state_updated_at", "state", "updated_at"),
        # the read views (worklist.views): newest first, by state or route, a day's finished jobs
        Index("ix_jobs_created_at", "created_at"),
        Index("ix_jobs_state_created_at", "state", "created_at"),
        Index("ix_jobs_route_created_at", "route", "created_at"),
        Index("ix_jobs_finished_at", "finished_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    revision: Mapped[int] = mapped_column(Integer)
    route: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    state: Mapped[JobState] = mapped_column(
        string_enum(JobState, "job_state"), default=JobState.QUEUED
    )
    #: How often inference started (a task redelivered after a crash counts again). The
    #: running attempt's number is its fencing token: a step commits its result only
    #: while the job still holds the attempt it claimed (:mod:`worklist.leases`).
    inference_starts: Mapped[int] = mapped_column(Integer, default=0)
    #: The worker running the current inference attempt ("worker:<host>:<pid>").
    worker: Mapped[str | None] = mapped_column(String(128), default=None)
    #: Until when that worker's claim holds; it renews it while it runs (a heartbeat).
    #: A lapsed lease means the worker died: the node's sweeper queues the job again.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: How often the operator retried it.
    retries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    inference_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    inference_seconds: Mapped[float | None] = mapped_column(default=None)
    export_seconds: Mapped[float | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    #: Outputs the export could not build, one "kind: reason" per line (the others were kept and
    #: delivered).
    output_errors: Mapped[str | None] = mapped_column(Text, default=None)
    #: The GroundedReport (engine.report JSON), kept for export and audit.
    report_json: Mapped[str | None] = mapped_column(Text, default=None)

    artifacts: Mapped[list[Artifact]] = relationship(back_populates="job", order_by="Artifact.id")
    deliveries: Mapped[list[Delivery]] = relationship(back_populates="job", order_by="Delivery.id")


#: ``artifacts.artifact_set`` / ``deliveries.artifact_set`` of the model's own (unverified)
#: outputs; a radiologist's sign-off number *n* makes set *n* (VERIFIED SR, replacement GSPS/KOS,
#: FHIR final/amended, HL7 F/C).
MODEL_SET = 0


class Artifact(Base):
    """An object RadGround produced: a DICOM SOP instance or a FHIR Bundle."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "kind", "language", "object_uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    #: "sr", "gsps", "csps", "sc" or "fhir".
    kind: Mapped[str] = mapped_column(String(8))
    language: Mapped[str] = mapped_column(String(16))
    #: SOP Instance UID, or the Bundle's deterministic id for FHIR.
    object_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    sop_class_uid: Mapped[str | None] = mapped_column(String(64), default=None)
    #: File under workers.outputs_root.
    path: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: :data:`MODEL_SET` for the model's outputs, the sign-off's number for a signed set.
    artifact_set: Mapped[int] = mapped_column(Integer, default=MODEL_SET, server_default="0")

    job: Mapped[Job] = relationship(back_populates="artifacts")


class Delivery(Base):
    """Sending a job's artifacts to one configured destination (worklist.destinations)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("job_id", "destination", "artifact_set"),
        Index("ix_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    #: The destination's type when the delivery was created: "dicom", "dicomweb", "fhir" or "hl7".
    protocol: Mapped[str] = mapped_column(String(8))
    state: Mapped[DeliveryState] = mapped_column(
        string_enum(DeliveryState, "delivery_state"), default=DeliveryState.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: When the next attempt is due (a retry scheduled by the retry policy); None while one runs.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: Retries stop at this time (the first failure + the destination's retry_for).
    retry_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: After a partial failure (STOW-RS): the object UIDs still to send, one per line; None = all.
    remaining_objects: Mapped[str | None] = mapped_column(Text, default=None)
    #: The peer's last answer, for the operator.
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    #: The peer's whole answer where it has one (FHIR OperationOutcome, HL7 ACK), for the operator.
    operation_outcome: Mapped[str | None] = mapped_column(Text, default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: Which artifacts it sends: :data:`MODEL_SET`, or a sign-off's set (see ``Artifact``).
    artifact_set: Mapped[int] = mapped_column(Integer, default=MODEL_SET, server_default="0")

    job: Mapped[Job] = relationship(back_populates="deliveries")


class AuditEvent(Base):
    """Who or what did what, when (no patient data: job ids and hashed UIDs only)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    #: "node", "worker:<host>:<pid>", "operator:<user>", "web:<account>".
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), index=True, default=None)
    detail: Mapped[str] = mapped_column(Text, default="")
    #: Where the action came from: the client's address for the web surface, "" otherwise.
    source: Mapped[str] = mapped_column(String(128), default="")
