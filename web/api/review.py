"""``/jobs/{id}/review`` and ``/reviews``: a radiologist's review of a job's findings.

Reads need "read"; every change needs "review" (the radiologist's permission) and, from the
console, the session's CSRF token. Every change carries the review's ``version``: a change made
on an older version, on a signed review or on a superseded one is refused with 409 and a
message saying why (who signed and when, who changed it). Everything is done through
:mod:`worklist.review`, which writes the audit trail.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from engine.errors import EngineError
from engine.report import ReportError
from web.api.common import (
    PROBLEMS,
    Context,
    DbSession,
    Limit,
    Offset,
    PageModel,
    filter_problem,
    not_found,
)
from web.api.review_images import (
    DEFAULT_MAX_PIXELS,
    FrameOutOfRangeError,
    ImageUnreadableError,
    display_defaults,
    frame_png,
    instance_path,
    picture_etag,
    window_presets,
)
from web.api.review_schemas import (
    AddedFinding,
    FindingChangeBody,
    FindingCreateBody,
    ImageBody,
    ImageDisplay,
    LocateBody,
    RegionBody,
    ReviewBody,
    ReviewFindingBody,
    SendBackBody,
    SignBody,
    SignedBody,
    Suggestions,
    VersionBody,
    finding_body,
    suggestion_body,
)
from web.auth import Radiologist, Reader, client_address
from web.context import WebContext
from web.problems import Problem
from worklist import review as service
from worklist.context import StepError
from worklist.errors import InvalidFilterError
from worklist.review import assist, figures
from worklist.review.errors import InvalidPeriodError
from worklist.views import MAX_PAGE_SIZE, Page

__all__ = ["PRIORITIES", "awaiting_page", "review_body", "review_problem", "router"]

router = APIRouter(tags=["review"], responses=PROBLEMS)

T = TypeVar("T")

_ANSWERS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such job, or no review of it is possible (no report)."},
    409: {"description": "The review changed since it was loaded, was signed, or was "
                         "superseded (the detail says by whom and when)."},
    422: {"description": "The change is not valid (a bad box, an unknown language, an empty "
                         "text, a rejection without a reason, a finding still pending)."},
}


def review_problem(exc: Exception) -> Problem:
    """A refused review call as a problem: 404 unknown, 409 conflict, 422 bad input."""
    if isinstance(exc, service.ReviewNotFoundError):
        return Problem(404, str(exc), kind="not-found")
    if isinstance(exc, service.ReviewConflictError):
        return Problem(409, str(exc), kind="review-conflict")
    if isinstance(exc, service.ReviewInputError | ReportError):
        return Problem(422, str(exc), kind="invalid-review-input")
    if isinstance(exc, StepError | EngineError):
        return Problem(503, f"the model cannot answer now: {exc}", kind="model-unavailable")
    raise exc


def _change(context: WebContext, work: Callable[[Session], T]) -> T:
    """``work(session)`` in a transaction; review errors become problems."""
    try:
        with context.sessions.begin() as session:
            return work(session)
    except (service.ReviewError, ReportError) as exc:
        raise review_problem(exc) from None


def review_body(view: Any) -> ReviewBody:
    """A :class:`worklist.review.ReviewView` as the response body."""
    return ReviewBody(
        job_id=view.job_id, study_instance_uid=view.study_instance_uid, revision=view.revision,
        route=view.route, policy=view.policy, job_state=view.job_state, state=view.state,
        version=view.version, claimed_by=view.claimed_by, signed_by=view.signed_by,
        signed_at=view.signed_at, signoff=view.signoff,
        reviewed_languages=list(view.reviewed_languages), sent_back_by=view.sent_back_by,
        sent_back_note=view.sent_back_note, superseded_by_job_id=view.superseded_by_job_id,
        languages=list(view.languages),
        model={"name": view.model.name, "version": view.model.version,
               "manufacturer": view.model.manufacturer, "device_uid": view.model.device_uid},
        findings=[
            ReviewFindingBody(
                tracking_uid=f.tracking_uid, position=f.position, origin=str(f.origin),
                decision=str(f.decision),
                reject_reason=None if f.reject_reason is None else str(f.reject_reason),
                reject_note=f.reject_note,
                model=None if f.model is None else finding_body(f.model),
                final=finding_body(f.final), edited_languages=list(f.edited_languages),
                box_moved=f.box_moved, box_iou=f.box_iou, decided_by=f.decided_by,
                decided_at=f.decided_at,
            )
            for f in view.findings
        ],
        images=[
            ImageBody(sop_instance_uid=i.sop_instance_uid, sop_class_uid=i.sop_class_uid,
                      frame_count=i.frame_count, rows=i.rows, columns=i.columns,
                      series_description=i.series_description,
                      instance_number=i.instance_number)
            for i in view.images
        ],
    )


def _read_review(session: Session, context: WebContext, job_id: int) -> Any:
    try:
        return service.get_review(session, job_id, routes=context.pipeline.routes,
                                  storage_root=context.pipeline.storage_root)
    except service.ReviewError as exc:
        raise review_problem(exc) from None


@router.get("/jobs/{job_id}/review", response_model=ReviewBody, summary="A job's review",
            responses=_ANSWERS)
def get_review(principal: Reader, session: DbSession, context: Context,
               job_id: int) -> ReviewBody:
    """The review: its state and version, who has it open, who signed it, and each finding as
    the model made it and as it is now, with its decision."""
    return review_body(_read_review(session, context, job_id))


@router.post("/jobs/{job_id}/review", response_model=ReviewBody,
             summary="Open (claim) a job's review", responses=_ANSWERS)
def open_review(principal: Radiologist, context: Context, request: Request,
                job_id: int) -> ReviewBody:
    """Open the review for the caller: others see who has it open. A finished job with a
    report gets a review on first opening (its sign-off amends what was sent)."""
    view = _change(context, lambda s: service.open_review(
        s, job_id, account=principal.name, source=client_address(request),
        routes=context.pipeline.routes, storage_root=context.pipeline.storage_root))
    return review_body(view)


@router.patch("/jobs/{job_id}/review/findings/{tracking_uid}", response_model=VersionBody,
              summary="Decide on or correct one finding", responses=_ANSWERS)
def change_finding(principal: Radiologist, context: Context, request: Request, job_id: int,
                   tracking_uid: str, body: FindingChangeBody) -> VersionBody:
    """Accept, reject (with a reason), edit the label or sentence per language, move or resize
    the box, or change the coded finding; only the members given change."""

    def work(session: Session) -> int:
        change = service.FindingChange(
            decision=body.decision, reject_reason=body.reject_reason,
            reject_note=body.reject_note, label=body.label, description=body.description,
            region=None if body.region is None else body.region.region(),
            concept=None if body.concept is None else body.concept.concept(),
        )
        return service.decide(session, job_id, tracking_uid, change, version=body.version,
                              account=principal.name, source=client_address(request))

    return VersionBody(version=_change(context, work))


@router.post("/jobs/{job_id}/review/findings", response_model=AddedFinding, status_code=201,
             summary="Add a finding", responses=_ANSWERS)
def add_finding(principal: Radiologist, context: Context, request: Request, job_id: int,
                body: FindingCreateBody) -> AddedFinding:
    """Add a finding the radiologist drew, or a model suggestion taken into the report."""
    if body.origin.value == "model":
        raise Problem(422, "origin: an added finding comes from the radiologist or a "
                      "suggestion, not the model's report", kind="invalid-review-input",
                      parameter="origin")

    def work(session: Session) -> tuple[str, int]:
        return service.add_finding(
            session, job_id, version=body.version, account=principal.name, label=body.label,
            description=body.description, region=body.region.region(), kind=body.kind,
            concept=None if body.concept is None else body.concept.concept(),
            origin=body.origin, confidence=body.confidence, source=client_address(request),
        )

    tracking_uid, version = _change(context, work)
    return AddedFinding(tracking_uid=tracking_uid, version=version)


@router.post("/jobs/{job_id}/review/region-to-text", response_model=Suggestions,
             summary="What is in this box? (the model's region → text task)",
             responses={**_ANSWERS, 503: {"description": "The model cannot run here now."}})
def region_to_text(principal: Radiologist, context: Context, job_id: int,
                   body: RegionBody) -> Suggestions:
    """The model describes a drawn box; each answer may be added to the report."""
    sop_instance_uid, frame, box = _region_or_problem(body)

    def work(session: Session) -> Any:
        return assist.suggest_for_region(context.pipeline, session, job_id, sop_instance_uid,
                                         frame, box)

    return Suggestions(suggestions=[suggestion_body(s) for s in _assist(context, work)])


@router.post("/jobs/{job_id}/review/text-to-region", response_model=Suggestions,
             summary="Where is this finding? (the model's text → region task)",
             responses={**_ANSWERS, 503: {"description": "The model cannot run here now."}})
def text_to_region(principal: Radiologist, context: Context, job_id: int,
                   body: LocateBody) -> Suggestions:
    """The model's boxes for a named finding, best first."""

    def work(session: Session) -> Any:
        return assist.suggest_locations(context.pipeline, session, job_id, body.query.strip(),
                                        body.language)

    return Suggestions(suggestions=[suggestion_body(s) for s in _assist(context, work)])


