"""The Secondary Capture exporter: the findings burned into copies of the source images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydicom.dataset import Dataset

from engine.report import GroundedReport
from exporters.protocol import DICOM_MEDIA_TYPE, Artifact, ExportOptions, OutputKind
from exporters.regions import RegionPlan
from exporters.sc.sop import SOP_CLASS_UIDS, build_secondary_captures

__all__ = ["SecondaryCaptureExporter"]


class SecondaryCaptureExporter:
    """:class:`~exporters.protocol.Exporter` of the burned-in images
    (:func:`exporters.sc.build_secondary_captures`), one series per language;
    the sources must carry pixel data."""

    kind: ClassVar[OutputKind] = OutputKind.SC
    produces: ClassVar[frozenset[OutputKind]] = frozenset({OutputKind.SC})
    sop_class_uids: ClassVar[frozenset[str]] = SOP_CLASS_UIDS
    media_type: ClassVar[str] = DICOM_MEDIA_TYPE

    def export(
        self,
        report: GroundedReport,
        sources: Sequence[Dataset],
        plan: RegionPlan,
        options: ExportOptions,
    ) -> list[Artifact]:
        if not plan.has_regions:
            return []
        return [
            Artifact.from_dataset(self.kind, language, image)
            for language in options.languages
            for image in build_secondary_captures(
                report,
                sources,
                language=language,
                revision=options.revision,
                plan=plan,
                sign_off=options.sign_off,
            )
        ]
