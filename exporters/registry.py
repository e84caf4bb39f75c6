"""The exporters, keyed by :class:`~exporters.protocol.OutputKind`: the one list
of what RadGround can build.

Adding an output kind: an :class:`~exporters.protocol.OutputKind` member, a
package with its exporter, and its entry in :data:`EXPORTERS`. The pipeline,
the delivery filters and loop prevention (:func:`own_sop_class_uids`) read
everything else from the exporter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from exporters.fhir import FhirExporter
from exporters.hl7 import HL7Exporter
from exporters.kos import KeyObjectSelectionExporter
from exporters.pr import PresentationStateExporter
from exporters.protocol import Exporter, OutputKind
from exporters.sc import SecondaryCaptureExporter
from exporters.sr import SRExporter

__all__ = ["BUILD_ORDER", "EXPORTERS", "artifact_kinds", "exporter_for", "own_sop_class_uids"]

#: Every exporter by the kind a destination names, in build order: the DICOM
#: objects first, so that the KOS, the FHIR Bundle and the HL7 message can
#: point at the SR and the presentation states built before them.
EXPORTERS: Mapping[OutputKind, Exporter] = MappingProxyType(
    {
        exporter.kind: exporter
        for exporter in (
            SRExporter(),
            PresentationStateExporter(),
            SecondaryCaptureExporter(),
            KeyObjectSelectionExporter(),
            FhirExporter(),
            HL7Exporter(),
        )
    }
)

#: The requestable kinds in the order they are built.
BUILD_ORDER: tuple[OutputKind, ...] = tuple(EXPORTERS)

_BY_PRODUCED = {kind: exporter for exporter in EXPORTERS.values() for kind in exporter.produces}


def exporter_for(kind: OutputKind | str) -> Exporter:
    """The exporter that builds objects of ``kind`` (``CSPS`` → the presentation-state exporter).

    Raises
    ------
    exporters.protocol.UnknownOutputKindError
        ``kind`` is not an output kind.
    KeyError
        No exporter builds it (an :class:`OutputKind` member without its package yet).
    """
    from exporters.protocol import parse_output_kind

    resolved = parse_output_kind(kind)
    try:
        return _BY_PRODUCED[resolved]
    except KeyError:
        raise KeyError(f"no exporter builds output kind {resolved.value!r}") from None


def artifact_kinds(requested: Iterable[OutputKind | str]) -> frozenset[OutputKind]:
    """The artifact kinds a destination asking for ``requested`` gets
    (``["sr", "gsps"]`` → SR, GSPS and Colour PS)."""
    return frozenset(kind for name in requested for kind in exporter_for(name).produces)


def own_sop_class_uids() -> frozenset[str]:
    """Every SOP class RadGround writes (loop prevention: :mod:`worklist.own_outputs`)."""
    return frozenset(uid for exporter in EXPORTERS.values() for uid in exporter.sop_class_uids)