def _region_or_problem(body: RegionBody) -> Any:
    try:
        return body.region()
    except ReportError as exc:
        raise Problem(422, f"box: {exc}", kind="invalid-review-input",
                      parameter="box") from None


def _assist(context: WebContext, work: Callable[[Session], T]) -> T:
    try:
        with context.sessions() as session:
            return work(session)
    except (service.ReviewError, ReportError, StepError, EngineError) as exc:
        raise review_problem(exc) from None


@router.post("/jobs/{job_id}/review/sign", response_model=SignedBody, status_code=202,
             summary="Sign the review", responses=_ANSWERS)
def sign(principal: Radiologist, context: Context, request: Request, job_id: int,
         body: SignBody) -> SignedBody:
    """Sign: the reviewed report is built as VERIFIED outputs in the languages given (a
    language not given is not published as verified) and delivered. Refused while a finding
    is pending; the loser of two radiologists signing at once is told who signed."""
    try:
        signoff = service.sign(context.pipeline, job_id, version=body.version,
                               account=principal.name, languages=tuple(body.languages),
                               source=client_address(request))
    except (service.ReviewError, ReportError) as exc:
        raise review_problem(exc) from None
    return SignedBody(signoff=signoff, detail=f"signed by {principal.name} (sign-off {signoff}) "
                      f"in {', '.join(body.languages)}; the verified outputs are being built")


