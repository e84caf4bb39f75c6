"""Presentation states (GSPS / Colour PS) drawing grounded findings.

Every object is written to a file, read back and checked with real tools:
dicom3tools' ``dciodvfy -new`` (no Error lines, :mod:`tests.exporters_validators`) and dcmtk's
``dcmpschk`` (semantic pass; dcmtk 3.6.7 flags every non-ASCII value under ISO_IR 192 in
its data-dictionary pass, which is its bug, see TOOLS.md). The read-back
graphics are re-built through highdicom's validating constructors and must
give back the boxes exactly.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset

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
from exporters.errors import ExportError, SourceError
from exporters.pr import build_presentation_states, finding_label, truncate_utf8
from exporters.regions import plan_regions, region_tracking_uid
from exporters.sr import build_sr
from tests.exporters_validators import dciodvfy_errors

SHARED_DICOM = (Path(__file__).resolve().parents[4] / "shared" / "data" / "dicom").resolve()
GSPS_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"
CSPS_CLASS = "1.2.840.10008.5.1.4.1.1.11.2"


# -- real validators ---------------------------------------------------------


def _write(state: Dataset, path: Path) -> Path:
    state.save_as(path, enforce_file_format=True)
    return path


def dcmpschk_problems(path: Path) -> list[str]:
    """dcmpschk's findings other than its ISO_IR 192 false positives.

    dcmpschk runs three passes: meta header, data dictionary, presentation
    state semantics. In pass 2, dcmtk 3.6.7 reports every value holding a
    non-ASCII character as not conforming to its VR although ISO_IR 192
    allows it; those (and only those) are ignored. Pass 3 reports semantic
    faults as warnings ("W: displayedAreaSelectionSQ absent ..."): every one
    counts.
    """
    if shutil.which("dcmpschk") is None:
        pytest.skip("dcmpschk (Debian dcmtk) is not installed")
    done = subprocess.run(
        ["dcmpschk", "-v", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    output = done.stdout + done.stderr
    marker = "Pass 3 - Semantic Check of Presentation State Object"
    assert marker in output, output[-2000:]
    syntax, semantics = output.split(marker, 1)
    problems = [
        line for line in semantics.splitlines()
        if line.startswith(("E:", "F:", "W:")) and not line.startswith("W: Test failed")
    ]
    for block in re.split(r"\nE: \n", syntax):
        errors = [line for line in block.splitlines() if line.startswith(("E:", "F:"))]
        if not errors:
            continue
        text = "\n".join(errors)
        value = re.search(r"Attribute value\s*: \[(.*)\]", text)
        if ("does not conform to data type definition" in text and value is not None
                and not value.group(1).isascii()):
            continue  # the ISO_IR 192 false positive
        problems.append(text)
    return problems


def test_the_checks_catch_a_broken_presentation_state(grounded_report, source_images, tmp_path):
    (state, _) = build_presentation_states(
        grounded_report, source_images, language="zh-CN", revision=1
    )
    del state.DisplayedAreaSelectionSequence
    path = _write(state, tmp_path / "broken.dcm")
    assert any("displayedArea" in p for p in dcmpschk_problems(path))
    assert any("DisplayedAreaSelectionSequence" in e for e in dciodvfy_errors(path))


#: dcmpschk warns when Patient's Name is empty; it is Type 2 (PS3.3 C.7.1.1),
#: so an empty value copied from a source that has none is conformant.
EMPTY_PATIENT_NAME = "W: patientName absent or empty in presentation state"


def assert_valid(state: Dataset, path: Path) -> Dataset:
    _write(state, path)
    assert dciodvfy_errors(path) == []
    allowed = {EMPTY_PATIENT_NAME} if not str(state.get("PatientName", "") or "") else set()
    assert [p for p in dcmpschk_problems(path) if p not in allowed] == []
    return dcmread(path)


# -- helpers -----------------------------------------------------------------


def _one_finding_report(
    source: Dataset, box: Box, *, frame: int | None = None, label=None
) -> GroundedReport:
    finding = Finding(
        kind=FindingKind.ABNORMALITY,
        label=label or Text({"en": "nodule", "zh-CN": "结节"}),
        description=Text({"en": "A nodule.", "zh-CN": "见一结节。"}),
        regions=(Region(ImageRef(source.SOPInstanceUID, source.SOPClassUID, frame), box),),
        tracking_uid=derive_uid("radground-test", "gsps", "one", str(source.SOPInstanceUID)),
        confidence=0.5,
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


def _graphics(state: Dataset) -> dict[str, list]:
    """tracking UID -> [(referenced SOP instance, frame, highdicom GraphicObject)] re-built
    from the read-back dataset through highdicom's validating constructor."""
    found: dict[str, list] = {}
    for annotation in state.GraphicAnnotationSequence:
        (ref,) = annotation.ReferencedImageSequence
        frame = ref.get("ReferencedFrameNumber")
        for item in annotation.get("GraphicObjectSequence", []):
            rebuilt = hd.pr.GraphicObject(
                graphic_type=item.GraphicType,
                graphic_data=np.asarray(item.GraphicData, dtype=float).reshape(-1, 2),
                units=item.GraphicAnnotationUnits,
                is_filled=item.GraphicFilled == "Y",
                tracking_id=item.TrackingID,
                tracking_uid=item.TrackingUID,
            )
            found.setdefault(str(rebuilt.tracking_uid), []).append(
                (str(ref.ReferencedSOPInstanceUID), None if frame is None else int(frame), rebuilt)
            )
    return found


