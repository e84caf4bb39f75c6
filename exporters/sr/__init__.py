"""Comprehensive 3D SR, TID 1500 Measurement Report (IHE AI Results).

:mod:`exporters.sr.sop` builds the documents, :mod:`exporters.sr.tree` the
content tree (built once, translated per language), :mod:`exporters.sr.content`
the content items highdicom lacks, :mod:`exporters.sr.document` the document
around a finished tree; :class:`SRExporter` is the pipeline's entry point.
"""

from exporters.sr.exporter import SOP_CLASS_UIDS, SRExporter
from exporters.sr.sop import (
    DEFAULT_SR_SERIES_NUMBER,
    SRExport,
    build_sr,
    complete_languages,
    export_sr,
    series_description,
)

__all__ = [
    "DEFAULT_SR_SERIES_NUMBER",
    "SOP_CLASS_UIDS",
    "SRExport",
    "SRExporter",
    "build_sr",
    "complete_languages",
    "export_sr",
    "series_description",
]
