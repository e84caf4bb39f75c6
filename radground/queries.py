"""Read-only views of the study index for the CLI and the ops surface."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from radground.settings import Settings
from worklist.db import create_db_engine, make_session_factory
from worklist.migrate import upgrade_database
from worklist.models import Series, Study, StudyRevision

__all__ = ["StudyRow", "list_studies"]


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
    last_received_at: datetime


def list_studies(settings: Settings, *, state: str | None = None, limit: int = 50) -> list[StudyRow]:
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
                select(Study, StudyRevision.state, series.c.series_count, series.c.modalities)
                .join(StudyRevision, (StudyRevision.study_pk == Study.id) & (StudyRevision.revision == Study.current_revision))
                .join(series, series.c.study_pk == Study.id, isouter=True)
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
                    state=revision_state.value,
                    last_received_at=study.last_received_at,
                )
                for study, revision_state, series_count, modalities in session.execute(query)
            ]
    finally:
        engine.dispose()