def _texts(state: Dataset) -> dict[str, list[hd.pr.TextObject]]:
    found: dict[str, list] = {}
    for annotation in state.GraphicAnnotationSequence:
        for item in annotation.get("TextObjectSequence", []):
            rebuilt = hd.pr.TextObject(
                text_value=item.UnformattedTextValue,
                units=item.BoundingBoxAnnotationUnits,
                bounding_box=(
                    *item.BoundingBoxTopLeftHandCorner,
                    *item.BoundingBoxBottomRightHandCorner,
                ),
                tracking_id=item.TrackingID,
                tracking_uid=item.TrackingUID,
            )
            found.setdefault(str(rebuilt.tracking_uid), []).append(rebuilt)
    return found


def _build_all(report, sources, **kwargs):
    return {
        language: build_presentation_states(
            report, sources, language=language, revision=1, **kwargs
        )
        for language in ("en", "zh-CN")
    }


# -- the realistic report ------------------------------------------------------


def test_one_valid_state_per_source_series_and_language(grounded_report, source_images, tmp_path):
    states = _build_all(grounded_report, source_images)
    series_uids = set()
    for language, built in states.items():
        assert [type(s) for s in built] == [hd.pr.GrayscaleSoftcopyPresentationState] * 2
        for index, state in enumerate(built):
            read = assert_valid(state, tmp_path / f"{language}-{index}.dcm")
            assert read.SOPClassUID == GSPS_CLASS
            assert read.SpecificCharacterSet == "ISO_IR 192"
            assert read.StudyInstanceUID == source_images[0].StudyInstanceUID
            assert read.SeriesDescription == f"AI overlays (unverified) \u2013 {language.upper()}"
            assert read.PatientName == source_images[0].PatientName
            series_uids.add(read.SeriesInstanceUID)
    assert len(series_uids) == 4  # per source series and per language
    # Deterministic: the same job gives the same UIDs.
    again = build_presentation_states(grounded_report, source_images, language="en", revision=1)
    assert [s.SOPInstanceUID for s in again] == [s.SOPInstanceUID for s in states["en"]]
    other_revision = build_presentation_states(
        grounded_report, source_images, language="en", revision=2
    )
    assert {s.SOPInstanceUID for s in other_revision}.isdisjoint(
        s.SOPInstanceUID for s in states["en"]
    )


def test_graphics_come_back_equal_with_shared_tracking_uids(
    grounded_report, source_images, tmp_path
):
    built = build_presentation_states(grounded_report, source_images, language="zh-CN", revision=1)
    graphics, texts, referenced = {}, {}, set()
    for index, state in enumerate(built):
        read = dcmread(_write(state, tmp_path / f"{index}.dcm"))
        graphics.update(_graphics(read))
        texts.update(_texts(read))
        for series in read.ReferencedSeriesSequence:
            referenced.update(
                str(i.ReferencedSOPInstanceUID) for i in series.ReferencedImageSequence
            )
        # displayed area = this series' image size
        (source,) = [
            s
            for s in source_images
            if s.SeriesInstanceUID == read.ReferencedSeriesSequence[0].SeriesInstanceUID
        ]
        (area,) = read.DisplayedAreaSelectionSequence
        assert list(area.DisplayedAreaTopLeftHandCorner) == [1, 1]
        assert list(area.DisplayedAreaBottomRightHandCorner) == [source.Columns, source.Rows]
    with_regions = [f for f in grounded_report.findings if f.regions]
    assert set(graphics) == {f.tracking_uid for f in with_regions} == set(texts)
    assert referenced == {r.image.sop_instance_uid for f in with_regions for r in f.regions}
    for finding in with_regions:
        (region,) = finding.regions
        ((sop, frame, graphic),) = graphics[finding.tracking_uid]
        assert (sop, frame) == (region.image.sop_instance_uid, None)
        assert graphic.graphic_type == hd.pr.GraphicTypeValues.POLYLINE
        assert graphic.units == hd.pr.AnnotationUnitsValues.PIXEL
        assert graphic.graphic_data.shape == (5, 2)
        np.testing.assert_array_equal(
            graphic.graphic_data, np.asarray(region.box.polyline(), dtype=np.float32)
        )
        ((text,),) = [texts[finding.tracking_uid]]
        assert text.text_value == finding_label(finding, "zh-CN")
        assert finding.label["zh-CN"] in text.text_value
        # the label sits on the box's top edge: just above it, or just inside
        # when there is no room above (coordinates are FL, i.e. float32)
        left, top, _right, bottom = text.bounding_box
        assert left == np.float32(region.box.x_min)
        assert np.float32(region.box.y_min) in (np.float32(bottom), np.float32(top))