@router.post("/jobs/{job_id}/review/send-back", response_model=VersionBody,
             summary="Send the review back unsigned", responses=_ANSWERS)
def send_back(principal: Radiologist, context: Context, request: Request, job_id: int,
              body: SendBackBody) -> VersionBody:
    """Release the review unsigned with a note; the decisions so far are kept."""
    version = _change(context, lambda s: service.send_back(
        s, job_id, version=body.version, account=principal.name, note=body.note.strip(),
        source=client_address(request)))
    return VersionBody(version=version)


#: Priorities the worklist filters by (Requested Procedure Priority (0040,1003), lower case).
PRIORITIES = ("stat", "high", "routine", "medium", "low")


def awaiting_page(
    session: Session, storage_root: Path, *, modality: str | None, min_wait: timedelta | None,
    priority: str | None, offset: int, limit: int,
) -> Page[Any]:
    """The radiologists' worklist page; with ``priority``, only rows of that priority (read
    from the source headers, so the whole worklist is read and filtered here)."""
    if priority is None:
        return service.awaiting_reviews(session, modality=modality, min_wait=min_wait,
                                        limit=limit, offset=offset, storage_root=storage_root)
    if priority not in PRIORITIES:
        raise InvalidFilterError("priority", f"must be one of {', '.join(PRIORITIES)}")
    matching: list[Any] = []
    start = 0
    while True:
        chunk = service.awaiting_reviews(session, modality=modality, min_wait=min_wait,
                                         limit=MAX_PAGE_SIZE, offset=start,
                                         storage_root=storage_root)
        matching.extend(row for row in chunk.items if row.priority == priority)
        if not chunk.has_more:
            break
        start += MAX_PAGE_SIZE
    return Page(tuple(matching[offset:offset + limit]), len(matching), offset, limit)


@router.get("/reviews", response_model=PageModel[service.AwaitingReview],
            summary="Reviews awaiting a radiologist")
