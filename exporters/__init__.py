"""RadGround exporters: a :class:`engine.report.GroundedReport` plus the headers of
its source images → DICOM SR (TID 1500), GSPS / Colour PS overlays, optional
Secondary Capture key images, and a FHIR R4 transaction Bundle.

Everything is built through validated objects (highdicom, fhir.resources) and
is deterministic: the same report and study revision give the same UIDs.
"""

from exporters._highdicom_cache import set_memoised_iod_lookups
from exporters.codes import CODE_TABLE, FindingCoding, coding_for
from exporters.errors import ExportError, IncompatibleHighdicomError, SourceError
from exporters.fhir import (
    OutputSeriesRef,
    build_fhir_bundle,
    bundle_json,
    output_series_from_datasets,
)
from exporters.gsps import build_presentation_states
from exporters.key_image import build_key_images, render_preview
from exporters.presentation_content import plan_overlays
from exporters.sr import SRExport, build_sr, export_sr
from exporters.sr_content import RegionAction, RegionNote, region_tracking_uid
from exporters.uids import OutputKind, output_uid

__all__ = [
    "CODE_TABLE",
    "ExportError",
    "FindingCoding",
    "IncompatibleHighdicomError",
    "OutputKind",
    "OutputSeriesRef",
    "RegionAction",
    "RegionNote",
    "SRExport",
    "SourceError",
    "build_fhir_bundle",
    "build_key_images",
    "build_presentation_states",
    "build_sr",
    "bundle_json",
    "coding_for",
    "export_sr",
    "output_series_from_datasets",
    "output_uid",
    "plan_overlays",
    "region_tracking_uid",
    "render_preview",
    "set_memoised_iod_lookups",
]
