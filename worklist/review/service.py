"""The review service: what the web console calls to open, change and send back a review.

Every change locks the review row and compares the version the caller loaded, then raises it
(two radiologists never overwrite each other); every change is audited with the account, never
with patient data. The caller owns the transaction (:func:`worklist.review.signing.sign`
commits itself because it enqueues the export after the commit).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.uids import short_uid
from engine.errors import EngineError
from engine.report import (
    Box,
    CodedConcept,
    Finding,
    FindingKind,
    GroundedReport,
    ImageRef,
    Region,
    Text,
    derive_uid,
)
from worklist.context import audit
from worklist.db import utcnow
from worklist.jobs_models import Job, JobState
from worklist.models import Instance, Series, Study
from worklist.review.errors import ReviewInputError, ReviewNotFoundError
from worklist.review.records import (
    create_review,
    dump_finding,
    final_finding,
    finding_class,
    locked_review,
    model_finding,
    next_position,
    split_tags,
)
from worklist.review.views import (
    FindingChange,
    ReviewFindingView,
    ReviewImage,
    ReviewView,
)
from worklist.review_models import (
    FindingDecision,
    FindingOrigin,
    Review,
    ReviewFinding,
    ReviewState,
)
from worklist.routing import Route, study_instance_facts

__all__ = ["add_finding", "decide", "get_review", "open_review", "send_back"]

logger = logging.getLogger(__name__)

#: Job states in which a review may be opened on a job that has none (route review ``none``).
REVIEWABLE_FINISHED_STATES = (JobState.DONE, JobState.FAILED)


def _actor(account: str) -> str:
    return f"web:{account}"


def _job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise ReviewNotFoundError(f"no job {job_id}")
    return job


def _report(job: Job) -> GroundedReport:
    if not job.report_json:
        raise ReviewNotFoundError(f"job {job.id} has no report to review")
    try:
        return GroundedReport.from_json(job.report_json)
    except EngineError as exc:
        raise ReviewNotFoundError(f"job {job.id}: its report cannot be read ({exc})") from exc


def open_review(
    session: Session, job_id: int, *, account: str, source: str = "",
    routes: Sequence[Route] = (), storage_root: Path | None = None,
) -> ReviewView:
    """Open the job's review for ``account`` and return it; the caller commits.

    A done or failed job with a report and no review (its route sends outputs unreviewed) gets
    one now: its sign-off amends what was sent. The review is claimed for ``account`` unless
    another account holds it (the view shows who). ``routes`` and ``storage_root`` are optional:
    with them the view names the route's policy and the images' sizes.

    Raises
    ------
    ReviewNotFoundError
        No such job, no report, or a job still in progress without a review.
    """
    # lock order: job, then review; two first openings of a finished job make one review
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise ReviewNotFoundError(f"no job {job_id}")
    review = session.scalar(select(Review).where(Review.job_id == job_id).with_for_update())
    if review is None:
        if job.state not in REVIEWABLE_FINISHED_STATES:
            raise ReviewNotFoundError(
                f"job {job_id} is {job.state.value}; a review opens once it is done or failed"
            )
        review = create_review(session, job_id, _report(job))
        audit(session, _actor(account), "review-opened", job_id, source=source)
    if review.state is ReviewState.OPEN and review.claimed_by in (None, account):
        review.claimed_by, review.claimed_at = account, utcnow()
    session.flush()
    return _view(session, job, review, routes=routes, storage_root=storage_root)


def get_review(
    session: Session, job_id: int, *, routes: Sequence[Route] = (),
    storage_root: Path | None = None,
) -> ReviewView:
    """The job's review, read only (see :func:`open_review` for ``routes`` and ``storage_root``).

    Raises
    ------
    ReviewNotFoundError
        No such job, or it has no review.
    """
    job = _job(session, job_id)
    review = session.scalar(select(Review).where(Review.job_id == job_id))
    if review is None:
        raise ReviewNotFoundError(f"job {job_id} has no review")
    return _view(session, job, review, routes=routes, storage_root=storage_root)


def decide(
    session: Session, job_id: int, tracking_uid: str, change: FindingChange, *, version: int,
    account: str, source: str = "",
) -> int:
    """Apply ``change`` to one finding of the review loaded at ``version``; returns the new
    version. The caller commits.

    Raises
    ------
    ReviewNotFoundError
        No such job, review or finding.
    ReviewConflictError
        The review is signed, superseded, or no longer at ``version``.
    ReviewInputError
        The change is empty or invalid (a rejection without a reason, a language the route does
        not write, an empty text, a box on an image not in the study).
    """
    if change.is_empty:
        raise ReviewInputError("nothing to change: give a decision, a text, a box or a concept")
    review = locked_review(session, job_id, version=version)
    row = session.scalar(select(ReviewFinding).where(
        ReviewFinding.review_id == review.id, ReviewFinding.tracking_uid == tracking_uid))
    if row is None:
        raise ReviewNotFoundError(f"job {job_id}: no finding {short_uid(tracking_uid)}")
    job = _job(session, job_id)
    languages = _report(job).languages
    what = _apply_decision(row, change)
    finding = final_finding(row)
    edited = set(split_tags(row.edited_languages))
    label, description = finding.label, finding.description
    if change.label is not None:
        label, changed = _merge_text(finding.label, change.label, languages, "label")
        edited |= changed
    if change.description is not None:
        description, changed = _merge_text(
            finding.description, change.description, languages, "description"
        )
        edited |= changed
    regions = finding.regions
    if change.region is not None:
        regions = (_region(session, job, change.region),)
        original = model_finding(row)
        model_box = original.regions[0].box if original and original.regions else None
        row.box_moved = original is None or original.regions != regions
        row.box_iou = None if model_box is None else round(model_box.iou(regions[0].box), 6)
        what.append("box moved" if row.box_moved else "box kept")
    concept = finding.concept if change.concept is None else change.concept
    updated = Finding(
        kind=finding.kind, label=label, description=description, regions=regions,
        tracking_uid=finding.tracking_uid, presence=finding.presence,
        confidence=finding.confidence, concept=concept,
    )
    row.final_finding = dump_finding(updated)
    row.final_class = finding_class(updated)
    row.edited_languages = ",".join(tag for tag in languages if tag in edited)
    if change.label is not None or change.description is not None:
        what.append(f"text edited ({row.edited_languages or 'unchanged'})")
    if change.concept is not None:
        what.append("concept changed")
    row.decided_by, row.decided_at = account, utcnow()
    review.version += 1
    if review.claimed_by is None:
        review.claimed_by, review.claimed_at = account, row.decided_at
    audit(session, _actor(account), "review-decision", job_id,
          f"finding {short_uid(tracking_uid)}: {'; '.join(what)}", source=source)
    return review.version


def _apply_decision(row: ReviewFinding, change: FindingChange) -> list[str]:
    """Set the decision and the rejection's reason; what changed, for the audit trail."""
    decision = change.decision or row.decision
    if decision is FindingDecision.REJECTED:
        reason = change.reject_reason or row.reject_reason
        if reason is None:
            raise ReviewInputError(
                "a rejection needs a reason: wrong_place, not_present, duplicate or other"
            )
        row.reject_reason = reason
        if change.reject_note or change.decision is not None:
            row.reject_note = change.reject_note.strip()[:2000]
    elif change.reject_reason is not None or change.reject_note:
        raise ReviewInputError("a reject reason or note goes with a rejection only")
    else:
        row.reject_reason, row.reject_note = None, ""
    row.decision = decision
    if change.decision is None and change.reject_reason is None and not change.reject_note:
        return []
    if decision is FindingDecision.REJECTED:
        return [f"rejected ({row.reject_reason.value if row.reject_reason else '-'})"]
    return [decision.value]


