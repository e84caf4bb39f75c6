"""Reading an ONNX file's metadata (``metadata_props``) without loading the model.

The backend needs the model's version and operating points when it is
constructed, before (and without) an ONNX Runtime session, which is created
lazily in the process that runs the model. The ``onnx`` package is not a
runtime dependency, so this reads the few top-level fields of the ``ModelProto``
message straight from the protobuf wire format (field 14 ``metadata_props``:
repeated ``StringStringEntryProto`` {1: key, 2: value}; onnx.proto3), skipping
the graph by its length prefix without decoding it.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import EngineError

__all__ = ["MetadataError", "parse_onnx_metadata", "read_onnx_metadata"]

_METADATA_PROPS = 14
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class MetadataError(EngineError, ValueError):
    """The file is not a readable ONNX model."""


def _varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise MetadataError("truncated or malformed protobuf varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes | memoryview):
    """(field number, wire type, value) of each field; length-delimited values as memoryviews."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == _LENGTH:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise MetadataError("a protobuf field runs past the end of the file")
            yield number, wire, memoryview(data)[pos : pos + length]
            pos += length
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
        else:
            raise MetadataError(f"unsupported protobuf wire type {wire}")


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX file at ``path`` as a dict (see :func:`parse_onnx_metadata`)."""
    return parse_onnx_metadata(Path(path).read_bytes(), name=Path(path).name)


def parse_onnx_metadata(data: bytes, *, name: str = "the model") -> dict[str, str]:
    """The ``metadata_props`` of a serialised ONNX ``ModelProto`` as a dict.

    Raises
    ------
    MetadataError
        ``data`` is not a well-formed protobuf message.
    """
    props: dict[str, str] = {}
    try:
        for number, wire, value in _fields(data):
            if number != _METADATA_PROPS or wire != _LENGTH:
                continue
            entry = {n: bytes(v).decode("utf-8") for n, w, v in _fields(value) if w == _LENGTH}
            if 1 in entry:
                props[entry[1]] = entry.get(2, "")
    except UnicodeDecodeError as exc:
        raise MetadataError(f"{name}: metadata is not UTF-8 ({exc})") from None
    except MetadataError as exc:
        raise MetadataError(f"{name} is not a readable ONNX model: {exc}") from None
    return props
