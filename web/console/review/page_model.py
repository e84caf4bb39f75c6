"""What the review page shows, worked out from a :class:`worklist.review.ReviewView`: the image
on screen, the boxes on it, the counts, and whether this principal may change anything."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.report import Box
from web.auth import Principal

__all__ = [
    "LANGUAGE_NAMES",
    "REJECT_REASONS",
    "Overlay",
    "ReviewPage",
    "review_page_model",
]

#: How the page names the languages it shows.
LANGUAGE_NAMES = {"en": "English", "zh-CN": "中文 (Chinese)", "zh": "中文 (Chinese)",
                  "de": "Deutsch", "fr": "Français", "es": "Español"}
#: The rejection reasons the page offers (``worklist.review_models.RejectReason``), in words.
REJECT_REASONS = {"wrong_place": "Wrong place", "not_present": "Not present",
                  "duplicate": "Duplicate", "other": "Other"}


@dataclass(frozen=True)
class Overlay:
    """One finding's box on the image on screen."""

    number: int
    tracking_uid: str
    decision: str
    origin: str
    label: str
    box: Box
    #: The model's box when the radiologist moved it (drawn faintly for comparison).
    model_box: Box | None


@dataclass(frozen=True)
class ReviewPage:
    """The review page's data beyond the view itself."""

    view: Any
    #: May this principal change the review (the "review" permission, the review open)?
    editable: bool
    image_index: int
    frame: int
    overlays: tuple[Overlay, ...]
    #: Findings per image index (the thumbnails' counts).
    findings_per_image: Mapping[int, int]
    pending: int
    accepted: int
    rejected: int
    #: Font size of the box labels, in source pixels (scales with the image).
    label_size: int


def _boxes_on(finding: Any, sop_instance_uid: str, frame: int) -> list[Box]:
    return [
        region.box for region in finding.regions
        if region.image.sop_instance_uid == sop_instance_uid
        and (region.image.frame_number or 1) == frame
    ]


def review_page_model(view: Any, principal: Principal, *, image: int | None,
                      frame: int | None) -> ReviewPage:
    """The page for ``view``: ``image`` (index into ``view.images``) and ``frame`` (1-based)
    from the query, else the image and frame of the first finding with a box."""
    images = view.images
    index_of = {img.sop_instance_uid: i for i, img in enumerate(images)}
    per_image: dict[int, int] = {}
    first: tuple[int, int] | None = None
    for f in view.findings:
        for region in f.final.regions:
            i = index_of.get(region.image.sop_instance_uid)
            if i is None:
                continue
            per_image[i] = per_image.get(i, 0) + 1
            if first is None:
                first = (i, region.image.frame_number or 1)
    if image is None or not 0 <= image < len(images):
        image, start_frame = first if first is not None else (0, 1)
        frame = frame or start_frame
    frame = frame or 1
    if images:
        frame = min(max(frame, 1), images[image].frame_count or 1)
    overlays: list[Overlay] = []
    if images:
        shown = images[image].sop_instance_uid
        for number, f in enumerate(view.findings, start=1):
            model_boxes = _boxes_on(f.model, shown, frame) if f.model is not None else []
            for k, box in enumerate(_boxes_on(f.final, shown, frame)):
                model_box = model_boxes[k] if f.box_moved and k < len(model_boxes) else None
                overlays.append(Overlay(number, f.tracking_uid, str(f.decision), str(f.origin),
                                        f.final.label.primary, box, model_box))
    decisions = [str(f.decision) for f in view.findings]
    columns = images[image].columns if images else 1024
    return ReviewPage(
        view=view,
        editable="review" in principal.scopes and str(view.state) == "open",
        image_index=image, frame=frame, overlays=tuple(overlays), findings_per_image=per_image,
        pending=decisions.count("pending"), accepted=decisions.count("accepted"),
        rejected=decisions.count("rejected"), label_size=max(12, round(columns / 48)),
    )
