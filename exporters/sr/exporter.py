"""The SR exporter: one Comprehensive 3D SR (TID 1500) per language."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage

from engine.report import GroundedReport
from exporters.protocol import DICOM_MEDIA_TYPE, Artifact, ExportOptions, OutputKind
from exporters.regions import RegionPlan
from exporters.sr.sop import export_sr

__all__ = ["SOP_CLASS_UIDS", "SRExporter"]

#: SOP classes this exporter writes: Comprehensive 3D SR Storage (PS3.4 B.5).
SOP_CLASS_UIDS: frozenset[str] = frozenset({str(Comprehensive3DSRStorage)})


class SRExporter:
    """:class:`~exporters.protocol.Exporter` of the TID 1500 Measurement Report
    (:func:`exporters.sr.export_sr`); a report without findings still gets an
    SR saying so. With ``options.sign_off`` the documents are VERIFIED and replace
    the sign-off's predecessors."""

    kind: ClassVar[OutputKind] = OutputKind.SR
    produces: ClassVar[frozenset[OutputKind]] = frozenset({OutputKind.SR})
    sop_class_uids: ClassVar[frozenset[str]] = SOP_CLASS_UIDS
    media_type: ClassVar[str] = DICOM_MEDIA_TYPE

    def export(
        self,
        report: GroundedReport,
        sources: Sequence[Dataset],
        plan: RegionPlan,
        options: ExportOptions,
    ) -> list[Artifact]:
        documents = export_sr(
            report,
            sources,
            revision=options.revision,
            languages=options.languages,
            plan=plan,
            sign_off=options.sign_off,
        ).documents
        return [Artifact.from_dataset(self.kind, lang, doc) for lang, doc in documents.items()]
