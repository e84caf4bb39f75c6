"""The study index and study completion, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from dicom_node.errors import DuplicateInstanceError, InstanceConflictError, StorageError
from dicom_node.scp import StoredInstance
from dicom_node.storage import StoreOutcome
from tests.factories import make_ct
from worklist.completion import CompletionMonitor
from worklist.db import make_session_factory
from worklist.index import StudyIndexer, record_instance
from worklist.models import Instance, Patient, RevisionState, Series, Study, StudyRevision

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def stored(study, series, n, *, at, outcome=StoreOutcome.STORED, sop=None):
    header = make_ct(
        study_instance_uid=study,
        series_instance_uid=series,
        instance_number=n,
        rows=4,
        columns=4,
        sop_instance_uid=sop,
    )
    return StoredInstance(
        sop_class_uid=str(header.SOPClassUID),
        sop_instance_uid=str(header.SOPInstanceUID),
        study_instance_uid=study,
        series_instance_uid=series,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        relative_path=f"{study}/{series}/{header.SOPInstanceUID}.dcm",
        size=100,
        outcome=outcome,
        calling_ae_title="PACS",
        peer_host="127.0.0.1",
        received_at=at,
        header=header,
    )


def index(sessions, instance):
    with sessions.begin() as session:
        return record_instance(session, instance)


def test_index_records_patient_study_series_instance(migrated_engine):
    sessions = make_session_factory(migrated_engine)
    study, series = generate_uid(), generate_uid()
    for n in (1, 2, 3):
        index(sessions, stored(study, series, n, at=T0 + timedelta(seconds=n)))
    with sessions() as session:
        assert session.scalar(select(func.count(Patient.id))) == 1
        row = session.execute(select(Study).where(Study.study_instance_uid == study)).scalar_one()
        assert (row.instance_count, row.current_revision, row.accession_number) == (3, 1, "ACC0001")
        assert row.last_received_at == T0 + timedelta(seconds=3)
        assert session.scalar(select(Series.modality)) == "CT"
        assert sorted(session.scalars(select(Instance.instance_number))) == [1, 2, 3]
        revision = session.execute(select(StudyRevision)).scalar_one()
        assert (revision.state, revision.instances_received) == (RevisionState.RECEIVING, 3)


def test_study_becomes_ready_once_after_idle_time(migrated_engine):
    sessions = make_session_factory(migrated_engine)
    ready = []
    monitor = CompletionMonitor(sessions, ready.append, idle_seconds=30, force_after_seconds=600)
    study, series = generate_uid(), generate_uid()
    index(sessions, stored(study, series, 1, at=T0))
    index(sessions, stored(study, series, 2, at=T0 + timedelta(seconds=20)))
    assert monitor.run_once(T0 + timedelta(seconds=45)) == []  # 25 s idle: not yet
    events = monitor.run_once(T0 + timedelta(seconds=51))
    assert [(e.study_instance_uid, e.revision, e.instances_received, e.reason) for e in events] == [
        (study, 1, 2, "idle")
    ]
    assert monitor.run_once(T0 + timedelta(seconds=500)) == []
    assert len(ready) == 1


def test_force_complete_for_a_stream_that_never_stops(migrated_engine):
    sessions = make_session_factory(migrated_engine)
    monitor = CompletionMonitor(sessions, lambda e: None, idle_seconds=30, force_after_seconds=120)
    study, series = generate_uid(), generate_uid()
    for second in range(0, 130, 10):
        index(sessions, stored(study, series, second + 1, at=T0 + timedelta(seconds=second)))
    events = monitor.run_once(T0 + timedelta(seconds=125))
    assert [(e.revision, e.reason) for e in events] == [(1, "force-complete")]


def test_late_instances_open_a_new_revision_but_identical_duplicates_do_not(migrated_engine):
    sessions = make_session_factory(migrated_engine)
    monitor = CompletionMonitor(sessions, lambda e: None, idle_seconds=30, force_after_seconds=600)
    study, series = generate_uid(), generate_uid()
    first = stored(study, series, 1, at=T0)
    index(sessions, first)
    assert [e.revision for e in monitor.run_once(T0 + timedelta(seconds=31))] == [1]

    duplicate = stored(
        study,
        series,
        1,
        at=T0 + timedelta(seconds=40),
        outcome=StoreOutcome.IDENTICAL_DUPLICATE,
        sop=first.sop_instance_uid,
    )
    assert index(sessions, duplicate).reopened is False
    assert monitor.run_once(T0 + timedelta(seconds=200)) == []

    late = index(sessions, stored(study, series, 2, at=T0 + timedelta(seconds=300)))
    assert (late.reopened, late.revision) == (True, 2)
    index(sessions, stored(study, series, 3, at=T0 + timedelta(seconds=301)))
    events = monitor.run_once(T0 + timedelta(seconds=340))
    assert [(e.revision, e.instances_received) for e in events] == [(2, 2)]
    with sessions() as session:
        assert session.scalar(select(Study.instance_count)) == 3
        assert session.scalar(select(Study.current_revision)) == 2


def test_indexer_fast_path_keeps_the_same_books_as_the_full_path(migrated_engine):
    """Instances through StudyIndexer (three Core statements once a study is known) give
    the rows, counts and revisions of record_instance, including the surprises that
    send it back to the full path: a revision made ready under it, a duplicate, one of
    the exporters' own objects."""
    sessions = make_session_factory(migrated_engine)
    indexer = StudyIndexer(migrated_engine)
    monitor = CompletionMonitor(sessions, lambda e: None, idle_seconds=30, force_after_seconds=600)
    study, series = generate_uid(), generate_uid()
    first = stored(study, series, 1, at=T0)
    for n in range(1, 6):
        indexer.record(first if n == 1 else stored(study, series, n, at=T0 + timedelta(seconds=n)))
    assert [
        (e.revision, e.instances_received) for e in monitor.run_once(T0 + timedelta(seconds=40))
    ] == [(1, 5)]

    # The process still believes revision 1 is receiving: the fast path must notice it is not.
    late = indexer.record(stored(study, series, 6, at=T0 + timedelta(seconds=50)))
    assert (late.reopened, late.revision) == (True, 2)
    again = indexer.record(
        stored(study, series, 1, at=T0 + timedelta(seconds=51), sop=first.sop_instance_uid)
    )
    # a replaced file: counted in the open revision
    assert (again.revision, again.new_content) == (2, True)
    indexer.record(stored(study, series, 7, at=T0 + timedelta(seconds=52)))
    events = monitor.run_once(T0 + timedelta(seconds=90))
    assert [(e.revision, e.instances_received) for e in events] == [(2, 3)]
    with sessions() as session:
        row = session.execute(select(Study).where(Study.study_instance_uid == study)).scalar_one()
        assert (row.instance_count, row.current_revision) == (7, 2)
        assert row.last_received_at == T0 + timedelta(seconds=52)
        revisions = {
            r.revision: r.instances_received for r in session.scalars(select(StudyRevision))
        }
        assert revisions == {1: 5, 2: 3}
        numbers = dict(session.execute(select(Instance.instance_number, Instance.revision)).all())
        assert numbers == {1: 2, 2: 1, 3: 1, 4: 1, 5: 1, 6: 2, 7: 2}


