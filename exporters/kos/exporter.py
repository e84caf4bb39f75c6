"""The Key Object Selection exporter: one KOS per study listing the images with findings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydicom.dataset import Dataset

from engine.report import GroundedReport
from exporters.kos.sop import KOS_OUTPUT_KIND, SOP_CLASS_UIDS, build_key_object_selection
from exporters.protocol import DICOM_MEDIA_TYPE, Artifact, ExportOptions, OutputKind
from exporters.regions import RegionPlan

__all__ = ["KeyObjectSelectionExporter"]


class KeyObjectSelectionExporter:
    """:class:`~exporters.protocol.Exporter` of the Key Object Selection
    (:func:`exporters.kos.build_key_object_selection`): its description in the
    primary language, and the job's SR documents (built before it) referenced
    beside the key images (in a signed set: the signed SRs). None when no abnormality
    has a region."""

    kind: ClassVar[OutputKind] = KOS_OUTPUT_KIND
    produces: ClassVar[frozenset[OutputKind]] = frozenset({KOS_OUTPUT_KIND})
    sop_class_uids: ClassVar[frozenset[str]] = SOP_CLASS_UIDS
    media_type: ClassVar[str] = DICOM_MEDIA_TYPE

    def export(
        self,
        report: GroundedReport,
        sources: Sequence[Dataset],
        plan: RegionPlan,
        options: ExportOptions,
    ) -> list[Artifact]:
        language = options.languages[0]
        srs = [
            a.dataset
            for a in options.references
            if a.kind is OutputKind.SR and a.dataset is not None
        ]
        document = build_key_object_selection(
            report,
            sources,
            revision=options.revision,
            language=language if language in report.impression.languages else None,
            referenced_documents=srs,
            plan=plan,
            sign_off=options.sign_off,
        )
        return [] if document is None else [Artifact.from_dataset(self.kind, language, document)]
