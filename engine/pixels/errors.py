"""The pixel pipeline's own small exception hierarchy.

Every error names what is wrong with the image (transfer syntax, photometric
interpretation, missing attribute) in words a PACS administrator can act on.
Messages never carry patient data; UIDs are shortened.
"""

from __future__ import annotations

from engine.errors import EngineError

__all__ = [
    "CoordinateError",
    "DecodeError",
    "FrameSelectionError",
    "InvalidImageError",
    "NotAnImageError",
    "PixelError",
    "UnsupportedPixelDataError",
]


class PixelError(EngineError):
    """Base class: an image could not be prepared for a model, or mapped back."""


class NotAnImageError(PixelError):
    """The object is not an image to infer on (SEG, SR, presentation state, RT
    structure set, waveform, encapsulated document, or no pixel data at all)."""


class UnsupportedPixelDataError(PixelError):
    """The pixel data is an image, but in a form the pipeline cannot handle
    (a transfer syntax without an installed decoder, an unknown photometric
    interpretation, an odd bit depth)."""


class DecodeError(PixelError):
    """The pixel data could not be decoded (corrupt or truncated stream)."""


class InvalidImageError(PixelError):
    """An attribute the pipeline needs is missing or invalid (Rows, Columns,
    SOP Instance UID, LUT descriptors, ...)."""


class FrameSelectionError(PixelError, ValueError):
    """The requested frame does not exist in the image, or a multi-frame image
    was given without a frame number."""


class CoordinateError(PixelError, ValueError):
    """Coordinates given to a transform are out of range or do not form a box."""

