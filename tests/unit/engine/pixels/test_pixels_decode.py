"""Refusals name what is wrong; colour conversions of synthetic images are exact."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, generate_uid

from engine.pixels import (
    DecodeError,
    FrameSelectionError,
    InvalidImageError,
    NotAnImageError,
    UnsupportedPixelDataError,
    non_image_reason,
    prepare_image,
)

SIZE = (32, 32)
IMAGE = np.arange(16 * 24, dtype=np.uint16).reshape(16, 24) * 10


@pytest.mark.parametrize(
    ("sop_class_uid", "modality", "words"),
    [
        ("1.2.840.10008.5.1.4.1.1.88.33", "SR", "structured report"),
        ("1.2.840.10008.5.1.4.1.1.11.1", "PR", "presentation state"),
        ("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT", "RT structure set"),
        ("1.2.840.10008.5.1.4.1.1.66.4", "SEG", "segmentation"),
        ("1.2.840.10008.5.1.4.1.1.104.1", "DOC", "encapsulated document"),
        ("1.2.840.10008.5.1.4.1.1.7", "SEG", "Modality SEG"),
    ],
)
def test_non_image_objects_are_refused_with_their_kind(
    make_image, sop_class_uid, modality, words
) -> None:
    ds = make_image(IMAGE, sop_class_uid=sop_class_uid, modality=modality)
    with pytest.raises(NotAnImageError, match=words):
        prepare_image(ds, size=SIZE)
    assert "not an image to infer on" in non_image_reason(ds)


def test_no_pixel_data_is_not_an_image(make_image) -> None:
    ds = make_image(IMAGE)
    del ds.PixelData
    with pytest.raises(NotAnImageError, match="no Pixel Data"):
        prepare_image(ds, size=SIZE)


def test_rt_image_is_an_image(make_image) -> None:
    assert (
        non_image_reason(
            make_image(IMAGE, sop_class_uid="1.2.840.10008.5.1.4.1.1.481.1", modality="RTIMAGE")
        )
        is None
    )


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        (lambda ds: delattr(ds, "Rows"), InvalidImageError, "Rows"),
        (
            lambda ds: setattr(ds, "PhotometricInterpretation", "CMYK"),
            UnsupportedPixelDataError,
            "CMYK",
        ),
        (lambda ds: setattr(ds, "SamplesPerPixel", 3), InvalidImageError, "Samples per Pixel"),
        (lambda ds: delattr(ds, "file_meta"), InvalidImageError, "Transfer Syntax UID"),
        (
            lambda ds: setattr(ds, "SOPInstanceUID", "not-a-uid"),
            InvalidImageError,
            "SOP Instance UID",
        ),
        (lambda ds: delattr(ds, "SOPInstanceUID"), InvalidImageError, "SOP Instance UID"),
        (
            lambda ds: setattr(ds, "PixelData", ds.PixelData[:100]),
            DecodeError,
            "Explicit VR Little Endian",
        ),
        (
            lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", "1.2.840.10008.1.2.8.1"),
            UnsupportedPixelDataError,
            "1.2.840.10008.1.2.8.1",
        ),
    ],
)
def test_broken_images_are_refused_with_a_reason(make_image, change, error, words) -> None:
    ds = make_image(IMAGE)
    change(ds)
    with pytest.raises(error, match=words):
        prepare_image(ds, size=SIZE)


def test_corrupt_jpeg2000_is_a_decode_error(make_image) -> None:
    ds = make_image(IMAGE)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    with pytest.raises(DecodeError, match="JPEG 2000"):
        prepare_image(ds, size=SIZE)


def test_frame_number_is_checked(make_image) -> None:
    with pytest.raises(FrameSelectionError, match="single-frame"):
        prepare_image(make_image(IMAGE), frame_number=2, size=SIZE)
    with pytest.raises(FrameSelectionError, match="1-based"):
        prepare_image(make_image(IMAGE), frame_number=True, size=SIZE)
    single = make_image(IMAGE[None], NumberOfFrames=1)
    assert prepare_image(single, size=SIZE).image.frame_number == 1  # a one-frame multi-frame IOD


def test_sixteen_bit_rgb_is_scaled_by_bits_stored(make_image) -> None:
    rgb = np.zeros((8, 10, 3), dtype=np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 4095, 2048, 0
    out = prepare_image(
        make_image(rgb, photometric_interpretation="RGB", bits_stored=12), size=(10, 8)
    ).array
    np.testing.assert_allclose(out[0, 0], [1.0, 2048 / 4095, 0.0], atol=1e-6)


def test_planar_configuration_one_gives_the_same_rgb(make_image) -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(12, 20, 3), dtype=np.uint8)
    interleaved = make_image(rgb, photometric_interpretation="RGB")
    planar = make_image(rgb, photometric_interpretation="RGB")
    planar.PlanarConfiguration = 1
    planar.PixelData = np.ascontiguousarray(rgb.transpose(2, 0, 1)).tobytes()
    a = prepare_image(interleaved, size=(20, 12)).array
    b = prepare_image(planar, size=(20, 12)).array
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, rgb / 255.0, atol=1e-6)


def test_uids_in_messages_are_shortened(make_image) -> None:
    ds = make_image(IMAGE)
    ds.SOPInstanceUID = generate_uid() + ".x"
    with pytest.raises(InvalidImageError) as info:
        prepare_image(ds, size=SIZE)
    assert ds.SOPInstanceUID not in str(info.value)


def test_overlay_bits_above_bits_stored_are_ignored(make_image) -> None:
    """Retired embedded overlays live in the unused high bits (Overlay Bit Position
    12..15 of a 12-bit image): they must not reach the pixels."""
    stored = (np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) % 4096).astype(np.uint16)
    burned = stored.copy()
    burned[10:20, 10:30] |= 1 << 15
    clean = make_image(stored, bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    with_overlay = make_image(burned, bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    with_overlay.add_new(0x60000102, "US", 15)  # Overlay Bit Position
    a = prepare_image(clean, size=(50, 40)).array
    b = prepare_image(with_overlay, size=(50, 40)).array
    np.testing.assert_array_equal(a, b)
