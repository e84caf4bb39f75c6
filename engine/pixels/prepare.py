"""DICOM image → model input, with the record that maps model boxes back."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pydicom

from engine.model import ResizeMode
from engine.pixels.colour import colour_to_unit
from engine.pixels.decode import check_image_attributes, check_is_image, decode_frame, resolve_frame
from engine.pixels.errors import InvalidImageError
from engine.pixels.geometry import ImageTransform, fit_to_size, plan_transform
from engine.pixels.grayscale import Window, grayscale_to_unit
from engine.report import ImageRef, ReportError
from engine.uids import is_valid_uid, short_uid

__all__ = ["PreparedImage", "prepare_image"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedImage:
    """One source frame ready for a model.

    Attributes
    ----------
    image
        The exact source image (SOP Instance/Class UID, frame number) the model
        input was made from; regions found on it are drawn on this image.
    array
        float32 (height, width, 3) RGB in ``[0, 1]``, exactly the requested
        ``size``; read-only.
    transform
        Every geometric step, and the exact map back to source pixels.
    source_size
        ``(Columns, Rows)`` of the source frame.
    steps
        Human-readable record of the intensity steps applied (modality LUT, VOI,
        inversion, colour conversion), for audit and debugging.
    """

    image: ImageRef
    array: np.ndarray
    transform: ImageTransform
    source_size: tuple[int, int]
    steps: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.image, ImageRef):
            raise ValueError(
                f"PreparedImage.image must be an ImageRef, got {type(self.image).__name__}"
            )
        if not isinstance(self.transform, ImageTransform):
            raise ValueError(
                "PreparedImage.transform must be an ImageTransform, got "
                f"{type(self.transform).__name__}"
            )
        array = self.array
        width, height = self.transform.output_size
        if (
            not isinstance(array, np.ndarray)
            or array.dtype != np.float32
            or array.shape != (height, width, 3)
        ):
            raise ValueError(
                f"PreparedImage.array must be float32 ({height}, {width}, 3), got "
                f"{getattr(array, 'dtype', None)} {getattr(array, 'shape', None)}"
            )
        if tuple(self.source_size) != self.transform.source_size:
            raise ValueError("PreparedImage.source_size must equal transform.source_size")
        if array.flags.writeable:
            array = array.view()
            array.flags.writeable = False
            object.__setattr__(self, "array", array)
        object.__setattr__(self, "source_size", tuple(self.source_size))
        object.__setattr__(self, "steps", tuple(self.steps))


def _image_ref(dataset: pydicom.Dataset, frame_number: int | None) -> ImageRef:
    sop_instance_uid = str(dataset.get("SOPInstanceUID", "") or "")
    sop_class_uid = str(dataset.get("SOPClassUID", "") or "")
    if not sop_instance_uid or not sop_class_uid:
        raise InvalidImageError(
            "SOP Instance UID (0008,0018) or SOP Class UID (0008,0016) is missing; "
            "findings could not be referenced to this image"
        )
    try:
        return ImageRef(
            sop_instance_uid=sop_instance_uid,
            sop_class_uid=sop_class_uid,
            frame_number=frame_number,
        )
    except ReportError:
        which = "SOP Instance UID" if not is_valid_uid(sop_instance_uid) else "SOP Class UID"
        value = sop_instance_uid if which == "SOP Instance UID" else sop_class_uid
        raise InvalidImageError(
            f"{which} {short_uid(value)} is not a valid DICOM UID (PS3.5 §9.1: digits and dots, "
            "at most 64 characters); findings could not be referenced to this image"
        ) from None


def prepare_image(
    dataset: pydicom.Dataset,
    *,
    frame_number: int | None = None,
    size: tuple[int, int],
    resize_mode: ResizeMode = ResizeMode.STRETCH,
    crop: tuple[int, int, int, int] | None = None,
    window: Window | None = None,
) -> PreparedImage:
    """Decode one frame of a DICOM image and make it the model's input.

    Steps: decode only the requested frame (pydicom's decoders and the pylibjpeg,
    openjpeg, libjpeg, JPEG-LS and RLE plugins); grayscale through Modality LUT,
    VOI LUT (window with its VOI LUT Function, VOI LUT Sequence, or a 0.5–99.5
    percentile window when the image has none) and MONOCHROME1 inversion; colour
    (RGB, YBR_*, PALETTE COLOR) to RGB; optional crop; bicubic resize to ``size``
    (stretched, or letterboxed with zero padding). Overlay planes (60xx) are never
    burned in.

    Parameters
    ----------
    dataset
        The image (a whole dataset as stored; pixel data is read only for the frame).
    frame_number
        1-based frame of a multi-frame image (required when it has several frames);
        ``None`` for single-frame images.
    size
        ``(width, height)`` of the model input.
    resize_mode
        STRETCH (MedRegA/InternVL) or LETTERBOX (keep aspect ratio, pad).
    crop
        Optional ``(x_min, y_min, x_max, y_max)`` integer source pixels to keep.
    window
        Optional VOI window to use instead of the image's own.

    Returns
    -------
    PreparedImage
        The float32 RGB input and the :class:`ImageTransform` mapping back.

    Raises
    ------
    NotAnImageError
        SEG, SR, presentation states, RT objects and anything without pixel data.
    UnsupportedPixelDataError, DecodeError, InvalidImageError, FrameSelectionError
        With a reason naming the transfer syntax, attribute or frame.
    """
    if window is not None and not isinstance(window, Window):
        raise ValueError(f"window must be an engine.pixels.Window or None, got {window!r}")
    check_is_image(dataset)
    frame = resolve_frame(dataset, frame_number)
    check_image_attributes(dataset)
    image = _image_ref(dataset, frame)
    columns, rows = int(dataset.Columns), int(dataset.Rows)
    transform = plan_transform(
        (columns, rows), size=size, resize_mode=resize_mode, crop=crop, frame_number=frame
    )
    decoded = decode_frame(dataset, frame)
    if decoded.array.shape[:2] != (rows, columns):
        raise InvalidImageError(
            f"decoded frame is {decoded.array.shape[1]}x{decoded.array.shape[0]} but "
            f"Columns x Rows say {columns}x{rows}"
        )
    pi = decoded.photometric_interpretation
    if pi in ("MONOCHROME1", "MONOCHROME2"):
        result = grayscale_to_unit(
            decoded.array, dataset, photometric_interpretation=pi, frame_number=frame, window=window
        )
    else:
        result = colour_to_unit(decoded.array, dataset, photometric_interpretation=pi)
    array = fit_to_size(result.array, transform, scale=result.scale, offset=result.offset)
    width, height = transform.output_size
    steps = (
        *result.steps,
        f"resize: {transform.resize_mode.value} {columns}x{rows} crop {transform.crop} -> "
        f"{transform.content_size[0]}x{transform.content_size[1]} in {width}x{height}, padding "
        f"{transform.padding}",
    )
    logger.debug(
        "prepared SOP instance %s frame %s: %s",
        short_uid(image.sop_instance_uid),
        frame,
        "; ".join(steps),
    )
    return PreparedImage(
        image=image, array=array, transform=transform, source_size=(columns, rows), steps=steps
    )
