"""Fitting source pixels into the model input, and mapping coordinates back.

Coordinate conventions
----------------------
*Source pixel space* is the DICOM image's own pixel grid (``engine.report.Box``):
x is the column, y the row, the origin is the top-left **corner** of the top-left
pixel, so pixel ``(c, r)`` covers ``[c, c + 1) x [r, r + 1)`` and the whole image is
``Box(0, 0, Columns, Rows)``.

*Model pixel space* is the same convention on the model input of ``size =
(width, height)``: the whole input is ``(0, 0, width, height)``.

*Normalised model coordinates* are MedRegA's integers 0–999 ``(x1, y1, x2, y2)``.
MedRegA's code de-normalises with ``x / 999 * width`` (its paper says the range is
``[0, 1000)``; the code is what the model was trained and evaluated with), so
``999`` is the right/bottom **edge** of the input and ``(0, 0, 999, 999)`` is the
whole input. :meth:`ImageTransform.from_normalized` follows the code exactly;
:meth:`ImageTransform.to_normalized` is its inverse rounded to the nearest integer
(one quantisation step is ``width / 999`` model pixels).

The mapping between model and source pixels is the exact affine map that the
resampling used: the ``crop`` region of the source (``cw x ch`` pixels) is
resampled onto ``content_width x content_height`` model pixels, and Pillow's
resampling is corner-aligned (output pixel ``i`` samples the source around
``(i + 0.5) * cw / content_width``), so ``x_model = (x_src - crop_x) * scale_x +
pad_left`` with ``scale_x = content_width / cw`` holds for every point, not only
pixel centres.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from engine.model import ResizeMode
from engine.pixels.errors import CoordinateError
from engine.report import Box

__all__ = ["NORMALIZED_MAX", "ImageTransform", "fit_to_size", "plan_transform"]

#: The largest MedRegA coordinate; de-normalisation divides by this (MedRegA's code).
NORMALIZED_MAX = 999

#: The resampling filter: bicubic, as InternVL/MedRegA's ``T.Resize(..., BICUBIC)`` on a PIL image.
_RESAMPLE = Image.Resampling.BICUBIC


def _check_size(name: str, value: object) -> tuple[int, int]:
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
        or not all(v >= 1 for v in value)
    ):
        raise ValueError(f"{name} must be (width, height) positive ints, got {value!r}")
    return (int(value[0]), int(value[1]))


@dataclass(frozen=True)
class ImageTransform:
    """Every step from one source frame to the model input, and its exact inverse.

    Parameters
    ----------
    source_size
        ``(Columns, Rows)`` of the source frame.
    output_size
        ``(width, height)`` of the model input.
    resize_mode
        :class:`~engine.model.ResizeMode` used (STRETCH or LETTERBOX).
    crop
        ``(x_min, y_min, x_max, y_max)`` integer source pixels that were resampled
        (the whole frame ``(0, 0, Columns, Rows)`` when nothing was cropped).
    padding
        ``(left, top, right, bottom)`` model pixels of padding (all 0 for STRETCH).
    frame_number
        1-based frame of a multi-frame source, ``None`` for single-frame images.

    Notes
    -----
    ``scale_x`` and ``scale_y`` (model pixels per source pixel) are derived from the
    fields, so the record cannot contradict itself.
    """

    source_size: tuple[int, int]
    output_size: tuple[int, int]
    resize_mode: ResizeMode
    crop: tuple[int, int, int, int]
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    frame_number: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "source_size", _check_size("source_size", self.source_size))
        object.__setattr__(self, "output_size", _check_size("output_size", self.output_size))
        try:
            object.__setattr__(self, "resize_mode", ResizeMode(self.resize_mode))
        except ValueError:
            raise ValueError(
                f"resize_mode must be a ResizeMode, got {self.resize_mode!r}"
            ) from None
        columns, rows = self.source_size
        crop = tuple(int(v) for v in self.crop)
        if len(crop) != 4 or not (
            0 <= crop[0] < crop[2] <= columns and 0 <= crop[1] < crop[3] <= rows
        ):
            raise ValueError(
                f"crop must be (x_min, y_min, x_max, y_max) inside {columns}x{rows}, got "
                f"{self.crop!r}"
            )
        object.__setattr__(self, "crop", crop)
        padding = tuple(int(v) for v in self.padding)
        width, height = self.output_size
        if (
            len(padding) != 4
            or min(padding) < 0
            or padding[0] + padding[2] >= width
            or padding[1] + padding[3] >= height
        ):
            raise ValueError(
                "padding must be (left, top, right, bottom) >= 0 leaving content, got "
                f"{self.padding!r}"
            )
        if self.resize_mode is ResizeMode.STRETCH and any(padding):
            raise ValueError("padding must be (0, 0, 0, 0) for ResizeMode.STRETCH")
        object.__setattr__(self, "padding", padding)
        if self.frame_number is not None and (
            isinstance(self.frame_number, bool)
            or not isinstance(self.frame_number, int)
            or self.frame_number < 1
        ):
            raise ValueError(
                f"frame_number must be a 1-based int or None, got {self.frame_number!r}"
            )

    # -- derived geometry -------------------------------------------------------------

    @property
    def content_size(self) -> tuple[int, int]:
        """``(width, height)`` of the model-input area that holds image content."""
        left, top, right, bottom = self.padding
        return (self.output_size[0] - left - right, self.output_size[1] - top - bottom)

    @property
    def scale_x(self) -> float:
        """Model pixels per source pixel along x."""
        return self.content_size[0] / (self.crop[2] - self.crop[0])

    @property
    def scale_y(self) -> float:
        """Model pixels per source pixel along y."""
        return self.content_size[1] / (self.crop[3] - self.crop[1])

    # -- model pixels <-> source pixels ----------------------------------------------

    def _x_to_source(self, x: float) -> float:
        return (x - self.padding[0]) * (self.crop[2] - self.crop[0]) / self.content_size[
            0
        ] + self.crop[0]

    def _y_to_source(self, y: float) -> float:
        return (y - self.padding[1]) * (self.crop[3] - self.crop[1]) / self.content_size[
            1
        ] + self.crop[1]

    def _x_to_model(self, x: float) -> float:
        return (x - self.crop[0]) * self.content_size[0] / (
            self.crop[2] - self.crop[0]
        ) + self.padding[0]

    def _y_to_model(self, y: float) -> float:
        return (y - self.crop[1]) * self.content_size[1] / (
            self.crop[3] - self.crop[1]
        ) + self.padding[1]

    def to_source_box(self, x_min: float, y_min: float, x_max: float, y_max: float) -> Box:
        """Map a box in model-input pixels to source pixels.

        Parameters
        ----------
        x_min, y_min, x_max, y_max
            Corners in model-input pixel space (origin at the top-left corner of
            the input, ``(0, 0, width, height)`` is the whole input).

        Returns
        -------
        engine.report.Box
            The box in source pixel space (DICOM column/row, origin at the top-left
            corner of the top-left pixel). A box reaching into letterbox padding maps
            past the image edge; exporters clip it.

        Raises
        ------
        CoordinateError
            If the values are not finite numbers with ``x_min < x_max`` and
            ``y_min < y_max``.
        """
        values = _check_corners(x_min, y_min, x_max, y_max)
        return Box(
            self._x_to_source(values[0]),
            self._y_to_source(values[1]),
            self._x_to_source(values[2]),
            self._y_to_source(values[3]),
        )

    def to_model_box(self, box: Box) -> tuple[float, float, float, float]:
        """Map a source-pixel :class:`~engine.report.Box` to model-input pixels
        ``(x_min, y_min, x_max, y_max)`` (the inverse of :meth:`to_source_box`)."""
        if not isinstance(box, Box):
            raise CoordinateError(f"box must be an engine.report.Box, got {type(box).__name__}")
        return (
            self._x_to_model(box.x_min),
            self._y_to_model(box.y_min),
            self._x_to_model(box.x_max),
            self._y_to_model(box.y_max),
        )

    # -- MedRegA normalised coordinates ------------------------------------------------

    def from_normalized(self, coords: Sequence[float]) -> Box:
        """Map MedRegA coordinates ``(x1, y1, x2, y2)`` in 0–999 to source pixels.

        De-normalises as MedRegA's code does, ``x / 999 * width`` and
        ``y / 999 * height`` of the model input (not ``/ 1000`` as its paper's
        ``[0, 1000)`` suggests), then maps through :meth:`to_source_box`. Under
        STRETCH, ``(0, 0, 999, 999)`` is exactly the whole (cropped) image.

        Raises
        ------
        CoordinateError
            If there are not four numbers in ``[0, 999]`` with ``x1 < x2`` and
            ``y1 < y2``.
        """
        values = _check_normalized(coords)
        width, height = self.output_size
        return self.to_source_box(
            values[0] * width / NORMALIZED_MAX,
            values[1] * height / NORMALIZED_MAX,
            values[2] * width / NORMALIZED_MAX,
            values[3] * height / NORMALIZED_MAX,
        )

    def to_normalized(self, box: Box) -> tuple[int, int, int, int]:
        """Map a source-pixel box to MedRegA integers 0–999 (inverse of
        :meth:`from_normalized`, rounded to the nearest step and clamped to
        ``[0, 999]``). A box smaller than one step (``width / 999`` model pixels)
        may collapse to ``x1 == x2``."""
        width, height = self.output_size
        x_min, y_min, x_max, y_max = self.to_model_box(box)
        scale = (
            NORMALIZED_MAX / width,
            NORMALIZED_MAX / height,
            NORMALIZED_MAX / width,
            NORMALIZED_MAX / height,
        )
        return tuple(  # type: ignore[return-value]
            min(NORMALIZED_MAX, max(0, math.floor(v * s + 0.5)))
            for v, s in zip((x_min, y_min, x_max, y_max), scale, strict=True)
        )


def _check_corners(*values: object) -> tuple[float, float, float, float]:
    out = []
    for name, value in zip(("x_min", "y_min", "x_max", "y_max"), values, strict=True):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise CoordinateError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise CoordinateError(f"{name} must be finite, got {value!r}")
        out.append(float(value))
    if not (out[0] < out[2] and out[1] < out[3]):
        raise CoordinateError(f"a box needs x_min < x_max and y_min < y_max, got {tuple(out)}")
    return tuple(out)  # type: ignore[return-value]


def _check_normalized(coords: Sequence[float]) -> tuple[float, float, float, float]:
    try:
        values = tuple(coords)
    except TypeError:
        raise CoordinateError(f"coords must be (x1, y1, x2, y2), got {coords!r}") from None
    if len(values) != 4:
        raise CoordinateError(f"coords must be four values (x1, y1, x2, y2), got {coords!r}")
    checked = _check_corners(*values)
    if not all(0 <= v <= NORMALIZED_MAX for v in checked):
        raise CoordinateError(
            f"normalised coords must lie in [0, {NORMALIZED_MAX}], got {coords!r}"
        )
    return checked


def plan_transform(
    source_size: tuple[int, int],
    *,
    size: tuple[int, int],
    resize_mode: ResizeMode,
    crop: tuple[int, int, int, int] | None = None,
    frame_number: int | None = None,
) -> ImageTransform:
    """Decide the transform for a source frame: where its (cropped) pixels land.

    STRETCH fills ``size`` exactly. LETTERBOX scales by ``min(width / cw, height /
    ch)``, rounds the content to whole pixels (so the exact per-axis scale is
    recorded) and centres it, padding the rest (extra odd pixel right/bottom).
    """
    columns, rows = _check_size("source_size", source_size)
    width, height = _check_size("size", size)
    crop = (0, 0, columns, rows) if crop is None else crop
    resize_mode = ResizeMode(resize_mode)
    padding = (0, 0, 0, 0)
    if resize_mode is ResizeMode.LETTERBOX:
        cw, ch = crop[2] - crop[0], crop[3] - crop[1]
        if cw <= 0 or ch <= 0:
            raise ValueError(f"crop must have a positive width and height, got {crop!r}")
        scale = min(width / cw, height / ch)
        content_w = min(width, max(1, round(cw * scale)))
        content_h = min(height, max(1, round(ch * scale)))
        left, top = (width - content_w) // 2, (height - content_h) // 2
        padding = (left, top, width - content_w - left, height - content_h - top)
    return ImageTransform(
        source_size=(columns, rows),
        output_size=(width, height),
        resize_mode=resize_mode,
        crop=crop,
        padding=padding,
        frame_number=frame_number,
    )


def _resample(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resample of one plane to ``size`` (width, height) as float32.

    8- and 16-bit planes enter Pillow as ``L`` / ``I;16`` and are converted to ``F``
    inside Pillow (exact for integers, and cheaper than a float32 copy)."""
    if plane.shape[::-1] == size:
        return np.array(plane, dtype=np.float32)
    if plane.dtype in (np.uint8, np.uint16):
        image = Image.fromarray(np.ascontiguousarray(plane)).convert("F")
    else:
        image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
    return np.array(image.resize(size, _RESAMPLE), dtype=np.float32)