def _merge_text(
    current: Text, given: Mapping[str, str], languages: Sequence[str], name: str
) -> tuple[Text, set[str]]:
    """``current`` with ``given``'s languages replaced; the languages whose text changed."""
    _check_texts(given, languages, name)
    values = current.as_dict()
    changed = set()
    for tag, text in given.items():
        if values.get(tag) != text.strip():
            values[tag] = text.strip()
            changed.add(tag)
    return Text(values), changed


def _region(session: Session, job: Job, region: tuple[str, int | None, Box]) -> Region:
    """A region on one of the study's images, checked."""
    try:
        sop_instance_uid, frame, box = region
    except (TypeError, ValueError):
        raise ReviewInputError("region: give (sop_instance_uid, frame or None, Box)") from None
    if not isinstance(box, Box):
        raise ReviewInputError(f"region: the box must be a Box, got {type(box).__name__}")
    facts = {f.sop_instance_uid: f for f in study_instance_facts(session, job.study_pk)}
    fact = facts.get(sop_instance_uid)
    if fact is None:
        raise ReviewInputError(
            f"region: image {short_uid(sop_instance_uid)} is not one of the study's images"
        )
    if box.x_min < 0 or box.y_min < 0:
        raise ReviewInputError("region: the box starts outside the image (negative coordinates)")
    try:
        return Region(ImageRef(sop_instance_uid, fact.sop_class_uid, frame), box)
    except EngineError as exc:
        raise ReviewInputError(f"region: {exc}") from exc


