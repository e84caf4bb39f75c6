"""The study list of `radground studies`, read through :mod:`worklist.views`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from radground.settings import Settings
from worklist.db import create_db_engine, make_session_factory
from worklist.migrate import upgrade_database
from worklist.models import RevisionState
from worklist.views import StudyFilter, describe_outcome
from worklist.views import list_studies as list_study_views

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


def list_studies(
    settings: Settings, *, state: str | None = None, limit: int = 50
) -> list[StudyRow]:
    """The most recently received studies with their current revision's state."""
    engine = create_db_engine(settings.database.url)
    try:
        upgrade_database(engine)
        with make_session_factory(engine)() as session:
            page = list_study_views(
                session,
                StudyFilter(state=RevisionState(state) if state else None),
                limit=limit,
            )
    finally:
        engine.dispose()
    return [
        StudyRow(
            study_instance_uid=study.study_instance_uid,
            study_date=study.study_date,
            modalities=",".join(study.modalities),
            series_count=study.series_count,
            instance_count=study.instance_count,
            revision=study.current_revision,
            state=study.state.value,
            outcome=study.outcome.text,
            last_received_at=study.last_received_at,
        )
        for study in page.items
    ]
