"""ImageTransform: model coordinates map back to source pixels exactly (golden values,
round trips on non-square images, and where the pixels really land)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.model import ResizeMode
from engine.pixels import CoordinateError, ImageTransform, prepare_image
from engine.pixels.geometry import plan_transform
from engine.report import Box

MODES = [ResizeMode.STRETCH, ResizeMode.LETTERBOX]


def assert_box_close(actual: Box, expected: tuple[float, float, float, float], tol: float) -> None:
    got = (actual.x_min, actual.y_min, actual.x_max, actual.y_max)
    assert all(abs(a - e) <= tol for a, e in zip(got, expected, strict=True)), (got, expected, tol)


# -- golden values, worked by hand ----------------------------------------------------


def test_stretch_golden_whole_image_and_thirds() -> None:
    t = plan_transform((300, 200), size=(448, 448), resize_mode=ResizeMode.STRETCH)
    assert (t.scale_x, t.scale_y) == (448 / 300, 448 / 200)
    # MedRegA divides by 999: 999 is the right/bottom edge, so this is the whole image.
    assert_box_close(t.from_normalized((0, 0, 999, 999)), (0, 0, 300, 200), 1e-9)
    # 333/999 of 300 columns is column 100; 666/999 is 200; rows 0..999 are the whole height.
    assert_box_close(t.from_normalized((333, 0, 666, 999)), (100, 0, 200, 200), 1e-9)
    assert t.to_normalized(Box(0, 0, 300, 200)) == (0, 0, 999, 999)
    assert t.to_normalized(Box(100, 50, 200, 150)) == (
        333,
        250,
        666,
        749,
    )  # 249.75 -> 250, 749.25 -> 749


def test_divides_by_999_not_1000() -> None:
    """Pins MedRegA's code convention: x / 999 * width (the paper's [0, 1000) would give 1000)."""
    t = plan_transform((999, 999), size=(999, 999), resize_mode=ResizeMode.STRETCH)
    box = t.from_normalized((0, 0, 999, 500))
    assert box.x_max == pytest.approx(999.0)  # /1000 would give 998.001
    assert box.y_max == pytest.approx(500.0)


def test_letterbox_golden_pads_and_maps_padding_outside_image() -> None:
    t = plan_transform((300, 200), size=(448, 448), resize_mode=ResizeMode.LETTERBOX)
    # scale = min(448/300, 448/200) = 448/300; content 448 x round(200*448/300 = 298.67) = 299
    assert t.content_size == (448, 299)
    assert t.padding == (0, 74, 0, 75)
    assert t.scale_x == 448 / 300 and t.scale_y == 299 / 200
    # The content area maps to the whole image ...
    assert_box_close(t.to_source_box(0, 74, 448, 373), (0, 0, 300, 200), 1e-9)
    # ... and the whole canvas reaches into the padding, past the image edges.
    assert_box_close(
        t.from_normalized((0, 0, 999, 999)), (0, -74 * 200 / 299, 300, 374 * 200 / 299), 1e-9
    )


def test_rg1_golden_values() -> None:
    """RG1_J2KI.dcm is 1841 columns x 1955 rows."""
    stretch = plan_transform((1841, 1955), size=(448, 448), resize_mode=ResizeMode.STRETCH)
    assert_box_close(stretch.from_normalized((0, 0, 999, 999)), (0, 0, 1841, 1955), 1e-9)
    letterbox = plan_transform((1841, 1955), size=(448, 448), resize_mode=ResizeMode.LETTERBOX)
    # scale 448/1955; content round(1841 * 448 / 1955 = 421.88) = 422 wide, padded 13 + 13
    assert letterbox.padding == (13, 0, 13, 0)
    assert_box_close(letterbox.to_source_box(13, 0, 435, 448), (0, 0, 1841, 1955), 1e-9)
    # 13 / 448 * 999 = 28.99 -> 29; 435 / 448 * 999 = 969.99 -> 970
    assert letterbox.to_normalized(Box(0, 0, 1841, 1955)) == (29, 0, 970, 999)


def test_crop_offsets_are_recorded_and_undone() -> None:
    t = plan_transform(
        (1000, 800), size=(200, 100), resize_mode=ResizeMode.STRETCH, crop=(100, 200, 500, 400)
    )
    assert (t.scale_x, t.scale_y) == (0.5, 0.5)
    assert_box_close(t.to_source_box(0, 0, 200, 100), (100, 200, 500, 400), 1e-12)
    assert_box_close(t.from_normalized((0, 0, 999, 999)), (100, 200, 500, 400), 1e-9)


# -- round trips ---------------------------------------------------------------------


def _round_trip(t: ImageTransform, box: Box) -> None:
    model = t.to_model_box(box)
    back = t.to_source_box(*model)
    scale = max(t.source_size)
    assert_box_close(back, (box.x_min, box.y_min, box.x_max, box.y_max), 1e-9 * scale)
    # One normalised step is width/999 model pixels, i.e. width/999/scale_x source pixels;
    # rounding to the nearest step errs by at most half of it.
    step_x = t.output_size[0] / 999 / t.scale_x
    step_y = t.output_size[1] / 999 / t.scale_y
    normalized = t.to_normalized(box)
    assert all(isinstance(v, int) and 0 <= v <= 999 for v in normalized)
    if normalized[0] < normalized[2] and normalized[1] < normalized[3]:
        again = t.from_normalized(normalized)
        for got, want, step in zip(
            (again.x_min, again.y_min, again.x_max, again.y_max),
            (box.x_min, box.y_min, box.x_max, box.y_max),
            (step_x, step_y, step_x, step_y),
            strict=True,
        ):
            assert abs(got - want) <= 0.5 * step + 1e-9, (got, want, step)


@pytest.mark.parametrize("mode", MODES)
def test_round_trip_on_rg1_size(mode: ResizeMode) -> None:
    t = plan_transform((1841, 1955), size=(448, 448), resize_mode=mode)
    rng = np.random.default_rng(0)
    for _ in range(200):
        x = np.sort(rng.uniform(0, 1841, 2))
        y = np.sort(rng.uniform(0, 1955, 2))
        if x[1] - x[0] > 1e-3 and y[1] - y[0] > 1e-3:
            _round_trip(t, Box(x[0], y[0], x[1], y[1]))
    # a source step is 1/999 of the size under STRETCH
    if mode is ResizeMode.STRETCH:
        assert t.output_size[0] / 999 / t.scale_x == pytest.approx(1841 / 999)


@settings(max_examples=150, deadline=None)
@given(
    columns=st.integers(1, 4000),
    rows=st.integers(1, 4000),
    width=st.integers(8, 1024),
    height=st.integers(8, 1024),
    mode=st.sampled_from(MODES),
    fractions=st.lists(st.floats(0, 1), min_size=4, max_size=4),
)
def test_round_trip_property(
    columns: int, rows: int, width: int, height: int, mode: ResizeMode, fractions: list[float]
) -> None:
    t = plan_transform((columns, rows), size=(width, height), resize_mode=mode)
    x0, x1 = sorted((fractions[0] * columns, fractions[1] * columns))
    y0, y1 = sorted((fractions[2] * rows, fractions[3] * rows))
    if x1 - x0 < 1e-6 * columns or y1 - y0 < 1e-6 * rows:
        return
    _round_trip(t, Box(x0, y0, x1, y1))


# -- where the pixels really land ------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("crop", [None, (40, 20, 260, 190)])
def test_bright_rectangle_maps_back_to_its_source_box(make_image, mode: ResizeMode, crop) -> None:
    pixels = np.zeros((200, 300), dtype=np.uint8)
    pixels[40:120, 60:150] = 255  # source box (60, 40, 150, 120)
    ds = make_image(pixels, WindowCenter=127.5, WindowWidth=256)
    prepared = prepare_image(ds, size=(448, 320), resize_mode=mode, crop=crop)
    bright = prepared.array[..., 0] > 0.5
    rows = np.flatnonzero(bright.any(axis=1))
    cols = np.flatnonzero(bright.any(axis=0))
    found = prepared.transform.to_source_box(cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    tolerance = 1.0 / min(prepared.transform.scale_x, prepared.transform.scale_y)  # one model pixel
    assert_box_close(found, (60, 40, 150, 120), tolerance)
    # padding (letterbox) is black and lies exactly where the transform says
    left, top, _right, _bottom = prepared.transform.padding
    if top:
        assert not prepared.array[:top].any()
    if left:
        assert not prepared.array[:, :left].any()


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "coords",
    [
        (0, 0, 1000, 500),
        (-1, 0, 10, 10),
        (10, 10, 10, 20),
        (20, 10, 10, 20),
        (0, 0, 5),
        (0, 0, math.nan, 9),
        "abcd",
    ],
)
def test_from_normalized_refuses_bad_coordinates(coords) -> None:
    t = plan_transform((100, 100), size=(448, 448), resize_mode=ResizeMode.STRETCH)
    with pytest.raises(CoordinateError):
        t.from_normalized(coords)


def test_transform_validates_its_record() -> None:
    with pytest.raises(ValueError, match="crop"):
        ImageTransform((100, 50), (448, 448), ResizeMode.STRETCH, crop=(0, 0, 101, 50))
    with pytest.raises(ValueError, match="padding"):
        ImageTransform(
            (100, 50), (448, 448), ResizeMode.STRETCH, crop=(0, 0, 100, 50), padding=(1, 0, 1, 0)
        )
    with pytest.raises(ValueError, match="output_size"):
        ImageTransform((100, 50), (0, 448), ResizeMode.STRETCH, crop=(0, 0, 100, 50))
    with pytest.raises(ValueError, match="frame_number"):
        ImageTransform(
            (100, 50), (448, 448), ResizeMode.STRETCH, crop=(0, 0, 100, 50), frame_number=0
        )
    with pytest.raises(CoordinateError):
        plan_transform((100, 50), size=(448, 448), resize_mode=ResizeMode.STRETCH).to_source_box(
            5, 5, 5, 9
        )


@pytest.mark.parametrize("mode", MODES)
def test_round_trip_through_the_real_rg1_pipeline(read_dicom, mode: ResizeMode) -> None:
    """The transform prepare_image records for RG1_J2KI.dcm (1841 x 1955, non-square)."""
    prepared = prepare_image(read_dicom("RG1_J2KI.dcm"), size=(448, 448), resize_mode=mode)
    t = prepared.transform
    assert prepared.source_size == t.source_size == (1841, 1955)
    assert t.frame_number is None and t.crop == (0, 0, 1841, 1955)
    for box in (
        Box(0, 0, 1841, 1955),
        Box(412.25, 300.5, 905.75, 1500.0),
        Box(1800, 1900, 1841, 1955),
    ):
        _round_trip(t, box)
    if mode is ResizeMode.STRETCH:
        assert_box_close(t.from_normalized((0, 0, 999, 999)), (0, 0, 1841, 1955), 1e-9)
    else:
        assert_box_close(t.from_normalized((29, 0, 970, 999)), (0, 0, 1841, 1955), 0.5 * 1955 / 999)
