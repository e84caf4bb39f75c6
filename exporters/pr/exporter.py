"""The presentation-state exporter: GSPS for grayscale sources, Colour PS for colour ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydicom.dataset import Dataset
from pydicom.uid import (
    ColorSoftcopyPresentationStateStorage,
    GrayscaleSoftcopyPresentationStateStorage,
)

from engine.report import GroundedReport
from exporters.pr.sop import build_presentation_states
from exporters.protocol import DICOM_MEDIA_TYPE, Artifact, ExportOptions, OutputKind
from exporters.regions import RegionPlan

__all__ = ["SOP_CLASS_UIDS", "SOP_CLASS_UIDS_BY_KIND", "PresentationStateExporter"]

#: The SOP class of each kind this exporter writes (PS3.4 B.5).
SOP_CLASS_UIDS_BY_KIND: dict[OutputKind, str] = {
    OutputKind.GSPS: str(GrayscaleSoftcopyPresentationStateStorage),
    OutputKind.CSPS: str(ColorSoftcopyPresentationStateStorage),
}
SOP_CLASS_UIDS: frozenset[str] = frozenset(SOP_CLASS_UIDS_BY_KIND.values())
_KIND_BY_SOP_CLASS = {uid: kind for kind, uid in SOP_CLASS_UIDS_BY_KIND.items()}


class PresentationStateExporter:
    """:class:`~exporters.protocol.Exporter` of the overlays
    (:func:`exporters.pr.build_presentation_states`), one set per language;
    none when no region is left to draw. With ``options.sign_off`` the set replaces
    the model's (new UIDs, only the reviewed findings, texts saying "verified")."""

    kind: ClassVar[OutputKind] = OutputKind.GSPS
    produces: ClassVar[frozenset[OutputKind]] = frozenset(SOP_CLASS_UIDS_BY_KIND)
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
            Artifact.from_dataset(_KIND_BY_SOP_CLASS[str(state.SOPClassUID)], language, state)
            for language in options.languages
            for state in build_presentation_states(
                report,
                sources,
                language=language,
                revision=options.revision,
                plan=plan,
                sign_off=options.sign_off,
            )
        ]
