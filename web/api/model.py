"""``/models``: the configured models and what their ONNX metadata says (release, classes,
operating points), read without loading them."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from engine.default_model.metadata import MetadataError, read_onnx_metadata
from web.api.common import PROBLEMS, Context
from web.api.schemas import ModelDescription
from web.auth import Reader
from web.runtime_info import ModelFile

__all__ = ["describe_model", "router"]

router = APIRouter(prefix="/models", tags=["models"], responses=PROBLEMS)


def _decoded(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


@lru_cache(maxsize=16)
def _metadata(path: Path, mtime_ns: int, size: int) -> dict[str, Any]:
    # keyed on the file's modification time and size: a replaced model is read again
    return {k: _decoded(v) for k, v in read_onnx_metadata(path).items()}


def describe_model(model: ModelFile) -> ModelDescription:
    """A model's file and its ONNX metadata (JSON values decoded)."""
    size = model.path.stat().st_size if model.path.is_file() else None
    metadata: dict[str, Any] | None = None
    problem = None
    if model.backend != "onnx" or model.path.suffix.lower() != ".onnx":
        problem = "not an ONNX file: no metadata to read"
    elif size is None:
        problem = "the model file is missing"
    else:
        try:
            stat = model.path.stat()
            metadata = _metadata(model.path, stat.st_mtime_ns, stat.st_size)
        except (MetadataError, OSError) as exc:
            problem = f"the metadata cannot be read: {exc}"
    return ModelDescription(name=model.name, backend=model.backend, file_name=model.path.name,
                            size_bytes=size, metadata=metadata, problem=problem)


@router.get("", response_model=list[ModelDescription], summary="The configured models")
def models(principal: Reader, context: Context) -> list[ModelDescription]:
    """Every configured model with its ONNX metadata."""
    return [describe_model(m) for m in context.models]
