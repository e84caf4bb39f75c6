"""``/studies``: the study index, a study's revisions and outcomes, a routes dry run, reprocess."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

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
from worklist import atna
from worklist.atna import events
from worklist.errors import InvalidFilterError, JobActionError
from worklist.jobs import reprocess_study
from worklist.jobs_models import JobState
from worklist.models import RevisionOutcome, RevisionState
from worklist.views import (
    RouteDryRun,
    StudyDetail,
    StudyFilter,
    StudySummary,
    dry_run_routes,
    get_study,
    list_studies,
)

__all__ = ["router"]

router = APIRouter(prefix="/studies", tags=["studies"], responses=PROBLEMS)

@router.get("", response_model=PageModel[StudySummary], summary="List studies")
def studies(
    principal: Reader,
    session: DbSession,
    request: Request,
    state: Annotated[RevisionState | None, Query(description="Current revision's state.")] = None,
    job_state: Annotated[
        JobState | None, Query(description="State of the current revision's job.")
    ] = None,
    outcome: Annotated[
        RevisionOutcome | None, Query(description="What routing decided.")
    ] = None,
    received_from: Annotated[
        datetime | None, Query(description="Last instance received at or after (ISO 8601, "
                               "with a time zone).")
    ] = None,
    received_until: Annotated[
        datetime | None, Query(description="Last instance received before.")
    ] = None,
    modality: Annotated[str | None, Query(max_length=16)] = None,
    calling_ae_title: Annotated[str | None, Query(max_length=16)] = None,
    study_instance_uid: Annotated[
        str | None, Query(max_length=64, description="Study Instance UIDs starting with this.")
    ] = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> dict[str, Any]:
    """Studies, the most recently received first, each with every revision and its outcome
    (a job, skipped with the reason, or RadGround's own output)."""
    try:
        filters = StudyFilter(
            state=state, job_state=job_state, outcome=outcome, received_from=received_from,
            received_until=received_until, modality=modality, calling_ae_title=calling_ae_title,
            study_instance_uid=study_instance_uid,
        )
        page = list_studies(session, filters, offset=offset, limit=limit)
    except InvalidFilterError as exc:
        raise filter_problem(exc) from None
    atna.record(events.query, requestor=principal.name, client_address=client_address(request),
                query_text=request.url.query.encode(), matches=page.total)  # IHE ATNA Query
    return PageModel.of(page)


@router.get("/{study_instance_uid}", response_model=StudyDetail, summary="One study",
            responses=problem_answer("No such study."))
def study(principal: Reader, session: DbSession, study_instance_uid: str) -> StudyDetail:
    """A study: its revisions with their outcomes, its series and who sent it."""
    found = get_study(session, study_instance_uid)
    if found is None:
        raise not_found(f"no study {study_instance_uid} in the index")
    return found


@router.get("/{study_instance_uid}/routes", response_model=RouteDryRun,
            summary="Dry run of the routes",
            responses=problem_answer("No such study."))
def routes_dry_run(
    principal: Reader, session: DbSession, context: Context, study_instance_uid: str
) -> RouteDryRun:
    """Which configured route the study would take now, and why each other one does not."""
    found = dry_run_routes(session, study_instance_uid, context.pipeline.routes)
    if found is None:
        raise not_found(f"no study {study_instance_uid} in the index")
    return found


@router.post("/{study_instance_uid}/reprocess", response_model=ActionResult,
             summary="Reprocess a study", status_code=202,
             responses=problem_answer("No such study."))
def reprocess(
    principal: Actor, context: Context, request: Request, study_instance_uid: str
) -> ActionResult:
    """Open a new, immediately ready revision of the study: it is routed and processed again
    (new output UIDs that supersede the previous ones)."""
    try:
        with context.sessions.begin() as session:
            revision = reprocess_study(session, study_instance_uid, actor=principal.actor,
                                       source=client_address(request))
    except JobActionError as exc:
        raise action_problem(exc) from None
    return ActionResult(
        detail=f"study revision {revision} opened; it is processed when the node dispatches it"
    )