def test_indexer_takes_the_fast_path_once_a_study_is_known(migrated_engine, monkeypatch):
    """After a study's first instance, the next ones of its series skip record_instance (on
    PostgreSQL too, where an INSERT's rowcount does not say whether the row went in)."""
    from worklist import index as index_module

    full_path = []
    record = index_module.record_instance

    def counted(session, instance, **kwargs):
        full_path.append(int(instance.header.InstanceNumber))
        return record(session, instance, **kwargs)

    monkeypatch.setattr(index_module, "record_instance", counted)
    indexer = StudyIndexer(migrated_engine)
    study, series = generate_uid(), generate_uid()
    for n in range(1, 6):
        indexer.record(stored(study, series, n, at=T0 + timedelta(seconds=n)))

    assert full_path == [1]
    with make_session_factory(migrated_engine)() as session:
        assert session.scalar(select(Study.instance_count)) == 5
        assert session.scalar(select(StudyRevision.instances_received)) == 5


def study_books(sessions):
    """Each study's instance count and what the index holds per study (SOP Instance UID -> path)."""
    with sessions() as session:
        counts = {s.study_instance_uid: s.instance_count for s in session.scalars(select(Study))}
        rows = session.execute(
            select(Study.study_instance_uid, Instance.sop_instance_uid, Instance.path)
            .join(Series, Series.study_pk == Study.id)
            .join(Instance, Instance.series_pk == Series.id)
        ).all()
    held = {}
    for study, sop, path in rows:
        held.setdefault(study, {})[sop] = path
    return counts, held


@pytest.mark.parametrize("via", ["record_instance", "StudyIndexer"])
def test_a_known_instance_in_another_study_or_series_is_a_conflict_that_changes_nothing(
    migrated_engine, via
):
    """The same SOP Instance UID with another Study/Series Instance UID or SOP Class is another
    object under a known identity: refused, and no row moves, no count changes (issue: the row
    moved to the new study, both studies' counts went stale)."""
    sessions = make_session_factory(migrated_engine)
    indexer = StudyIndexer(migrated_engine)
    record = (
        indexer.record if via == "StudyIndexer" else (lambda instance: index(sessions, instance))
    )
    study, series, other_study, other_series = (generate_uid() for _ in range(4))
    original = stored(study, series, 1, at=T0)
    record(original)
    # the other study is known
    record(stored(other_study, other_series, 1, at=T0 + timedelta(seconds=1)))
    # ... and receiving (fast path)
    record(stored(other_study, other_series, 2, at=T0 + timedelta(seconds=2)))
    before = study_books(sessions)

    elsewhere = [
        stored(
            other_study,
            other_series,
            3,
            at=T0 + timedelta(seconds=3),
            sop=original.sop_instance_uid,
        ),
        stored(
            study, generate_uid(), 1, at=T0 + timedelta(seconds=4), sop=original.sop_instance_uid
        ),
        replace(
            stored(study, series, 1, at=T0 + timedelta(seconds=5), sop=original.sop_instance_uid),
            sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
        ),
    ]
    for instance, place in zip(
        elsewhere, ["another study", "another series", "another SOP Class"], strict=True
    ):
        with pytest.raises(InstanceConflictError, match=f"already stored (in|as) {place}"):
            record(instance)

    assert study_books(sessions) == before
    counts, held = before
    assert counts == {study: 1, other_study: 2}
    assert held[study] == {original.sop_instance_uid: original.relative_path}


