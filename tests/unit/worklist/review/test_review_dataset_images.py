"""The dataset's image copies from real DICOM files (../shared/data/dicom): one frame of a
multi-frame image, colour to grayscale, a MONOCHROME1 radiograph as the pixel pipeline shows it,
and clear reasons for what cannot be copied."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worklist.review.dataset_images import ImageUnavailableError, image_size, write_image_png


@pytest.fixture
def dicom(shared_data: Path) -> Path:
    return shared_data / "dicom"


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as png:
        assert png.mode == "L" and png.info == {}
        return np.asarray(png)


def test_one_frame_of_a_multi_frame_image(dicom, tmp_path):
    source = dicom / "emri_small_jpeg_ls_lossless.dcm"
    assert write_image_png(source, 2, tmp_path / "f2.png") == (64, 64)
    assert write_image_png(source, 9, tmp_path / "f9.png") == (64, 64)
    second, ninth = _png(tmp_path / "f2.png"), _png(tmp_path / "f9.png")
    assert second.shape == (64, 64) and not np.array_equal(second, ninth)
    with pytest.raises(ImageUnavailableError, match="cannot be rendered"):
        write_image_png(source, None, tmp_path / "which.png")  # which frame? refused, not guessed


def test_colour_becomes_grayscale_at_the_source_size(dicom, tmp_path):
    assert write_image_png(dicom / "SC_rgb.dcm", None, tmp_path / "rgb.png") == (100, 100)
    gray = _png(tmp_path / "rgb.png")
    assert gray.shape == (100, 100) and gray.std() > 0


def test_the_copy_is_what_the_pixel_pipeline_shows(dicom, tmp_path):
    """MONOCHROME1, JPEG 2000: the PNG is engine.pixels' rendering (window, inversion) at the
    source size, to the nearest 8-bit step."""
    import pydicom

    from engine.pixels import prepare_image

    source = dicom / "RG1_J2KI.dcm"
    assert image_size(source) == (1841, 1955)
    write_image_png(source, None, tmp_path / "cr.png")
    gray = _png(tmp_path / "cr.png").astype(np.int16)
    shown = prepare_image(pydicom.dcmread(source), size=(1841, 1955)).array[..., 0]
    assert gray.shape == (1955, 1841)
    assert np.abs(gray - np.round(shown * 255)).max() <= 1


def test_what_cannot_be_copied_says_why(dicom, tmp_path):
    with pytest.raises(ImageUnavailableError, match="the stored file is missing"):
        write_image_png(tmp_path / "gone.dcm", None, tmp_path / "x.png")
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(ImageUnavailableError, match="cannot be read"):
        image_size(tmp_path / "junk.dcm")
    with pytest.raises(ImageUnavailableError, match="cannot be rendered"):
        write_image_png(dicom / "liver_rle.dcm", 1, tmp_path / "seg.png")  # a SEG, not an image
    assert not (tmp_path / "seg.png").exists()
