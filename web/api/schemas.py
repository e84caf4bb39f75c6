"""Response bodies the API defines itself (the read views' dataclasses describe the rest)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["ActionResult", "ConfiguredRoute", "ModelDescription"]


class ActionResult(BaseModel):
    """What an operator action did."""

    detail: str


class ConfiguredRoute(BaseModel):
    """A routing rule (``[[routes]]``), in routing order: the first match wins."""

    name: str
    modalities: list[str]
    body_parts: list[str]
    sop_classes: list[str]
    calling_ae_titles: list[str]
    view_positions: list[str]
    series_description: str
    model: str
    task: str
    languages: list[str]
    targets: list[str]
    destinations: list[str]


class ModelDescription(BaseModel):
    """A configured model and what its file says of itself."""

    name: str
    #: "onnx", "tensorrt" or "hf".
    backend: str
    file_name: str
    size_bytes: int | None
    #: The ONNX metadata (``metadata_props``), JSON values decoded; ``None`` when the model is not
    #: an ONNX file or cannot be read.
    metadata: dict[str, Any] | None
    #: Why the metadata is missing.
    problem: str | None = None
