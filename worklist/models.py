"""The study index: patients, studies, study revisions, series and instances.

A *study revision* is one round of arrivals: it opens with the first instance,
becomes *ready* once the study has been idle long enough (or a cap is hit),
and the ready event is dispatched once. An instance arriving after that opens
the next revision, so the pipeline can reprocess the study.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, Enum, ForeignKey, Index, Integer, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from worklist.db import Base, UTCDateTime

__all__ = [
    "Instance",
    "Patient",
    "RevisionOutcome",
    "RevisionState",
    "Series",
    "Study",
    "StudyRevision",
]


class RevisionState(enum.StrEnum):
    """Where a study revision stands."""

    RECEIVING = "receiving"
    READY = "ready"


class RevisionOutcome(enum.StrEnum):
    """What routing decided for a ready study revision (:func:`worklist.pipeline.create_jobs`)."""

    #: A job was created (its state tells how processing went).
    JOB = "job"
    #: No route matched; ``outcome_detail`` says which conditions failed, in a word per route.
    NO_ROUTE = "no-route"
    #: Only RadGround's own outputs (routed back by the PACS): never processed.
    OWN_OUTPUT = "own-output"


class Patient(Base):
    """A patient as the sending PACS identifies them (Patient ID + Issuer)."""

    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("patient_id", "issuer_of_patient_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    patients_name: Mapped[str] = mapped_column(String(324), default="")
    patients_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patients_sex: Mapped[str] = mapped_column(String(16), default="")

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    """A study (Study Instance UID) and the revision it is currently in."""

    __tablename__ = "studies"
    #: the read views list studies newest first (worklist.views)
    __table_args__ = (Index("ix_studies_last_received_at", "last_received_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    current_revision: Mapped[int] = mapped_column(Integer, default=1)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime())

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")
    revisions: Mapped[list[StudyRevision]] = relationship(
        back_populates="study", order_by="StudyRevision.revision"
    )


class StudyRevision(Base):
    """One round of arrivals of a study, made ready exactly once."""

    __tablename__ = "study_revisions"
    __table_args__ = (
        UniqueConstraint("study_pk", "revision"),
        Index("ix_study_revisions_state_last_received_at", "state", "last_received_at"),
        Index("ix_study_revisions_opened_at", "opened_at"),
        Index("ix_study_revisions_dispatched_at", "dispatched_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    revision: Mapped[int] = mapped_column(Integer)
    state: Mapped[RevisionState] = mapped_column(
        Enum(RevisionState, name="revision_state", values_callable=lambda e: [m.value for m in e],
             native_enum=False, length=16),
        default=RevisionState.RECEIVING,
    )
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    instances_received: Mapped[int] = mapped_column(Integer, default=0)
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: Why the revision became ready: "idle" or "force-complete".
    ready_reason: Mapped[str | None] = mapped_column(String(16), default=None)
    dispatch_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: What routing decided once the revision was ready (None until then).
    outcome: Mapped[RevisionOutcome | None] = mapped_column(
        Enum(
            RevisionOutcome,
            name="revision_outcome",
            values_callable=lambda e: [m.value for m in e],
            native_enum=False,
            length=16,
        ),
        default=None,
    )
    #: The route of the job, or why no route matched (condition names, no header values).
    outcome_detail: Mapped[str | None] = mapped_column(String(200), default=None)

    study: Mapped[Study] = relationship(back_populates="revisions")


class Series(Base):
    """A series (Series Instance UID) of a study."""

    __tablename__ = "series"
    #: the read views filter studies by modality (worklist.views)
    __table_args__ = (Index("ix_series_modality_study_pk", "modality", "study_pk"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None] = mapped_column(Integer, default=None)
    series_description: Mapped[str] = mapped_column(String(64), default="")
    body_part_examined: Mapped[str] = mapped_column(String(16), default="")

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    """A stored SOP instance and where its file is."""

    __tablename__ = "instances"
    #: the read views filter studies by the AE title that sent them (worklist.views)
    __table_args__ = (
        Index("ix_instances_calling_ae_title_series_pk", "calling_ae_title", "series_pk"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer, default=None)
    size: Mapped[int] = mapped_column(BigInteger)
    #: Path relative to the storage root.
    path: Mapped[str] = mapped_column(String(256))
    calling_ae_title: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: The study revision this instance (last) arrived in.
    revision: Mapped[int] = mapped_column(Integer)
    #: One of RadGround's own outputs routed back to us: never processed.
    is_own_output: Mapped[bool] = mapped_column(default=False, server_default=false())

    series: Mapped[Series] = relationship(back_populates="instances")
