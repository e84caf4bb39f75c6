"""What goes on an overlay: placed regions, labels, layers and colours.

Pure helpers shared by the presentation-state exporter (:mod:`exporters.pr.sop`)
and the Secondary Capture exporter (:mod:`exporters.sc.sop`). Nothing here builds
DICOM; it decides *what* is drawn *where* (the pipeline's one region plan,
:func:`exporters.regions.plan_regions`, places the regions; :func:`plan_overlays`
places them on a single picture for previews):

- each region's box is clipped to its image (Columns x Rows) and the clipping
  is recorded; a box entirely outside its image is dropped and recorded;
- each finding gets a short label (its label in the output language, plus the
  model's confidence when it gave one), cut cleanly at a VR's length limit;
- findings are drawn on one graphic layer per :class:`~engine.report.FindingKind`,
  each with a display colour given both as CIE L*a*b* and as a grayscale value
  (PS3.3 C.10.7 Graphic Layer Module), so monochrome viewers do not draw white.

Coordinates are in the source image's pixel space (PS3.3 C.10.5.1.2, Graphic
Annotation Units PIXEL): origin at the top-left corner of the top-left pixel,
the bottom-right corner of the image at (Columns, Rows) — the same convention
as :class:`engine.report.Box`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from pydicom.dataset import Dataset

from engine.report import Box, Finding, FindingKind, GroundedReport
from engine.uids import short_uid
from exporters.errors import ExportError, SourceError
from exporters.regions import OverlayPlan, PlacedRegion, region_tracking_uid

__all__ = [
    "DEFAULT_LAYER_COLORS",
    "LayerStyle",
    "OverlayPlan",
    "PlacedRegion",
    "finding_label",
    "layer_styles",
    "plan_overlays",
    "text_box_for",
    "truncate_utf8",
]

logger = logging.getLogger(__name__)

#: Maximum length of Unformatted Text Value (0070,0006), VR ST (PS3.5 Table 6.2-1).
ST_MAX_CHARS = 1024
#: Maximum length of an LO value (Content Description, Tracking ID, ...).
LO_MAX_CHARS = 64

#: Default layer colours (sRGB 0-255): abnormalities in yellow, anatomy in cyan.
DEFAULT_LAYER_COLORS: Mapping[FindingKind, tuple[int, int, int]] = MappingProxyType(
    {
        FindingKind.ABNORMALITY: (255, 255, 0),
        FindingKind.ANATOMY: (0, 255, 255),
    }
)

_LAYER_NAMES: Mapping[FindingKind, str] = MappingProxyType(
    {FindingKind.ABNORMALITY: "AI ABNORMALITY", FindingKind.ANATOMY: "AI ANATOMY"}
)
_LAYER_DESCRIPTIONS: Mapping[FindingKind, str] = MappingProxyType(
    {
        FindingKind.ABNORMALITY: "AI-detected abnormalities (unverified)",
        FindingKind.ANATOMY: "AI-located anatomy (unverified)",
    }
)
_VERIFIED_LAYER_DESCRIPTIONS: Mapping[FindingKind, str] = MappingProxyType(
    {
        FindingKind.ABNORMALITY: "AI-detected abnormalities (verified by radiologist)",
        FindingKind.ANATOMY: "AI-located anatomy (verified by radiologist)",
    }
)


def truncate_utf8(text: str, max_bytes: int, *, ellipsis: str = "\u2026") -> str:
    """``text`` cut so that its UTF-8 encoding fits in ``max_bytes`` bytes.

    The cut falls on a character boundary (a multi-byte character is never
    split) and ``ellipsis`` marks it. DICOM gives the length limits of text VRs
    in characters (PS3.5 §6.2) but readers and validators count bytes of the
    encoded value; counting bytes is within both readings.

    Parameters
    ----------
    text
        The text.
    max_bytes
        The limit in bytes of its UTF-8 encoding (ISO_IR 192).
    ellipsis
        Appended where the text was cut.
    """
    if max_bytes < len(ellipsis.encode("utf-8")):
        raise ValueError(f"max_bytes must leave room for the ellipsis, got {max_bytes}")
    if len(text.encode("utf-8")) <= max_bytes:
        return text
    budget = max_bytes - len(ellipsis.encode("utf-8"))
    encoded = text.encode("utf-8")[:budget]
    # errors="ignore" drops only the trailing partial character of the cut.
    return encoded.decode("utf-8", errors="ignore").rstrip() + ellipsis


def finding_label(
    finding: Finding, language: str | Sequence[str], *, max_bytes: int = ST_MAX_CHARS
) -> str:
    """The text drawn beside a finding's regions.

    The finding's label in ``language`` (falling back to its primary language),
    followed by the model's confidence as a percentage when the model gave one,
    cut at ``max_bytes`` UTF-8 bytes (default: the ST limit of Unformatted Text
    Value, PS3.3 C.10.5). Several languages (``("en", "zh-CN")``, for a bilingual
    preview) give the label in each, the same text once, joined by `` / ``.
    """
    languages = (language,) if isinstance(language, str) else tuple(language)
    labels: list[str] = []
    for tag in languages:
        text = " ".join((finding.label.get(tag) or finding.label.primary).split())
        if text not in labels:
            labels.append(text)
    label = " / ".join(labels)
    suffix = "" if finding.confidence is None else f" ({finding.confidence:.0%})"
    head = truncate_utf8(label, max_bytes - len(suffix.encode("utf-8")))
    return head + suffix


@dataclass(frozen=True)
class LayerStyle:
    """One graphic layer and its display colour (PS3.3 C.10.7).

    Attributes
    ----------
    name
        Graphic Layer (0070,0002), a CS of at most 16 characters.
    order
        Graphic Layer Order (0070,0062).
    description
        Graphic Layer Description (0070,0068).
    rgb
        Display colour in sRGB, each channel 0-255.
    grayscale
        Graphic Layer Recommended Display Grayscale Value (0070,0066), 0-65535
        (the colour's luminance, so the layer stands out on dark images).
    """

    name: str
    order: int
    description: str
    rgb: tuple[int, int, int]

    def __post_init__(self) -> None:
        if not (0 < len(self.name) <= 16):
            raise ExportError(f"layer name must be 1-16 characters, got {self.name!r}")
        if len(self.rgb) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in self.rgb):
            raise ExportError(f"layer colour must be three ints in 0-255, got {self.rgb!r}")

    @property
    def grayscale(self) -> int:
        r, g, b = self.rgb
        luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
        return round(luminance / 255.0 * 65535)


def _rgb_triple(value: Sequence[int]) -> tuple[int, int, int]:
    """``value`` as an sRGB triple; a sequence of another length is an :class:`ExportError`."""
    rgb = tuple(value)
    if len(rgb) != 3:
        raise ExportError(f"layer colour must be three ints in 0-255, got {rgb!r}")
    return (rgb[0], rgb[1], rgb[2])


def layer_styles(
    graphic_color: tuple[int, int, int] | Mapping[FindingKind, tuple[int, int, int]] | None = None,
    *,
    verified: bool = False,
) -> dict[FindingKind, LayerStyle]:
    """One layer per finding kind, coloured by ``graphic_color``.

    Parameters
    ----------
    graphic_color
        ``None`` for :data:`DEFAULT_LAYER_COLORS`, one sRGB triple for every
        layer, or a mapping from finding kind to sRGB triple (kinds it omits keep
        their default).
    verified
        The findings were verified by a radiologist (the layer descriptions say so).
    """
    descriptions = _VERIFIED_LAYER_DESCRIPTIONS if verified else _LAYER_DESCRIPTIONS
    if graphic_color is None:
        colors = dict(DEFAULT_LAYER_COLORS)
    elif isinstance(graphic_color, Mapping):
        colors = dict(DEFAULT_LAYER_COLORS)
        for kind, rgb in graphic_color.items():
            colors[FindingKind(kind)] = _rgb_triple(rgb)
    else:
        colors = {kind: _rgb_triple(graphic_color) for kind in FindingKind}
    return {
        kind: LayerStyle(
            name=_LAYER_NAMES[kind],
            order=order,
            description=descriptions[kind],
            rgb=colors[kind],
        )
        for order, kind in enumerate((FindingKind.ANATOMY, FindingKind.ABNORMALITY), start=1)
    }


def plan_overlays(
    report: GroundedReport, sources: Sequence[Dataset], *, only_these_sources: bool = False
) -> OverlayPlan:
    """Place every region of ``report`` on its source image.

    Parameters
    ----------
    report
        The grounded report.
    sources
        Headers (pixel data optional) of the source images the regions are on.
    only_these_sources
        Place only the regions on ``sources`` and skip the others (for a
        picture of one image) instead of refusing them.

    Returns
    -------
    OverlayPlan
        The regions clipped to their images; a box partly outside its image is
        clipped, one entirely outside is dropped, both are recorded in
        ``problems``.

    Raises
    ------
    SourceError
        When a region is on an image missing from ``sources``, its frame number
        exceeds the image's Number of Frames, or the image lacks Rows/Columns.
    """
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    placed: list[PlacedRegion] = []
    problems: list[str] = []
    for index, finding in enumerate(report.findings):
        for region_index, region in enumerate(finding.regions):
            uid = region.image.sop_instance_uid
            source = by_uid.get(uid)
            if source is None:
                if only_these_sources:
                    continue
                raise SourceError(
                    f"finding {index} has a region on image {short_uid(uid)} "
                    "(hashed SOP Instance UID) "
                    "that is not among the sources"
                )
            if "Rows" not in source or "Columns" not in source:
                raise SourceError(f"source image {short_uid(uid)} lacks Rows or Columns")
            frames = int(source.get("NumberOfFrames", 1) or 1)
            frame = region.image.frame_number
            if frame is not None and frame > frames:
                raise SourceError(
                    f"finding {index} refers to frame {frame} of image {short_uid(uid)}, "
                    f"which has {frames} frame(s)"
                )
            columns, rows = int(source.Columns), int(source.Rows)
            clipped = region.box.clip(columns, rows)
            tracking = short_uid(finding.tracking_uid)
            where = f"finding {index} region {region_index} (tracking {tracking})"
            if clipped is None:
                problems.append(
                    f"{where}: box {_box_text(region.box)} lies outside its {columns}x{rows} "
                    "image; dropped"
                )
                continue
            was_clipped = clipped != region.box
            if was_clipped:
                problems.append(
                    f"{where}: box {_box_text(region.box)} extends past its {columns}x{rows} "
                    "image; "
                    f"clipped to {_box_text(clipped)}"
                )
            placed.append(
                PlacedRegion(
                    finding=finding,
                    finding_index=index,
                    region_index=region_index,
                    tracking_uid=region_tracking_uid(finding, region_index),
                    image=region.image,
                    box=clipped,
                    clipped=was_clipped,
                    columns=columns,
                    rows=rows,
                )
            )
    for problem in problems:
        logger.warning("overlay: %s", problem)
    return OverlayPlan(tuple(placed), tuple(problems))


def _box_text(box: Box) -> str:
    return f"[{box.x_min:g}, {box.y_min:g}, {box.x_max:g}, {box.y_max:g}]"


def text_box_for(region: PlacedRegion) -> tuple[float, float, float, float]:
    """Where a region's label goes: (left, top, right, bottom) in PIXEL units.

    A strip one twentieth of the image's height tall, just above the box when
    there is room, otherwise just inside its top edge; as wide as the box but
    at least a third of the image, and always inside the image (PS3.3
    C.10.5.1.1: bounding box corners in the image's pixel space).
    """
    height = max(region.rows / 20.0, 8.0)
    width = max(region.box.width, region.columns / 3.0)
    left = min(region.box.x_min, max(region.columns - width, 0.0))
    right = min(left + width, float(region.columns))
    if region.box.y_min >= height:
        top = region.box.y_min - height
    else:
        top = region.box.y_min
    bottom = min(top + height, float(region.rows))
    return (left, top, right, bottom)
