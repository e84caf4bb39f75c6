"""RadGround exporters: a :class:`engine.report.GroundedReport` plus the headers of
its source images and the job's region plan → artifacts, one package per IOD or
message:

* :mod:`exporters.sr` — Comprehensive 3D SR, TID 1500 (IHE AIR);
* :mod:`exporters.pr` — Grayscale / Colour Softcopy Presentation States;
* :mod:`exporters.sc` — Secondary Capture with the findings burned in;
* :mod:`exporters.kos` — Key Object Selection (IHE KIN / AIR "key images");
* :mod:`exporters.fhir` — FHIR R4 transaction Bundle;
* :mod:`exporters.hl7` — HL7 v2.5.1 ORU^R01.

Each implements :class:`exporters.protocol.Exporter` and is listed in
:mod:`exporters.registry`; :func:`exporters.regions.plan_regions` is the one
region plan they share. Everything is built through validated objects
(highdicom, fhir.resources, hl7apy) and is deterministic: the same report and
study revision give the same UIDs.

Names are imported lazily (PEP 562), so ``exporters.protocol`` stays cheap to
import for the settings.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name → the module that defines it.
_EXPORTS = {
    "Artifact": "exporters.protocol",
    "ExportOptions": "exporters.protocol",
    "Exporter": "exporters.protocol",
    "OutputKind": "exporters.protocol",
    "UnknownOutputKindError": "exporters.protocol",
    "parse_output_kind": "exporters.protocol",
    "PredecessorDocument": "exporters.protocol",
    "SignOff": "exporters.protocol",
    "Verifier": "exporters.protocol",
    "dicom_person_name": "exporters.signoff",
    "signoff_number": "exporters.signoff",
    "EXPORTERS": "exporters.registry",
    "artifact_kinds": "exporters.registry",
    "exporter_for": "exporters.registry",
    "own_sop_class_uids": "exporters.registry",
    "RegionNote": "exporters.regions",
    "RegionAction": "exporters.regions",
    "RegionPlan": "exporters.regions",
    "plan_regions": "exporters.regions",
    "region_tracking_uid": "exporters.regions",
    "CODE_TABLE": "exporters.codes",
    "FindingCoding": "exporters.codes",
    "coding_for": "exporters.codes",
    "ExportError": "exporters.errors",
    "IncompatibleHighdicomError": "exporters.errors",
    "SourceError": "exporters.errors",
    "output_uid": "exporters.uids",
    "set_memoised_iod_lookups": "exporters._highdicom_cache",
}

__all__ = [*sorted(_EXPORTS)]  # noqa: PLE0604 - the names __getattr__ imports lazily


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'exporters' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
