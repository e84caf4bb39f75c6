"""The GSPS overlay lands where the box is, as a real GSPS renderer draws it.

DICOMscope (OFFIS's GSPS reference viewer) renders a synthetic uniform-gray
image with our presentation state applied; the test finds the rectangle drawn
in the layer's grayscale value in the screenshot and checks that its position
and aspect ratio, relative to the image area on screen, match the box in the
source's pixel space. The screenshot is saved in the test's tmp dir.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from dicomscope import (  # tests/integration/dicomscope.py (pytest puts this folder on sys.path)
    DicomScope,
    missing_tools,
)
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from scipy import ndimage

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
from exporters.pr import build_presentation_states

pytestmark = pytest.mark.slow

COLUMNS, ROWS = 80, 64
#: Source pixel spacing (row, column) in mm: pixels 1.5 times as tall as wide.
SPACING = ("0.3", "0.2")
BOX = Box(10.0, 25.0, 50.0, 45.0)
#: DICOMscope 3.6.0 draws PIXEL-unit graphics this many image pixels left of
#: and above the position PS3.3 C.10.5.1.2 defines (origin at the top-left
#: corner of the top-left pixel). Measured here with 80x64 and 320x256 images
#: and with two displayed areas: the shift is in image pixels (it scales with
#: the zoom) and is the same on both axes, so it is the viewer's, not the
#: presentation state's; the test models it and still resolves a quarter pixel.
DICOMSCOPE_SHIFT = 2.0
#: Blue: luminance 0.0722, i.e. a dark grayscale value on a mid-gray image.
GRAPHIC_RGB = (0, 0, 255)
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"


def _source() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = SC_IMAGE
    ds.SOPInstanceUID = derive_uid("radground-test", "dicomscope", "image")
    ds.StudyInstanceUID = derive_uid("radground-test", "dicomscope", "study")
    ds.SeriesInstanceUID = derive_uid("radground-test", "dicomscope", "series")
    ds.PatientName = "Test^Overlay=测试^叠加"
    ds.PatientID = "RG-OVERLAY"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20260310"
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "CHEST"
    ds.PatientOrientation = ""
    ds.PixelSpacing = list(SPACING)
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    # Uniform mid-gray with one black and one white pixel in opposite corners,
    # so a viewer's automatic (min-max) window shows the background mid-gray.
    pixels = np.full((ROWS, COLUMNS), 2048, dtype="<u2")
    pixels[0, 0], pixels[-1, -1] = 0, 4095
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _report(source: Dataset) -> GroundedReport:
    finding = Finding(
        kind=FindingKind.ABNORMALITY,
        label=Text({"en": "nodule", "zh-CN": "结节"}),
        description=Text({"en": "A nodule.", "zh-CN": "见一结节。"}),
        regions=(Region(ImageRef(source.SOPInstanceUID, source.SOPClassUID), BOX),),
        tracking_uid=derive_uid("radground-test", "dicomscope", "finding"),
        confidence=0.87,
    )
    return GroundedReport(
        study_instance_uid=source.StudyInstanceUID,
        findings=(finding,),
        impression=Text({"en": "A nodule.", "zh-CN": "见一结节。"}),
        model=ModelInfo.for_version(name="test", version="1", manufacturer="RadGround Project"),
        task=Task.DETECTION,
        raw_output="",
        created_at=datetime(2026, 3, 10, tzinfo=UTC),
    )


def _run_centre(line: np.ndarray) -> float:
    """Centre (in pixels from the start of ``line``) of its first run of True."""
    on = np.nonzero(line)[0]
    assert on.size, "no drawn line crossed"
    run_end = on[0]
    while run_end + 1 < line.size and line[run_end + 1]:
        run_end += 1
    return (on[0] + run_end + 1) / 2.0


def _image_area(shot: np.ndarray) -> tuple[int, int, int, int, int]:
    """(left, top, right, bottom, gray) of the mid-gray image area on screen
    (right/bottom exclusive)."""
    viewer = shot[60:960, 0:1020, 0].astype(int)
    neutral = (shot[60:960, 0:1020, 0] == shot[60:960, 0:1020, 2])
    values, counts = np.unique(viewer[neutral & (viewer > 40) & (viewer < 215)], return_counts=True)
    assert values.size, "no mid-gray image area in the screenshot"
    gray = int(values[np.argmax(counts)])
    ys, xs = np.nonzero(np.abs(viewer - gray) <= 2)
    return xs.min(), ys.min() + 60, xs.max() + 1, ys.max() + 61, gray


@pytest.fixture
def dicomscope(tmp_path: Path):
    missing = missing_tools()
    if missing:
        pytest.skip(
            f"DICOMscope rendering needs {', '.join(missing)} (Debian: dicomscope "
            "dcmtk xvfb xdotool x11-apps imagemagick)"
        )
    with DicomScope(tmp_path) as scope:
        yield scope


def test_dicomscope_draws_the_box_where_it_is(dicomscope: DicomScope, tmp_path: Path) -> None:
    source = _source()
    report = _report(source)
    (state,) = build_presentation_states(
        report, [source], language="zh-CN", revision=1, graphic_color=GRAPHIC_RGB
    )
    image_path, pr_path = tmp_path / "image.dcm", tmp_path / "pr.dcm"
    source.save_as(image_path, enforce_file_format=True)
    state.save_as(pr_path, enforce_file_format=True)

    shot_path = dicomscope.show(image_path, pr_path)
    shot = np.asarray(Image.open(shot_path).convert("RGB"))
    left, top, right, bottom, _ = _image_area(shot)
    width, height = right - left, bottom - top
    # The image area keeps the source's physical aspect (rows are 1.5x taller).
    row_mm, column_mm = (float(v) for v in SPACING)
    assert height / width == pytest.approx(ROWS * row_mm / (COLUMNS * column_mm), rel=0.02)

    # The layer's Recommended Display Grayscale Value, as an 8-bit screen value.
    expected_gray = round(
        int(state.GraphicLayerSequence[0].GraphicLayerRecommendedDisplayGrayscaleValue)
        / 65535
        * 255
    )
    drawn = np.zeros(shot.shape[:2], dtype=bool)
    area = shot[top:bottom, left:right].astype(int)
    drawn[top:bottom, left:right] = (np.abs(area - expected_gray) <= 3).all(axis=2)
    labels, count = ndimage.label(drawn, structure=np.ones((3, 3)))
    assert count, f"nothing drawn in the graphic's gray {expected_gray} (screenshot {shot_path})"
    slices = ndimage.find_objects(labels)
    sizes = [(s[0].stop - s[0].start) * (s[1].stop - s[1].start) for s in slices]
    rect = slices[int(np.argmax(sizes))]
    y0, y1, x0, x1 = rect[0].start, rect[0].stop, rect[1].start, rect[1].stop

    # Where the box's edges should be on screen (line centres), from its
    # pixel-space coordinates.
    sx, sy = width / COLUMNS, height / ROWS
    middle_row, middle_column = (y0 + y1) // 2, (x0 + x1) // 2
    centres = {
        "left": _run_centre(drawn[middle_row, x0:middle_column]) + x0,
        "right": _run_centre(drawn[middle_row, middle_column:x1]) + middle_column,
        "top": _run_centre(drawn[y0:middle_row, middle_column]) + y0,
        "bottom": _run_centre(drawn[middle_row:y1, middle_column]) + middle_row,
    }
    expected = {
        "left": left + (BOX.x_min - DICOMSCOPE_SHIFT) * sx,
        "right": left + (BOX.x_max - DICOMSCOPE_SHIFT) * sx,
        "top": top + (BOX.y_min - DICOMSCOPE_SHIFT) * sy,
        "bottom": top + (BOX.y_max - DICOMSCOPE_SHIFT) * sy,
    }
    for edge, want in expected.items():
        scale = sx if edge in ("left", "right") else sy
        got = centres[edge]
        assert abs(got - want) <= 0.25 * scale + 1.0, (
            f"{edge} edge drawn at screen {got:.1f}, i.e. image {(got - want) / scale:+.2f} px off "
            f"(screenshot {shot_path})"
        )
    width_drawn = centres["right"] - centres["left"]
    height_drawn = centres["bottom"] - centres["top"]
    assert width_drawn / height_drawn == pytest.approx(
        (BOX.width * sx) / (BOX.height * sy), rel=0.02
    )
    # It is an outline (closed polyline, not filled): the inside is image gray.
    inside = drawn[y0 + int(2 * sy):y1 - int(2 * sy), x0 + int(2 * sx):x1 - int(2 * sx)]
    assert inside.mean() < 0.01
    # Its label is drawn just above it, in the same gray.
    strip = drawn[max(top, y0 - int(9 * sy)):y0 - 1, x0:right]
    assert strip.sum() > 20, f"no label drawn above the box (screenshot {shot_path})"


def _layer_rectangles(shot: np.ndarray, state: Dataset) -> list[tuple[float, float]]:
    """Centres (x, y) on screen of the outlines drawn in ``state``'s layer gray, biggest first."""
    left, top, right, bottom, _ = _image_area(shot)
    layer = state.GraphicLayerSequence[0]
    gray = round(int(layer.GraphicLayerRecommendedDisplayGrayscaleValue) / 65535 * 255)
    drawn = np.zeros(shot.shape[:2], dtype=bool)
    area = shot[top:bottom, left:right].astype(int)
    drawn[top:bottom, left:right] = (np.abs(area - gray) <= 3).all(axis=2)
    labels, _count = ndimage.label(drawn, structure=np.ones((3, 3)))
    outlines = [
        s for s in ndimage.find_objects(labels)
        # an outline's bounding box, not a label's glyphs: at least a quarter of the image wide
        if (s[1].stop - s[1].start) > (right - left) / 8 and (s[0].stop - s[0].start) > 8
    ]
    return [((s[1].start + s[1].stop) / 2, (s[0].start + s[0].stop) / 2) for s in outlines]