def add_finding(
    session: Session, job_id: int, *, version: int, account: str, label: Mapping[str, str],
    description: Mapping[str, str], region: tuple[str, int | None, Box],
    kind: FindingKind = FindingKind.ABNORMALITY, concept: CodedConcept | None = None,
    origin: FindingOrigin = FindingOrigin.RADIOLOGIST, confidence: float | None = None,
    source: str = "",
) -> tuple[str, int]:
    """Add an accepted finding the radiologist drew (or took from a model suggestion); returns
    its Tracking UID (derived from the job, the review and its position: the same add rebuilds
    the same UID) and the new version. The caller commits.

    Raises
    ------
    ReviewConflictError, ReviewNotFoundError
        As :func:`decide`.
    ReviewInputError
        A text missing, empty or in a language the route does not write, or a bad region.
    """
    if origin is FindingOrigin.MODEL:
        raise ReviewInputError(
            "origin: an added finding comes from the radiologist or a suggestion"
        )
    review = locked_review(session, job_id, version=version)
    job = _job(session, job_id)
    languages = _report(job).languages
    texts = {}
    for name, given in (("label", label), ("description", description)):
        if not given:
            raise ReviewInputError(f"{name}: at least one language is needed")
        _check_texts(given, languages, name)
        texts[name] = Text({tag: text.strip() for tag, text in given.items()})
    position = next_position(session, review.id)
    tracking_uid = derive_uid("radground-review-finding", job_id, review.id, position)
    try:
        finding = Finding(
            kind=kind, label=texts["label"], description=texts["description"],
            regions=(_region(session, job, region),), tracking_uid=tracking_uid,
            confidence=confidence, concept=concept,
        )
    except EngineError as exc:
        raise ReviewInputError(str(exc)) from exc
    now = utcnow()
    session.add(ReviewFinding(
        review_id=review.id, tracking_uid=tracking_uid, position=position, origin=origin,
        decision=FindingDecision.ACCEPTED, model_class=None, final_class=finding_class(finding),
        model_confidence=confidence if origin is FindingOrigin.SUGGESTION else None,
        model_finding=None, final_finding=dump_finding(finding),
        edited_languages=",".join(t for t in languages if t in finding.description),
        box_moved=False, box_iou=None, decided_by=account, decided_at=now,
    ))
    review.version += 1
    if review.claimed_by is None:
        review.claimed_by, review.claimed_at = account, now
    audit(session, _actor(account), "review-finding-added", job_id,
          f"finding {short_uid(tracking_uid)}: {origin.value}", source=source)
    return tracking_uid, review.version


def _check_texts(given: Mapping[str, str], languages: Sequence[str], name: str) -> None:
    """Refuse a language the route does not write and an empty text."""
    for tag, text in given.items():
        if tag not in languages:
            raise ReviewInputError(
                f"{name}: language {tag!r} is not one of the route's ({', '.join(languages)})"
            )
        if not isinstance(text, str) or not text.strip():
            raise ReviewInputError(f"{name}: the {tag} text is empty")