def test_chinese_text_is_stored_byte_for_byte(grounded_report, source_images, tmp_path):
    (state, _) = build_presentation_states(
        grounded_report, source_images, language="zh-CN", revision=1
    )
    raw = dcmread(_write(state, tmp_path / "zh.dcm"), defer_size=None)
    raw_values = []
    for annotation in raw.GraphicAnnotationSequence:
        for item in annotation.TextObjectSequence:
            raw_values.append(item["UnformattedTextValue"].value)
    expected = {finding_label(f, "zh-CN") for f in grounded_report.findings if f.regions}
    file_bytes = (tmp_path / "zh.dcm").read_bytes()
    for value in raw_values:
        assert value in expected
        assert value.encode("utf-8") in file_bytes  # stored as UTF-8, not re-encoded
    assert "心脏增大 (88%)".encode() in file_bytes


def test_layers_carry_grayscale_and_colour(grounded_report, source_images):
    (state, _) = build_presentation_states(
        grounded_report, source_images, language="en", revision=1,
        graphic_color={FindingKind.ANATOMY: (0, 0, 255)},
    )
    layers = {layer.GraphicLayer: layer for layer in state.GraphicLayerSequence}
    assert set(layers) == {"AI ANATOMY", "AI ABNORMALITY"}
    for layer in layers.values():
        assert 0 <= layer.GraphicLayerRecommendedDisplayGrayscaleValue <= 65535
        assert len(layer.GraphicLayerRecommendedDisplayCIELabValue) == 3
    # blue is dark in grayscale, yellow (the abnormality default) bright
    assert layers["AI ANATOMY"].GraphicLayerRecommendedDisplayGrayscaleValue < 8000
    assert layers["AI ABNORMALITY"].GraphicLayerRecommendedDisplayGrayscaleValue > 50000
    assert layers["AI ANATOMY"].GraphicLayerRecommendedDisplayCIELabValue != \
        layers["AI ABNORMALITY"].GraphicLayerRecommendedDisplayCIELabValue


def test_no_window_override_unless_asked(grounded_report, source_images, tmp_path):
    assert all("WindowCenter" in s for s in source_images)
    (state, _) = build_presentation_states(
        grounded_report, source_images, language="en", revision=1
    )
    assert "SoftcopyVOILUTSequence" not in state
    (windowed, _) = build_presentation_states(
        grounded_report, source_images, language="en", revision=1, window=(1800.0, 2400.0)
    )
    (voi,) = windowed.SoftcopyVOILUTSequence
    assert (float(voi.WindowCenter), float(voi.WindowWidth)) == (1800.0, 2400.0)
    assert_valid(windowed, tmp_path / "windowed.dcm")
    with pytest.raises(ExportError, match="window"):
        build_presentation_states(
            grounded_report, source_images, language="en", revision=1, window=(10, 0)
        )


def test_presentation_pixel_aspect_ratio_follows_the_source(grounded_report, source_images):
    (state, _) = build_presentation_states(
        grounded_report, source_images, language="en", revision=1
    )
    row, column = (float(v) for v in source_images[0].ImagerPixelSpacing)
    vertical, horizontal = state.DisplayedAreaSelectionSequence[0].PresentationPixelAspectRatio
    assert int(vertical) / int(horizontal) == pytest.approx(row / column, rel=1e-4)


# -- edge cases ------------------------------------------------------------------


