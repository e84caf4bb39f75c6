"""Recording stored instances in the study index.

:func:`record_instance` runs once per received instance, on the association
thread, inside the caller's transaction. It upserts patient, study, series and
instance and keeps the study's current revision: an instance that arrives
after the revision was made ready opens the next one.

:class:`StudyIndexer` is what the node uses: one transaction per instance, and
for the common case (the next new instance of a revision this process has seen
receiving) three prepared Core statements instead of the ORM path, which is
most of the index's cost per instance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import Connection, Engine, bindparam, case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dicom_node.errors import DuplicateInstanceError, InstanceConflictError
from dicom_node.scp import StoredInstance
from dicom_node.storage import StoreOutcome
from dicom_node.uids import short_uid
from worklist.db import UTCDateTime
from worklist.models import Instance, Patient, RevisionState, Series, Study, StudyRevision
from worklist.own_outputs import looks_like_own_output

__all__ = ["IndexedInstance", "KnownKeys", "StudyIndexer", "record_instance"]

logger = logging.getLogger(__name__)


class KnownKeys:
    """Primary keys of patients, studies and series this process has seen committed.

    Saves the three upserts per instance for the rest of a study (rows are never
    deleted, so a committed key stays valid). Only :meth:`remember` keys after
    the transaction that created them committed.

    Also remembers, per study, the revision last seen *receiving*: only a hint
    for :class:`StudyIndexer`'s fast path, which re-checks it in the database.
    """

    def __init__(self, maximum: int = 4096) -> None:
        self._keys: dict[tuple[str, ...], int] = {}
        self._receiving: dict[int, int] = {}
        self._maximum = maximum

    def get(self, key: tuple[str, ...]) -> int | None:
        return self._keys.get(key)

    def receiving_revision(self, study_pk: int) -> int | None:
        """The revision of ``study_pk`` last seen receiving instances, if any."""
        return self._receiving.get(study_pk)

    def remember(self, indexed: IndexedInstance) -> None:
        if len(self._keys) > self._maximum or len(self._receiving) > self._maximum:
            self._keys.clear()
            self._receiving.clear()
        self._keys.update(indexed.keys)
        if indexed.receiving:
            self._receiving[indexed.study_pk] = indexed.revision
        else:
            self._receiving.pop(indexed.study_pk, None)


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
    #: The revision is still receiving instances (not yet made ready).
    receiving: bool = True


def record_instance(
    session: Session, instance: StoredInstance, *, known: KnownKeys | None = None
) -> IndexedInstance:
    """Index ``instance`` (the caller commits, then may ``known.remember`` the result).

    Concurrency: the study row is locked (``SELECT … FOR UPDATE`` on
    PostgreSQL; SQLite transactions are ``BEGIN IMMEDIATE``), so the revision
    decision cannot race the completion monitor or another listener process.

    Raises :class:`~dicom_node.errors.InstanceConflictError` when the SOP
    Instance UID is indexed in another study or series, or as another SOP
    Class (see :func:`_known_instance`), and
    :class:`~dicom_node.errors.DuplicateInstanceError` when it is indexed and
    the store found it :attr:`~dicom_node.storage.StoreOutcome.ALREADY_STORED`
    (policy "reject"); nothing is changed then.
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
    # after the study lock: same-study re-sends serialise
    existing = _known_instance(session, instance)
    if existing is not None and instance.outcome is StoreOutcome.ALREADY_STORED:
        raise DuplicateInstanceError("SOP Instance UID already stored (policy: reject)")
    new_content = existing is None or instance.outcome is not StoreOutcome.IDENTICAL_DUPLICATE
    own_output = looks_like_own_output(instance.sop_class_uid, header)

    revision = session.execute(
        select(StudyRevision)
        .where(StudyRevision.study_pk == study_pk, StudyRevision.revision == study.current_revision)
        .with_for_update()
    ).scalar_one_or_none()
    reopened = (
        revision is not None
        and revision.state is RevisionState.READY
        and new_content
        and not own_output
    )
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

    values = {
        "series_pk": series_pk,
        "sop_class_uid": instance.sop_class_uid,
        "transfer_syntax_uid": instance.transfer_syntax_uid,
        "instance_number": _int(header, "InstanceNumber"),
        "size": instance.size,
        "path": instance.relative_path,
        "calling_ae_title": instance.calling_ae_title,
        "received_at": now,
        "revision": revision.revision,
        "is_own_output": own_output,
    }
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
        receiving=revision.state is RevisionState.RECEIVING,
    )


def _known_instance(session: Session, instance: StoredInstance) -> Instance | None:
    """The index's row for ``instance``'s SOP Instance UID, if any.

    A SOP Instance UID names one object for good (PS3.3 C.12.1.1.1, PS3.5 §9):
    one that arrives again in another study or series, or as another SOP
    Class, is a different object under a known identity, not a duplicate. It
    is refused (:class:`~dicom_node.errors.InstanceConflictError`) whatever the
    duplicate policy, so that the stored file and its index row keep telling
    the same story and no study loses or gains an instance unnoticed.
    """
    row = session.execute(
        select(Instance, Series.series_instance_uid, Study.study_instance_uid)
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .where(Instance.sop_instance_uid == instance.sop_instance_uid)
    ).one_or_none()
    if row is None:
        return None
    existing, series_uid, study_uid = row
    if study_uid != instance.study_instance_uid:
        conflict = "SOP Instance UID is already stored in another study"
    elif series_uid != instance.series_instance_uid:
        conflict = "SOP Instance UID is already stored in another series"
    elif existing.sop_class_uid != instance.sop_class_uid:
        conflict = "SOP Instance UID is already stored as another SOP Class"
    else:
        return existing
    logger.warning(
        "Instance %s of study %s is indexed in study %s: refused (%s)",
        short_uid(instance.sop_instance_uid),
        short_uid(instance.study_instance_uid),
        short_uid(study_uid),
        conflict,
    )
    raise InstanceConflictError(conflict)


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


