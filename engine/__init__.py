"""RadGround engine: pixel pipeline, grounding grammar, model backends and the
``GroundedReport`` contract shared with the exporters.

Nothing here reads settings, opens a database or loads a model at import time.
"""

from engine.analyze import AnalysisError, analyze_study
from engine.batching import MicroBatcher
from engine.errors import EngineError
from engine.model import GenerationRequest, ModelError, RegionAwareModel, ResizeMode
from engine.region_tasks import RegionSuggestion, RegionTaskError, describe_region, locate_finding
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
)
from engine.uids import is_valid_uid, short_uid

__all__ = [
    "SUPPORTED_LANGUAGES",
    "AnalysisError",
    "Box",
    "CodedConcept",
    "EngineError",
    "Finding",
    "FindingKind",
    "GenerationRequest",
    "GroundedReport",
    "ImageRef",
    "MicroBatcher",
    "ModelError",
    "ModelInfo",
    "Presence",
    "Region",
    "RegionAwareModel",
    "RegionSuggestion",
    "RegionTaskError",
    "ReportError",
    "ResizeMode",
    "Task",
    "Text",
    "analyze_study",
    "derive_uid",
    "describe_region",
    "is_valid_uid",
    "locate_finding",
    "short_uid",
]
