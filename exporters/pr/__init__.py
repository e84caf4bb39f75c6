"""Softcopy Presentation States (PS3.3 A.33.1 GSPS, A.33.2 Colour PS) drawing the findings.

:mod:`exporters.pr.content` decides what is drawn where (labels, layers,
colours), :mod:`exporters.pr.sop` builds the objects with highdicom's ``hd.pr``;
:class:`PresentationStateExporter` is the pipeline's entry point.
"""

from exporters.pr.content import (
    DEFAULT_LAYER_COLORS,
    LayerStyle,
    finding_label,
    layer_styles,
    plan_overlays,
    text_box_for,
    truncate_utf8,
)
from exporters.pr.exporter import SOP_CLASS_UIDS, SOP_CLASS_UIDS_BY_KIND, PresentationStateExporter
from exporters.pr.sop import PresentationState, build_presentation_states, series_description

__all__ = [
    "DEFAULT_LAYER_COLORS",
    "SOP_CLASS_UIDS",
    "SOP_CLASS_UIDS_BY_KIND",
    "LayerStyle",
    "PresentationState",
    "PresentationStateExporter",
    "build_presentation_states",
    "finding_label",
    "layer_styles",
    "plan_overlays",
    "series_description",
    "text_box_for",
    "truncate_utf8",
]
