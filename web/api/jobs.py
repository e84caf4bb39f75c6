"""``/jobs``: jobs with their timings, artifacts (downloadable), deliveries and audit trail, and
the operator actions on them: retry, cancel, retry one delivery."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from web.api.common import (
    PROBLEMS,
    Context,
    DbSession,
    Limit,
    Offset,
    PageModel,
    action_problem,
    filter_problem,
    not_found,
    problem_answer,
)
from web.api.schemas import ActionResult
from web.auth import Actor, Reader, client_address
from worklist.errors import InvalidFilterError, JobActionError
from worklist.jobs import cancel_job, retry_delivery, retry_job
from worklist.jobs_models import Delivery, JobState
from worklist.views import JobDetail, JobFilter, JobSummary, get_artifact, get_job, list_jobs

__all__ = ["router"]

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=PROBLEMS)


@router.get("", response_model=PageModel[JobSummary], summary="List jobs")
def jobs(
    principal: Reader,
    session: DbSession,
    state: Annotated[
        list[JobState] | None, Query(description="Any of these states (repeat the parameter).")
    ] = None,
    route: Annotated[str | None, Query(max_length=64)] = None,
    created_from: Annotated[
        datetime | None, Query(description="Created at or after (ISO 8601, with a time zone).")
    ] = None,
    created_until: Annotated[datetime | None, Query(description="Created before.")] = None,
    modality: Annotated[str | None, Query(max_length=16)] = None,
    calling_ae_title: Annotated[str | None, Query(max_length=16)] = None,
    study_instance_uid: Annotated[str | None, Query(max_length=64)] = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> dict[str, Any]:
    """Jobs, the newest first."""
    try:
        filters = JobFilter(
            states=tuple(state or ()), route=route, created_from=created_from,
            created_until=created_until, modality=modality, calling_ae_title=calling_ae_title,
            study_instance_uid=study_instance_uid,
        )
        return PageModel.of(list_jobs(session, filters, offset=offset, limit=limit))
    except InvalidFilterError as exc:
        raise filter_problem(exc) from None


@router.get("/{job_id}", response_model=JobDetail, summary="One job",
            responses=problem_answer("No such job."))
def job(principal: Reader, session: DbSession, job_id: int) -> JobDetail:
    """A job: timings per stage, artifacts, deliveries (attempts, the peer's answer, the retry
    schedule) and its audit trail."""
    found = get_job(session, job_id)
    if found is None:
        raise not_found(f"no job {job_id}")
    return found


@router.get(
    "/{job_id}/artifacts/{artifact_id}",
    summary="Download an artifact",
    response_class=FileResponse,
    responses={
        200: {"description": "The object: application/dicom (SR, presentation states, SC, KOS), "
              "application/fhir+json, or the HL7 v2 message.",
              "content": {"application/dicom": {}, "application/fhir+json": {}}},
        **problem_answer("No such job or artifact, or its file is gone."),
    },
)
def artifact(
    principal: Reader, session: DbSession, context: Context, job_id: int, artifact_id: int
) -> FileResponse:
    """The file of one of the job's artifacts, with its media type."""
    found = get_artifact(session, job_id, artifact_id)
    if found is None:
        raise not_found(f"job {job_id} has no artifact {artifact_id}")
    root = Path(context.pipeline.outputs_root).resolve()
    path = (root / found.path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise not_found(f"the file of artifact {artifact_id} is not under the outputs folder")
    return FileResponse(path, media_type=found.media_type, filename=path.name)


@router.post("/{job_id}/retry", response_model=ActionResult, status_code=202,
             summary="Retry a job", responses=problem_answer("No such job."))
def retry(principal: Actor, context: Context, request: Request, job_id: int) -> ActionResult:
    """Retry a failed, dead or cancelled job from the step it stopped at."""
    try:
        detail = retry_job(context.pipeline, job_id, actor=principal.actor,
                           source=client_address(request))
    except JobActionError as exc:
        raise action_problem(exc) from None
    return ActionResult(detail=detail)


@router.post("/{job_id}/cancel", response_model=ActionResult, summary="Cancel a queued job",
             responses=problem_answer("No such job."))
def cancel(principal: Actor, context: Context, request: Request, job_id: int) -> ActionResult:
    """Cancel a job that is still queued (a retry queues it again)."""
    try:
        with context.sessions.begin() as session:
            detail = cancel_job(session, job_id, actor=principal.actor,
                                source=client_address(request))
    except JobActionError as exc:
        raise action_problem(exc) from None
    return ActionResult(detail=detail)


@router.post("/{job_id}/deliveries/{delivery_id}/retry", response_model=ActionResult,
             status_code=202, summary="Retry one delivery",
             responses=problem_answer("No such job or delivery."))
def retry_one_delivery(
    principal: Actor, context: Context, request: Request, job_id: int, delivery_id: int
) -> ActionResult:
    """Send a failed delivery again from the start (its retry clock starts over)."""
    with context.sessions() as session:
        owner = session.get(Delivery, delivery_id)
        if owner is None or owner.job_id != job_id:
            raise not_found(f"job {job_id} has no delivery {delivery_id}")
    try:
        detail = retry_delivery(context.pipeline, delivery_id, actor=principal.actor,
                                source=client_address(request))
    except JobActionError as exc:
        raise action_problem(exc) from None
    return ActionResult(detail=detail)
