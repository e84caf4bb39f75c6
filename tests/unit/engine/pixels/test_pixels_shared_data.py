"""Every real file in ../shared/data/dicom goes through prepare_image or is refused
with its specific reason, and what goes through looks right (polarity, colour,
frames, LUTs, overlays)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataelem import DataElement
from pydicom.encaps import encapsulate, generate_fragmented_frames
from pydicom.pixels import get_decoder
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi

from engine.model import ResizeMode
from engine.pixels import (
    DecodeError,
    FrameSelectionError,
    InvalidImageError,
    NotAnImageError,
    PixelError,
    prepare_image,
)
from engine.pixels.grayscale import modality_lut

#: Files that must be refused, with the error and words its reason must contain.
REFUSED = {
    "liver_rle.dcm": (NotAnImageError, "Segmentation Storage"),
    "liver_deflate.dcm": (NotAnImageError, "Segmentation Storage"),
    # anonymised with hashes: its UIDs are not DICOM UIDs, so findings could not reference it
    "bad_sequence.dcm": (InvalidImageError, "SOP Instance UID"),
}

SIZE = (448, 448)


def _first_frame(ds) -> int | None:
    return 1 if "NumberOfFrames" in ds else None


def test_every_shared_file_goes_through_or_is_refused(dicom_dir: Path, read_dicom) -> None:
    names = sorted(p.name for p in dicom_dir.glob("*.dcm"))
    # every file the data README's table lists is here (and so tested below)
    listed = set()
    for line in (dicom_dir.parent / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 2 and cells[1].endswith(".dcm"):
            for pattern in cells[1].split(","):
                matches = [p.name for p in dicom_dir.glob(pattern.strip())]
                assert matches, f"README lists {pattern.strip()} but it is missing"
                listed.update(matches)
    assert len(listed) >= 19 and listed <= set(names)
    assert set(REFUSED) <= set(names)
    for name in names:
        ds = read_dicom(name)
        if name in REFUSED:
            error, words = REFUSED[name]
            with pytest.raises(error, match=words):
                prepare_image(ds, frame_number=_first_frame(ds), size=SIZE)
            continue
        for mode in (ResizeMode.STRETCH, ResizeMode.LETTERBOX):
            prepared = prepare_image(ds, frame_number=_first_frame(ds), size=SIZE, resize_mode=mode)
            assert prepared.array.shape == (448, 448, 3) and prepared.array.dtype == np.float32, (
                name
            )
            assert 0.0 <= prepared.array.min() and prepared.array.max() <= 1.0, name
            assert prepared.array.std() > 0.05, f"{name} came out nearly flat"
            assert prepared.source_size == (ds.Columns, ds.Rows)
            assert prepared.image.sop_instance_uid == ds.SOPInstanceUID
            assert prepared.image.sop_class_uid == ds.SOPClassUID
            assert not prepared.array.flags.writeable


def test_seg_reason_is_specific(read_dicom) -> None:
    with pytest.raises(NotAnImageError) as info:
        prepare_image(read_dicom("liver_rle.dcm"), frame_number=1, size=SIZE)
    assert "not an image to infer on" in str(info.value)
    assert isinstance(info.value, PixelError)


def _region(array: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> float:
    h, w = array.shape[:2]
    return float(array[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w), 0].mean())


def test_rg1_monochrome1_is_inverted_lungs_dark_bone_bright(read_dicom) -> None:
    """A PA chest radiograph: the lung fields (either side of the midline, upper-middle
    thirds) hold air and must be darker than the mediastinum/spine in the midline and the
    sub-diaphragmatic abdomen at the bottom, which absorb more."""
    ds = read_dicom("RG1_J2KI.dcm")
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    out = prepare_image(ds, size=SIZE).array
    right_lung = _region(out, 0.18, 0.30, 0.35, 0.50)
    left_lung = _region(out, 0.65, 0.30, 0.82, 0.50)
    mediastinum = _region(out, 0.46, 0.25, 0.54, 0.55)
    abdomen = _region(out, 0.30, 0.88, 0.70, 0.97)
    assert max(right_lung, left_lung) + 0.15 < mediastinum, (right_lung, left_lung, mediastinum)
    assert max(right_lung, left_lung) + 0.15 < abdomen, (right_lung, left_lung, abdomen)
    assert "invert: MONOCHROME1" in prepare_image(ds, size=SIZE).steps


def test_j2k_lossy_and_lossless_decode_to_the_same_picture(read_dicom) -> None:
    lossy = prepare_image(read_dicom("RG3_J2KI.dcm"), size=SIZE).array
    lossless = prepare_image(read_dicom("RG3_J2KR.dcm"), size=SIZE).array
    assert np.abs(lossy - lossless).mean() < 0.01


def test_palette_colour_matches_the_lookup_tables_and_is_coloured(read_dicom) -> None:
    ds = read_dicom("OBXXXX1A_rle.dcm")
    prepared = prepare_image(ds, size=(ds.Columns, ds.Rows))  # native size: no resampling
    reference = apply_color_lut(ds.pixel_array, ds)[..., :3] / 65535.0  # 16-bit entries
    np.testing.assert_allclose(prepared.array, reference, atol=1e-6)
    spread = prepared.array.max(axis=2) - prepared.array.min(axis=2)
    assert (spread > 0.2).mean() > 0.01, "palette output has no real colour"


def test_ybr_full_is_converted_to_the_same_rgb_picture(read_dicom) -> None:
    ybr_ds, rgb_ds = read_dicom("SC_ybr_full_uncompressed.dcm"), read_dicom("SC_rgb.dcm")
    rgb = prepare_image(rgb_ds, size=(100, 100)).array
    ybr = prepare_image(ybr_ds, size=(100, 100)).array
    # the same picture: YCbCr rounding leaves at most a few levels
    assert np.abs(rgb - ybr).max() <= 6 / 255 + 1e-6
    assert np.abs(rgb - ybr).mean() < 1 / 255
    # and it needed converting: the stored YCbCr samples are far from RGB
    raw, _ = get_decoder(ybr_ds.file_meta.TransferSyntaxUID).as_array(ybr_ds, as_rgb=False)
    assert np.abs(raw / 255.0 - rgb).mean() > 0.1
    assert (rgb.max(axis=2) - rgb.min(axis=2)).max() > 0.5  # saturated colours exist


def test_ybr_ict_ultrasound_comes_out_rgb_with_colour(read_dicom) -> None:
    out = prepare_image(read_dicom("US1_J2KI.dcm"), size=SIZE).array
    spread = out.max(axis=2) - out.min(axis=2)
    assert (spread > 0.3).mean() > 0.01  # the colour Doppler overlay


@pytest.mark.parametrize(
    "name", ["emri_small_RLE.dcm", "emri_small_big_endian.dcm", "emri_small_jpeg_ls_lossless.dcm"]
)
def test_multi_frame_picks_the_requested_frame(read_dicom, name: str) -> None:
    ds = read_dicom(name)
    reference = read_dicom("emri_small_RLE.dcm").pixel_array  # all 10 frames, decoded by pydicom
    outputs = {}
    for frame in (1, 5, 10):
        prepared = prepare_image(ds, frame_number=frame, size=(64, 64))
        assert prepared.image.frame_number == frame == prepared.transform.frame_number
        outputs[frame] = prepared.array[..., 0]
        # the output is a monotonic function of that frame's stored values and no other's
        order = np.argsort(reference[frame - 1], axis=None, kind="stable")
        assert np.all(np.diff(outputs[frame].ravel()[order]) >= -1e-6)
    assert not np.allclose(outputs[1], outputs[5]) and not np.allclose(outputs[5], outputs[10])
    with pytest.raises(FrameSelectionError, match="10 frames"):
        prepare_image(ds, size=(64, 64))
    with pytest.raises(FrameSelectionError, match="outside 1..10"):
        prepare_image(ds, frame_number=11, size=(64, 64))


def test_only_the_requested_frame_is_decoded(read_dicom) -> None:
    """Frame 5's compressed data is garbage: frames 1 and 10 still decode, frame 5 is
    refused with a decode error (so decoding never touches frames nobody asked for)."""
    ds = read_dicom("emri_small_RLE.dcm")
    frames = [b"".join(f) for f in generate_fragmented_frames(ds.PixelData, number_of_frames=10)]
    reference = {n: prepare_image(ds, frame_number=n, size=(64, 64)).array for n in (1, 10)}
    frames[4] = b"\x01\x00\x00\x00" + b"\x00" * 60 + b"\xff" * 16
    ds.PixelData = encapsulate(frames)
    for n in (1, 10):
        np.testing.assert_array_equal(
            prepare_image(ds, frame_number=n, size=(64, 64)).array, reference[n]
        )
    with pytest.raises(DecodeError, match="RLE Lossless"):
        prepare_image(ds, frame_number=5, size=(64, 64))


def test_multi_frame_transfer_syntaxes_agree(read_dicom) -> None:
    outs = [
        prepare_image(read_dicom(n), frame_number=7, size=SIZE).array
        for n in (
            "emri_small_RLE.dcm",
            "emri_small_big_endian.dcm",
            "emri_small_jpeg_ls_lossless.dcm",
        )
    ]
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_voi_lut_sequence_is_applied(read_dicom) -> None:
    ds = read_dicom("vlut_04.dcm")
    prepared = prepare_image(ds, size=(ds.Columns, ds.Rows))
    assert any(s.startswith("voi: LUT sequence") for s in prepared.steps)
    reference = apply_voi(ds.pixel_array, ds) / 65535.0  # 16-bit LUT entries
    np.testing.assert_allclose(prepared.array[..., 0], reference, atol=1e-6)
    # the same table stored as OW bytes (as many writers do) gives the same picture
    as_bytes = copy.deepcopy(ds)
    table_bytes = np.asarray(ds.VOILUTSequence[0].LUTData, dtype="<u2").tobytes()
    as_bytes.VOILUTSequence[0]["LUTData"] = DataElement(0x00283006, "OW", table_bytes)
    same = prepare_image(as_bytes, size=(ds.Columns, ds.Rows)).array
    np.testing.assert_array_equal(same, prepared.array)
    # a non-linear LUT in the same file changes the picture accordingly
    bent = copy.deepcopy(ds)
    table = np.round(65535 * (np.arange(256) / 255.0) ** 2).astype(np.uint16)
    bent.VOILUTSequence[0].LUTData = [int(v) for v in table]
    out = prepare_image(bent, size=(ds.Columns, ds.Rows)).array[..., 0]
    np.testing.assert_allclose(out, (ds.pixel_array / 255.0) ** 2, atol=1e-4)


def test_modality_lut_sequence_is_applied(read_dicom) -> None:
    ds = read_dicom("mlut_18.dcm")
    stored = ds.pixel_array
    values, step = modality_lut(stored, ds)
    assert step.startswith("modality: LUT sequence")
    np.testing.assert_array_equal(values, apply_modality_lut(stored, ds))
    prepared = prepare_image(ds, size=(ds.Columns, ds.Rows))
    assert any(s.startswith("modality: LUT sequence") for s in prepared.steps)
    # a non-linear modality LUT (square of the input position) bends the output the same way
    bent = copy.deepcopy(ds)
    first = int(bent.ModalityLUTSequence[0].LUTDescriptor[1])
    positions = np.arange(4096) / 4095.0
    bent.ModalityLUTSequence[0].LUTData = [int(v) for v in np.round(65535 * positions**2)]
    bent.WindowCenter, bent.WindowWidth, bent.VOILUTFunction = 32767.5, 65535, "LINEAR_EXACT"
    out = prepare_image(bent, size=(ds.Columns, ds.Rows)).array[..., 0]
    expected = (
        np.round(65535 * ((np.clip(stored, first, first + 4095) - first) / 4095.0) ** 2) / 65535
    )
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_overlays_are_not_burned_into_the_pixels(read_dicom) -> None:
    ds = read_dicom("MR-SIEMENS-DICOM-WithOverlays.dcm")
    overlay = ds.overlay_array(0x6000)
    assert overlay.sum() > 100  # the file really carries a graphic overlay
    with_overlay = prepare_image(ds, size=(ds.Columns, ds.Rows)).array[..., 0]
    stripped = copy.deepcopy(ds)
    for tag in [t for t in stripped.keys() if t.group == 0x6000]:  # noqa: SIM118 - iterating a Dataset gives elements, keys() gives tags
        del stripped[tag]
    without = prepare_image(stripped, size=(ds.Columns, ds.Rows)).array[..., 0]
    np.testing.assert_array_equal(with_overlay, without)
    # the overlay's pixels keep the image's own values (a burned-in overlay would be white)
    window = prepare_image(ds, size=(ds.Columns, ds.Rows)).steps[1]
    assert "centre 450 width 790" in window
    assert (with_overlay[overlay.astype(bool)] < 1.0).mean() > 0.5
