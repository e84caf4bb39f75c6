"""Refusing non-images and decoding exactly one frame.

Decoding goes through pydicom's pixel data decoders (PS3.5 §8 and Annex A
transfer syntaxes) with the pylibjpeg, openjpeg, libjpeg, JPEG-LS and RLE plugins;
a multi-frame image is decoded one frame at a time, never as a whole.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from engine.pixels.errors import (
    DecodeError,
    FrameSelectionError,
    InvalidImageError,
    NotAnImageError,
    UnsupportedPixelDataError,
)
from engine.uids import short_uid

__all__ = [
    "SUPPORTED_PHOTOMETRIC_INTERPRETATIONS",
    "DecodedFrame",
    "check_image_attributes",
    "check_is_image",
    "decode_frame",
    "frame_count",
    "non_image_reason",
]

logger = logging.getLogger(__name__)

#: Storage SOP classes (PS3.4 Annex B.5) whose objects carry no image to infer on,
#: by UID root: the object and every SOP class under ``root + "."``.
_NON_IMAGE_SOP_ROOTS: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.66.1": "a spatial registration",
    "1.2.840.10008.5.1.4.1.1.66.2": "a spatial fiducials object",
    "1.2.840.10008.5.1.4.1.1.66.3": "a deformable spatial registration",
    "1.2.840.10008.5.1.4.1.1.66.4": "a segmentation",
    "1.2.840.10008.5.1.4.1.1.66.5": "a surface segmentation",
    "1.2.840.10008.5.1.4.1.1.66.6": "a tractography result",
    "1.2.840.10008.5.1.4.1.1.66.7": "a label map segmentation",
    "1.2.840.10008.5.1.4.1.1.66.8": "a height map segmentation",
    "1.2.840.10008.5.1.4.1.1.66": "a raw data, registration or segmentation object",
    "1.2.840.10008.5.1.4.1.1.67": "a real world value mapping",
    "1.2.840.10008.5.1.4.1.1.68": "a surface model",
    "1.2.840.10008.5.1.4.1.1.30": "a parametric map (derived values, not an image)",
    "1.2.840.10008.5.1.4.1.1.88": "a structured report or key object selection",
    "1.2.840.10008.5.1.4.1.1.11": "a presentation state",
    "1.2.840.10008.5.1.4.1.1.9": "a waveform",
    "1.2.840.10008.5.1.4.1.1.104": "an encapsulated document",
    "1.2.840.10008.5.1.4.1.1.481.2": "an RT dose grid",
    "1.2.840.10008.5.1.4.1.1.481.3": "an RT structure set",
    "1.2.840.10008.5.1.4.1.1.481.4": "an RT treatment record",
    "1.2.840.10008.5.1.4.1.1.481.5": "an RT plan",
    "1.2.840.10008.5.1.4.1.1.481.6": "an RT treatment record",
    "1.2.840.10008.5.1.4.1.1.481.7": "an RT treatment record",
    "1.2.840.10008.5.1.4.1.1.481.8": "an RT plan",
    "1.2.840.10008.5.1.4.1.1.481.9": "an RT treatment record",
    "1.2.840.10008.5.1.4.1.1.481.10": "an RT physician intent",
    "1.2.840.10008.5.1.4.1.1.481.11": "an RT segment annotation",
    "1.2.840.10008.5.1.4.1.1.481.12": "an RT radiation set",
    "1.2.840.10008.5.1.4.1.1.481.13": "a C-arm photon-electron radiation record",
    "1.2.840.10008.5.1.4.1.1.78": "an ophthalmic measurement",
    "1.2.840.10008.5.1.4.1.1.79": "an ophthalmic measurement",
    "1.2.840.10008.5.1.4.1.1.80": "an ophthalmic measurement",
    "1.2.840.10008.5.1.4.1.1.81": "an ophthalmic measurement",
    "1.2.840.10008.5.1.4.1.1.82": "an ophthalmic measurement",
    "1.2.840.10008.5.1.4.1.1.90": "a content assessment result",
    "1.2.840.10008.5.1.4.1.1.200": "a protocol",
    "1.2.840.10008.5.1.4.1.1.201": "an inventory",
    "1.2.840.10008.5.1.4.34": "an RT (second generation) object",
    "1.2.840.10008.5.1.4.38": "a hanging protocol",
    "1.2.840.10008.5.1.4.39": "a color palette",
    "1.2.840.10008.5.1.4.43": "a generic implant template",
    "1.2.840.10008.5.1.4.44": "an implant assembly template",
    "1.2.840.10008.5.1.4.45": "an implant template group",
}

#: Modalities (0008,0060) that never hold an image to infer on (PS3.3 C.7.3.1.1.1).
_NON_IMAGE_MODALITIES: dict[str, str] = {
    "SEG": "a segmentation",
    "SR": "a structured report",
    "PR": "a presentation state",
    "KO": "a key object selection",
    "REG": "a spatial registration",
    "FID": "a fiducials object",
    "RWV": "a real world value mapping",
    "DOC": "a document",
    "RTSTRUCT": "an RT structure set",
    "RTPLAN": "an RT plan",
    "RTDOSE": "an RT dose grid",
    "RTRECORD": "an RT treatment record",
    "PLAN": "a plan",
    "ECG": "a waveform",
    "HD": "a waveform",
    "AU": "an audio waveform",
}

#: Photometric interpretations the pipeline turns into model input (PS3.3 C.7.6.3.1.2).
SUPPORTED_PHOTOMETRIC_INTERPRETATIONS = frozenset(
    {
        "MONOCHROME1",
        "MONOCHROME2",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_PARTIAL_420",
        "YBR_ICT",
        "YBR_RCT",
        "PALETTE COLOR",
    }
)

_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _sop_class_reason(sop_class_uid: str) -> str | None:
    for root, what in _NON_IMAGE_SOP_ROOTS.items():
        if sop_class_uid == root or sop_class_uid.startswith(root + "."):
            return what
    return None


def non_image_reason(dataset: pydicom.Dataset, *, require_pixel_data: bool = True) -> str | None:
    """Why ``dataset`` is not an image to infer on, or ``None`` if it is one.

    An object is refused when its SOP Class (PS3.4 Annex B.5) or Modality names a
    non-image object (SEG, SR, PR, KO, RT, waveform, encapsulated document, ...),
    or when it has no Pixel Data at all (unless ``require_pixel_data`` is false, for
    headers read with ``stop_before_pixels``).
    """
    sop_class_uid = str(dataset.get("SOPClassUID", "") or "")
    name = UID(sop_class_uid).name if sop_class_uid else "unknown SOP class"
    what = _sop_class_reason(sop_class_uid) if sop_class_uid else None
    if what is not None:
        return f"{name} ({sop_class_uid}) is {what}, not an image to infer on"
    modality = str(dataset.get("Modality", "") or "").upper()
    if modality in _NON_IMAGE_MODALITIES:
        return f"Modality {modality} is {_NON_IMAGE_MODALITIES[modality]}, not an image to infer on"
    if require_pixel_data and not any(keyword in dataset for keyword in _PIXEL_DATA_KEYWORDS):
        return f"{name} has no Pixel Data (7FE0,0010), so there is no image to infer on"
    return None


def check_is_image(dataset: pydicom.Dataset) -> None:
    """Raise :class:`NotAnImageError` unless ``dataset`` is an image to infer on."""
    reason = non_image_reason(dataset)
    if reason is not None:
        raise NotAnImageError(reason)


def frame_count(dataset: pydicom.Dataset) -> int:
    """Number of Frames (0028,0008), 1 when absent (single-frame IODs)."""
    value = dataset.get("NumberOfFrames")
    if value in (None, ""):
        return 1
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise InvalidImageError(
            f"Number of Frames (0028,0008) is not an integer: {value!r}"
        ) from None
    if count < 1:
        raise InvalidImageError(f"Number of Frames (0028,0008) must be >= 1, got {count}")
    return count


def is_multi_frame(dataset: pydicom.Dataset) -> bool:
    """Whether ``dataset`` belongs to a multi-frame IOD (has Number of Frames)."""
    return dataset.get("NumberOfFrames") not in (None, "")


def resolve_frame(dataset: pydicom.Dataset, frame_number: int | None) -> int | None:
    """Check ``frame_number`` against the image and return it as an
    :class:`~engine.report.ImageRef` frame number (``None`` for single-frame IODs).

    A multi-frame image with more than one frame needs an explicit frame; a
    multi-frame IOD holding one frame defaults to frame 1.
    """
    if frame_number is not None and (
        isinstance(frame_number, bool) or not isinstance(frame_number, (int, np.integer))
    ):
        raise FrameSelectionError(
            f"frame_number must be a 1-based int or None, got {frame_number!r}"
        )
    count = frame_count(dataset)
    if not is_multi_frame(dataset):
        if frame_number not in (None, 1):
            raise FrameSelectionError(f"frame_number {frame_number} asked of a single-frame image")
        return None
    if frame_number is None:
        if count == 1:
            return 1
        raise FrameSelectionError(
            f"this image has {count} frames: pass frame_number (1..{count}) to pick one"
        )
    if not 1 <= frame_number <= count:
        raise FrameSelectionError(f"frame_number {frame_number} is outside 1..{count}")
    return int(frame_number)


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame.

    Attributes
    ----------
    array
        (Rows, Columns) or (Rows, Columns, 3) in native byte order, as stored
        (no rescale or LUT applied), colour already converted to RGB where the
        decoder did so.
    photometric_interpretation
        The interpretation of ``array`` (``"RGB"`` after a YBR conversion).
    """

    array: np.ndarray
    photometric_interpretation: str


