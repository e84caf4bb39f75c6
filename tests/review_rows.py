"""Rows of the review tables written straight through the ORM, for tests of what reads them (the
dataset export, the per-class figures, the sign-off metrics). Made-up values; no patient data.

The review service (``worklist.review``) fills these tables in the product; here a review and its
findings are written as that service leaves them once a radiologist has decided: the model's
finding and the final one as ``engine.report.finding_to_dict`` JSON, the classes from their
English labels, the box IoU and whether the box moved.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path

from pydicom.uid import generate_uid
from sqlalchemy.orm import Session

from engine.report import (
    Box,
    Finding,
    FindingKind,
    ImageRef,
    Region,
    Text,
    finding_to_dict,
)
from tests.factories import make_chest_dx, write_dataset
from tests.index_rows import CR_STORAGE, add_study
from worklist.db import utcnow
from worklist.jobs_models import Job
from worklist.models import Study
from worklist.review_models import (
    FindingDecision,
    FindingOrigin,
    RejectReason,
    Review,
    ReviewFinding,
    ReviewState,
)

__all__ = ["add_chest_study", "add_review", "add_review_finding", "make_finding"]

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def add_chest_study(session: Session, storage_root: Path, png: Path | None) -> tuple[Study, str]:
    """An indexed one-image chest study (its own patient) and the image's SOP Instance UID.

    With ``png`` (an 8-bit grayscale PNG such as ../shared/data/nih-cxr-boxes/images/NAME), a
    Digital X-Ray DICOM file of those pixels is stored where the index says, with the window
    (center 128, width 256) that displays them unchanged; ``None`` leaves the file missing.
    """
    study = add_study(session)
    instance = study.series[0].instances[0]
    instance.sop_class_uid = DX_FOR_PRESENTATION
    if png is not None:
        ds = make_chest_dx(png, study_instance_uid=study.study_instance_uid)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = instance.sop_instance_uid
        ds.WindowCenter, ds.WindowWidth = 128, 256
        write_dataset(ds, storage_root / instance.path)
    session.flush()
    return study, instance.sop_instance_uid


def make_finding(
    label: str,
    sop_instance_uid: str,
    box: tuple[float, float, float, float],
    *,
    sop_class_uid: str = CR_STORAGE,
    frame_number: int | None = None,
    confidence: float | None = 0.8,
    tracking_uid: str | None = None,
    description: Mapping[str, str] | None = None,
) -> Finding:
    """A finding with one box on one image (English label; description defaults to it)."""
    return Finding(
        kind=FindingKind.ABNORMALITY,
        label=Text({"en": label}),
        description=Text(description or {"en": f"{label.capitalize()}."}),
        regions=(Region(ImageRef(sop_instance_uid, sop_class_uid, frame_number), Box(*box)),),
        tracking_uid=tracking_uid or generate_uid(),
        confidence=confidence,
    )


def add_review(
    session: Session,
    job: Job,
    *,
    state: ReviewState = ReviewState.SIGNED,
    signed_at: datetime | None = None,
    signed_by: str = "ann",
) -> Review:
    """The review of ``job``; a signed one (the default) signed at ``signed_at`` (now)."""
    signed = state is ReviewState.SIGNED
    signed_at = (signed_at or utcnow()) if signed else None
    review = Review(
        job_id=job.id,
        state=state,
        version=3,
        opened_at=(signed_at or utcnow()) - timedelta(minutes=5),
        signed_by=signed_by if signed else None,
        signed_at=signed_at,
        reviewed_languages="en" if signed else "",
        signoff=1 if signed else None,
    )
    session.add(review)
    session.flush()
    return review


def add_review_finding(
    session: Session,
    review: Review,
    *,
    model: Finding | None,
    final: Finding | None = None,
    decision: FindingDecision = FindingDecision.ACCEPTED,
    reject_reason: RejectReason | None = None,
    reject_note: str = "",
    origin: FindingOrigin | None = None,
    edited_languages: str = "",
    decided_by: str | None = "ann",
    decided_at: datetime | None = None,
) -> ReviewFinding:
    """One finding of ``review``: the ``model``'s (``None``: the radiologist added ``final``)
    and the ``final`` one (``model`` unchanged when not given)."""
    final = final or model
    assert final is not None, "a review finding needs a model or a final finding"
    model_box = model.regions[0].box if model is not None else None
    final_box = final.regions[0].box
    moved = model_box is not None and (
        model_box != final_box
        or model.regions[0].image != final.regions[0].image  # type: ignore[union-attr]
    )
    position = len(review.findings)
    row = ReviewFinding(
        review_id=review.id,
        tracking_uid=final.tracking_uid,
        position=position,
        origin=origin or (FindingOrigin.MODEL if model is not None else FindingOrigin.RADIOLOGIST),
        decision=decision,
        reject_reason=reject_reason,
        reject_note=reject_note,
        model_class=model.label["en"] if model is not None else None,
        final_class=final.label["en"],
        model_confidence=model.confidence if model is not None else None,
        model_finding=json.dumps(finding_to_dict(model)) if model is not None else None,
        final_finding=json.dumps(finding_to_dict(final)),
        edited_languages=edited_languages,
        box_moved=moved,
        box_iou=model_box.iou(final_box) if model_box is not None else None,
        decided_by=decided_by,
        decided_at=decided_at or review.signed_at or utcnow(),
    )
    session.add(row)
    session.flush()
    session.refresh(review)
    return row
