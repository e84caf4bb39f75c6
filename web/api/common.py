"""What the API's resources share: a database session per request, the problem answers, pages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from web.context import WebContext, web_context
from web.problems import PROBLEM_MEDIA_TYPE, Problem
from worklist.errors import InvalidFilterError, JobActionError, NotFoundError
from worklist.views import MAX_PAGE_SIZE, Page

__all__ = [
    "PROBLEMS",
    "Context",
    "DbSession",
    "Limit",
    "Offset",
    "PageModel",
    "ProblemDetails",
    "action_problem",
    "filter_problem",
    "not_found",
    "problem_answer",
]

T = TypeVar("T")


def _session(context: Annotated[WebContext, Depends(web_context)]) -> Iterator[Session]:
    with context.sessions() as session:
        yield session


#: Route parameters: a read-only session for the request; the application's context.
DbSession = Annotated[Session, Depends(_session)]
Context = Annotated[WebContext, Depends(web_context)]
Offset = Annotated[int, Query(ge=0, description="Rows to skip.")]
Limit = Annotated[
    int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"Rows per page (at most {MAX_PAGE_SIZE}).")
]


class ProblemDetails(BaseModel):
    """An error (RFC 9457 problem details)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "model": ProblemDetails,
            "content": {PROBLEM_MEDIA_TYPE: {}}}


#: The error answers every resource documents.
PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: _problem("A parameter is invalid (``parameter`` names it)."),
    401: _problem("No credentials, or an unknown, revoked or expired token."),
    403: _problem("The credentials lack the permission this needs."),
}


def problem_answer(description: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that answers 404 (``description``) and 409 besides
    :data:`PROBLEMS`."""
    return {404: _problem(description), 409: _problem("The action does not apply now.")}


class PageModel(BaseModel, Generic[T]):
    """One page of a list: ``items`` from ``offset``, at most ``limit``, of ``total``."""

    items: list[T]
    total: int
    offset: int
    limit: int
    has_more: bool

    @classmethod
    def of(cls, page: Page[Any]) -> dict[str, Any]:
        """The response body of ``page``."""
        return {"items": list(page.items), "total": page.total, "offset": page.offset,
                "limit": page.limit, "has_more": page.has_more}


def filter_problem(exc: InvalidFilterError) -> Problem:
    """A bad filter as a 400 problem naming the parameter."""
    return Problem(400, str(exc), kind="invalid-parameter", parameter=exc.parameter)


def not_found(detail: str) -> Problem:
    return Problem(404, detail, kind="not-found")


def action_problem(exc: JobActionError) -> Problem:
    """An operator action refused: 404 for an unknown ID, 409 when the state does not allow it."""
    if isinstance(exc, NotFoundError):
        return not_found(str(exc))
    return Problem(409, str(exc), kind="action-not-applicable")