def _require(dataset: pydicom.Dataset, keyword: str, tag: str) -> object:
    value = dataset.get(keyword)
    if value in (None, ""):
        raise InvalidImageError(f"{keyword} {tag} is missing; the pixel data cannot be interpreted")
    return value


def check_image_attributes(dataset: pydicom.Dataset) -> str:
    """Check the Image Pixel module attributes the pipeline needs (PS3.3 C.7.6.3) and
    return the Photometric Interpretation.

    Raises
    ------
    InvalidImageError
        When Rows, Columns, Bits Allocated, Samples per Pixel or Photometric
        Interpretation is missing or inconsistent.
    UnsupportedPixelDataError
        For a Photometric Interpretation the pipeline does not handle.
    """
    for keyword, tag in (
        ("Rows", "(0028,0010)"),
        ("Columns", "(0028,0011)"),
        ("BitsAllocated", "(0028,0100)"),
        ("SamplesPerPixel", "(0028,0002)"),
        ("PhotometricInterpretation", "(0028,0004)"),
    ):
        value = _require(dataset, keyword, tag)
        if keyword != "PhotometricInterpretation" and (not isinstance(value, int) or value < 1):
            raise InvalidImageError(f"{keyword} {tag} must be a positive integer, got {value!r}")
    photometric = str(dataset.PhotometricInterpretation).strip().upper()
    if photometric not in SUPPORTED_PHOTOMETRIC_INTERPRETATIONS:
        raise UnsupportedPixelDataError(
            f"Photometric Interpretation {photometric!r} is not supported "
            f"(supported: {', '.join(sorted(SUPPORTED_PHOTOMETRIC_INTERPRETATIONS))})"
        )
    samples = int(dataset.SamplesPerPixel)
    expected = 1 if photometric in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR") else 3
    if samples != expected:
        raise InvalidImageError(
            f"Samples per Pixel is {samples} but Photometric Interpretation {photometric} needs "
            f"{expected}"
        )
    return photometric


