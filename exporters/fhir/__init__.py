"""FHIR R4 (4.0.1) export: a RadGround result as one transaction Bundle.

See :mod:`exporters.fhir.bundle` for the Bundle and its idempotent delivery,
:mod:`exporters.fhir.resources` for the resources and their codes.
"""

from .bundle import build_fhir_bundle, bundle_json
from .inputs import OutputInstanceRef, OutputSeriesRef, output_series_from_datasets
from .rendering import RenderedPage, render_report_html

__all__ = [
    "OutputInstanceRef",
    "OutputSeriesRef",
    "RenderedPage",
    "build_fhir_bundle",
    "bundle_json",
    "output_series_from_datasets",
    "render_report_html",
]
