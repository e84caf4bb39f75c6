"""A PNG preview of grounded findings for ``radground model predict --png``.

For people checking what a model said; the clinical outputs are the SR and
GSPS. The drawing (boxes, labels in Latin and CJK fonts, the font fallback) is
:func:`exporters.preview.render_overlay`, the one renderer RadGround has; this
module only turns findings into its overlays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from engine.report import Finding
from exporters.pr.content import finding_label
from exporters.preview import Overlay, render_overlay

__all__ = ["PREVIEW_COLOURS", "draw_findings"]

#: Labels are cut at this many UTF-8 bytes (as on the Secondary Capture images).
_LABEL_BYTES = 120

#: Colour of the n-th finding (cycled), sRGB.
PREVIEW_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 80, 80), (80, 200, 255), (255, 200, 40), (120, 255, 120), (255, 120, 255), (255, 160, 80),
)


def draw_findings(
    image: np.ndarray,
    findings: Sequence[Finding],
    *,
    languages: Sequence[str] = ("en",),
    sop_instance_uid: str | None = None,
) -> Image.Image:
    """Draw the findings' boxes and labels on a source image.

    Parameters
    ----------
    image
        The source frame as displayed, (rows, columns) or (rows, columns, 3),
        float in [0, 1] (e.g. a prepared image at source size) or uint8.
    findings
        Findings whose regions are in that image's pixel space.
    languages
        Label languages, joined with `` / `` (e.g. ``("en", "zh-CN")``); the
        finding's confidence follows when it has one (the labels of the
        presentation states and the web console's pictures:
        :func:`exporters.pr.content.finding_label`).
    sop_instance_uid
        Draw only regions on this image; ``None`` draws all regions.

    Returns
    -------
    PIL.Image.Image
        An RGB image of the source size.
    """
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    overlays: list[Overlay] = []
    for index, finding in enumerate(findings):
        label = finding_label(finding, languages, max_bytes=_LABEL_BYTES)
        colour = PREVIEW_COLOURS[index % len(PREVIEW_COLOURS)]
        overlays.extend(
            Overlay(region.box, label, colour)
            for region in finding.regions
            if sop_instance_uid is None or region.image.sop_instance_uid == sop_instance_uid
        )
    return render_overlay(array, overlays)
