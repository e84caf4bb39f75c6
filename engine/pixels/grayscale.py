"""The grayscale pipeline: Modality LUT, VOI LUT, MONOCHROME1 inversion.

Implements PS3.3 C.11.1 (Modality LUT: rescale slope/intercept or Modality LUT
Sequence), C.11.2 (VOI LUT: Window Center/Width with VOI LUT Function
LINEAR / LINEAR_EXACT / SIGMOID per C.11.2.1.2, or a VOI LUT Sequence) and the
MONOCHROME1 polarity of C.7.6.3.1.2, producing P-values scaled to ``[0, 1]``
(0 = black). For enhanced multi-frame images the per-frame or shared functional
groups (Pixel Value Transformation, Frame VOI LUT; PS3.3 C.7.6.16.2.9/.10) are
used when the top-level attributes are absent.

When the image carries no VOI at all, a robust window from the 0.5th to the 99.5th
percentile of the modality values (padding values excluded) is used.

Speed without approximation: when rescale, window and inversion are all linear over
the values the frame actually holds (a window wider than the data, as most CR/DX
carry), the stored frame is resized first and mapped after (bicubic weights sum to
one, so the result is the same). Otherwise, for 8- and 16-bit stored values, the
whole chain is evaluated once over every possible stored value into a table of
16-bit P-values (at most 0.5/65535 off) and applied with one ``np.take``; 32-bit and
float data are mapped directly in float32.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRBigEndian

from engine.pixels.errors import InvalidImageError, UnsupportedPixelDataError

__all__ = [
    "PERCENTILE_WINDOW",
    "GrayscaleResult",
    "ScaledFrame",
    "Window",
    "grayscale_to_unit",
    "modality_lut",
]

logger = logging.getLogger(__name__)

#: Percentiles (low, high) of the modality values used as a window when the image has no VOI.
PERCENTILE_WINDOW = (0.5, 99.5)
#: At most this many pixels are sampled (on a regular grid) to estimate the percentile window.
_PERCENTILE_SAMPLES = 262_144


@dataclass(frozen=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2).

    Parameters
    ----------
    center, width
        Window Center (0028,1050) and Window Width (0028,1051) in modality units.
    function
        VOI LUT Function (0028,1056): ``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID``.
    """

    center: float
    width: float
    function: str = "LINEAR"

    def __post_init__(self) -> None:
        for name in ("center", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(
                value, (int, float, np.integer, np.floating)
            ):
                raise ValueError(f"Window.{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"Window.{name} must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))
        function = str(self.function).strip().upper() or "LINEAR"
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            raise ValueError(
                f"Window.function must be LINEAR, LINEAR_EXACT or SIGMOID, got {self.function!r}"
            )
        object.__setattr__(self, "function", function)
        minimum = 1.0 if function == "LINEAR" else 0.0
        if not (self.width >= minimum if function == "LINEAR" else self.width > minimum):
            raise ValueError(
                f"Window.width must be {'>= 1' if function == 'LINEAR' else '> 0'} for "
                f"{function}, got {self.width}"
            )

    def linear_coefficients(self) -> tuple[float, float] | None:
        """``(a, b)`` such that the window is ``clip(a * x + b, 0, 1)``, or ``None`` for
        SIGMOID and the LINEAR width-1 threshold."""
        if self.function == "LINEAR_EXACT":
            return (1.0 / self.width, 0.5 - self.center / self.width)
        if self.function == "LINEAR" and self.width > 1.0:
            a = 1.0 / (self.width - 1.0)
            return (a, 0.5 - (self.center - 0.5) * a)
        return None

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Map modality values to ``[0, 1]`` (float64 for LUT domains, float32 otherwise)."""
        c, w = self.center, self.width
        if self.function == "SIGMOID":
            with np.errstate(over="ignore"):  # exp overflows to inf far below c: y = 0
                out = 1.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
        elif self.function == "LINEAR_EXACT":
            out = (values - c) / w + 0.5
        elif w == 1.0:
            out = (values > c - 0.5).astype(values.dtype)
        else:
            # C.11.2.1.2.1: y = ((x - (c - 0.5)) / (w - 1) + 0.5) between the limits.
            out = (values - (c - 0.5)) / (w - 1.0) + 0.5
        return np.clip(out, 0.0, 1.0, out=out if out.dtype.kind == "f" else None)


@dataclass(frozen=True)
class ScaledFrame:
    """A decoded frame and the linear map to its display values in ``[0, 1]``:
    ``clip(array * scale + offset, 0, 1)``; ``steps`` says how it was made."""

    array: np.ndarray
    steps: tuple[str, ...]
    scale: float = 1.0
    offset: float = 0.0

    def unit(self) -> np.ndarray:
        """The values in ``[0, 1]`` at full resolution (float32)."""
        out = self.array.astype(np.float32)
        out *= np.float32(self.scale)
        out += np.float32(self.offset)
        return np.clip(out, 0.0, 1.0, out=out)


@dataclass(frozen=True)
class GrayscaleResult(ScaledFrame):
    """A grayscale frame; :meth:`unit` gives its P-values in ``[0, 1]``."""


def _first(value: object) -> object:
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return value[0] if len(value) else None
    return value


def _functional_item(
    dataset: pydicom.Dataset, frame_number: int | None, keyword: str
) -> pydicom.Dataset | None:
    """The first item of ``keyword`` in the frame's per-frame functional group, else
    the shared functional group (PS3.3 C.7.6.16), else ``None``."""
    if frame_number is not None:
        per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
        if per_frame is not None and len(per_frame) >= frame_number:
            seq = per_frame[frame_number - 1].get(keyword)
            if seq:
                return seq[0]
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if shared:
        seq = shared[0].get(keyword)
        if seq:
            return seq[0]
    return None


def _is_little_endian(dataset: pydicom.Dataset) -> bool:
    file_meta = getattr(dataset, "file_meta", None)
    ts = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    return ts != ExplicitVRBigEndian


def _lut(item: pydicom.Dataset, dataset: pydicom.Dataset, what: str) -> tuple[int, int, np.ndarray]:
    """(first mapped value, bits per entry, entries) of a LUT item (PS3.3 C.11.1.1.1)."""
    descriptor = item.get("LUTDescriptor")
    if descriptor is None or len(descriptor) != 3 or "LUTData" not in item:
        raise InvalidImageError(
            f"{what} item lacks a three-valued LUT Descriptor (0028,3002) or LUT Data (0028,3006)"
        )
    entries, first, bits = (int(v) for v in descriptor)
    entries = entries or 65536
    if not 1 <= bits <= 16:
        raise UnsupportedPixelDataError(f"{what} has {bits} bits per entry; 1 to 16 are supported")
    raw = item.LUTData
    if isinstance(raw, (bytes, bytearray)):
        if len(raw) < 2 * entries and bits <= 8 and len(raw) >= entries:
            data = np.frombuffer(raw, dtype=np.uint8, count=entries)
        else:
            if len(raw) < 2 * entries:
                raise InvalidImageError(
                    f"{what} LUT Data holds fewer than the {entries} entries its descriptor "
                    "declares"
                )
            dtype = "<u2" if _is_little_endian(dataset) else ">u2"
            data = np.frombuffer(raw, dtype=dtype, count=entries)
    else:
        data = np.atleast_1d(np.asarray(raw))
        if data.size < entries:
            raise InvalidImageError(
                f"{what} LUT Data holds {data.size} entries, its descriptor declares {entries}"
            )
        data = data[:entries]
    if first >= 32768 and int(dataset.get("PixelRepresentation", 0)) == 1:
        first -= 65536  # a US-valued descriptor of a signed image (PS3.3 C.11.1.1.1, C.11.2.1.1)
    return first, bits, data.astype(np.float64)


def _apply_table(values: np.ndarray, first: int, table: np.ndarray) -> np.ndarray:
    """Look ``values`` up in ``table`` whose first entry maps ``first``; values
    outside the table take its first or last entry (PS3.3 C.11.1.1.1)."""
    index = np.clip(np.round(values - first), 0, table.size - 1).astype(np.intp)
    return table[index]


def _rescale(dataset: pydicom.Dataset, frame_number: int | None) -> tuple[float, float] | None:
    """(slope, intercept) of the linear Modality LUT, or ``None`` when a Modality LUT
    Sequence applies (PS3.3 C.11.1; enhanced images: Pixel Value Transformation)."""
    if dataset.get("ModalityLUTSequence"):
        return None
    slope, intercept = dataset.get("RescaleSlope"), dataset.get("RescaleIntercept")
    if slope is None and intercept is None:
        item = _functional_item(dataset, frame_number, "PixelValueTransformationSequence")
        if item is not None:
            slope, intercept = item.get("RescaleSlope"), item.get("RescaleIntercept")
    try:
        slope = 1.0 if slope in (None, "") else float(slope)
        intercept = 0.0 if intercept in (None, "") else float(intercept)
    except (TypeError, ValueError):
        raise InvalidImageError(
            f"Rescale Slope/Intercept are not numbers: {slope!r}, {intercept!r}"
        ) from None
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0.0:
        raise InvalidImageError(f"Rescale Slope {slope} / Intercept {intercept} are not usable")
    return slope, intercept


def modality_lut(
    values: np.ndarray, dataset: pydicom.Dataset, *, frame_number: int | None = None
) -> tuple[np.ndarray, str]:
    """Apply the Modality LUT (PS3.3 C.11.1) to stored values.

    Returns the modality values (float64) and a description of the step.
    """
    seq = dataset.get("ModalityLUTSequence")
    if seq:
        first, _bits, table = _lut(seq[0], dataset, "Modality LUT Sequence")
        return _apply_table(
            values, first, table
        ), f"modality: LUT sequence ({table.size} entries from {first})"
    slope, intercept = _rescale(dataset, frame_number) or (1.0, 0.0)
    values = values.astype(np.float64, copy=False)
    if slope == 1.0 and intercept == 0.0:
        return values, "modality: identity"
    return values * slope + intercept, f"modality: rescale slope {slope:g} intercept {intercept:g}"


def _dataset_window(dataset: pydicom.Dataset, frame_number: int | None) -> Window | None:
    source: pydicom.Dataset | None = dataset
    if dataset.get("WindowCenter") in (None, "") or dataset.get("WindowWidth") in (None, ""):
        source = _functional_item(dataset, frame_number, "FrameVOILUTSequence")
    if source is None:
        return None
    center, width = _first(source.get("WindowCenter")), _first(source.get("WindowWidth"))
    if center in (None, "") or width in (None, ""):
        return None
    function = source.get("VOILUTFunction") or dataset.get("VOILUTFunction") or "LINEAR"
    try:
        return Window(float(center), float(width), str(function))
    except (TypeError, ValueError) as exc:
        logger.warning("ignoring unusable window in the image (%s); using a percentile window", exc)
        return None


def _sample(array: np.ndarray) -> np.ndarray:
    stride = max(1, math.ceil(math.sqrt(array.size / _PERCENTILE_SAMPLES)))
    return array[::stride, ::stride].ravel()


def _padding_mask(stored: np.ndarray, dataset: pydicom.Dataset) -> np.ndarray | None:
    """Pixels that are padding (Pixel Padding Value / Range Limit, PS3.3 C.7.5.1.1.2)."""
    value = dataset.get("PixelPaddingValue")
    if value is None:
        return None
    limit = dataset.get("PixelPaddingRangeLimit")
    lo, hi = (int(value), int(value)) if limit is None else sorted((int(value), int(limit)))
    return (stored >= lo) & (stored <= hi)


def _percentile_window(sample_modality: np.ndarray) -> Window:
    if sample_modality.size == 0:
        return Window(0.5, 1.0, "LINEAR_EXACT")
    lo, hi = np.percentile(sample_modality, PERCENTILE_WINDOW)
    if not hi > lo:
        hi = lo + 1.0
    return Window((lo + hi) / 2.0, hi - lo, "LINEAR_EXACT")


def _affine(
    array: np.ndarray, rescale: tuple[float, float] | None, window: Window | None, invert: bool
) -> tuple[float, float] | None:
    """``(scale, offset)`` with P-value = ``scale * stored + offset`` for every pixel of
    ``array``, when rescale, window and inversion are all linear over the values the
    image actually holds (no pixel reaches a window limit); else ``None``."""
    if rescale is None or window is None or array.size == 0:
        return None
    coefficients = window.linear_coefficients()
    if coefficients is None:
        return None
    slope, intercept = rescale
    a, b = coefficients
    scale, offset = a * slope, a * intercept + b
    lo, hi = float(array.min()), float(array.max())
    ends = (scale * lo + offset, scale * hi + offset)
    if not (0.0 <= min(ends) and max(ends) <= 1.0):
        return None
    return (-scale, 1.0 - offset) if invert else (scale, offset)


def grayscale_to_unit(
    array: np.ndarray,
    dataset: pydicom.Dataset,
    *,
    photometric_interpretation: str,
    frame_number: int | None = None,
    window: Window | None = None,
) -> GrayscaleResult:
    """Stored values of one grayscale frame → P-values in ``[0, 1]``.

    Parameters
    ----------
    array
        (Rows, Columns) stored values as decoded (no rescale applied).
    dataset
        The image's dataset (Modality LUT, VOI LUT and padding attributes).
    photometric_interpretation
        ``MONOCHROME1`` (inverted after the VOI LUT) or ``MONOCHROME2``.
    frame_number
        1-based frame, for functional-group attributes of enhanced images.
    window
        A window to use instead of the image's own VOI.

    Returns
    -------
    GrayscaleResult
        P-values as ``clip(array * scale + offset, 0, 1)``: when the whole chain is
        linear over the image's values (a rescale and a window wider than the data),
        ``array`` is the stored frame itself, so resizing can run before the
        (exactly equivalent) linear map; otherwise the chain is evaluated once per
        possible stored value and ``array`` holds 16-bit P-values (scale 1/65535),
        or float32 P-values for 32-bit and float data.
    """
    if photometric_interpretation not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedPixelDataError(
            f"{photometric_interpretation} is not a grayscale interpretation"
        )
    if array.dtype.kind not in "uif":
        raise UnsupportedPixelDataError(
            f"grayscale pixel data of dtype {array.dtype} is not supported"
        )
    steps: list[str] = []
    use_table = array.dtype.kind in "ui" and array.dtype.itemsize <= 2
    rescale = _rescale(dataset, frame_number)
    if use_table:
        # Every possible stored value, in the order of its unsigned bit pattern, so that
        # the table is indexed by the array viewed as unsigned (no widening copy).
        unsigned = np.dtype(f"u{array.dtype.itemsize}")
        domain = (
            np.arange(2 ** (8 * array.dtype.itemsize), dtype=np.int64)
            .astype(unsigned)
            .view(array.dtype)
        )
        modality, step = modality_lut(domain, dataset, frame_number=frame_number)

        def to_modality(stored: np.ndarray) -> np.ndarray:
            return modality[stored.view(unsigned)]
    else:
        modality = None
        _, step = modality_lut(np.zeros(1), dataset, frame_number=frame_number)

        def to_modality(stored: np.ndarray) -> np.ndarray:
            return modality_lut(stored, dataset, frame_number=frame_number)[0]

    steps.append(step)

    transform: Callable[[np.ndarray], np.ndarray]
    if window is None:
        window = _dataset_window(dataset, frame_number)
        origin = "image window"
    else:
        origin = "requested window"
    voi_seq = dataset.get("VOILUTSequence")
    linear_window = window
    if window is not None:
        transform = window.apply
        steps.append(
            f"voi: {origin} centre {window.center:g} width {window.width:g} {window.function}"
        )
    elif voi_seq:
        first, bits, table = _lut(voi_seq[0], dataset, "VOI LUT Sequence")
        top = float(2**bits - 1)

        def transform(values: np.ndarray) -> np.ndarray:
            return _apply_table(values, first, table) / top

        steps.append(f"voi: LUT sequence ({table.size} entries from {first}, {bits} bits)")
    else:
        sample = _sample(array)
        mask = _padding_mask(sample, dataset)
        if mask is not None:
            sample = sample[~mask]
        percentile = _percentile_window(to_modality(sample))
        transform = percentile.apply
        linear_window = None  # clips the tails by design
        steps.append(
            f"voi: percentile window {PERCENTILE_WINDOW} centre {percentile.center:g} width "
            f"{percentile.width:g}"
        )
    invert = photometric_interpretation == "MONOCHROME1"
    if invert:
        steps.append("invert: MONOCHROME1")

    affine = _affine(array, rescale, linear_window, invert)
    if affine is not None:
        return GrayscaleResult(array=array, steps=tuple(steps), scale=affine[0], offset=affine[1])
    if use_table:
        table_values = transform(modality)
        if invert:
            table_values = 1.0 - table_values
        table_u16 = np.round(np.clip(table_values, 0.0, 1.0) * 65535.0).astype(np.uint16)
        return GrayscaleResult(
            array=np.take(table_u16, array.view(unsigned)), steps=tuple(steps), scale=1.0 / 65535.0
        )
    values = to_modality(array).astype(np.float32, copy=False)
    out = transform(values).astype(np.float32, copy=False)
    if invert:
        np.subtract(1.0, out, out=out)
    return GrayscaleResult(array=out, steps=tuple(steps))
