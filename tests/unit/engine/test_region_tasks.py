"""engine.region_tasks: region→text and text→region on a DICOM frame — with the shipped detector
on a held-out NIH radiograph made into a DICOM, and with a scripted model for the parsing,
language matching and coordinate mapping."""

from __future__ import annotations

import csv
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid

from engine.backends.onnxruntime_backend import OnnxDetector
from engine.evaluation import box_iou_matrix
from engine.model import GenerationRequest, ModelError, RegionAwareModel, ResizeMode
from engine.pixels import prepare_image
from engine.region_tasks import RegionTaskError, describe_region, locate_finding
from engine.report import Box, ModelInfo, Task
from tests.factories import make_chest_dx, make_ct

#: A held-out (validation patient) radiograph with a Cardiomegaly box.
CXR = "00000211_019.png"


@pytest.fixture(scope="module")
def detector() -> OnnxDetector:
    return OnnxDetector(intra_op_threads=1).load()


@pytest.fixture(scope="module")
def radiograph(shared_data: Path):
    """(DICOM dataset, the radiologist's Cardiomegaly box in its pixels)."""
    root = shared_data / "nih-cxr-boxes"
    with (root / "boxes.csv").open(newline="") as handle:
        (row,) = [r for r in csv.DictReader(handle) if r["image"] == CXR]
    assert row["finding"] == "Cardiomegaly"
    truth = Box(*(float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max")))
    return make_chest_dx(root / "images" / CXR, view_position="AP"), truth


def iou(a: Box, b: Box) -> float:
    as_array = [[v.x_min, v.y_min, v.x_max, v.y_max] for v in (a, b)]
    return float(box_iou_matrix(np.array(as_array[:1]), np.array(as_array[1:]))[0, 0])


# -- the shipped detector -------------------------------------------------------------------


def test_the_drawn_cardiomegaly_region_is_described_in_both_languages(
    detector, radiograph
) -> None:
    dataset, truth = radiograph
    (first, *rest) = describe_region(
        detector, None, dataset, None, truth, languages=("en", "zh-CN")
    )
    assert rest == []  # the model reports one class
    assert first.label["en"] == "cardiomegaly" and first.label["zh-CN"] == "心影增大"
    assert first.description["en"] == "Enlarged cardiac silhouette (cardiomegaly)."
    assert first.description["zh-CN"] == "心影增大。"
    assert first.region.box == truth  # exactly the drawn box, not its 0-999 rounding
    assert first.region.image.sop_instance_uid == dataset.SOPInstanceUID
    assert first.region.image.sop_class_uid == dataset.SOPClassUID
    assert first.region.image.frame_number is None
    assert first.confidence is not None and first.confidence >= 0.5  # measured 0.87


def test_an_empty_region_gives_no_suggestion(detector, radiograph) -> None:
    dataset, _ = radiograph
    corner = Box(2.0, 2.0, 60.0, 60.0)
    assert describe_region(detector, None, dataset, None, corner, languages=("en",)) == []


def test_where_is_cardiomegaly_maps_the_box_back_to_source_pixels(detector, radiograph) -> None:
    dataset, truth = radiograph
    (found,) = locate_finding(
        detector, None, dataset, None, "心脏增大", language="zh-CN", languages=("en",)
    )
    assert found.label["zh-CN"] == "心影增大" and found.label["en"] == "cardiomegaly"
    assert found.description["en"].startswith("Enlarged cardiac silhouette")
    # measured IoU with the radiologist's box on this held-out image: 0.97
    assert iou(found.region.box, truth) >= 0.8
    assert 0 <= found.region.box.x_min < found.region.box.x_max <= dataset.Columns
    assert found.confidence is not None and found.confidence >= 0.5
    # the same box as the report's finding (same transform, same decoder)
    prepared = prepare_image(dataset, size=detector.input_size, resize_mode=detector.resize_mode)
    (decoded,) = detector.detect([prepared.array])
    assert found.region.box == prepared.transform.from_normalized(
        [round(float(v) / s * 999) for v, s in zip(decoded.boxes[0], (384, 384, 384, 384),
                                                     strict=True)]
    )


def test_a_finding_the_model_does_not_report_is_not_located(detector, radiograph) -> None:
    dataset, _ = radiograph
    assert locate_finding(detector, None, dataset, None, "nodule", language="en",
                          languages=("en", "zh-CN")) == []


def test_questions_the_detector_cannot_answer_are_refused(detector, radiograph) -> None:
    dataset, truth = radiograph
    with pytest.raises(RegionTaskError, match="left lung': not a finding this model detects"):
        locate_finding(detector, None, dataset, None, "left lung", language="en", languages=())
    with pytest.raises(RegionTaskError, match="answers in"):
        describe_region(detector, None, dataset, None, truth, languages=("de",))
    with pytest.raises(RegionTaskError, match="not inside the 512 x 512 image"):
        describe_region(detector, None, dataset, None, Box(400, 400, 600, 500), languages=("en",))
    with pytest.raises(RegionTaskError, match="too small"):
        describe_region(detector, None, dataset, None, Box(10, 10, 10.1, 50), languages=("en",))
    with pytest.raises(RegionTaskError, match="made for"):
        ct = make_ct(study_instance_uid=generate_uid(), series_instance_uid=generate_uid())
        describe_region(detector, None, ct, None, Box(1, 1, 3, 3), languages=("en",))


# -- a scripted model -----------------------------------------------------------------------


class ScriptedModel(RegionAwareModel):
    """Answers with ``answer(request)``; records the requests and the batches' callers."""

    def __init__(self, answer: Callable[[GenerationRequest], str]) -> None:
        self.info = ModelInfo.for_version(name="scripted", version="1", manufacturer="tests")
        self.input_size = (448, 448)
        self.resize_mode = ResizeMode.STRETCH
        self.languages = ("en", "zh-CN")
        self.tasks = (Task.REGION_TO_TEXT, Task.TEXT_TO_REGION)
        self.answer = answer
        self.requests: list[GenerationRequest] = []
        self._lock = threading.Lock()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        with self._lock:
            self.requests.extend(requests)
        return [self.answer(r) for r in requests]


@pytest.fixture
def wide_image(shared_data: Path):
    """A 512 x 300 crop of a radiograph: stretched unequally into the model's square input."""
    dataset = make_chest_dx(shared_data / "nih-cxr-boxes" / "images" / CXR)
    pixels = np.frombuffer(dataset.PixelData, np.uint8).reshape(512, 512)[100:400]
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.PixelData = np.ascontiguousarray(pixels).tobytes()
    return dataset


def test_the_box_goes_to_the_model_in_its_coordinates_and_comes_back_exactly(wide_image):
    model = ScriptedModel(
        lambda r: "<ref>cardiac silhouette</ref><box>[[100, 200, 500, 800]]</box>: Normal size."
        if r.language == "en"
        else "<ref>心影</ref><box>[[100, 200, 500, 800]]</box>：大小正常。"
    )
    drawn = Box(51.2, 30.0, 256.0, 150.0)
    calls = []

    def generate(requests):
        calls.append(len(requests))
        return model.generate(requests)

    (suggestion,) = describe_region(
        model, generate, wide_image, None, drawn, languages=("en", "zh-CN")
    )
    assert calls == [2]  # one batch: a generation per language, through the given callable
    prepared = prepare_image(wide_image, size=(448, 448))
    expected = prepared.transform.to_normalized(drawn)
    assert [r.regions for r in model.requests] == [(expected,), (expected,)]
    assert [r.task for r in model.requests] == [Task.REGION_TO_TEXT] * 2
    assert model.requests[0].image is model.requests[1].image  # the frame is prepared once
    np.testing.assert_array_equal(model.requests[0].image, prepared.array)
    # a box other than the asked one is mapped back with /999 and the stretch
    got = suggestion.region.box
    assert (got.x_min, got.y_min, got.x_max, got.y_max) == pytest.approx(
        (100 / 999 * 512, 200 / 999 * 300, 500 / 999 * 512, 800 / 999 * 300)
    )
    assert got == prepared.transform.from_normalized((100, 200, 500, 800))
    assert suggestion.label["en"] == "cardiac silhouette" and suggestion.label["zh-CN"] == "心影"
    assert suggestion.description["zh-CN"] == "大小正常。"
    assert suggestion.confidence is None  # MedRegA gives no score


def test_a_bare_vocabulary_answer_names_the_drawn_region(wide_image):
    model = ScriptedModel(lambda r: "left lung." if r.language == "en" else "左肺")
    drawn = Box(10.0, 10.0, 200.0, 200.0)
    (suggestion,) = describe_region(model, None, wide_image, None, drawn, languages=("en",
                                                                                      "zh-CN"))
    assert suggestion.region.box == drawn
    assert suggestion.label["en"] == "left lung" and suggestion.label["zh-CN"] == "左肺"


def test_an_unlabelled_box_is_no_suggestion(wide_image):
    model = ScriptedModel(lambda r: "<box>[[1, 2, 30, 40]]</box>: Nothing detected here.")
    drawn = Box(10.0, 10.0, 200.0, 200.0)
    assert describe_region(model, None, wide_image, None, drawn, languages=("en",)) == []


def test_a_free_text_answer_describes_the_drawn_region(wide_image):
    model = ScriptedModel(
        lambda r: "A calcified granuloma." if r.language == "en" else "钙化肉芽肿。"
    )
    drawn = Box(10.0, 10.0, 200.0, 200.0)
    (suggestion,) = describe_region(model, None, wide_image, None, drawn,
                                    languages=("en", "zh-CN"))
    assert suggestion.label.as_dict() == {"en": "unlabelled region", "zh-CN": "未标注区域"}
    assert suggestion.description.as_dict() == {"en": "A calcified granuloma.",
                                                "zh-CN": "钙化肉芽肿。"}
    assert suggestion.region.box == drawn
    # text -> region: plain text locates nothing
    assert locate_finding(model, None, wide_image, None, "granuloma", language="en",
                          languages=()) == []


def test_unknown_queries_are_asked_in_their_own_language_only(wide_image):
    model = ScriptedModel(
        lambda r: "<box>[[10, 20, 300, 400]]</box><score>0.4</score>: Here.; "
        "<ref>stent</ref><box>[[500, 500, 600, 600]]</box>: Another."
    )
    found = locate_finding(model, None, wide_image, None, " stent ", language="en",
                           languages=("zh-CN",))
    assert [r.language for r in model.requests] == ["en"]
    assert model.requests[0].targets == ("stent",)
    assert [s.label["en"] for s in found] == ["stent", "stent"]  # the unlabelled box is the query's
    assert found[0].confidence == 0.4 and found[1].confidence is None
    assert all(s.label.languages == ("en",) for s in found)


def test_known_queries_are_asked_by_their_name_in_each_language(wide_image):
    model = ScriptedModel(lambda r: "")
    assert locate_finding(model, None, wide_image, None, "Pleural Effusion", language="en",
                          languages=("en", "zh-CN")) == []
    assert [(r.language, r.targets) for r in model.requests] == [
        ("en", ("pleural effusion",)),
        ("zh-CN", ("胸腔积液",)),
    ]


def test_bad_queries_and_answers(wide_image):
    model = ScriptedModel(lambda r: "<ref>x</ref>")
    with pytest.raises(RegionTaskError, match="non-empty"):
        locate_finding(model, None, wide_image, None, "  ", language="en", languages=())
    with pytest.raises(RegionTaskError, match="markup"):
        locate_finding(model, None, wide_image, None, "<ref>x", language="en", languages=())
    with pytest.raises(ModelError, match="2 outputs for 1"):
        locate_finding(model, lambda reqs: ["a", "b"], wide_image, None, "x", language="en",
                       languages=())
    with pytest.raises(RegionTaskError, match="does not do"):
        model.tasks = (Task.TEXT_TO_REGION,)
        describe_region(model, None, wide_image, None, Box(1, 1, 100, 100), languages=("en",))


def test_a_frame_of_a_multi_frame_image_is_the_region_s_image(shared_data: Path):
    import pydicom

    from engine.pixels import FrameSelectionError

    dataset = pydicom.dcmread(shared_data / "dicom" / "emri_small_jpeg_ls_lossless.dcm")
    model = ScriptedModel(lambda r: "<ref>liver</ref><box>[[0, 0, 499, 499]]</box>: Liver.")
    (suggestion,) = locate_finding(model, None, dataset, 3, "liver", language="en", languages=())
    assert suggestion.region.image.frame_number == 3
    assert suggestion.region.image.sop_instance_uid == dataset.SOPInstanceUID
    np.testing.assert_array_equal(
        model.requests[0].image, prepare_image(dataset, frame_number=3, size=(448, 448)).array
    )
    with pytest.raises(FrameSelectionError, match="10 frames"):
        describe_region(model, None, dataset, None, Box(1, 1, 30, 30), languages=("en",))