def awaiting(
    principal: Reader,
    session: DbSession,
    context: Context,
    modality: Annotated[str | None, Query(max_length=16)] = None,
    priority: Annotated[str | None, Query(description="stat, high, routine, medium or low.")]
    = None,
    min_wait_minutes: Annotated[
        int | None, Query(ge=0, le=525_600, description="Waiting at least this many minutes.")
    ] = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> dict[str, Any]:
    """The radiologists' worklist, the longest waiting first: study (a short token of its
    UID), modality, priority (from the source headers), since when, who has it open, how many
    findings."""
    min_wait = None if min_wait_minutes is None else timedelta(minutes=min_wait_minutes)
    try:
        page = awaiting_page(session, context.pipeline.storage_root, modality=modality or None,
                             min_wait=min_wait, priority=priority.lower() if priority else None,
                             offset=offset, limit=limit)
    except InvalidFilterError as exc:
        raise filter_problem(exc) from None
    return PageModel.of(page)


@router.get("/reviews/figures", summary="Per-class review figures over a period")
def class_figures(
    principal: Reader,
    session: DbSession,
    since: Annotated[datetime, Query(description="From (ISO 8601, with a time zone).")],
    until: Annotated[datetime | None, Query(description="Until, excluded (default: now).")]
    = None,
) -> dict[str, Any]:
    """Per finding class, over the reviews signed in ``[since, until)``: reviewed, accepted,
    acceptance rate, rejected (by reason), edited, moved, relabelled, mean IoU of the model's
    and the final box, and findings the radiologists added."""
    until = until or datetime.now(UTC)
    try:
        rows = figures.class_figures(session, since, until)
    except InvalidPeriodError as exc:
        raise Problem(400, str(exc), kind="invalid-parameter", parameter="since") from None
    return {"since": since.isoformat(), "until": until.isoformat(),
            "classes": [row.as_dict() for row in rows]}


@router.get("/jobs/{job_id}/review/images/{sop_instance_uid}", response_model=ImageDisplay,
            summary="How the viewer shows a review image first",
            responses={404: {"description": "Not an image of this review."}})
def image_display(principal: Reader, session: DbSession, context: Context, job_id: int,
                  sop_instance_uid: str,
                  frame: Annotated[int | None, Query(ge=1)] = None) -> ImageDisplay:
    """The image's default window (its first Window Center/Width, else its value range), its
    value range and the modality's window presets."""
    path = _review_image_path(session, context, job_id, sop_instance_uid)
    try:
        defaults = display_defaults(path, frame=frame)
    except ImageUnreadableError as exc:
        raise Problem(422, f"image {sop_instance_uid}: {exc}", kind="unrenderable-image") \
            from None
    return ImageDisplay(
        sop_instance_uid=sop_instance_uid, rows=defaults.rows, columns=defaults.columns,
        frame_count=defaults.frame_count, window_center=defaults.window_center,
        window_width=defaults.window_width, min_value=defaults.min_value,
        max_value=defaults.max_value, presets=window_presets(defaults),
    )


@router.get(
    "/jobs/{job_id}/review/images/{sop_instance_uid}/frames/{frame}.png",
    summary="A review image's frame as PNG, windowed",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}},
               404: {"description": "Not an image of this review, or no such frame."}},
)
def image_png(
    principal: Reader, request: Request, session: DbSession, context: Context, job_id: int,
    sop_instance_uid: str, frame: int,
    center: Annotated[float | None, Query(description="Window centre (modality units).")] = None,
    width: Annotated[float | None, Query(gt=0, description="Window width.")] = None,
    size: Annotated[int, Query(ge=64, le=4096, description="Longer side at most.")]
    = DEFAULT_MAX_PIXELS,
) -> Response:
    """Frame ``frame`` (1 for a single-frame image) of a source image of the review, windowed
    by ``center``/``width`` (both, or neither for the image's default), scaled to ``size``."""
    if (center is None) != (width is None):
        raise Problem(400, "center and width go together (give both, or neither)",
                      kind="invalid-parameter", parameter="width" if width is None else "center")
    path = _review_image_path(session, context, job_id, sop_instance_uid)
    window = None if center is None or width is None else (center, width)
    etag = picture_etag(sop_instance_uid, frame, window, size)
    headers = {"Cache-Control": "private, max-age=86400", "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    try:
        png = frame_png(path, frame=None if frame == 1 else frame, window=window,
                        max_pixels=size)
    except ImageUnreadableError as exc:
        raise Problem(404 if isinstance(exc, FrameOutOfRangeError) else 422,
                      f"image {sop_instance_uid}: {exc}", kind="unrenderable-image") from None
    return Response(png, media_type="image/png", headers=headers)


def _review_image_path(session: Session, context: WebContext, job_id: int,
                       sop_instance_uid: str) -> Any:
    view = _read_review(session, context, job_id)
    if all(image.sop_instance_uid != sop_instance_uid for image in view.images):
        raise not_found(f"image {sop_instance_uid} is not one the review of job {job_id} shows")
    path = instance_path(session, context.pipeline.storage_root, sop_instance_uid)
    if path is None or not path.is_file():
        raise not_found(f"the file of image {sop_instance_uid} is not in storage")
    return path
