"""Synthetic DICOM instances for tests and benchmarks (no patient data: made up)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

__all__ = ["make_ct", "write_dataset", "write_series"]


def make_ct(
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    instance_number: int = 1,
    rows: int = 128,
    columns: int = 128,
    sop_instance_uid: str | None = None,
    patient_id: str = "RG-TEST-0001",
) -> Dataset:
    """A minimal, valid CT Image instance with uncompressed 16-bit pixels.

    ``rows * columns * 2`` bytes of pixel data: 128x128 is ~32 KB, 512x512 ~512 KB.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid or generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_instance_uid
    ds.SeriesInstanceUID = series_instance_uid
    ds.PatientName = "Test^Synthetic"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = "ACC0001"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [0.0, 0.0, float(instance_number)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.0
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    rng = np.random.default_rng(instance_number)
    ds.PixelData = rng.integers(0, 4096, size=(rows, columns), dtype=np.uint16).tobytes()
    return ds


def write_dataset(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(directory: Path, count: int, *, rows: int = 128, columns: int = 128,
                 study_instance_uid: str | None = None) -> list[Path]:
    """``count`` CT instances of one new study/series in ``directory``."""
    study = study_instance_uid or generate_uid()
    series = generate_uid()
    return [
        write_dataset(
            make_ct(
                study_instance_uid=study,
                series_instance_uid=series,
                instance_number=i + 1,
                rows=rows,
                columns=columns,
            ),
            directory / f"CT{i + 1:05d}.dcm",
        )
        for i in range(count)
    ]


def make_chest_dx(
    png: Path,
    *,
    study_instance_uid: str | None = None,
    view_position: str = "PA",
    patient_id: str = "RG-TEST-0002",
    pixel_spacing: tuple[float, float] = (0.7, 0.7),
) -> Dataset:
    """A Digital X-Ray (For Presentation) chest instance from an 8-bit grayscale PNG
    (e.g. one of ../shared/data/nih-cxr-boxes/images)."""
    from PIL import Image
    from pydicom.uid import DigitalXRayImageStorageForPresentation

    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.uint8)
    ds = make_ct(
        study_instance_uid=study_instance_uid or generate_uid(),
        series_instance_uid=generate_uid(),
        rows=4,
        columns=4,
        patient_id=patient_id,
    )
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    for keyword in (
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "SliceThickness",
        "RescaleIntercept",
        "RescaleSlope",
        "PixelSpacing",
    ):
        delattr(ds, keyword)
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view_position
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = list(pixel_spacing)
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels.tobytes()
    return ds
