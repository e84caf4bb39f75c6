"""Secondary Capture images with burned-in findings (optional output)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from engine.report import (
    Box,
    Finding,
    FindingKind,
    GroundedReport,
    ImageRef,
    ModelInfo,
    Region,
    Task,
    Text,
    derive_uid,
)
from exporters.errors import SourceError
from exporters.sc import build_secondary_captures, render_preview
from tests.exporters_validators import dciodvfy_errors

SHARED_DICOM = (Path(__file__).resolve().parents[4] / "shared" / "data" / "dicom").resolve()
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _write_read(image: Dataset, path: Path) -> Dataset:
    image.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    return dcmread(path)


def _report(source: Dataset, boxes, *, frame=None, kind=FindingKind.ABNORMALITY) -> GroundedReport:
    findings = tuple(
        Finding(
            kind=kind,
            label=Text({"en": "nodule", "zh-CN": "结节"}),
            description=Text({"en": "A nodule.", "zh-CN": "见一结节。"}),
            regions=(Region(ImageRef(source.SOPInstanceUID, source.SOPClassUID, frame), box),),
            tracking_uid=derive_uid("radground-test", "key-image", index),
            confidence=0.9,
        )
        for index, box in enumerate(boxes)
    )
    return GroundedReport(
        study_instance_uid=source.StudyInstanceUID,
        findings=findings,
        impression=Text({"en": "A nodule.", "zh-CN": "见一结节。"}),
        model=ModelInfo.for_version(name="test", version="1", manufacturer="RadGround Project"),
        task=Task.DETECTION,
        raw_output="",
        created_at=datetime(2026, 3, 10, tzinfo=timezone.utc),
    )


def _uniform_source(value: int = 2048) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = derive_uid("radground-test", "key-image", "source")
    ds.StudyInstanceUID = derive_uid("radground-test", "key-image", "study")
    ds.SeriesInstanceUID = derive_uid("radground-test", "key-image", "series")
    ds.PatientName, ds.PatientID = "Test^Key", "RG-KEY"
    ds.Modality, ds.BodyPartExamined = "OT", "CHEST"
    ds.Rows, ds.Columns = 100, 120
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = np.full((100, 120), value, dtype="<u2").tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_key_images_are_valid_and_marked_as_unverified_ai_output(grounded_report, source_images, tmp_path):
    images = build_secondary_captures(grounded_report, source_images, language="zh-CN", revision=1)
    assert len(images) == 2 and all(isinstance(i, hd.sc.SCImage) for i in images)
    for index, (image, source) in enumerate(zip(images, source_images)):
        read = _write_read(image, tmp_path / f"{index}.dcm")
        assert read.SOPClassUID == SECONDARY_CAPTURE
        assert read.BurnedInAnnotation == "YES"
        assert list(read.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert "AI" in read.SeriesDescription and "unverified" in read.SeriesDescription
        assert "AI" in read.DerivationDescription and "unverified" in read.DerivationDescription
        assert read.SpecificCharacterSet == "ISO_IR 192"
        assert read.PatientName == source.PatientName and read.PatientID == source.PatientID
        assert read.StudyInstanceUID == source.StudyInstanceUID
        assert read.SeriesInstanceUID != source.SeriesInstanceUID
        (reference,) = read.SourceImageSequence
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert (read.Rows, read.Columns) == (source.Rows, source.Columns)
        assert read.PhotometricInterpretation == "RGB"
        assert read.BodyPartExamined == "CHEST"
        vertical, horizontal = (int(v) for v in read.PixelAspectRatio)
        row, column = (float(v) for v in source.ImagerPixelSpacing)
        assert vertical / horizontal == pytest.approx(row / column, rel=1e-3)
    assert len({i.SeriesInstanceUID for i in images}) == 1
    again = build_secondary_captures(grounded_report, source_images, language="zh-CN", revision=1)
    assert [i.SOPInstanceUID for i in again] == [i.SOPInstanceUID for i in images]
    english = build_secondary_captures(grounded_report, source_images, language="en", revision=1)
    assert english[0].SeriesInstanceUID != images[0].SeriesInstanceUID


def test_boxes_are_burned_in_where_they_are(tmp_path):
    source = _uniform_source()
    box = Box(20, 40, 70, 80)
    (image,) = build_secondary_captures(
        _report(source, [box]), [source], language="en", revision=1, graphic_color=(255, 0, 0)
    )
    pixels = _write_read(image, tmp_path / "key.dcm").pixel_array
    red = (pixels == np.array([255, 0, 0], dtype=np.uint8)).all(axis=2)
    # the outline lies on the box's edge pixels: columns 20..69, rows 40..79
    assert red[40:80, 20].all() and red[40:80, 69].all()
    assert red[79, 20:70].all()
    assert not red[:, :19].any() and not red[:, 71:].any() and not red[81:, :].any()
    # the image itself is the source windowed (2048 in a 0-4096 window: mid gray)
    assert (pixels[60, 40] == 128).all() and (pixels[10, 110] == 128).all()
    # the label sits above the box and the caption at the bottom
    rgb = pixels.astype(int)
    reddish = (rgb[..., 0] > 150) & (rgb[..., 1] < 100) & (rgb[..., 2] < 100)
    assert reddish[25:40, 20:].sum() > 20
    assert (pixels[85:100, 0:60].astype(int).sum(axis=2) > 700).sum() > 20  # white caption text


def test_multiframe_key_image_uses_the_region_frame(multiframe_source, multiframe_report, tmp_path):
    images = build_secondary_captures(multiframe_report, [multiframe_source], language="zh-CN", revision=1)
    assert len(images) == 2
    frames = multiframe_source.pixel_array
    for image, frame in zip(images, (2, 7)):
        read = _write_read(image, tmp_path / f"f{frame}.dcm")
        assert read.SourceImageSequence[0].ReferencedFrameNumber == frame
        # pixels away from boxes, labels and caption follow the right frame
        gray = read.pixel_array[32:46, 36:60, 0].astype(float)
        assert (read.pixel_array[32:46, 36:60, 0] == read.pixel_array[32:46, 36:60, 2]).all()
        source = frames[frame - 1][32:46, 36:60].astype(float)
        other = frames[(frame + 2) % 10][32:46, 36:60].astype(float)
        same = np.corrcoef(gray.ravel(), source.ravel())[0, 1]
        assert same > 0.98 and same > np.corrcoef(gray.ravel(), other.ravel())[0, 1]


@pytest.mark.parametrize("name", ["SC_rgb.dcm", "OBXXXX1A_rle.dcm", "SC_ybr_full_uncompressed.dcm"])
def test_colour_sources(name, tmp_path):
    source = dcmread(SHARED_DICOM / name)
    (image,) = build_secondary_captures(
        _report(source, [Box(10, 10, 50, 40)]), [source], language="zh-CN", revision=1
    )
    read = _write_read(image, tmp_path / "colour.dcm")
    assert (read.Rows, read.Columns) == (source.Rows, source.Columns)
    original = source.pixel_array
    if source.PhotometricInterpretation != "PALETTE COLOR":
        # away from the box the colours are the source's
        np.testing.assert_array_equal(read.pixel_array[50:60, 60:90], original[50:60, 60:90])


def test_sources_without_pixels_are_refused(source_images, grounded_report):
    headers = source_images
    for ds in headers:
        del ds.PixelData
    with pytest.raises(SourceError, match="no pixel data"):
        build_secondary_captures(grounded_report, headers, language="en", revision=1)


def test_render_preview_draws_one_image_of_the_report(grounded_report, source_images):
    picture = render_preview(grounded_report, source_images[1], language="zh-CN",
                             graphic_color=(255, 0, 0))
    assert picture.size == (source_images[1].Columns, source_images[1].Rows)
    red = (np.asarray(picture) == np.array([255, 0, 0], dtype=np.uint8)).all(axis=2)
    on_image = [r.box for f in grounded_report.findings for r in f.regions
                if r.image.sop_instance_uid == source_images[1].SOPInstanceUID]
    assert on_image
    for box in on_image:  # every box of this image has its top-left corner drawn
        assert red[int(box.y_min), int(box.x_min)]