def send_back(
    session: Session, job_id: int, *, version: int, account: str, note: str, source: str = ""
) -> int:
    """Send the review back unsigned: the claim is released, the decisions kept, ``account`` and
    ``note`` recorded for the next reader; the job keeps waiting. Returns the new version; the
    caller commits.

    Raises
    ------
    ReviewConflictError, ReviewNotFoundError
        As :func:`decide`.
    """
    review = locked_review(session, job_id, version=version)
    review.claimed_by = review.claimed_at = None
    review.sent_back_by, review.sent_back_note = account, note.strip()[:4000]
    review.version += 1
    audit(session, _actor(account), "review-sent-back", job_id, source=source)
    return review.version


# -- the view ------------------------------------------------------------------


def _view(
    session: Session, job: Job, review: Review, *, routes: Sequence[Route],
    storage_root: Path | None,
) -> ReviewView:
    report = _report(job)
    study = session.get_one(Study, job.study_pk)
    route = next((r for r in routes if r.name == job.route), None)
    rows = session.scalars(
        select(ReviewFinding).where(ReviewFinding.review_id == review.id)
        .order_by(ReviewFinding.position)
    ).all()
    findings = tuple(
        ReviewFindingView(
            tracking_uid=row.tracking_uid, position=row.position, origin=row.origin.value,
            decision=row.decision.value,
            reject_reason=None if row.reject_reason is None else row.reject_reason.value,
            reject_note=row.reject_note, model=model_finding(row), final=final_finding(row),
            edited_languages=split_tags(row.edited_languages), box_moved=row.box_moved,
            box_iou=row.box_iou, decided_by=row.decided_by, decided_at=row.decided_at,
        )
        for row in rows
    )
    return ReviewView(
        job_id=job.id, study_instance_uid=study.study_instance_uid, revision=job.revision,
        route=job.route, policy=route.review.value if route is not None else "unknown",
        job_state=job.state.value, state=review.state.value, version=review.version,
        claimed_by=review.claimed_by, signed_by=review.signed_by, signed_at=review.signed_at,
        signoff=review.signoff, reviewed_languages=split_tags(review.reviewed_languages),
        sent_back_by=review.sent_back_by, sent_back_note=review.sent_back_note,
        superseded_by_job_id=review.superseded_by_job_id, languages=report.languages,
        model=report.model, findings=findings,
        images=_images(session, job, route, report, storage_root),
    )


def _images(
    session: Session, job: Job, route: Route | None, report: GroundedReport,
    storage_root: Path | None,
) -> tuple[ReviewImage, ...]:
    """The study's images the route analyses (those of its modalities, and those the findings
    point at), with their sizes read from their headers when ``storage_root`` is given."""
    pointed = {ref.sop_instance_uid for ref in report.images}
    facts = [
        f for f in study_instance_facts(session, job.study_pk)
        if f.sop_instance_uid in pointed or route is None or not route.modalities
        or f.modality.upper() in route.modalities
    ]
    numbers = dict(session.execute(
        select(Instance.sop_instance_uid, Instance.instance_number)
        .join(Series, Series.id == Instance.series_pk)
        .where(Series.study_pk == job.study_pk)
    ).all())
    images = []
    for fact in facts:
        rows = columns = 0
        frames = 1
        if storage_root is not None:
            rows, columns, frames = _image_size(storage_root / fact.path)
        images.append(ReviewImage(
            sop_instance_uid=fact.sop_instance_uid, sop_class_uid=fact.sop_class_uid,
            frame_count=frames, rows=rows, columns=columns,
            series_description=fact.series_description,
            instance_number=numbers.get(fact.sop_instance_uid),
        ))
    return tuple(images)


def _image_size(path: Path) -> tuple[int, int, int]:
    """Rows, Columns and Number of Frames of a stored image (zeros and one frame when its
    header cannot be read)."""
    try:
        ds = dcmread(path, stop_before_pixels=True,
                     specific_tags=["Rows", "Columns", "NumberOfFrames"])
    except (OSError, InvalidDicomError) as exc:
        logger.warning("Image header not readable (%s)", type(exc).__name__)
        return 0, 0, 1
    return int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0), int(
        ds.get("NumberOfFrames", 1) or 1
    )
