"""A PNG preview of grounded findings: the source image with boxes and labels.

For people checking what a model said (``radground model predict --png``);
the clinical outputs are the SR and GSPS. Labels may be Chinese, so a CJK font
is used when one is installed (Debian ``fonts-droid-fallback``); otherwise
PIL's default font draws what it can and a warning is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from engine.report import Finding

__all__ = ["CJK_FONT_CANDIDATES", "draw_findings", "load_font"]

logger = logging.getLogger(__name__)

#: Fonts tried in order for CJK-capable labels.
CJK_FONT_CANDIDATES: tuple[Path, ...] = (
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
)
_COLOURS = ((255, 80, 80), (80, 200, 255), (255, 200, 40), (120, 255, 120), (255, 120, 255), (255, 160, 80))


def load_font(size: int, *, candidates: Sequence[Path] = CJK_FONT_CANDIDATES) -> ImageFont.ImageFont:
    """The first available CJK-capable font at ``size`` pixels, else PIL's default."""
    for path in candidates:
        if path.is_file():
            try:
                return ImageFont.truetype(str(path), size)
            except OSError as exc:
                logger.warning("cannot load font %s: %s", path.name, exc)
    logger.warning("no CJK font found; Chinese labels may not render in the preview")
    return ImageFont.load_default(size)


def draw_findings(
    image: np.ndarray,
    findings: Sequence[Finding],
    *,
    languages: Sequence[str] = ("en",),
    sop_instance_uid: str | None = None,
    font_candidates: Sequence[Path] = CJK_FONT_CANDIDATES,
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
        Label languages, joined with `` / `` (e.g. ``("en", "zh-CN")``).
    sop_instance_uid
        Draw only regions on this image; ``None`` draws all regions.
    font_candidates
        Fonts to try (first found wins).

    Returns
    -------
    PIL.Image.Image
        An RGB image of the source size.
    """
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    canvas = Image.fromarray(array, mode="RGB")
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(min(canvas.size) / 300))
    font = load_font(max(12, round(min(canvas.size) / 40)), candidates=font_candidates)
    for index, finding in enumerate(findings):
        colour = _COLOURS[index % len(_COLOURS)]
        label = " / ".join(finding.label.get(lang) or finding.label.primary for lang in languages)
        if finding.confidence is not None:
            label += f" {finding.confidence:.2f}"
        for region in finding.regions:
            if sop_instance_uid is not None and region.image.sop_instance_uid != sop_instance_uid:
                continue
            box = region.box.clip(*canvas.size)
            if box is None:
                continue
            draw.rectangle((box.x_min, box.y_min, box.x_max, box.y_max), outline=colour, width=line)
            left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
            y = box.y_min - (bottom - top) - 2 * line if box.y_min > (bottom - top) + 2 * line else box.y_min + line
            draw.rectangle((box.x_min, y, box.x_min + right - left + 2 * line, y + bottom - top + 2 * line), fill=(0, 0, 0))
            draw.text((box.x_min + line - left, y + line - top), label, fill=colour, font=font)
    return canvas
