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

__all__ = ["CJK_FONT_CANDIDATES", "LATIN_FONT_CANDIDATES", "draw_findings", "load_font"]

logger = logging.getLogger(__name__)

#: Fonts tried in order for CJK-capable labels.
CJK_FONT_CANDIDATES: tuple[Path, ...] = (
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
)
#: Fonts tried in order for Latin text (CJK fallback fonts such as Droid Sans
#: Fallback carry no Latin glyphs, so labels are drawn in runs, one font per script).
LATIN_FONT_CANDIDATES: tuple[Path, ...] = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf"),
)
_COLOURS = ((255, 80, 80), (80, 200, 255), (255, 200, 40), (120, 255, 120), (255, 120, 255), (255, 160, 80))


def load_font(size: int, *, candidates: Sequence[Path] = CJK_FONT_CANDIDATES) -> ImageFont.ImageFont:
    """The first available font of ``candidates`` at ``size`` pixels, else PIL's default."""
    for path in candidates:
        if path.is_file():
            try:
                return ImageFont.truetype(str(path), size)
            except OSError as exc:
                logger.warning("cannot load font %s: %s", path.name, exc)
    logger.warning("none of the preview fonts %s found; using PIL's default", [p.name for p in candidates])
    return ImageFont.load_default(size)


def _is_cjk(char: str) -> bool:
    return ord(char) >= 0x2E80


def _runs(text: str) -> list[tuple[bool, str]]:
    """``text`` cut into runs of CJK / non-CJK characters."""
    runs: list[tuple[bool, str]] = []
    for char in text:
        cjk = _is_cjk(char)
        if runs and runs[-1][0] == cjk:
            runs[-1] = (cjk, runs[-1][1] + char)
        else:
            runs.append((cjk, char))
    return runs


def _text_size(draw: ImageDraw.ImageDraw, text: str, fonts: tuple) -> tuple[float, float]:
    width, height = 0.0, 0.0
    for cjk, run in _runs(text):
        bottom = draw.textbbox((0, 0), run, font=fonts[cjk])[3]
        width += draw.textlength(run, font=fonts[cjk])
        height = max(height, bottom)
    return width, height


def _draw_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, fonts: tuple, fill) -> None:
    x, y = xy
    for cjk, run in _runs(text):
        draw.text((x, y), run, fill=fill, font=fonts[cjk])
        x += draw.textlength(run, font=fonts[cjk])


def draw_findings(
    image: np.ndarray,
    findings: Sequence[Finding],
    *,
    languages: Sequence[str] = ("en",),
    sop_instance_uid: str | None = None,
    font_candidates: Sequence[Path] = CJK_FONT_CANDIDATES,
    latin_font_candidates: Sequence[Path] = LATIN_FONT_CANDIDATES,
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
    font_candidates, latin_font_candidates
        Fonts to try for CJK and for other text (first found wins).

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
    size = max(12, round(min(canvas.size) / 40))
    fonts = (load_font(size, candidates=latin_font_candidates), load_font(size, candidates=font_candidates))
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
            width, height = _text_size(draw, label, fonts)
            y = box.y_min - height - 2 * line if box.y_min > height + 2 * line else box.y_min + line
            draw.rectangle((box.x_min, y, box.x_min + width + 2 * line, y + height + 2 * line), fill=(0, 0, 0))
            _draw_text(draw, (box.x_min + line, y + line), label, fonts, colour)
    return canvas