def fit_to_size(
    array: np.ndarray, transform: ImageTransform, *, scale: float = 1.0, offset: float = 0.0
) -> np.ndarray:
    """Resample ``array`` as ``transform`` says (crop, bicubic resize, pad with 0).

    Parameters
    ----------
    array
        (rows, columns) or (rows, columns, 3) values whose intensities in ``[0, 1]``
        are ``array * scale + offset`` (float32 in [0, 1] with the defaults).
    transform
        The plan (:func:`plan_transform`).
    scale, offset
        Linear map applied after resampling (bicubic weights sum to one, so mapping
        after resampling equals mapping before it).

    Returns
    -------
    numpy.ndarray
        float32 (height, width, 3) clipped to [0, 1]; padding is 0.
    """
    columns, rows = transform.source_size
    if array.shape[:2] != (rows, columns):
        raise ValueError(
            f"array shape {array.shape[:2]} does not match source_size {transform.source_size}"
        )
    x0, y0, x1, y1 = transform.crop
    if (x0, y0, x1, y1) != (0, 0, columns, rows):
        array = array[y0:y1, x0:x1]
    content = transform.content_size
    planes = [array] if array.ndim == 2 else [array[..., c] for c in range(array.shape[2])]
    resized = []
    for plane in planes:
        values = _resample(plane, content)
        if scale != 1.0:
            values *= np.float32(scale)
        if offset != 0.0:
            values += np.float32(offset)
        resized.append(values)
    width, height = transform.output_size
    left, top, _, _ = transform.padding
    out = np.zeros((height, width, 3), dtype=np.float32)
    region = out[top : top + content[1], left : left + content[0]]
    if len(resized) == 1:
        region[...] = resized[0][..., None]
    else:
        for c in range(3):
            region[..., c] = resized[c]
    np.clip(out, 0.0, 1.0, out=out)
    return out
