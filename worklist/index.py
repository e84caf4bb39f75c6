"""Recording stored instances in the study index.

:func:`record_instance` runs once per received instance, on the association
thread, inside the caller's transaction. It upserts patient, study, series and
instance and keeps the study's current revision: an instance that arrives
after the revision was made ready opens the next one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dicom_node.scp import StoredInstance
from dicom_node.storage import StoreOutcome
from worklist.own_outputs import looks_like_own_output
from worklist.models import Instance, Patient, RevisionState, Series, Study, StudyRevision

__all__ = ["IndexedInstance", "KnownKeys", "record_instance"]

logger = logging.getLogger(__name__)


class KnownKeys:
    """Primary keys of patients, studies and series this process has seen committed.

    Saves the three upserts per instance for the rest of a study (rows are never
    deleted, so a committed key stays valid). Only :meth:`remember` keys after
    the transaction that created them committed.
    """

    def __init__(self, maximum: int = 4096) -> None:
        self._keys: dict[tuple[str, ...], int] = {}
        self._maximum = maximum

    def get(self, key: tuple[str, ...]) -> int | None:
        return self._keys.get(key)

    def remember(self, indexed: IndexedInstance) -> None:
        if len(self._keys) > self._maximum:
            self._keys.clear()
        self._keys.update(indexed.keys)


@dataclass(frozen=True)
class IndexedInstance:
    """Where an instance landed in the index."""

    #: The (kind, natural key) -> primary key pairs used, for :class:`KnownKeys`.
    keys: tuple[tuple[tuple[str, ...], int], ...]
    study_pk: int
    revision: int
    #: True when this instance opened a new revision of an already-ready study.
    reopened: bool
    #: False for a byte-identical duplicate that was already indexed.
    new_content: bool


def record_instance(session: Session, instance: StoredInstance, *, known: KnownKeys | None = None) -> IndexedInstance:
    """Index ``instance`` (the caller commits, then may ``known.remember`` the result).

    Concurrency: the study row is locked (``SELECT … FOR UPDATE`` on
    PostgreSQL; SQLite transactions are ``BEGIN IMMEDIATE``), so the revision
    decision cannot race the completion monitor or another listener process.
    """
    header = instance.header
    now = instance.received_at
    known = known or KnownKeys()
    study_key = ("study", instance.study_instance_uid)
    series_key = ("series", instance.series_instance_uid)
    study_pk = known.get(study_key)
    if study_pk is None:
        study_pk = _upsert(
            session,
            Study,
            {"study_instance_uid": instance.study_instance_uid},
            patient_pk=_upsert_patient(session, header),
            study_date=_text(header, "StudyDate", 8),
            study_time=_text(header, "StudyTime", 16),
            accession_number=_text(header, "AccessionNumber", 16),
            study_description=_text(header, "StudyDescription", 64),
            current_revision=1,
            instance_count=0,
            first_received_at=now,
            last_received_at=now,
        )
    study = session.execute(
        select(Study).where(Study.id == study_pk).with_for_update()
    ).scalar_one()
    series_pk = known.get(series_key)
    if series_pk is None:
        series_pk = _upsert(
            session,
            Series,
            {"series_instance_uid": instance.series_instance_uid},
            study_pk=study_pk,
            modality=_text(header, "Modality", 16),
            series_number=_int(header, "SeriesNumber"),
            series_description=_text(header, "SeriesDescription", 64),
            body_part_examined=_text(header, "BodyPartExamined", 16),
        )
    existing = session.execute(
        select(Instance).where(Instance.sop_instance_uid == instance.sop_instance_uid)
    ).scalar_one_or_none()
    new_content = existing is None or instance.outcome is not StoreOutcome.IDENTICAL_DUPLICATE
    own_output = looks_like_own_output(instance.sop_class_uid, header)

    revision = session.execute(
        select(StudyRevision)
        .where(StudyRevision.study_pk == study_pk, StudyRevision.revision == study.current_revision)
        .with_for_update()
    ).scalar_one_or_none()
    reopened = revision is not None and revision.state is RevisionState.READY and new_content and not own_output
    if revision is None or reopened:
        study.current_revision += int(reopened)
        revision = StudyRevision(
            study_pk=study_pk,
            revision=study.current_revision,
            state=RevisionState.RECEIVING,
            opened_at=now,
            last_received_at=now,
            instances_received=0,
        )
        session.add(revision)
    if new_content and not own_output and revision.state is RevisionState.RECEIVING:
        revision.last_received_at = max(revision.last_received_at, now)
        revision.instances_received += 1
    study.last_received_at = max(study.last_received_at, now)

    values = dict(
        series_pk=series_pk,
        sop_class_uid=instance.sop_class_uid,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        instance_number=_int(header, "InstanceNumber"),
        size=instance.size,
        path=instance.relative_path,
        calling_ae_title=instance.calling_ae_title,
        received_at=now,
        revision=revision.revision,
        is_own_output=own_output,
    )
    if existing is None:
        session.add(Instance(sop_instance_uid=instance.sop_instance_uid, **values))
        study.instance_count += 1
    elif new_content:
        for key, value in values.items():
            setattr(existing, key, value)
    session.flush()
    return IndexedInstance(
        keys=((study_key, study_pk), (series_key, series_pk)),
        study_pk=study_pk,
        revision=revision.revision,
        reopened=reopened,
        new_content=new_content,
    )


def _upsert_patient(session: Session, header: Dataset) -> int:
    issuer = _text(header, "IssuerOfPatientID", 64)
    return _upsert(
        session,
        Patient,
        {"patient_id": _text(header, "PatientID", 64), "issuer_of_patient_id": issuer},
        patients_name=_text(header, "PatientName", 324),
        patients_birth_date=_text(header, "PatientBirthDate", 8),
        patients_sex=_text(header, "PatientSex", 16),
    )


def _upsert(session: Session, model: type[Any], key: dict[str, Any], **values: Any) -> int:
    """Insert a row unless one with ``key`` exists (race-free); return its primary key."""
    table = model.__table__
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table).values(**key, **values).on_conflict_do_nothing()
    session.execute(statement)
    where = [getattr(model, name) == value for name, value in key.items()]
    return session.execute(select(model.id).where(*where)).scalar_one()


def _text(dataset: Dataset, keyword: str, limit: int) -> str:
    value = dataset.get(keyword)
    if value is None:
        return ""
    return str(value)[:limit]


def _int(dataset: Dataset, keyword: str) -> int | None:
    value = dataset.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