def test_a_re_sent_instance_in_its_own_study_and_series_is_no_conflict(migrated_engine):
    sessions = make_session_factory(migrated_engine)
    study, series = generate_uid(), generate_uid()
    original = stored(study, series, 1, at=T0)
    index(sessions, original)
    for outcome in (StoreOutcome.IDENTICAL_DUPLICATE, StoreOutcome.REPLACED):
        again = stored(
            study,
            series,
            1,
            at=T0 + timedelta(seconds=5),
            outcome=outcome,
            sop=original.sop_instance_uid,
        )
        assert index(sessions, again).new_content is (outcome is StoreOutcome.REPLACED)
    counts, held = study_books(sessions)
    assert counts == {study: 1} and held == {
        study: {original.sop_instance_uid: original.relative_path}
    }


def test_an_already_stored_file_is_indexed_once_then_a_duplicate(migrated_engine):
    """Policy "reject" with a byte-identical file in place: indexed if the index never
    recorded it (a crash between rename and commit), a duplicate once it has."""
    sessions = make_session_factory(migrated_engine)
    indexer = StudyIndexer(migrated_engine)
    study, series = generate_uid(), generate_uid()
    unrecorded = stored(study, series, 1, at=T0, outcome=StoreOutcome.ALREADY_STORED)
    assert indexer.record(unrecorded).new_content is True
    with pytest.raises(DuplicateInstanceError, match="policy: reject"):
        indexer.record(replace(unrecorded, received_at=T0 + timedelta(seconds=1)))
    counts, held = study_books(sessions)
    assert counts == {study: 1} and held == {
        study: {unrecorded.sop_instance_uid: unrecorded.relative_path}
    }


def test_indexer_commits_nothing_when_the_file_cannot_be_made_durable(migrated_engine):
    indexer = StudyIndexer(migrated_engine)
    study, series = generate_uid(), generate_uid()
    indexer.record(stored(study, series, 1, at=T0))

    class FailedFlush:
        def wait(self):
            raise StorageError("could not write instance: Input/output error")

    for n in (2, 3):  # 2 takes the fast path, then a fresh indexer takes the full path
        broken = replace(
            stored(study, series, n, at=T0 + timedelta(seconds=n)), pending=FailedFlush()
        )
        with pytest.raises(StorageError):
            (indexer if n == 2 else StudyIndexer(migrated_engine)).record(broken)
    with make_session_factory(migrated_engine)() as session:
        assert session.scalar(select(Study.instance_count)) == 1
        assert sorted(session.scalars(select(Instance.instance_number))) == [1]
        assert session.scalar(select(StudyRevision.instances_received)) == 1


def test_ready_event_survives_a_crash_between_transition_and_dispatch(migrated_engine):
    sessions = make_session_factory(migrated_engine)
    study, series = generate_uid(), generate_uid()
    index(sessions, stored(study, series, 1, at=T0))

    def crash(_event):
        raise RuntimeError("worker died")

    first = CompletionMonitor(sessions, crash, idle_seconds=30, claim_lease_seconds=60)
    assert first.run_once(T0 + timedelta(seconds=31)) == []  # transition happened, hook failed
    ready = []
    restarted = CompletionMonitor(sessions, ready.append, idle_seconds=30, claim_lease_seconds=60)
    # still within the first claim's lease
    assert restarted.run_once(T0 + timedelta(seconds=40)) == []
    assert [e.revision for e in restarted.run_once(T0 + timedelta(seconds=100))] == [1]
    assert restarted.run_once(T0 + timedelta(seconds=500)) == []
    assert len(ready) == 1


def test_two_monitors_racing_dispatch_each_revision_once(migrated_engine):
    sessions = make_session_factory(migrated_engine)
    for _ in range(8):
        study, series = generate_uid(), generate_uid()
        index(sessions, stored(study, series, 1, at=T0))
    seen = []
    lock = threading.Lock()

    def hook(event):
        with lock:
            seen.append((event.study_instance_uid, event.revision))

    monitors = [CompletionMonitor(sessions, hook, idle_seconds=30) for _ in range(2)]
    threads = [
        threading.Thread(target=m.run_once, args=(T0 + timedelta(seconds=60),)) for m in monitors
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8 and len(set(seen)) == 8


def test_monitor_rejects_nonsense_timings():
    with pytest.raises(ValueError):
        CompletionMonitor(None, lambda e: None, idle_seconds=0)
