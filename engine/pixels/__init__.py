"""The pixel pipeline: DICOM images → model input, and model boxes → source pixels.

Public API
----------
:func:`prepare_image`
    Decode one frame, apply the grayscale or colour pipeline and fit it to the model's
    input size, returning a :class:`PreparedImage` whose :class:`ImageTransform` maps
    model coordinates (pixels or MedRegA's 0–999) back to source pixels exactly.
:func:`select_images`
    Choose which images/frames of a study go to the model (:class:`ImageSelection`).

Coordinates: source boxes are DICOM column/row with the origin at the top-left
corner of the top-left pixel (``engine.report.Box``); MedRegA's 0–999 integers are
de-normalised by dividing by 999, as its code does (``(0, 0, 999, 999)`` is the whole
model input). :mod:`engine.pixels.geometry` states the convention in full.

Errors derive from :class:`PixelError`.
"""

from engine.pixels.decode import non_image_reason
from engine.pixels.errors import (
    CoordinateError,
    DecodeError,
    FrameSelectionError,
    InvalidImageError,
    NotAnImageError,
    PixelError,
    UnsupportedPixelDataError,
)
from engine.pixels.geometry import NORMALIZED_MAX, ImageTransform
from engine.pixels.grayscale import PERCENTILE_WINDOW, Window
from engine.pixels.prepare import PreparedImage, prepare_image
from engine.pixels.selection import (
    FRONTAL_CHEST_RADIOGRAPHS,
    VIEW_CODES,
    ImageSelection,
    VolumeStrategy,
    image_views,
    select_images,
)

__all__ = [
    "FRONTAL_CHEST_RADIOGRAPHS",
    "NORMALIZED_MAX",
    "PERCENTILE_WINDOW",
    "VIEW_CODES",
    "CoordinateError",
    "DecodeError",
    "FrameSelectionError",
    "ImageSelection",
    "ImageTransform",
    "InvalidImageError",
    "NotAnImageError",
    "PixelError",
    "PreparedImage",
    "UnsupportedPixelDataError",
    "VolumeStrategy",
    "Window",
    "image_views",
    "non_image_reason",
    "prepare_image",
    "select_images",
]
