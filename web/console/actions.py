"""The operator actions as form posts: retry a job, retry one delivery, cancel a queued job,
reprocess a study.

Each needs the "act" permission and the session's CSRF token (:data:`web.auth.Actor`: a viewer's
post is refused with 403 whatever the page showed), runs the action of :mod:`worklist.jobs`
(which writes the audit trail) and answers with a redirect to the job's page saying what was
done, or a page saying why the action does not apply now (409) or what is unknown (404).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from web.auth import Actor, Principal, client_address
from web.console.pages import app_path, render
from web.context import WebContext
from worklist.errors import JobActionError, NotFoundError
from worklist.jobs import cancel_job, reprocess_study, retry_delivery, retry_job
from worklist.jobs_models import Delivery

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


async def _act(
    request: Request, principal: Principal, action: Callable[[WebContext], str], *,
    then: Callable[[str], str],
) -> Response:
    """Run ``action``; redirect to ``then(result)`` or show why it did not apply."""
    context: WebContext = request.app.state.context
    try:
        result = await run_in_threadpool(action, context)
    except NotFoundError as exc:
        return render(request, "error.html", principal=principal, title="Not found",
                      message=str(exc), status_code=404)
    except JobActionError as exc:
        return render(request, "error.html", principal=principal, title="Not done",
                      message=str(exc), status_code=409)
    return RedirectResponse(app_path(request, then(result)), status_code=303)


@router.post("/jobs/{job_id}/retry")
async def retry_job_action(request: Request, principal: Actor, job_id: int) -> Response:
    return await _act(
        request, principal,
        lambda ctx: retry_job(ctx.pipeline, job_id, actor=principal.actor,
                              source=client_address(request)),
        then=lambda _: f"/jobs/{job_id}?done=job-retry",
    )


@router.post("/jobs/{job_id}/cancel")
async def cancel_job_action(request: Request, principal: Actor, job_id: int) -> Response:
    def cancel(ctx: WebContext) -> str:
        with ctx.sessions.begin() as session:
            return cancel_job(session, job_id, actor=principal.actor,
                              source=client_address(request))

    return await _act(request, principal, cancel,
                      then=lambda _: f"/jobs/{job_id}?done=job-cancel")


@router.post("/deliveries/{delivery_id}/retry")
async def retry_delivery_action(request: Request, principal: Actor, delivery_id: int) -> Response:
    def retry(ctx: WebContext) -> str:
        retry_delivery(ctx.pipeline, delivery_id, actor=principal.actor,
                       source=client_address(request))
        with ctx.sessions() as session:
            delivery = session.get(Delivery, delivery_id)
            return str(delivery.job_id) if delivery is not None else ""

    return await _act(request, principal, retry,
                      then=lambda job_id: f"/jobs/{job_id}?done=delivery-retry")


@router.post("/studies/{study_instance_uid}/reprocess")
async def reprocess_action(
    request: Request, principal: Actor, study_instance_uid: str
) -> Response:
    def reprocess(ctx: WebContext) -> str:
        with ctx.sessions.begin() as session:
            return str(reprocess_study(
                session, study_instance_uid, actor=principal.actor,
                source=client_address(request),
            ))

    return await _act(
        request, principal, reprocess,
        then=lambda _: "/jobs?"
        + urlencode({"study": study_instance_uid, "done": "reprocess"}, quote_via=quote),
    )
