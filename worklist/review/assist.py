"""The model's region tasks on the review page: "what is here?" and "where is this?".

What the web calls when a radiologist draws a box and asks the model about it
(:func:`suggest_for_region`, MedRegA's region → text) or types or picks a finding
and asks where it is (:func:`suggest_locations`, text → region). Both ask the
model of the job's route (``ctx.models(route.model)``, loaded in the calling
process), in the route's languages, on the source images stored for the job's
study, and return :class:`~engine.region_tasks.RegionSuggestion` values that the
radiologist may accept into the review (``add_finding`` with origin
``suggestion``). Nothing is written to the database; asking is not a decision.

Errors: :class:`ReviewNotFoundError` for a job, route or image that is not there
(an image of another study included); :class:`ReviewInputError` for what the
caller asked wrongly (a box outside the image, a frame the image does not have,
a language the route does not use, a finding the model cannot locate, an image
the model is not made for). A model that fails to run raises its own
:class:`engine.model.ModelError`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy.orm import Session

from dicom_node.uids import short_uid
from engine.pixels import FrameSelectionError, PixelError, select_images
from engine.pixels.decode import resolve_frame
from engine.region_tasks import RegionSuggestion, RegionTaskError, describe_region, locate_finding
from engine.report import Box, ReportError
from worklist.context import LoadedModel, PipelineContext
from worklist.jobs_models import Job
from worklist.review.errors import ReviewInputError, ReviewNotFoundError
from worklist.routing import InstanceFacts, Route, study_instance_facts

__all__ = ["RegionSuggestion", "suggest_for_region", "suggest_locations"]

logger = logging.getLogger(__name__)


def _job_route(ctx: PipelineContext, session: Session, job_id: int) -> tuple[Job, Route]:
    job = session.get(Job, job_id)
    if job is None:
        raise ReviewNotFoundError(f"no job {job_id}")
    for route in ctx.routes:
        if route.name == job.route:
            return job, route
    raise ReviewNotFoundError(
        f"job {job_id}'s route {job.route!r} is no longer configured: there is no model to ask"
    )


def _read(ctx: PipelineContext, job_id: int, fact: InstanceFacts) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(ctx.storage_root / fact.path, defer_size="64 KB")
    except (OSError, InvalidDicomError) as exc:
        raise ReviewNotFoundError(
            f"the stored copy of image {short_uid(fact.sop_instance_uid)} of job {job_id} "
            f"cannot be read ({type(exc).__name__})"
        ) from None


def _model(ctx: PipelineContext, route: Route) -> LoadedModel:
    return ctx.models(route.model)


def _check_box(box: object, dataset: pydicom.Dataset, what: str) -> Box:
    if not isinstance(box, Box):
        raise ReviewInputError(f"the region must be a Box in source pixels, got {box!r}")
    columns, rows = int(dataset.get("Columns", 0) or 0), int(dataset.get("Rows", 0) or 0)
    if not (0 <= box.x_min < box.x_max <= columns and 0 <= box.y_min < box.y_max <= rows):
        raise ReviewInputError(
            f"the box ({box.x_min:g}, {box.y_min:g}) to ({box.x_max:g}, {box.y_max:g}) does "
            f"not lie in {what}, which is {columns} x {rows} pixels"
        )
    return box


def suggest_for_region(
    ctx: PipelineContext,
    session: Session,
    job_id: int,
    sop_instance_uid: str,
    frame: int | None,
    box: Box,
) -> list[RegionSuggestion]:
    """Ask the job's model what it sees in ``box`` (region → text).

    Parameters
    ----------
    ctx
        The process's pipeline context (routes, models, storage root).
    session
        An open database session (only read).
    job_id
        The job under review.
    sop_instance_uid, frame
        The image (of the job's study) and its 1-based frame (``None`` for a
        single-frame image) the box is drawn on.
    box
        The drawn box in that image's source pixels; it must lie in the image.

    Returns
    -------
    list[RegionSuggestion]
        What the model names there, best first, texts in the route's languages;
        empty when it found nothing in the box.

    Raises
    ------
    ReviewNotFoundError
        No such job, its route is gone, or the image is not one of its study's.
    ReviewInputError
        A box outside the image or too small, a wrong frame, an image the model
        cannot take.
    """
    job, route = _job_route(ctx, session, job_id)
    facts = {f.sop_instance_uid: f for f in study_instance_facts(session, job.study_pk)}
    fact = facts.get(sop_instance_uid)
    if fact is None:
        raise ReviewNotFoundError(
            f"image {short_uid(sop_instance_uid)} is not an image of job {job_id}'s study"
        )
    dataset = _read(ctx, job_id, fact)
    where = f"image {short_uid(sop_instance_uid)}" + (f" frame {frame}" if frame else "")
    try:
        frame = resolve_frame(dataset, frame)
    except FrameSelectionError as exc:
        raise ReviewInputError(f"{where}: {exc}") from None
    _check_box(box, dataset, where)
    loaded = _model(ctx, route)
    try:
        suggestions = describe_region(
            loaded.model, loaded.generate, dataset, frame, box, languages=route.languages
        )
    except (RegionTaskError, PixelError, ReportError) as exc:
        raise ReviewInputError(f"{where}: {exc}") from None
    logger.info(
        "job %d: region question on %s answered with %d suggestion(s)",
        job_id,
        where,
        len(suggestions),
    )
    return suggestions


def _by_confidence(suggestion: RegionSuggestion) -> float:
    return -1.0 if suggestion.confidence is None else suggestion.confidence


def suggest_locations(
    ctx: PipelineContext,
    session: Session,
    job_id: int,
    query: str,
    language: str,
) -> list[RegionSuggestion]:
    """Ask the job's model where ``query`` is (text → region) on each image of the study
    that its route analyses.

    Parameters
    ----------
    query
        The finding, as typed or picked, in ``language`` (a vocabulary name in
        either language is asked in every route language by its name there).
    language
        The language of ``query``: one of the route's languages.

    Returns
    -------
    list[RegionSuggestion]
        Every box the model gives, on whichever image, most confident first (those
        without a score last); empty when it found the finding nowhere.

    Raises
    ------
    ReviewNotFoundError
        No such job, its route is gone, or none of its study's images can be asked.
    ReviewInputError
        An empty query, a language the route does not use, a finding the model
        cannot locate (the message lists those it can).
    """
    if not isinstance(query, str) or not query.strip():
        raise ReviewInputError("the finding to locate is empty")
    job, route = _job_route(ctx, session, job_id)
    if language not in route.languages:
        raise ReviewInputError(
            f"language {language!r} is not one of route {route.name!r}'s: "
            f"{', '.join(route.languages)}"
        )
    facts = study_instance_facts(session, job.study_pk)
    datasets = [_read(ctx, job_id, fact) for fact in facts]
    candidates = select_images(datasets, route.image_selection())
    if not candidates:
        raise ReviewNotFoundError(f"job {job_id}'s study has no image its route analyses")
    loaded = _model(ctx, route)
    others: Sequence[str] = [tag for tag in route.languages if tag != language]
    suggestions: list[RegionSuggestion] = []
    asked = 0
    refusals = []
    for dataset, frame in candidates:
        where = f"image {short_uid(str(dataset.get('SOPInstanceUID', '?')))}" + (
            f" frame {frame}" if frame else ""
        )
        try:
            suggestions.extend(
                locate_finding(
                    loaded.model,
                    loaded.generate,
                    dataset,
                    frame,
                    query,
                    language=language,
                    languages=others,
                )
            )
            asked += 1
        except (PixelError, ReportError) as exc:
            refusals.append(f"{where}: {exc}")
        except RegionTaskError as exc:
            if loaded.model.applicability is not None and (
                loaded.model.applicability.refusal(dataset) is not None
            ):
                refusals.append(f"{where}: {exc}")  # not made for this image: try the others
                continue
            raise ReviewInputError(str(exc)) from None
    if not asked:
        raise ReviewNotFoundError(
            f"no image of job {job_id}'s study could be asked: {'; '.join(refusals)}"
        )
    for refusal in refusals:
        logger.info("job %d: finding question skipped %s", job_id, refusal)
    logger.info(
        "job %d: finding question on %d image(s) answered with %d suggestion(s)",
        job_id,
        asked,
        len(suggestions),
    )
    return sorted(suggestions, key=_by_confidence, reverse=True)
