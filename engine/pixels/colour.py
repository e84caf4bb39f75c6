"""Colour frames to RGB in ``[0, 1]``.

RGB is scaled by its Bits Stored; YBR_FULL / YBR_FULL_422 (PS3.3 C.7.6.3.1.2) that
a decoder left in YCbCr are converted with pydicom's ITU-R BT.601 full-range
transform; YBR_ICT / YBR_RCT come out of the JPEG 2000 decoder as RGB already
(the decoder undoes the component transform); PALETTE COLOR is looked up in the
Palette Color Lookup Tables (PS3.3 C.7.6.3.1.5/.6, segmented tables C.7.9.2) and
scaled by the entries' bit depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.pixels.processing import apply_color_lut, convert_color_space

from engine.pixels.errors import InvalidImageError, UnsupportedPixelDataError
from engine.pixels.grayscale import ScaledFrame

__all__ = ["ColourResult", "colour_to_unit"]


@dataclass(frozen=True)
class ColourResult(ScaledFrame):
    """An RGB frame (rows x columns x 3); :meth:`unit` gives its intensities in ``[0, 1]``."""


def colour_to_unit(
    array: np.ndarray, dataset: pydicom.Dataset, *, photometric_interpretation: str
) -> ColourResult:
    """One decoded colour frame → RGB float32 in ``[0, 1]``.

    Parameters
    ----------
    array
        The decoded frame: (rows, columns, 3) for RGB/YBR, (rows, columns) indices
        for PALETTE COLOR.
    dataset
        The image's dataset (Bits Stored, palette tables).
    photometric_interpretation
        The interpretation of ``array`` as the decoder returned it.
    """
    pi = photometric_interpretation
    if pi == "PALETTE COLOR":
        if array.ndim != 2:
            raise InvalidImageError(
                f"PALETTE COLOR pixel data must have one sample per pixel, got shape {array.shape}"
            )
        descriptor = dataset.get("RedPaletteColorLookupTableDescriptor")
        if descriptor is None or len(descriptor) != 3:
            raise InvalidImageError(
                "PALETTE COLOR image lacks the Red Palette Color Lookup Table Descriptor "
                "(0028,1101)"
            )
        if dataset.get("PixelPresentation") in ("MIXED", "COLOR"):
            raise UnsupportedPixelDataError(
                "Supplemental Palette Color LUTs (Pixel Presentation MIXED/COLOR) are not supported"
            )
        try:
            rgb = apply_color_lut(array, dataset)
        except (ValueError, KeyError, AttributeError, IndexError) as exc:
            raise InvalidImageError(
                f"the Palette Color Lookup Tables could not be applied: {exc}"
            ) from exc
        rgb = rgb[..., :3]
        bits = int(descriptor[2])
        top = 255.0 if bits == 8 and int(rgb.max(initial=0)) <= 255 else 65535.0
        return ColourResult(
            np.ascontiguousarray(rgb),
            (f"colour: PALETTE COLOR lookup ({bits}-bit entries)",),
            scale=1.0 / top,
        )
    if array.ndim != 3 or array.shape[2] != 3:
        raise InvalidImageError(
            f"{pi} pixel data must have three samples per pixel, got shape {array.shape}"
        )
    steps: list[str] = []
    if pi in ("YBR_FULL", "YBR_FULL_422"):
        if array.dtype != np.uint8:
            raise UnsupportedPixelDataError(
                f"{pi} with {array.dtype.itemsize * 8}-bit samples is not supported"
            )
        array = convert_color_space(array, pi, "RGB")
        steps.append(f"colour: {pi} to RGB (ITU-R BT.601 full range)")
    elif pi != "RGB":
        raise UnsupportedPixelDataError(
            f"{pi} pixel data was not converted to RGB by the decoder; this combination is not "
            "supported"
        )
    if array.dtype.kind != "u":
        raise UnsupportedPixelDataError(
            f"colour pixel data of dtype {array.dtype} is not supported"
        )
    bits_stored = int(dataset.get("BitsStored") or array.dtype.itemsize * 8)
    bits_stored = min(bits_stored, array.dtype.itemsize * 8)
    steps.append(f"colour: RGB scaled by {bits_stored}-bit range")
    return ColourResult(array, tuple(steps), scale=1.0 / float(2**bits_stored - 1))
