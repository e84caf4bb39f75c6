"""Key Object Selection Document export (PS3.3 A.35.4, TID 2010; IHE KIN / IHE AIR).

One KOS per study and job listing the source images that carry AI findings,
titled (113000, DCM, "Of Interest") by default so that PACS worklists flag
AI-positive studies as having key images. See :mod:`exporters.kos.sop`.
"""

from exporters.kos.content import DEFAULT_PRESENCES, KeyImage, select_key_images
from exporters.kos.enum import DocumentTitle
from exporters.kos.exporter import KeyObjectSelectionExporter
from exporters.kos.sop import (
    DEFAULT_KOS_SERIES_NUMBER,
    KOS_OUTPUT_KIND,
    SERIES_DESCRIPTION,
    SOP_CLASS_UIDS,
    build_key_object_selection,
    kos_uid,
)

__all__ = [
    "DEFAULT_KOS_SERIES_NUMBER",
    "DEFAULT_PRESENCES",
    "KOS_OUTPUT_KIND",
    "SERIES_DESCRIPTION",
    "SOP_CLASS_UIDS",
    "DocumentTitle",
    "KeyImage",
    "KeyObjectSelectionExporter",
    "build_key_object_selection",
    "kos_uid",
    "select_key_images",
]