def test_boxes_outside_the_image_are_clipped_or_dropped_and_recorded(
    edge_case_report, source_images, tmp_path
):
    plan = plan_regions(edge_case_report, source_images)
    clipped = [p for p in plan.overlays.problems if "clipped" in p]
    dropped = [p for p in plan.overlays.problems if "dropped" in p]
    assert len(clipped) == 2 and len(dropped) == 2
    # UIDs hashed
    assert all(edge_case_report.findings[2].tracking_uid not in p for p in plan.overlays.problems)
    states = _build_all(edge_case_report, source_images, plan=plan)
    for language, built in states.items():
        graphics: dict[str, list] = {}
        for index, state in enumerate(built):
            for uid, items in _graphics(
                assert_valid(state, tmp_path / f"{language}{index}.dcm")
            ).items():
                graphics.setdefault(uid, []).extend(items)
        partly_outside = edge_case_report.findings[2]
        for region_index, source in enumerate(source_images):
            ((sop, _, graphic),) = graphics[region_tracking_uid(partly_outside, region_index)]
            assert sop == source.SOPInstanceUID
            clipped = (Box(0.0, 400.0, 130.0, 512.0), Box(400.0, 420.0, 512.0, 480.0))[region_index]
            np.testing.assert_array_equal(
                graphic.graphic_data, np.asarray(clipped.polyline(), dtype=np.float32)
            )
        assert edge_case_report.findings[3].tracking_uid not in graphics  # entirely outside
        assert edge_case_report.findings[1].tracking_uid not in graphics  # text-only
        # the edge-only box is dropped, its sibling region kept
        edge_only = edge_case_report.findings[4]
        assert region_tracking_uid(edge_only, 0) not in graphics
        assert len(graphics[region_tracking_uid(edge_only, 1)]) == 1


def test_tracking_uids_and_ids_are_the_srs(edge_case_report, source_images):
    """Every GSPS graphic carries the Tracking UID and ID of the SR measurement
    group of the same region (one UID per region for multi-region findings)."""
    for language in ("en", "zh-CN"):
        sr = build_sr(edge_case_report, source_images, language=language, revision=1)
        planar = list(sr.content.get_planar_roi_measurement_groups())
        sr_ids = {str(g.tracking_uid): g.tracking_identifier for g in planar}
        gsps_ids = {}
        for state in build_presentation_states(
            edge_case_report, source_images, language=language, revision=1
        ):
            for annotation in state.GraphicAnnotationSequence:
                for item in [*annotation.GraphicObjectSequence, *annotation.TextObjectSequence]:
                    gsps_ids[str(item.TrackingUID)] = item.TrackingID
        assert gsps_ids == sr_ids


def test_long_labels_are_cut_at_the_st_limit_without_splitting_characters(source_images, tmp_path):
    label = Text({"en": "very long label " * 100, "zh-CN": "很长的标签" * 300})
    report = _one_finding_report(source_images[0], Box(10, 20, 30, 40), label=label)
    for language in ("en", "zh-CN"):
        (state,) = build_presentation_states(report, source_images, language=language, revision=1)
        read = assert_valid(state, tmp_path / f"{language}.dcm")
        value = read.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue
        encoded = value.encode("utf-8")
        assert 1000 < len(encoded) <= 1024
        assert value.endswith("\u2026 (50%)")
        assert label[language].startswith(value[:-len("\u2026 (50%)")].rstrip())
        # Tracking ID is an LO: 64 characters at most
        assert len(read.GraphicAnnotationSequence[0].GraphicObjectSequence[0].TrackingID) <= 64


@given(st.text(min_size=0, max_size=400), st.integers(min_value=3, max_value=300))
def test_truncate_utf8_never_splits_a_character(text, limit):
    cut = truncate_utf8(text, limit)
    assert len(cut.encode("utf-8")) <= limit
    if len(text.encode("utf-8")) <= limit:
        assert cut == text
    else:
        assert cut.endswith("\u2026")
        assert text.startswith((cut[:-1].rstrip(), cut[:-1]))


@pytest.mark.parametrize("fixture", ["source_images_latin1", "source_images_minimal"])
def test_legacy_charset_and_minimal_sources_give_valid_objects(
    fixture, grounded_report, request, tmp_path
):
    sources = request.getfixturevalue(fixture)
    for language, built in _build_all(grounded_report, sources).items():
        for index, state in enumerate(built):
            read = assert_valid(state, tmp_path / f"{language}{index}.dcm")
            assert read.SpecificCharacterSet == "ISO_IR 192"
            # decoded from ISO_IR 100, stored as UTF-8
            assert read.PatientName == sources[0].PatientName
    if fixture == "source_images_latin1":
        assert "Müller^Zoë^Renée".encode() in (tmp_path / "en0.dcm").read_bytes()


