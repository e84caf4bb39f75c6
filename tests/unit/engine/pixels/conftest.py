"""Fixtures for the pixel pipeline tests: the shared DICOM files and synthetic images."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture(scope="session")
def dicom_dir(shared_data: Path) -> Path:
    """``../shared/data/dicom``: real files, one per case (see its README table)."""
    path = shared_data / "dicom"
    if not path.is_dir():
        pytest.fail(f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def read_dicom(dicom_dir: Path) -> Callable[[str], pydicom.Dataset]:
    """Read a shared file by name (its anonymised UIDs make pydicom warn; silenced)."""

    def read(name: str) -> pydicom.Dataset:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return pydicom.dcmread(dicom_dir / name)

    return read


def synthetic_image(
    pixels: np.ndarray,
    *,
    photometric_interpretation: str = "MONOCHROME2",
    sop_class_uid: str = SECONDARY_CAPTURE,
    modality: str = "OT",
    bits_stored: int | None = None,
    **attributes: Any,
) -> pydicom.Dataset:
    """A minimal uncompressed (Explicit VR Little Endian) image holding ``pixels``:
    (rows, columns) grayscale, (rows, columns, 3) colour, or (frames, rows, columns)
    when ``NumberOfFrames`` is given."""
    pixels = np.ascontiguousarray(pixels)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    colour = photometric_interpretation not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")
    frames = attributes.get("NumberOfFrames")
    shape = pixels.shape[1:] if frames is not None else pixels.shape
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric_interpretation
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.tobytes()
    return ds


@pytest.fixture
def make_image() -> Callable[..., pydicom.Dataset]:
    """Factory for :func:`synthetic_image`."""
    return synthetic_image
