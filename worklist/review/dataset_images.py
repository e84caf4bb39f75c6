"""The images of the reviewed-findings dataset: their file names, sizes and de-identified copies.

An image is one frame of one stored instance. Its file name is a hash of its SOP Instance UID
(and frame), so that the ``images/`` folder and ``boxes.csv`` name no UID; the copy is the frame
rendered to 8-bit grayscale at its own size (``Columns`` x ``Rows``: boxes keep their source
pixel coordinates) with the image's default window, through the same pixel pipeline the
models see (:func:`engine.pixels.prepare_image`): Modality LUT, the first VOI window or VOI
LUT (a 0.5–99.5 percentile window when there is none), MONOCHROME1 inverted, colour to luma.
Overlay planes are never burned in. The PNG carries no metadata (no text, time or physical
size chunks), and nothing of the DICOM header goes with it.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError

from engine.pixels import PixelError, prepare_image
from engine.uids import short_uid
from worklist.review.errors import ReviewDataError

__all__ = ["ImageUnavailableError", "image_file_name", "image_size", "write_image_png"]

logger = logging.getLogger(__name__)


class ImageUnavailableError(ReviewDataError):
    """An image could not be read or rendered; the message says why (no UID, no patient data).
    The export catches it, leaves the image out and lists it in the manifest."""


def image_file_name(sop_instance_uid: str, frame_number: int | None) -> str:
    """``<hash>.png`` (``<hash>-f<N>.png`` for frame N of a multi-frame image).

    The hash is the first 128 bits of BLAKE2b of the SOP Instance UID: stable (the same image
    has the same name in every export, so exports can be merged and de-duplicated) and not
    reversible without the UID.

    Examples
    --------
    >>> image_file_name("1.2.3", None)
    '4cf590444a72af0a001a56e44da3ad2b.png'
    >>> image_file_name("1.2.3", 2)
    '4cf590444a72af0a001a56e44da3ad2b-f2.png'
    """
    digest = hashlib.blake2b(sop_instance_uid.encode("ascii"), digest_size=16).hexdigest()
    return f"{digest}.png" if frame_number is None else f"{digest}-f{frame_number}.png"


def _read(path: Path, *, pixels: bool) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except FileNotFoundError:
        raise ImageUnavailableError("the stored file is missing") from None
    except (InvalidDicomError, OSError, ValueError) as exc:
        reason = f"the stored file cannot be read ({type(exc).__name__})"
        raise ImageUnavailableError(reason) from None


def image_size(path: Path) -> tuple[int, int]:
    """``(Columns, Rows)`` of the stored instance at ``path`` (header only)."""
    dataset = _read(path, pixels=False)
    try:
        return int(dataset.Columns), int(dataset.Rows)
    except (AttributeError, TypeError, ValueError):
        raise ImageUnavailableError("Columns or Rows is missing") from None


def write_image_png(path: Path, frame_number: int | None, out: Path) -> tuple[int, int]:
    """Render one frame of the instance at ``path`` to an 8-bit grayscale PNG at ``out``.

    Returns
    -------
    tuple
        ``(Columns, Rows)``: the PNG's size, the source frame's.

    Raises
    ------
    ImageUnavailableError
        The file is missing or unreadable, its pixels cannot be decoded, or it declares text
        burned into its pixels (Burned In Annotation (0028,0301) ``YES``): such an image is
        never copied.
    """
    dataset = _read(path, pixels=True)
    if str(dataset.get("BurnedInAnnotation", "")).upper() == "YES":
        raise ImageUnavailableError("Burned In Annotation (0028,0301) is YES")
    try:
        columns, rows = int(dataset.Columns), int(dataset.Rows)
        prepared = prepare_image(dataset, frame_number=frame_number, size=(columns, rows))
    except (AttributeError, TypeError, ValueError, PixelError) as exc:
        raise ImageUnavailableError(f"the pixels cannot be rendered ({exc})") from None
    rgb = (np.clip(prepared.array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    # R = G = B for grayscale images: their luma is the value itself
    gray = Image.fromarray(rgb, mode="RGB").convert("L")
    gray.save(out, format="PNG")  # no pnginfo: no text, time or pHYs chunks
    logger.debug(
        "image of SOP instance %s frame %s written (%dx%d)",
        short_uid(prepared.image.sop_instance_uid), frame_number, columns, rows,
    )
    return columns, rows