def test_laterality_condition_of_the_general_series(source_images, tmp_path):
    """Laterality (0020,0060) is Type 2C, required for paired body parts: the
    source's unpaired BodyPartExamined is carried over; without one, Laterality
    is sent empty (unknown)."""
    report = _one_finding_report(source_images[0], Box(10, 20, 30, 40))
    (state,) = build_presentation_states(report, source_images, language="en", revision=1)
    assert state.BodyPartExamined == "CHEST" and "Laterality" not in state
    source = source_images[0]
    del source.BodyPartExamined
    (state,) = build_presentation_states(report, [source], language="en", revision=1)
    assert "BodyPartExamined" not in state and state.Laterality in (None, "")
    assert_valid(state, tmp_path / "nobodypart.dcm")
    del state.Laterality
    assert any("Laterality" in e for e in dciodvfy_errors(_write(state, tmp_path / "bad.dcm")))
    source.BodyPartExamined = "KNEE"
    source.ImageLaterality = "L"
    (state,) = build_presentation_states(report, [source], language="en", revision=1)
    assert state.Laterality == "L"
    assert_valid(state, tmp_path / "knee.dcm")


def test_multiframe_regions_reference_their_frames(multiframe_source, multiframe_report, tmp_path):
    (state,) = build_presentation_states(
        multiframe_report, [multiframe_source], language="zh-CN", revision=1
    )
    read = assert_valid(state, tmp_path / "mf.dcm")
    graphics = _graphics(read)
    for finding, frame in zip(multiframe_report.findings, (2, 7)):
        ((sop, got_frame, graphic),) = graphics[finding.tracking_uid]
        assert (sop, got_frame) == (multiframe_source.SOPInstanceUID, frame)
        assert graphic.graphic_data[:, 0].max() <= multiframe_source.Columns


@pytest.mark.parametrize(
    ("name", "box"),
    [("SC_rgb.dcm", Box(10, 10, 60, 40)), ("US1_J2KI.dcm", Box(100, 80, 300, 200)),
     ("OBXXXX1A_rle.dcm", Box(100, 80, 300, 200))],
)
def test_colour_sources_get_a_colour_softcopy_presentation_state(name, box, tmp_path):
    path = SHARED_DICOM / name
    if not path.is_file():
        pytest.fail(f"{path} missing; CI puts shared/ beside the repository")
    source = dcmread(path, stop_before_pixels=True)
    (state,) = build_presentation_states(
        _one_finding_report(source, box), [source], language="zh-CN", revision=1
    )
    assert isinstance(state, hd.pr.ColorSoftcopyPresentationState)
    read = assert_valid(state, tmp_path / "csps.dcm")
    assert read.SOPClassUID == CSPS_CLASS
    assert len(read.ICCProfile) > 100


def test_monochrome1_keeps_its_polarity(tmp_path):
    source = dcmread(SHARED_DICOM / "RG1_J2KI.dcm", stop_before_pixels=True)
    assert source.PhotometricInterpretation == "MONOCHROME1"
    (state,) = build_presentation_states(
        _one_finding_report(source, Box(100, 200, 900, 1200)), [source], language="en", revision=1
    )
    assert state.PresentationLUTShape == "INVERSE"
    assert_valid(state, tmp_path / "cr.dcm")


def test_bad_input_is_refused_with_a_clear_error(grounded_report, source_images):
    with pytest.raises(SourceError, match="not among the source"):
        build_presentation_states(grounded_report, source_images[:1], language="en", revision=1)
    with pytest.raises(ExportError, match="language"):
        build_presentation_states(grounded_report, source_images, language="de", revision=1)
    text_only = dataclasses.replace(
        grounded_report, findings=tuple(f for f in grounded_report.findings if not f.regions)
    )
    assert build_presentation_states(text_only, source_images, language="en", revision=1) == []


def test_memoised_iod_lookups_change_no_output_and_are_removed_afterwards(
    grounded_report, source_images
):
    """The project's GSPS build (memoised highdicom look-ups) equals the plain one, and
    highdicom's own function is back in place after the call."""
    import highdicom._standard_utils as standard_utils

    from exporters.pr import build_presentation_states
    from tests.exporters_validators import comparable_bytes

    original = standard_utils.is_attribute_in_iod
    fast = build_presentation_states(grounded_report, source_images, language="en", revision=1)
    plain = build_presentation_states.__wrapped__(
        grounded_report, source_images, language="en", revision=1
    )
    assert standard_utils.is_attribute_in_iod is original
    assert [comparable_bytes(a) for a in fast] == [comparable_bytes(b) for b in plain]
