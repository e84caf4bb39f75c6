"""Secondary Capture images (PS3.3 A.8.1) with the findings burned in, for viewers
that render neither SR nor presentation states; :class:`SecondaryCaptureExporter`
is the pipeline's entry point."""

from exporters.sc.exporter import SecondaryCaptureExporter
from exporters.sc.sop import (
    SOP_CLASS_UIDS,
    build_secondary_captures,
    render_preview,
    source_display_pixels,
)

__all__ = [
    "SOP_CLASS_UIDS",
    "SecondaryCaptureExporter",
    "build_secondary_captures",
    "render_preview",
    "source_display_pixels",
]
