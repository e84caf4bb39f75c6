"""The console's pages: dashboard, studies, jobs, one job; the live-refresh probe; a job's
picture. :func:`install_console` mounts them, the actions, the login pages and the static files
on the application. A job's artifacts download from the REST API, which takes the session too.
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydicom import dcmread
from starlette.concurrency import run_in_threadpool

from exporters.errors import ExportError
from exporters.sc import render_preview
from web.auth import Reader
from web.console import actions, login, review
from web.console.filters import PAGE_SIZES, job_filter, paging, study_filter
from web.console.login import LoginRequiredError, Viewer, login_redirect
from web.console.pages import LOCAL_TIME, render
from web.console.queries import job_pictures, live_state
from web.context import WebContext
from web.problems import Problem
from worklist.errors import InvalidFilterError
from worklist.jobs_models import JobState
from worklist.models import RevisionState
from worklist.views import (
    ACTIVE_JOB_STATES,
    dashboard,
    get_job,
    list_jobs,
    list_studies,
)

__all__ = ["STATIC_PATH", "install_console", "router"]

router = APIRouter(include_in_schema=False)
router.include_router(login.router)
router.include_router(actions.router)
router.include_router(review.router)

#: Where the stylesheet and the script are served.
STATIC_PATH = "/static/console"
_STATIC = Path(__file__).parent / "static"
#: Pictures wider or taller than this are scaled down (the page shows them smaller anyway).
_PICTURE_MAX_PIXELS = 2048
#: What each action's redirect tells the operator.
NOTICES = {
    "job-retry": "The job was queued again.",
    "job-cancel": "The job was cancelled.",
    "delivery-retry": "The delivery starts over.",
    "reprocess": "The study will be processed again as a new revision.",
}


def install_console(app: FastAPI) -> None:
    """Mount the console on ``app``: pages, actions, login, static files."""
    app.include_router(router)
    app.mount(STATIC_PATH, StaticFiles(directory=_STATIC), name="console-static")

    @app.exception_handler(LoginRequiredError)
    async def _login_required(request: Request, exc: LoginRequiredError) -> Response:
        return login_redirect(request, exc.next_path)


def _context(request: Request) -> WebContext:
    context: WebContext = request.app.state.context
    return context


def _query(request: Request) -> dict[str, str]:
    return {key: value for key, value in request.query_params.items()}


async def _in_session(request: Request, read: Any, *args: Any, **kwargs: Any) -> Any:
    """``read(session, *args, **kwargs)`` in a thread, in a read-only session."""
    context = _context(request)

    def run() -> Any:
        with context.sessions() as session:
            return read(session, *args, **kwargs)

    return await run_in_threadpool(run)


@router.get("/")
async def dashboard_page(request: Request, principal: Viewer) -> Response:
    today = datetime.now(LOCAL_TIME).date()

    def read(session: Any) -> dict[str, Any]:
        return {
            "day": dashboard(session, today, tz=LOCAL_TIME),
            "recent": list_jobs(session, offset=0, limit=10),
            "live": live_state(session),
        }

    return render(request, "dashboard.html", principal=principal, title="Dashboard",
                  nav="dashboard", **await _in_session(request, read))


#: The views' names of filter fields → the form fields that set them.
_FORM_FIELDS = {
    "received_from": "from", "received_until": "until", "created_from": "from",
    "created_until": "until", "calling_ae_title": "calling_ae", "study_instance_uid": "uid",
    "states": "state",
}


def _filter_error(exc: InvalidFilterError, **renamed: str) -> dict[str, str]:
    name = renamed.get(exc.parameter) or _FORM_FIELDS.get(exc.parameter, exc.parameter)
    return {"parameter": name, "message": exc.reason}


@router.get("/studies")
async def studies_page(request: Request, principal: Viewer) -> Response:
    query = _query(request)
    try:
        filters, page = study_filter(query), paging(query)
        studies = await _in_session(
            request, lambda s: (list_studies(s, filters, offset=page.offset, limit=page.limit),
                                live_state(s))
        )
    except InvalidFilterError as exc:
        return render(request, "studies.html", principal=principal, title="Studies",
                      nav="studies", query=query, error=_filter_error(exc), page=None, live=None,
                      states=list(RevisionState), job_states=list(JobState),
                      page_sizes=PAGE_SIZES, status_code=400)
    found, live = studies
    return render(request, "studies.html", principal=principal, title="Studies", nav="studies",
                  query=query, error=None, page=found, live=live, states=list(RevisionState),
                  job_states=list(JobState), page_sizes=PAGE_SIZES)


@router.get("/jobs")
async def jobs_page(request: Request, principal: Viewer) -> Response:
    query = _query(request)
    routes = [route.name for route in _context(request).pipeline.routes]
    common: dict[str, Any] = {
        "title": "Jobs", "nav": "jobs", "query": query, "states": list(JobState),
        "routes": routes, "page_sizes": PAGE_SIZES, "notice": NOTICES.get(query.pop("done", "")),
    }
    try:
        filters, page = job_filter(query), paging(query)
        found, live = await _in_session(
            request, lambda s: (list_jobs(s, filters, offset=page.offset, limit=page.limit),
                                live_state(s))
        )
    except InvalidFilterError as exc:
        return render(request, "jobs.html", principal=principal,
                      error=_filter_error(exc, study_instance_uid="study"),
                      page=None, live=None, status_code=400, **common)
    return render(request, "jobs.html", principal=principal, error=None, page=found, live=live,
                  **common)


@router.get("/jobs/{job_id}")
async def job_page(request: Request, principal: Viewer, job_id: int,
                   done: str | None = None) -> Response:
    def read(session: Any) -> tuple[Any, Any, Any]:
        return get_job(session, job_id), job_pictures(session, job_id), live_state(session)

    job, pictures, live = await _in_session(request, read)
    if job is None:
        return render(request, "error.html", principal=principal, title="No such job",
                      status_code=404, message=f"There is no job {job_id}.")
    report, images = pictures if pictures is not None else (None, [])
    running = job.summary.state in ACTIVE_JOB_STATES or any(
        d.state.value == "pending" for d in job.deliveries
    )
    return render(
        request, "job.html", principal=principal, title=f"Job {job_id}", nav="jobs", job=job,
        report=report, images=images, live=live, running=running,
        notice=NOTICES.get(done or ""),
    )


@router.get("/live")
async def live(request: Request, principal: Reader) -> JSONResponse:
    """The change stamp and how much is in flight (``static/console.js`` polls this)."""
    state = await _in_session(request, live_state)
    return JSONResponse({"stamp": state.stamp, "running": state.running})


def _picture_png(storage_root: Path, report: Any, path: str, frame: int | None) -> bytes:
    source = dcmread(storage_root / path)
    picture = render_preview(report, source, language=report.languages, frame=frame)
    if max(picture.size) > _PICTURE_MAX_PIXELS:
        picture.thumbnail((_PICTURE_MAX_PIXELS, _PICTURE_MAX_PIXELS))
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=False)
    return out.getvalue()


@router.get("/jobs/{job_id}/images/{index}.png")
async def job_picture(request: Request, principal: Reader, job_id: int, index: int) -> Response:
    """A source image of the job with the findings' boxes and bilingual labels drawn, as the
    Secondary Capture images and previews draw them (:func:`exporters.sc.render_preview`)."""
    found = await _in_session(request, job_pictures, job_id)
    if found is None:
        raise Problem(404, f"job {job_id} is unknown or has no report yet", kind="not-found")
    report, images = found
    if not 0 <= index < len(images):
        raise Problem(404, f"job {job_id} has no image {index}", kind="not-found")
    picture = images[index]
    storage_root = _context(request).pipeline.storage_root
    try:
        png = await run_in_threadpool(
            _picture_png, storage_root, report, picture.path, picture.image.frame_number
        )
    except (OSError, ExportError) as exc:
        raise Problem(422, f"image {index} of job {job_id} cannot be drawn: {exc}",
                      kind="unrenderable-image") from exc
    return Response(png, media_type="image/png",
                    headers={"Cache-Control": "private, max-age=60"})
