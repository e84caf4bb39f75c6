"""Grayscale pipeline: VOI LUT functions per PS3.3 C.11.2.1.2, modality rescale,
percentile window, functional groups, MONOCHROME1, signed and 32-bit data."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut, apply_windowing
from pydicom.sequence import Sequence

from engine.model import ResizeMode
from engine.pixels import Window, prepare_image
from engine.pixels.geometry import fit_to_size
from engine.pixels.grayscale import grayscale_to_unit

#: The table path stores P-values in 16 bits: at most half a step of 1/65535 off.
QUANTUM = 0.5 / 65535 + 1e-7
RAMP16 = np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64)  # every 16th value


def _native(ds):
    return prepare_image(ds, size=(ds.Columns, ds.Rows)).array[..., 0]


def test_linear_window_follows_the_standard_formula() -> None:
    # c = 100, w = 11: x <= c - 0.5 - (w-1)/2 = 94.5 -> 0; x > c - 0.5 + (w-1)/2 = 104.5 -> 1
    w = Window(100, 11, "LINEAR")
    x = np.array([90.0, 94.5, 95.0, 100.0, 104.5, 104.6, 120.0])
    expected = np.clip((x - 99.5) / 10 + 0.5, 0, 1)
    np.testing.assert_allclose(w.apply(x), expected)
    assert w.apply(np.array([94.5]))[0] == 0.0 and w.apply(np.array([104.6]))[0] == 1.0
    assert Window(100, 10, "LINEAR_EXACT").apply(np.array([95.0, 100.0, 105.0])).tolist() == [
        0.0,
        0.5,
        1.0,
    ]
    sigmoid = Window(100, 10, "SIGMOID").apply(np.array([100.0, 105.0]))
    np.testing.assert_allclose(sigmoid, [0.5, 1 / (1 + np.exp(-2))])
    with pytest.raises(ValueError, match="width"):
        Window(100, 0.5, "LINEAR")
    with pytest.raises(ValueError, match="function"):
        Window(100, 10, "GAMMA")


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_in_the_image_matches_pydicom(make_image, function: str) -> None:
    ds = make_image(
        RAMP16,
        RescaleSlope=0.5,
        RescaleIntercept=-1000,
        WindowCenter=[9000, 40],
        WindowWidth=[12000, 400],
        VOILUTFunction=function,
    )
    # pydicom maps the window onto the rescaled range of the stored values, [-1000, 31767.5]
    y_min, y_max = -1000.0, 65535 * 0.5 - 1000
    expected = (apply_windowing(apply_modality_lut(RAMP16, ds), ds) - y_min) / (y_max - y_min)
    np.testing.assert_allclose(_native(ds), expected, atol=2e-5)


def test_requested_window_overrides_the_image(make_image) -> None:
    ds = make_image(RAMP16, WindowCenter=30000, WindowWidth=60000)
    out = prepare_image(ds, size=(64, 64), window=Window(1000, 2000, "LINEAR_EXACT")).array[..., 0]
    np.testing.assert_allclose(out, np.clip(RAMP16 / 2000.0, 0, 1), atol=QUANTUM)


def test_monochrome1_is_the_inverse_of_monochrome2(make_image) -> None:
    m2 = _native(make_image(RAMP16, WindowCenter=20000, WindowWidth=30000))
    m1 = _native(
        make_image(
            RAMP16, photometric_interpretation="MONOCHROME1", WindowCenter=20000, WindowWidth=30000
        )
    )
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)
    assert m2[0, 0] == 0.0 and m1[0, 0] == 1.0  # low values: black in M2, white in M1


def test_signed_values_with_rescale(make_image) -> None:
    rng = np.random.default_rng(1)
    stored = rng.integers(-2048, 2048, size=(50, 70), dtype=np.int16)
    ds = make_image(
        stored,
        bits_stored=12,
        RescaleSlope=2,
        RescaleIntercept=-24,
        WindowCenter=40,
        WindowWidth=400,
    )
    hu = stored.astype(np.float64) * 2 - 24
    expected = np.clip((hu - 39.5) / 399 + 0.5, 0, 1)
    np.testing.assert_allclose(_native(ds), expected, atol=QUANTUM)


def test_32_bit_values_take_the_direct_path(make_image) -> None:
    stored = np.arange(40 * 30, dtype=np.uint32).reshape(40, 30) * 100_000
    ds = make_image(
        stored,
        RescaleSlope=1,
        RescaleIntercept=0,
        WindowCenter=60_000_000,
        WindowWidth=120_000_000,
        VOILUTFunction="LINEAR_EXACT",
    )
    np.testing.assert_allclose(_native(ds), np.clip(stored / 120_000_000, 0, 1), atol=1e-6)


def test_percentile_window_ignores_padding(make_image) -> None:
    rng = np.random.default_rng(2)
    stored = rng.integers(0, 1001, size=(200, 200)).astype(np.int16)
    stored[:, :80] = -2000  # 40 % of the image is padding outside the scanned field
    ds = make_image(stored, PixelPaddingValue=-2000)
    prepared = prepare_image(ds, size=(200, 200))
    out = prepared.array[..., 0]
    assert "percentile window" in prepared.steps[1]
    body = out[:, 80:]
    # the 0.5..99.5 percentiles of 0..1000 are about 5 and 995: the body spans the full range
    assert body.min() == 0.0 and body.max() == 1.0
    assert abs(float(np.median(body)) - 0.5) < 0.02
    assert (out[:, :80] == 0.0).all()  # padding below the window is black
    # without the padding attribute the same pixels drag the low end down
    unpadded = prepare_image(make_image(stored), size=(200, 200)).array[..., 0]
    assert float(np.median(unpadded[:, 80:])) > 0.6


def test_constant_image_does_not_fail(make_image) -> None:
    out = _native(make_image(np.full((20, 30), 7, dtype=np.uint16)))
    assert np.all(out == out[0, 0])


def test_enhanced_functional_groups_rescale_and_per_frame_windows(make_image) -> None:
    frames = np.stack([RAMP16[:32], RAMP16[32:]])  # two 32 x 64 frames
    ds = make_image(
        frames, NumberOfFrames=2, sop_class_uid="1.2.840.10008.5.1.4.1.1.4.1", modality="MR"
    )
    pvt = Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 2, -100, "US"
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([pvt])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for center, width in ((20000, 40000), (100000, 20000)):
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth, voi.VOILUTFunction = center, width, "LINEAR_EXACT"
        item = Dataset()
        item.FrameVOILUTSequence = Sequence([voi])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    for frame, (center, width) in ((1, (20000, 40000)), (2, (100000, 20000))):
        prepared = prepare_image(ds, frame_number=frame, size=(64, 32))
        values = frames[frame - 1].astype(np.float64) * 2 - 100
        expected = np.clip((values - center) / width + 0.5, 0, 1)
        np.testing.assert_allclose(prepared.array[..., 0], expected, atol=QUANTUM)
        assert "rescale slope 2 intercept -100" in prepared.steps[0]


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_linear_shortcut_equals_windowing_before_resizing(make_image, photometric: str) -> None:
    """When rescale and window are linear over the image's values, the stored frame is
    resized first and mapped after: the same result as windowing first."""
    yy, xx = np.mgrid[0:300, 0:410]
    stored = (2000 + 1500 * np.sin(xx / 23.0) * np.cos(yy / 17.0)).astype(np.uint16)  # 500..3500
    ds = make_image(
        stored,
        photometric_interpretation=photometric,
        RescaleSlope=1.5,
        RescaleIntercept=-500,
        WindowCenter=2200,
        WindowWidth=6000,
    )  # [-800, 5199] covers 1.5*[500, 3500]-500
    result = grayscale_to_unit(stored, ds, photometric_interpretation=photometric)
    assert np.shares_memory(result.array, stored)  # the shortcut was taken
    reference = Window(2200, 6000).apply(stored * 1.5 - 500).astype(np.float32)
    if photometric == "MONOCHROME1":
        reference = 1 - reference
    for mode in (ResizeMode.STRETCH, ResizeMode.LETTERBOX):
        prepared = prepare_image(ds, size=(97, 61), resize_mode=mode)
        np.testing.assert_allclose(
            prepared.array, fit_to_size(reference, prepared.transform), atol=2e-6
        )
    # a narrower window clips some pixels: no shortcut, but the same picture at full size
    narrow = make_image(
        stored, photometric_interpretation=photometric, WindowCenter=2000, WindowWidth=1000
    )
    clipped = grayscale_to_unit(stored, narrow, photometric_interpretation=photometric)
    assert not np.shares_memory(clipped.array, stored)
    expected = Window(2000, 1000).apply(stored.astype(np.float64))
    if photometric == "MONOCHROME1":
        expected = 1 - expected
    np.testing.assert_allclose(clipped.unit(), expected, atol=QUANTUM)
