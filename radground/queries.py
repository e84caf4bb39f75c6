"""Read-only views of the study index for the CLI and the ops surface."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from radground.settings import Settings
from worklist.db import create_db_engine, make_session_factory
from worklist.jobs_models import Job
from worklist.migrate import upgrade_database
from worklist.models import RevisionOutcome, RevisionState, Series, Study, StudyRevision

__all__ = ["StudyRow", "describe_outcome", "list_studies"]


@dataclass(frozen=True)
class StudyRow:
    """One line of `radground studies` (no patient data)."""

    study_instance_uid: str
    study_date: str
    modalities: str
    series_count: int
    instance_count: int
    revision: int
    state: str
    #: What became of the current revision (see :func:`describe_outcome`).
    outcome: str
    last_received_at: datetime


def describe_outcome(
    state: RevisionState,
    outcome: RevisionOutcome | None,
    detail: str | None,
    *,
    dispatched: bool,
    job_id: int | None,
    job_state: str | None,
) -> str:
    """What became of a study revision, for people: ``job 7 done``, ``job 8 failed``,
    ``skipped: no route (modality)``, ``skipped: own output``, ``waiting`` (ready,
    not routed yet), ``not recorded`` (routed by a version that kept no outcome)
    or ``-`` (still receiving)."""
    if job_id is not None:
        return f"job {job_id} {job_state}"
    if outcome is RevisionOutcome.NO_ROUTE:
        return f"skipped: no route ({detail or 'no reason recorded'})"
    if outcome is RevisionOutcome.OWN_OUTPUT:
        return "skipped: own output"
    if state is RevisionState.READY:
        return "not recorded" if dispatched else "waiting"
    return "-"


def list_studies(
    settings: Settings, *, state: str | None = None, limit: int = 50
) -> list[StudyRow]:
    """The most recently received studies with their current revision's state."""
    engine = create_db_engine(settings.database.url)
    try:
        upgrade_database(engine)
        with make_session_factory(engine)() as session:
            series = (
                select(
                    Series.study_pk,
                    func.count(Series.id).label("series_count"),
                    func.group_concat(func.distinct(Series.modality)).label("modalities")
                    if engine.dialect.name == "sqlite"
                    else func.string_agg(func.distinct(Series.modality), ",").label("modalities"),
                )
                .group_by(Series.study_pk)
                .subquery()
            )
            query = (
                select(
                    Study,
                    StudyRevision,
                    series.c.series_count,
                    series.c.modalities,
                    Job.id,
                    Job.state,
                )
                .join(
                    StudyRevision,
                    (StudyRevision.study_pk == Study.id)
                    & (StudyRevision.revision == Study.current_revision),
                )
                .join(series, series.c.study_pk == Study.id, isouter=True)
                .join(
                    Job,
                    (Job.study_pk == Study.id) & (Job.revision == Study.current_revision),
                    isouter=True,
                )
                .order_by(Study.last_received_at.desc())
                .limit(limit)
            )
            if state is not None:
                query = query.where(StudyRevision.state == state)
            return [
                StudyRow(
                    study_instance_uid=study.study_instance_uid,
                    study_date=study.study_date,
                    modalities=modalities or "",
                    series_count=series_count or 0,
                    instance_count=study.instance_count,
                    revision=study.current_revision,
                    state=revision.state.value,
                    outcome=describe_outcome(
                        revision.state,
                        revision.outcome,
                        revision.outcome_detail,
                        dispatched=revision.dispatched_at is not None,
                        job_id=job_id,
                        job_state=job_state and job_state.value,
                    ),
                    last_received_at=study.last_received_at,
                )
                for study, revision, series_count, modalities, job_id, job_state in session.execute(
                    query
                )
            ]
    finally:
        engine.dispose()
