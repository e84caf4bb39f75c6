"""A picture of the findings: boxes and labels drawn over the source image.

:func:`render_overlay` is a pure function from a pixel array, boxes and labels
to a PIL image; it draws what the presentation states describe, for the burned-
in key image (:mod:`exporters.sc`) and for people who would rather look
than read (a web preview, an e-mail, a bug report). It is *not* a GSPS
renderer: the GSPS themselves are checked with a real viewer.

Labels may be Chinese, so text is drawn with a CJK-capable TrueType font
(Debian's ``fonts-droid-fallback``), falling back to Pillow's default font
(Latin only) with a warning when none is installed.

Coordinates follow :class:`engine.report.Box`: pixel space of the source
image, origin at the top-left corner of the top-left pixel.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from engine.report import Box
from exporters.errors import ExportError

__all__ = ["CJK_FONT_PATHS", "Overlay", "display_array", "render_overlay"]

logger = logging.getLogger(__name__)

#: TrueType fonts with CJK glyphs, tried in order.
CJK_FONT_PATHS: tuple[Path, ...] = (
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
)


@dataclass(frozen=True)
class Overlay:
    """One box to draw, its label and colour.

    Attributes
    ----------
    box
        The box in the image's pixel space.
    label
        Text drawn beside it (may be empty).
    rgb
        Colour, sRGB 0-255 per channel.
    """

    box: Box
    label: str
    rgb: tuple[int, int, int] = (255, 255, 0)

    def __post_init__(self) -> None:
        if not isinstance(self.box, Box):
            raise ExportError(f"Overlay.box must be a Box, got {type(self.box).__name__}")
        if len(self.rgb) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in self.rgb):
            raise ExportError(f"Overlay.rgb must be three ints in 0-255, got {self.rgb!r}")


def display_array(
    pixels: np.ndarray,
    *,
    window: tuple[float, float] | None = None,
    invert: bool = False,
) -> np.ndarray:
    """Map grayscale values to 8-bit display values.

    Parameters
    ----------
    pixels
        2-D array of modality values (after the Modality LUT).
    window
        ``(center, width)`` of a linear VOI window (PS3.3 C.11.2.1.2, simplified
        to ``(x - (c - w/2)) / w``); by default the 0.5th to 99.5th percentile
        range of the image.
    invert
        Invert the result (for MONOCHROME1).

    Returns
    -------
    numpy.ndarray
        uint8 array of the same shape.
    """
    values = np.asarray(pixels, dtype=np.float64)
    if values.ndim != 2:
        raise ExportError(f"display_array needs a 2-D array, got shape {values.shape}")
    if window is not None:
        center, width = (float(v) for v in window)
        if not width > 0:
            raise ExportError(f"window width must be > 0, got {width}")
        low, high = center - width / 2.0, center + width / 2.0
    else:
        low, high = np.percentile(values, (0.5, 99.5)) if values.size else (0.0, 1.0)
    if high <= low:
        high = low + 1.0
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0)
    if invert:
        scaled = 1.0 - scaled
    return np.round(scaled * 255.0).astype(np.uint8)


#: TrueType fonts for Latin text (Droid Sans Fallback has CJK glyphs only).
LATIN_FONT_PATHS: tuple[Path, ...] = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf"),
    Path("/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf"),
)

#: Code points from here on (CJK radicals, ideographs, kana, Hangul, full-width
#: forms) are drawn with the CJK font, the rest with the Latin one.
_CJK_START = 0x2E80


@functools.lru_cache(maxsize=32)
def _font(size: int, cjk: bool) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in CJK_FONT_PATHS if cjk else LATIN_FONT_PATHS:
        if path.is_file():
            try:
                return ImageFont.truetype(str(path), size)
            except OSError as exc:
                logger.warning("cannot load font %s: %s", path, exc)
    if cjk:
        logger.warning(
            "no CJK font found (install fonts-droid-fallback); Chinese labels will not render"
        )
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _runs(text: str) -> list[tuple[str, bool]]:
    """``text`` split into runs of (text, is CJK)."""
    runs: list[tuple[str, bool]] = []
    for char in text:
        cjk = ord(char) >= _CJK_START
        if runs and runs[-1][1] == cjk:
            runs[-1] = (runs[-1][0] + char, cjk)
        else:
            runs.append((char, cjk))
    return runs


def _text_size(text: str, size: int) -> tuple[float, int]:
    """(width, height) in pixels of ``text`` drawn at ``size``."""
    width = sum(_font(size, cjk).getlength(run) for run, cjk in _runs(text))
    font = _font(size, False)
    ascent, descent = font.getmetrics() if isinstance(font, ImageFont.FreeTypeFont) else (size, 0)
    return width, ascent + descent


def _draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    size: int,
    rgb: tuple[int, int, int],
) -> None:
    """Draw ``text`` with its top-left corner at ``xy``, each run in a font
    that has its glyphs, outlined in black for contrast on any background."""
    x, y = xy
    stroke = max(1, round(size / 12))
    for run, cjk in _runs(text):
        font = _font(size, cjk)
        draw.text((x, y), run, font=font, fill=rgb, stroke_width=stroke, stroke_fill=(0, 0, 0))
        x += font.getlength(run)


def render_overlay(
    pixels: np.ndarray,
    overlays: Sequence[Overlay],
    *,
    line_width: int | None = None,
    font_size: int | None = None,
    caption: str | None = None,
) -> Image.Image:
    """Draw ``overlays`` on an image.

    Parameters
    ----------
    pixels
        uint8 display values: 2-D grayscale or (rows, columns, 3) RGB (see
        :func:`display_array`).
    overlays
        Boxes and labels to draw, in the image's pixel space.
    line_width
        Outline width in pixels; default about 1/400 of the image's size.
    font_size
        Label height in pixels; default about 1/40 of the image's height.
    caption
        A line of white text drawn at the bottom-left corner (e.g. a notice
        that the marks are unverified AI output).

    Returns
    -------
    PIL.Image.Image
        An RGB image of the same size as ``pixels``; the input is not changed.
    """
    array = np.asarray(pixels)
    if array.dtype != np.uint8 or not (
        array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)
    ):
        raise ExportError(
            "render_overlay needs uint8 (rows, columns) or (rows, columns, 3), got "
            f"{array.dtype} {array.shape}"
        )
    image = Image.fromarray(array).convert("RGB")
    rows, columns = array.shape[:2]
    width = line_width or max(1, round(max(rows, columns) / 400))
    size = font_size or max(10, round(rows / 40))
    draw = ImageDraw.Draw(image)
    for overlay in overlays:
        box = overlay.box.clip(columns, rows)
        if box is None:
            continue
        # A box's edges lie on pixel boundaries; PIL's rectangle covers the
        # pixels from its first to its last corner inclusive.
        x0, y0 = int(np.floor(box.x_min)), int(np.floor(box.y_min))
        x1, y1 = max(x0, int(np.ceil(box.x_max)) - 1), max(y0, int(np.ceil(box.y_max)) - 1)
        draw.rectangle((x0, y0, x1, y1), outline=overlay.rgb, width=width)
        if overlay.label:
            label_size = size
            width_text, height_text = _text_size(overlay.label, label_size)
            if width_text > columns - 2 and label_size > 8:  # shrink a label wider than the image
                label_size = max(8, int(label_size * (columns - 2) / width_text))
                width_text, height_text = _text_size(overlay.label, label_size)
            y = y0 - height_text - 2 if y0 - height_text - 2 >= 0 else y0 + width + 2
            x = min(x0, max(columns - width_text, 0))
            _draw_text(draw, (x, y), overlay.label, label_size, overlay.rgb)
    if caption:
        caption_size = size
        width_text, height_text = _text_size(caption, caption_size)
        if width_text > columns - 8 and caption_size > 8:
            caption_size = max(8, int(caption_size * (columns - 8) / width_text))
            width_text, height_text = _text_size(caption, caption_size)
        _draw_text(
            draw, (4, max(rows - height_text - 4, 0)), caption, caption_size, (255, 255, 255)
        )
    return image