def test_dicomscope_draws_only_the_accepted_findings_of_a_signed_gsps(
    tmp_path: Path,
) -> None:
    """The model's GSPS draws both findings; the GSPS of the sign-off that rejected the right
    one draws only the left one (a new SOP instance on the same image)."""
    from dataclasses import replace

    from exporters.protocol import SignOff, Verifier

    missing = missing_tools()
    if missing:
        pytest.skip(f"DICOMscope rendering needs {', '.join(missing)}")
    source = _source()
    left_finding = _report(source).findings[0]
    right_finding = replace(
        left_finding,
        regions=(Region(left_finding.regions[0].image, Box(58.0, 10.0, 76.0, 30.0)),),
        tracking_uid=derive_uid("radground-test", "dicomscope", "finding-right"),
    )
    model_report = replace(_report(source), findings=(left_finding, right_finding))
    reviewed = replace(model_report, findings=(left_finding,))
    sign_off = SignOff(
        verifier=Verifier("Jane Doe", "Radiology", "jdoe", "urn:radground:RADGROUND:account"),
        verified_at=datetime(2026, 3, 11, 9, 30, tzinfo=UTC),
        withdrawn=(right_finding,),
    )
    (model_state,) = build_presentation_states(
        model_report, [source], language="en", revision=1, graphic_color=GRAPHIC_RGB
    )
    (signed_state,) = build_presentation_states(
        reviewed, [source], language="en", revision=1, graphic_color=GRAPHIC_RGB,
        sign_off=sign_off,
    )
    assert signed_state.SOPInstanceUID != model_state.SOPInstanceUID
    assert (
        signed_state.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID
        == source.SOPInstanceUID
    )
    image_path = tmp_path / "image.dcm"
    source.save_as(image_path, enforce_file_format=True)
    shots = {}
    for name, state in (("model", model_state), ("signed", signed_state)):
        pr_path = tmp_path / f"pr-{name}.dcm"
        state.save_as(pr_path, enforce_file_format=True)
        (tmp_path / name).mkdir()
        with DicomScope(tmp_path / name) as scope:  # one viewer and database per state
            shot_path = scope.show(image_path, pr_path)
        shots[name] = np.asarray(Image.open(shot_path).convert("RGB"))

    model_boxes = _layer_rectangles(shots["model"], model_state)
    signed_boxes = _layer_rectangles(shots["signed"], signed_state)
    assert len(model_boxes) == 2, f"the model's GSPS should draw two boxes, drew {model_boxes}"
    assert len(signed_boxes) == 1, f"the signed GSPS should draw one box, drew {signed_boxes}"
    left, _top, right, _bottom, _ = _image_area(shots["signed"])
    (x, _y), = signed_boxes
    assert x < left + (right - left) / 2, "the accepted (left) finding is the one drawn"
