"""The review pages: ``/reviews`` (the worklist), ``/jobs/{id}/review`` (one review) and
``/reviews/figures`` (per-class figures over a period).

Opening a review page as a radiologist claims the review (others see who has it open), as
opening a study in a reading room does; a viewer's page is read-only and its forged calls are
refused by the API (403).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from web.api.review import PRIORITIES, awaiting_page, review_body
from web.auth import client_address
from web.console.filters import PAGE_SIZES, paging
from web.console.login import Viewer
from web.console.pages import LOCAL_TIME, render
from web.console.review.page_model import LANGUAGE_NAMES, REJECT_REASONS, review_page_model
from web.context import WebContext
from worklist import review as service
from worklist.errors import InvalidFilterError
from worklist.review import figures
from worklist.review.errors import InvalidPeriodError

__all__ = ["WAITS", "router"]

router = APIRouter(include_in_schema=False)

#: "Waiting at least" choices: minutes → words.
WAITS = {"15": "15 minutes", "60": "1 hour", "240": "4 hours", "1440": "1 day"}
#: The figures' default period.
_FIGURES_DAYS = 30


def _context(request: Request) -> WebContext:
    context: WebContext = request.app.state.context
    return context


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


@router.get("/jobs/{job_id}/review")
async def review_page(request: Request, principal: Viewer, job_id: int) -> Response:
    context = _context(request)
    query = request.query_params

    where: dict[str, Any] = {"routes": context.pipeline.routes,
                             "storage_root": context.pipeline.storage_root}

    def load() -> Any:
        if "review" in principal.scopes:
            with context.sessions.begin() as session:
                return service.open_review(session, job_id, account=principal.name,
                                           source=client_address(request), **where)
        with context.sessions() as session:
            return service.get_review(session, job_id, **where)

    try:
        view = await run_in_threadpool(load)
    except service.ReviewNotFoundError as exc:
        return render(request, "error.html", principal=principal, title="No review",
                      status_code=404, message=str(exc))
    page = review_page_model(view, principal, image=_int(query.get("image")),
                             frame=_int(query.get("frame")))
    return render(
        request, "review.html", principal=principal, title=f"Review of job {job_id}",
        nav="reviews", page=page, view=view, review_json=review_body(view).model_dump(
            mode="json"),
        language_names=LANGUAGE_NAMES, reject_reasons=REJECT_REASONS,
    )


def _wait_filter(query: dict[str, str]) -> tuple[str | None, str | None, int | None]:
    modality = query.get("modality", "").strip().upper() or None
    priority = query.get("priority", "").strip().lower() or None
    if priority is not None and priority not in PRIORITIES:
        raise InvalidFilterError("priority", f"one of {', '.join(PRIORITIES)}")
    waited = query.get("waited", "").strip()
    if waited and waited not in WAITS:
        raise InvalidFilterError("waited", f"one of {', '.join(WAITS)} minutes")
    return modality, priority, int(waited) if waited else None


@router.get("/reviews")
async def worklist_page(request: Request, principal: Viewer) -> Response:
    query = {key: value for key, value in request.query_params.items()}
    common: dict[str, Any] = {"title": "Review worklist", "nav": "reviews", "query": query,
                              "priorities": PRIORITIES, "waits": WAITS,
                              "page_sizes": PAGE_SIZES}
    try:
        modality, priority, waited = _wait_filter(query)
        page = paging(query)
    except InvalidFilterError as exc:
        return render(request, "reviews.html", principal=principal, page=None, status_code=400,
                      error={"parameter": exc.parameter, "message": exc.reason}, **common)
    context = _context(request)

    def read() -> Any:
        with context.sessions() as session:
            return awaiting_page(
                session, context.pipeline.storage_root, modality=modality,
                min_wait=None if waited is None else timedelta(minutes=waited),
                priority=priority, offset=page.offset, limit=page.limit,
            )

    try:
        found = await run_in_threadpool(read)
    except InvalidFilterError as exc:
        return render(request, "reviews.html", principal=principal, page=None, status_code=400,
                      error={"parameter": exc.parameter, "message": exc.reason}, **common)
    return render(request, "reviews.html", principal=principal, page=found, error=None,
                  now_utc=datetime.now(UTC), **common)


def _period(query: dict[str, str]) -> tuple[date, date]:
    today = datetime.now(LOCAL_TIME).date()
    try:
        since = date.fromisoformat(query["since"]) if query.get("since") else \
            today - timedelta(days=_FIGURES_DAYS)
    except ValueError:
        raise InvalidFilterError("since", "a date like 2026-12-01") from None
    try:
        until = date.fromisoformat(query["until"]) if query.get("until") else today
    except ValueError:
        raise InvalidFilterError("until", "a date like 2026-12-31") from None
    if until < since:
        raise InvalidFilterError("until", "on or after the start of the period")
    return since, until


@router.get("/reviews/figures")
async def figures_page(request: Request, principal: Viewer) -> Response:
    query = {key: value for key, value in request.query_params.items()}
    try:
        since, until = _period(query)
    except InvalidFilterError as exc:
        return render(request, "review_figures.html", principal=principal,
                      title="Review figures", nav="figures", query=query, rows=None,
                      error={"parameter": exc.parameter, "message": exc.reason},
                      status_code=400)
    context = _context(request)
    start = datetime.combine(since, time.min, LOCAL_TIME)
    end = datetime.combine(until + timedelta(days=1), time.min, LOCAL_TIME)

    def read() -> Any:
        with context.sessions() as session:
            return figures.class_figures(session, start, end)

    try:
        rows = await run_in_threadpool(read)
    except InvalidPeriodError as exc:
        return render(request, "review_figures.html", principal=principal,
                      title="Review figures", nav="figures", query=query, rows=None,
                      error={"parameter": "since", "message": str(exc)}, status_code=400)
    return render(request, "review_figures.html", principal=principal, title="Review figures",
                  nav="figures", query=query, rows=rows, error=None, since=since, until=until,
                  reject_reasons=REJECT_REASONS)
