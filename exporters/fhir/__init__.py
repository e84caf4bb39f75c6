"""FHIR R4 (4.0.1) export: a RadGround result as one transaction Bundle.

See :mod:`exporters.fhir.bundle` for the Bundle and its idempotent delivery,
:mod:`exporters.fhir.resources` for the resources and their codes.
"""

from .bundle import build_fhir_bundle, bundle_json
from .exporter import FHIR_MEDIA_TYPE, FhirExporter, FhirOptions, local_system_used
from .inputs import (
    OutputInstanceRef,
    OutputSeriesRef,
    local_patient_identifier_system,
    output_series_from_datasets,
    patient_identifier_system,
)
from .rendering import RenderedPage, ReportVerification, render_report_html

__all__ = [
    "FHIR_MEDIA_TYPE",
    "FhirExporter",
    "FhirOptions",
    "OutputInstanceRef",
    "OutputSeriesRef",
    "RenderedPage",
    "ReportVerification",
    "build_fhir_bundle",
    "bundle_json",
    "local_patient_identifier_system",
    "local_system_used",
    "output_series_from_datasets",
    "patient_identifier_system",
    "render_report_html",
]
