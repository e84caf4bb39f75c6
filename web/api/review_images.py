"""The review viewer's pictures: a source frame as PNG under a chosen window, and the window the
viewer starts from.

The pixels go through the same display pipeline as the Secondary Capture images and previews
(:func:`exporters.sc.source_display_pixels`: Modality LUT, linear VOI window, MONOCHROME1
inverted). Only images of the job's review are served (:attr:`ReviewView.images`).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from sqlalchemy import select
from sqlalchemy.orm import Session

from exporters.errors import ExportError
from exporters.sc import source_display_pixels
from worklist.models import Instance

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DisplayDefaults",
    "FrameOutOfRangeError",
    "ImageUnreadableError",
    "display_defaults",
    "frame_png",
    "instance_path",
    "picture_etag",
    "window_presets",
]

#: Pictures are scaled down to this many pixels on their longer side unless asked otherwise.
DEFAULT_MAX_PIXELS = 2048

#: Common window presets per modality (centre, width in modality units: HU for CT).
_PRESETS: dict[str, dict[str, tuple[float, float]]] = {
    "CT": {"Lung": (-600.0, 1500.0), "Mediastinum": (40.0, 400.0), "Bone": (400.0, 1800.0),
           "Brain": (40.0, 80.0), "Abdomen": (60.0, 400.0)},
}


class ImageUnreadableError(Exception):
    """The image's file is gone or its pixels cannot be decoded (the message says which)."""


class FrameOutOfRangeError(ImageUnreadableError):
    """The image has no such frame."""


@dataclass(frozen=True)
class DisplayDefaults:
    """The window the viewer starts with, and the image's value range (modality units)."""

    rows: int
    columns: int
    frame_count: int
    window_center: float | None
    window_width: float | None
    min_value: float | None
    max_value: float | None
    modality: str


def instance_path(session: Session, storage_root: Path, sop_instance_uid: str) -> Path | None:
    """The stored file of an instance (``None`` when the index does not know it)."""
    found = session.scalar(
        select(Instance.path).where(Instance.sop_instance_uid == sop_instance_uid)
    )
    return None if found is None else Path(storage_root) / found


def _read(path: Path) -> Dataset:
    try:
        return dcmread(path)
    except (OSError, ValueError) as exc:
        raise ImageUnreadableError(f"the image file cannot be read: {exc}") from exc


def _first(value: object) -> float:
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = value[0]
    return float(value)  # type: ignore[arg-type]


def display_defaults(path: Path, *, frame: int | None = None) -> DisplayDefaults:
    """The image's first Window Center/Width (C.11.2), else its value range, as the start."""
    source = _read(path)
    frames = int(source.get("NumberOfFrames", 1) or 1)
    modality = str(source.get("Modality", ""))
    photometric = str(source.get("PhotometricInterpretation", "MONOCHROME2"))
    rows, columns = int(source.get("Rows", 0)), int(source.get("Columns", 0))
    if not photometric.startswith("MONOCHROME"):
        return DisplayDefaults(rows, columns, frames, None, None, None, None, modality)
    try:
        array = source.pixel_array
    except (ValueError, RuntimeError, NotImplementedError, AttributeError) as exc:
        raise ImageUnreadableError(f"the image's pixels cannot be decoded: {exc}") from exc
    if frames > 1:
        array = array[(frame or 1) - 1]
    values = apply_modality_lut(array, source) if "RescaleSlope" in source else array
    low, high = float(np.min(values)), float(np.max(values))
    center: float | None = None
    width: float | None = None
    if "WindowCenter" in source and "WindowWidth" in source:
        try:
            center, width = _first(source.WindowCenter), _first(source.WindowWidth)
        except (TypeError, ValueError, IndexError):
            center = width = None
    if center is None or width is None or not width > 0:
        center, width = (low + high) / 2, max(high - low, 1.0)
    return DisplayDefaults(rows, columns, frames, center, width, low, high, modality)


def window_presets(defaults: DisplayDefaults) -> dict[str, tuple[float, float]]:
    """The presets the viewer offers: the image's own window, its full range, and the
    modality's usual windows."""
    if defaults.window_center is None or defaults.window_width is None:
        return {}
    presets = {"Image default": (defaults.window_center, defaults.window_width)}
    if defaults.min_value is not None and defaults.max_value is not None:
        presets["Full range"] = ((defaults.min_value + defaults.max_value) / 2,
                                 max(defaults.max_value - defaults.min_value, 1.0))
    presets.update(_PRESETS.get(defaults.modality, {}))
    return presets


def picture_etag(sop_instance_uid: str, frame: int | None, window: tuple[float, float] | None,
                 max_pixels: int) -> str:
    """A strong validator for one rendering (the stored instance of a UID does not change)."""
    key = f"{sop_instance_uid}/{frame}/{window}/{max_pixels}".encode()
    return '"' + hashlib.sha256(key).hexdigest()[:32] + '"'


def frame_png(path: Path, *, frame: int | None, window: tuple[float, float] | None,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """One frame of the image at ``path`` as PNG, windowed (``(centre, width)``; ``None``: the
    image's default) and scaled down to ``max_pixels`` on its longer side."""
    source = _read(path)
    frames = int(source.get("NumberOfFrames", 1) or 1)
    if frame is not None and not 1 <= frame <= frames:
        raise FrameOutOfRangeError(f"the image has {frames} frame(s), not frame {frame}")
    try:
        pixels = source_display_pixels(source, frame=frame, window=window)
    except ExportError as exc:
        raise ImageUnreadableError(str(exc)) from exc
    picture = Image.fromarray(pixels)
    if max(picture.size) > max_pixels:
        picture.thumbnail((max_pixels, max_pixels))
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=False, compress_level=3)
    return out.getvalue()
