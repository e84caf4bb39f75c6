"""The default model's applicability rule: which images it is made for, and why others are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage, generate_uid

from engine.applicability import FRONTAL_CHEST_RADIOGRAPH, ApplicabilityRule
from tests.factories import make_chest_dx, make_ct

CXR_PNG = "00000072_000.png"


def head_mr() -> Dataset:
    """A synthetic MR of the head (bug 8's image)."""
    ds = make_ct(study_instance_uid=generate_uid(), series_instance_uid=generate_uid())
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.Modality = "MR"
    ds.BodyPartExamined = "HEAD"
    return ds


@pytest.fixture
def chest_dx(shared_data: Path) -> Dataset:
    return make_chest_dx(shared_data / "nih-cxr-boxes" / "images" / CXR_PNG)


def test_a_head_mr_is_refused_for_its_modality() -> None:
    reason = FRONTAL_CHEST_RADIOGRAPH.refusal(head_mr())
    assert reason == "Modality (0008,0060) MR is not CR, DX or RG"


def test_frontal_chest_radiographs_are_accepted(chest_dx: Dataset, shared_data: Path) -> None:
    assert FRONTAL_CHEST_RADIOGRAPH.refusal(chest_dx) is None  # DX, CHEST, PA, MONOCHROME2
    chest_dx.ViewPosition = "AP"
    assert FRONTAL_CHEST_RADIOGRAPH.refusal(chest_dx) is None
    cr = dcmread(shared_data / "dicom" / "RG1_J2KI.dcm", stop_before_pixels=True)  # CR, MONOCHROME1
    assert FRONTAL_CHEST_RADIOGRAPH.refusal(cr) is None


@pytest.mark.parametrize("view", ["LL", "RL", "LATERAL"])
def test_a_lateral_view_is_refused(chest_dx: Dataset, view: str) -> None:
    chest_dx.ViewPosition = view
    assert FRONTAL_CHEST_RADIOGRAPH.refusal(chest_dx) == f"the view ({view}) is not AP or PA"


def test_a_lateral_view_code_is_refused_and_a_frontal_one_accepted(chest_dx: Dataset) -> None:
    del chest_dx.ViewPosition
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "399173006", "SCT", "left lateral"
    chest_dx.ViewCodeSequence = [code]
    assert "is not AP or PA" in FRONTAL_CHEST_RADIOGRAPH.refusal(chest_dx)
    code.CodeValue, code.CodeMeaning = "399348003", "antero-posterior"
    assert FRONTAL_CHEST_RADIOGRAPH.refusal(chest_dx) is None


def test_absent_body_part_and_view_are_accepted_another_body_part_is_not(chest_dx: Dataset) -> None:
    del chest_dx.BodyPartExamined
    del chest_dx.ViewPosition
    assert FRONTAL_CHEST_RADIOGRAPH.refusal(chest_dx) is None  # a CR/DX without them: plausibly a chest
    chest_dx.BodyPartExamined = "EXTREMITY"
    assert FRONTAL_CHEST_RADIOGRAPH.refusal(chest_dx) == "Body Part Examined (0018,0015) EXTREMITY is not CHEST or THORAX"
    del chest_dx.BodyPartExamined
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "69536005", "SCT", "Head"
    chest_dx.AnatomicRegionSequence = [region]
    assert "Anatomic Region Sequence (0008,2218) says Head" in FRONTAL_CHEST_RADIOGRAPH.refusal(chest_dx)
    region.CodeValue, region.CodeMeaning = "51185008", "Thorax"
    assert FRONTAL_CHEST_RADIOGRAPH.refusal(chest_dx) is None


def test_photometry_must_be_one_grayscale_2d_frame(chest_dx: Dataset) -> None:
    chest_dx.PhotometricInterpretation = "RGB"
    chest_dx.SamplesPerPixel = 3
    assert "Samples per Pixel (0028,0002) is 3" in FRONTAL_CHEST_RADIOGRAPH.refusal(chest_dx)
    chest_dx.SamplesPerPixel = 1
    chest_dx.PhotometricInterpretation = "PALETTE COLOR"
    assert "Photometric Interpretation (0028,0004) PALETTE COLOR" in FRONTAL_CHEST_RADIOGRAPH.refusal(chest_dx)
    chest_dx.PhotometricInterpretation = "MONOCHROME2"
    chest_dx.NumberOfFrames = 4
    assert FRONTAL_CHEST_RADIOGRAPH.refusal(chest_dx) == "it has 4 frames; the model takes one 2D image"


def test_explain_names_the_model_and_what_it_is_made_for() -> None:
    text = FRONTAL_CHEST_RADIOGRAPH.explain(head_mr(), model_name="radground-cxr-det")
    assert text.startswith("radground-cxr-det is made for frontal (PA/AP) chest radiographs")
    assert text.endswith("Modality (0008,0060) MR is not CR, DX or RG")


def test_a_rule_refuses_one_string_where_a_set_belongs() -> None:
    with pytest.raises(TypeError, match="modalities"):
        ApplicabilityRule(description="x", modalities="CR")  # type: ignore[arg-type]


def test_the_default_model_declares_the_rule() -> None:
    from engine.backends.onnxruntime_backend import OnnxDetector

    assert OnnxDetector.applicability is FRONTAL_CHEST_RADIOGRAPH
