"""RadGround engine: pixel pipeline, grounding grammar, model backends and the
``GroundedReport`` contract shared with the exporters.

Nothing here reads settings, opens a database or loads a model at import time.
"""

from engine.report import (
    SUPPORTED_LANGUAGES,
    Box,
    CodedConcept,
    Finding,
    FindingKind,
    GroundedReport,
    ImageRef,
    ModelInfo,
    Presence,
    Region,
    ReportError,
    Task,
    Text,
    derive_uid,
    is_valid_uid,
)

__all__ = [
    "SUPPORTED_LANGUAGES",
    "Box",
    "CodedConcept",
    "Finding",
    "FindingKind",
    "GroundedReport",
    "ImageRef",
    "ModelInfo",
    "Presence",
    "Region",
    "ReportError",
    "Task",
    "Text",
    "derive_uid",
    "is_valid_uid",
]
