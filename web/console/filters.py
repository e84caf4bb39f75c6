"""The studies and jobs tables' filter forms: query parameters → :mod:`worklist.views` filters.

HTML forms send every field, empty ones as ``""``; an empty field means no filter. Dates are
whole days in the node's time zone, both ends included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TypeVar

from web.console.pages import LOCAL_TIME
from worklist.errors import InvalidFilterError
from worklist.jobs_models import JobState
from worklist.models import RevisionState
from worklist.views import JobFilter, StudyFilter

__all__ = ["PAGE_SIZES", "Paging", "job_filter", "paging", "study_filter"]

E = TypeVar("E", JobState, RevisionState)

#: The page sizes the tables offer.
PAGE_SIZES = (25, 50, 100)


@dataclass(frozen=True)
class Paging:
    offset: int
    limit: int


def _text(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name, "").strip()
    return value or None


def _day(query: Mapping[str, str], name: str, *, end: bool) -> datetime | None:
    value = _text(query, name)
    if value is None:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidFilterError(name, "must be a date (YYYY-MM-DD)") from exc
    if end:
        day += timedelta(days=1)  # the form's end day is included
    return datetime.combine(day, time(), tzinfo=LOCAL_TIME)


def _choice(query: Mapping[str, str], name: str, kind: type[E]) -> E | None:
    value = _text(query, name)
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError as exc:
        known = ", ".join(member.value for member in kind)
        raise InvalidFilterError(name, f"must be one of {known}") from exc


def _number(query: Mapping[str, str], name: str, default: int) -> int:
    value = _text(query, name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise InvalidFilterError(name, "must be a whole number") from exc


def paging(query: Mapping[str, str]) -> Paging:
    """The page asked for (``offset``, ``limit``; the views check their ranges)."""
    limit = _number(query, "limit", PAGE_SIZES[0])
    if limit not in PAGE_SIZES:
        raise InvalidFilterError("limit", f"must be one of {', '.join(map(str, PAGE_SIZES))}")
    return Paging(_number(query, "offset", 0), limit)


def study_filter(query: Mapping[str, str]) -> StudyFilter:
    """The studies table's filter; raises :class:`InvalidFilterError` naming the field."""
    return StudyFilter(
        state=_choice(query, "state", RevisionState),
        job_state=_choice(query, "job_state", JobState),
        received_from=_day(query, "from", end=False),
        received_until=_day(query, "until", end=True),
        modality=_text(query, "modality"),
        calling_ae_title=_text(query, "calling_ae"),
        study_instance_uid=_text(query, "uid"),
    )


def job_filter(query: Mapping[str, str]) -> JobFilter:
    """The jobs table's filter; raises :class:`InvalidFilterError` naming the field."""
    state = _choice(query, "state", JobState)
    return JobFilter(
        states=(state,) if state is not None else (),
        route=_text(query, "route"),
        created_from=_day(query, "from", end=False),
        created_until=_day(query, "until", end=True),
        study_instance_uid=_text(query, "study"),
    )
