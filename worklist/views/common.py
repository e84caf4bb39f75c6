"""What every read view shares: a page of results and the checks on filters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement

from worklist.errors import InvalidFilterError
from worklist.models import Instance, Series

__all__ = [
    "MAX_PAGE_SIZE",
    "Page",
    "check_page",
    "check_period",
    "check_text",
    "in_period",
    "studies_from_calling_ae",
    "studies_with_modality",
]

T = TypeVar("T")

#: The most rows one page may hold.
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: ``items`` from ``offset``, at most ``limit``, of ``total`` matching."""

    items: tuple[T, ...]
    total: int
    offset: int
    limit: int

    @property
    def has_more(self) -> bool:
        """Whether rows follow this page."""
        return self.offset + len(self.items) < self.total


def check_page(offset: int, limit: int) -> None:
    """Refuse a page outside ``offset >= 0``, ``1 <= limit <= MAX_PAGE_SIZE``."""
    if offset < 0:
        raise InvalidFilterError("offset", "must be 0 or more")
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidFilterError("limit", f"must be from 1 to {MAX_PAGE_SIZE}")


def check_period(
    start: datetime | None, end: datetime | None, *, start_name: str, end_name: str
) -> None:
    """Refuse naive times and a period that ends before it starts (``end`` is exclusive)."""
    for name, value in ((start_name, start), (end_name, end)):
        if value is not None and value.tzinfo is None:
            raise InvalidFilterError(name, "needs a time zone (e.g. 2026-12-06T00:00:00Z)")
    if start is not None and end is not None and end <= start:
        raise InvalidFilterError(end_name, f"must be after {start_name}")


def check_text(name: str, value: str | None, *, max_length: int) -> None:
    """Refuse an empty or over-long text filter (``None`` means no filter)."""
    if value is None:
        return
    if not value.strip():
        raise InvalidFilterError(name, "must not be empty")
    if len(value) > max_length:
        raise InvalidFilterError(name, f"must be at most {max_length} characters")


def studies_with_modality(modality: str) -> Select[Any]:
    """The primary keys of studies with a series of ``modality`` (upper case, as indexed)."""
    return select(Series.study_pk).where(Series.modality == modality.strip().upper())


def studies_from_calling_ae(ae_title: str) -> Select[Any]:
    """The primary keys of studies with an instance sent by ``ae_title``."""
    return (
        select(Series.study_pk)
        .join(Instance, Instance.series_pk == Series.id)
        .where(Instance.calling_ae_title == ae_title.strip())
    )


def in_period(
    column: QueryableAttribute[datetime], start: datetime | None, end: datetime | None
) -> list[ColumnElement[bool]]:
    """``start <= column < end`` (either bound may be missing)."""
    clauses = []
    if start is not None:
        clauses.append(column >= start)
    if end is not None:
        clauses.append(column < end)
    return clauses