class _NotTheCommonCase(Exception):
    """The fast path does not apply; the transaction rolls back and the full path runs."""


def _latest(column: Any) -> Any:
    """``column`` or the bound ``now``, whichever is later (portable ``GREATEST``)."""
    now = bindparam("now", type_=UTCDateTime())
    return case((column < now, now), else_=column)


_BUMP_STUDY = (
    update(Study)
    .where(Study.id == bindparam("b_study_pk"))
    .values(
        instance_count=Study.instance_count + 1, last_received_at=_latest(Study.last_received_at)
    )
)
_BUMP_RECEIVING_REVISION = (
    update(StudyRevision)
    .where(
        StudyRevision.study_pk == bindparam("b_study_pk"),
        StudyRevision.revision == bindparam("b_revision"),
        StudyRevision.state == RevisionState.RECEIVING,
    )
    .values(
        instances_received=StudyRevision.instances_received + 1,
        last_received_at=_latest(StudyRevision.last_received_at),
    )
)


class StudyIndexer:
    """Indexes each stored instance in its own transaction on ``engine``.

    The common case — a new instance (not a duplicate, not one of our own
    outputs) of a study whose keys this process knows and whose revision it
    last saw receiving — runs three statements in the study → revision lock
    order of :func:`record_instance`: bump the study, bump the revision *only
    if it is still receiving* (the same row the completion monitor's
    conditional UPDATE changes, so the two serialise), insert the instance
    unless its SOP Instance UID exists. Any surprise (the revision was made
    ready, the instance exists) rolls that transaction back and takes the full
    path, which decides revisions under the study lock.
    """

    def __init__(self, engine: Engine, *, known: KnownKeys | None = None) -> None:
        self._engine = engine
        self._known = known or KnownKeys()
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        # RETURNING says whether the row went in: an INSERT's rowcount is -1 on PostgreSQL
        # (psycopg under SQLAlchemy 2.1), which would send every instance to the full path
        self._insert_instance = (
            dialect.insert(Instance)
            .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
            .returning(Instance.id)
        )

    def record(self, instance: StoredInstance) -> IndexedInstance:
        """Index ``instance`` and commit once its file is durable.

        Raises :class:`sqlalchemy.exc.SQLAlchemyError` on database failure and
        :class:`~dicom_node.errors.StorageError` when the file cannot be made
        durable; either way nothing is committed.
        """
        indexed = None
        hint = self._fast_path_hint(instance)
        if hint is not None:
            try:
                with self._engine.begin() as connection:
                    indexed = self._record_common_case(connection, instance, *hint)
                    instance.wait_durable()
            except _NotTheCommonCase:
                indexed = None
        if indexed is None:
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                indexed = record_instance(session, instance, known=self._known)
                instance.wait_durable()
        self._known.remember(indexed)
        return indexed

    def _fast_path_hint(self, instance: StoredInstance) -> tuple[int, int, int] | None:
        if instance.outcome is not StoreOutcome.STORED:
            return None
        study_key = ("study", instance.study_instance_uid)
        series_key = ("series", instance.series_instance_uid)
        study_pk, series_pk = self._known.get(study_key), self._known.get(series_key)
        if study_pk is None or series_pk is None:
            return None
        revision = self._known.receiving_revision(study_pk)
        if revision is None or looks_like_own_output(instance.sop_class_uid, instance.header):
            return None
        return study_pk, series_pk, revision

    def _record_common_case(
        self,
        connection: Connection,
        instance: StoredInstance,
        study_pk: int,
        series_pk: int,
        revision: int,
    ) -> IndexedInstance:
        now = instance.received_at
        connection.execute(_BUMP_STUDY, {"b_study_pk": study_pk, "now": now})
        bumped = connection.execute(
            _BUMP_RECEIVING_REVISION, {"b_study_pk": study_pk, "b_revision": revision, "now": now}
        )
        if bumped.rowcount != 1:
            raise _NotTheCommonCase
        inserted = connection.execute(
            self._insert_instance,
            {
                "sop_instance_uid": instance.sop_instance_uid,
                "series_pk": series_pk,
                "sop_class_uid": instance.sop_class_uid,
                "transfer_syntax_uid": instance.transfer_syntax_uid,
                "instance_number": _int(instance.header, "InstanceNumber"),
                "size": instance.size,
                "path": instance.relative_path,
                "calling_ae_title": instance.calling_ae_title,
                "received_at": now,
                "revision": revision,
                "is_own_output": False,
            },
        )
        if inserted.first() is None:  # already indexed (a re-send): the full path decides
            raise _NotTheCommonCase
        return IndexedInstance(
            keys=(
                (("study", instance.study_instance_uid), study_pk),
                (("series", instance.series_instance_uid), series_pk),
            ),
            study_pk=study_pk,
            revision=revision,
            reopened=False,
            new_content=True,
            receiving=True,
        )