def decode_frame(dataset: pydicom.Dataset, frame_number: int | None) -> DecodedFrame:
    """Decode one frame of ``dataset`` (checked with :func:`resolve_frame`).

    Raises
    ------
    NotAnImageError, InvalidImageError, UnsupportedPixelDataError, DecodeError
        With a reason naming the SOP class, attribute or transfer syntax.
    """
    check_is_image(dataset)
    frame = resolve_frame(dataset, frame_number)
    photometric = check_image_attributes(dataset)
    if "PixelData" not in dataset:
        raise UnsupportedPixelDataError(
            "float pixel data (Float/Double Float Pixel Data) holds derived values, which are "
            "not supported"
        )
    file_meta = getattr(dataset, "file_meta", None)
    transfer_syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if not transfer_syntax:
        raise InvalidImageError(
            "the dataset has no Transfer Syntax UID (0002,0010) in its file meta, so its pixel "
            "data cannot be decoded"
        )
    transfer_syntax = UID(str(transfer_syntax))
    ts_name = f"{transfer_syntax.name} ({transfer_syntax})"
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        raise UnsupportedPixelDataError(
            f"no pixel data decoder exists for transfer syntax {ts_name}"
        ) from None
    if not decoder.is_available:
        raise UnsupportedPixelDataError(
            f"no decoding plugin is installed for transfer syntax {ts_name} "
            "(pylibjpeg, pylibjpeg-openjpeg, pylibjpeg-libjpeg, pyjpegls, pylibjpeg-rle cover "
            "the usual ones)"
        )
    index = None if frame is None else frame - 1
    try:
        array, meta = decoder.as_array(dataset, index=index, as_rgb=True)
    except (
        ValueError,
        RuntimeError,
        NotImplementedError,
        AttributeError,
        KeyError,
        TypeError,
        EOFError,
    ) as exc:
        logger.info(
            "decode failed for SOP instance %s, transfer syntax %s: %s",
            short_uid(dataset.get("SOPInstanceUID", "?")),
            transfer_syntax,
            type(exc).__name__,
        )
        raise DecodeError(f"could not decode pixel data in {ts_name}: {exc}") from exc
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    out_photometric = str(meta.get("photometric_interpretation", photometric)).strip().upper()
    return DecodedFrame(array=array, photometric_interpretation=out_photometric)
