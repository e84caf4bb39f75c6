"""The default detector's region tasks (region→text, text→region) through ``generate``: the
shipped ONNX model on the held-out NIH radiographs, and the pooling on hand-made heatmaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.backends.detector_regions import (
    REGION_MIN_SCORE,
    Heads,
    UnknownTargetError,
    pooled_class_scores,
    resolve_target,
)
from engine.backends.onnxruntime_backend import OnnxDetector
from engine.default_model import CLASSES, INPUT_SIZE
from engine.default_model.config import OUTPUT_STRIDE
from engine.default_model.data import load_dataset, load_image, split_by_patient
from engine.evaluation import box_iou_matrix
from engine.grammar import Box999, parse_grounded_text
from engine.model import GenerationRequest, ModelError
from engine.report import Task

CARDIOMEGALY = CLASSES.index("Cardiomegaly")


@pytest.fixture(scope="module")
def detector() -> OnnxDetector:
    return OnnxDetector(intra_op_threads=1).load()


@pytest.fixture(scope="module")
def cardiomegaly_cases(shared_data: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(model input, truth box in model pixels) of every held-out Cardiomegaly box."""
    root = shared_data / "nih-cxr-boxes"
    _, validation = split_by_patient(load_dataset(root), seed=0)
    cases = []
    for item in validation:
        for box, label in zip(item.boxes, item.labels, strict=True):
            if label == CARDIOMEGALY:
                gray, (width, height) = load_image(root, item.name, size=INPUT_SIZE)
                scale = np.array(
                    [INPUT_SIZE[0] / width, INPUT_SIZE[1] / height] * 2, dtype=np.float32
                )
                cases.append((np.repeat(gray[..., None], 3, axis=2), box * scale))
    return cases


def to_999(box: np.ndarray) -> tuple[int, int, int, int]:
    w, h = INPUT_SIZE
    x1, y1, x2, y2 = (float(v) for v in box)
    return (
        round(x1 / w * 999),
        round(y1 / h * 999),
        round(x2 / w * 999),
        round(y2 / h * 999),
    )


def from_999(box: Box999) -> np.ndarray:
    w, h = INPUT_SIZE
    return np.array([box.x1 * w / 999, box.y1 * h / 999, box.x2 * w / 999, box.y2 * h / 999])


def ask(detector, image, task, language="en", **kwargs) -> str:
    (text,) = detector.generate([GenerationRequest(image, task, language=language, **kwargs)])
    return text


# -- held-out radiographs ---------------------------------------------------------------


def test_region_around_a_drawn_cardiomegaly_box_is_named_cardiomegaly(
    detector, cardiomegaly_cases
) -> None:
    # Measured on the 21 held-out boxes: the best Cardiomegaly peak centred in the
    # radiologist's box is at or above REGION_MIN_SCORE on 17 of them.
    named = 0
    for image, truth in cardiomegaly_cases:
        result = parse_grounded_text(
            ask(detector, image, Task.REGION_TO_TEXT, regions=(to_999(truth),))
        )
        assert not result.problems
        first = result.phrases[0].refs[0]
        if first.label == "cardiomegaly":
            named += 1
            assert first.boxes == (Box999(*to_999(truth)),)  # the asked region, answered
            assert first.scores[0] >= REGION_MIN_SCORE
        else:
            assert first.label is None  # the asked box, with the sentence saying nothing found
            assert "No cardiomegaly detected by the model in this region" in (
                result.phrases[0].description
            )
    assert len(cardiomegaly_cases) >= 15
    assert named >= 0.7 * len(cardiomegaly_cases), f"{named} of {len(cardiomegaly_cases)}"


def test_where_is_cardiomegaly_finds_the_drawn_box(detector, cardiomegaly_cases) -> None:
    # Measured: the best box overlaps the radiologist's with IoU >= 0.5 on 17 of the 21
    # held-out boxes (the other four score below REGION_MIN_SCORE: "not found").
    hits = 0
    for image, truth in cardiomegaly_cases:
        text = ask(detector, image, Task.TEXT_TO_REGION, targets=("Cardiomegaly",))
        phrases = parse_grounded_text(text).phrases
        if not phrases[0].refs:
            assert phrases[0].description == "No cardiomegaly found by the model in this image."
            continue
        (ref,) = phrases[0].refs
        assert ref.label == "cardiomegaly" and len(ref.boxes) == 1
        iou = box_iou_matrix(from_999(ref.boxes[0])[None], truth[None])[0, 0]
        hits += iou >= 0.5
    assert hits >= 0.7 * len(cardiomegaly_cases), f"{hits} of {len(cardiomegaly_cases)}"


def test_names_in_either_language_and_synonyms_locate_the_same_box(
    detector, cardiomegaly_cases
) -> None:
    image, _ = cardiomegaly_cases[0]
    english = parse_grounded_text(
        ask(detector, image, Task.TEXT_TO_REGION, targets=("cardiomegaly",))
    ).phrases[0]
    chinese = parse_grounded_text(
        ask(detector, image, Task.TEXT_TO_REGION, language="zh-CN", targets=("心脏增大",))
    ).phrases[0]
    assert english.refs[0].boxes == chinese.refs[0].boxes
    assert chinese.refs[0].label == "心影增大" and chinese.description.startswith("心影增大")
    assert english.description.startswith("Enlarged cardiac silhouette (cardiomegaly).")


def test_region_answers_are_bilingual_and_the_empty_region_says_so(
    detector, cardiomegaly_cases
) -> None:
    image, truth = cardiomegaly_cases[0]
    zh = ask(detector, image, Task.REGION_TO_TEXT, language="zh-CN", regions=(to_999(truth),))
    assert zh.startswith("<ref>心影增大</ref>") and "：心影增大" in zh
    corner = (0, 0, 60, 60)  # the top-left corner: no finding is centred there
    en = ask(detector, image, Task.REGION_TO_TEXT, regions=(corner,))
    assert en == (
        "<box>[[0, 0, 60, 60]]</box>: No cardiomegaly detected by the model in this region. "
        "This model does not report atelectasis, pleural effusion, infiltrate, mass, nodule, "
        "pneumonia or pneumothorax."
    )
    zh = ask(detector, image, Task.REGION_TO_TEXT, language="zh-CN", regions=(corner,))
    assert zh.startswith("<box>[[0, 0, 60, 60]]</box>：模型未在该区域检出心影增大。")


def test_a_class_the_model_does_not_report_is_not_located(detector, cardiomegaly_cases) -> None:
    image, _ = cardiomegaly_cases[0]
    assert ask(detector, image, Task.TEXT_TO_REGION, targets=("nodule",)) == (
        "This model does not report nodule, so it cannot locate it."
    )
    assert ask(detector, image, Task.TEXT_TO_REGION, language="zh-CN", targets=("胸水",)) == (
        "本模型不报告胸腔积液，无法定位。"
    )


def test_nothing_above_the_minimal_score_is_not_found(detector) -> None:
    blank = np.zeros((INPUT_SIZE[1], INPUT_SIZE[0], 3), np.float32)
    assert ask(detector, blank, Task.TEXT_TO_REGION, targets=("cardiomegaly",)) == (
        "No cardiomegaly found by the model in this image."
    )
    assert ask(detector, blank, Task.TEXT_TO_REGION, language="zh-CN", targets=("心影增大",)) == (
        "模型未在本图像中检出心影增大。"
    )


def test_a_weak_answer_says_it_is_below_the_reporting_threshold(cardiomegaly_cases) -> None:
    image, _ = cardiomegaly_cases[0]
    strict = OnnxDetector(intra_op_threads=1, score_threshold=0.99)
    text = ask(strict, image, Task.TEXT_TO_REGION, targets=("cardiomegaly",))
    assert text.endswith("Score below the model's reporting threshold (0.99).")
    zh = ask(strict, image, Task.TEXT_TO_REGION, language="zh-CN", targets=("心影增大",))
    assert zh.endswith("评分低于本模型的报告阈值（0.99）。")


def test_unknown_names_and_bad_regions_are_refused_with_the_known_names(detector) -> None:
    image = np.zeros((INPUT_SIZE[1], INPUT_SIZE[0], 3), np.float32)
    with pytest.raises(ModelError, match="'left lung': not a finding this model detects") as err:
        ask(detector, image, Task.TEXT_TO_REGION, targets=("left lung",))
    assert "cardiomegaly, 心影增大" in str(err.value) and "pneumothorax, 气胸" in str(err.value)
    with pytest.raises(ModelError, match="'heart attack': not a name it knows"):
        ask(detector, image, Task.TEXT_TO_REGION, targets=("heart attack",))
    with pytest.raises(ModelError, match="needs the finding to locate"):
        ask(detector, image, Task.TEXT_TO_REGION)
    with pytest.raises(ModelError, match="needs the region"):
        ask(detector, image, Task.REGION_TO_TEXT)
    with pytest.raises(ModelError, match="has no area"):
        ask(detector, image, Task.REGION_TO_TEXT, regions=((10, 10, 10, 50),))
    # a refused request fails before anything runs, alone when checked first
    with pytest.raises(ModelError):
        detector.check_request(
            GenerationRequest(image, Task.TEXT_TO_REGION, targets=("spleen",))
        )


def test_region_tasks_share_a_batch_with_reports(detector, cardiomegaly_cases) -> None:
    image, truth = cardiomegaly_cases[0]
    requests = [
        GenerationRequest(image, Task.GROUNDED_REPORT),
        GenerationRequest(image, Task.REGION_TO_TEXT, regions=(to_999(truth),)),
        GenerationRequest(image, Task.TEXT_TO_REGION, language="zh-CN", targets=("心影增大",)),
    ]
    together = detector.generate(requests)
    assert together == [detector.generate([r])[0] for r in requests]


# -- the pooling itself ------------------------------------------------------------------


def _heads(peaks: dict[tuple[int, int, int], float], offset: float = 0.5) -> Heads:
    h, w = INPUT_SIZE[1] // OUTPUT_STRIDE, INPUT_SIZE[0] // OUTPUT_STRIDE
    heat = np.zeros((len(CLASSES), h, w), np.float32)
    for (cls, y, x), score in peaks.items():
        heat[cls, y, x] = score
    return Heads(
        heatmap=heat,
        size=np.full((2, h, w), 4.0, np.float32),
        offset=np.full((2, h, w), offset, np.float32),
    )


def test_pooling_takes_the_best_peak_centred_in_the_region() -> None:
    # cell (y=10, x=20) with offset 0.5 → centre (164, 84) model pixels
    heads = _heads({(1, 10, 20): 0.8, (1, 40, 40): 0.9, (5, 11, 21): 0.3})
    box = Box999(*to_999(np.array([150, 70, 180, 100])))
    scores = pooled_class_scores(heads, [box], input_size=INPUT_SIZE)
    assert scores[1] == pytest.approx(0.8)  # not the 0.9 peak elsewhere
    assert scores[5] == pytest.approx(0.3)
    assert scores[0] == 0.0
    # the offset moves the centre: with offset 0 the centre is (160, 80), still inside; a box
    # that ends at 162 px holds it only then
    narrow = Box999(*to_999(np.array([150, 70, 162, 100])))
    assert pooled_class_scores(heads, [narrow], input_size=INPUT_SIZE)[1] == 0.0
    assert pooled_class_scores(_heads({(1, 10, 20): 0.8}, 0.0), [narrow], input_size=INPUT_SIZE)[
        1
    ] == pytest.approx(0.8)


def test_several_regions_pool_together() -> None:
    heads = _heads({(1, 10, 20): 0.8, (2, 40, 40): 0.6})
    left = Box999(*to_999(np.array([150, 70, 180, 100])))
    right = Box999(*to_999(np.array([310, 310, 340, 340])))
    scores = pooled_class_scores(heads, [left, right], input_size=INPUT_SIZE)
    assert scores[1] == pytest.approx(0.8) and scores[2] == pytest.approx(0.6)


def test_target_names() -> None:
    assert resolve_target("Pleural Effusion") == "Effusion"
    assert resolve_target("胸腔积液") == "Effusion"
    assert resolve_target("infiltration") == "Infiltrate"
    with pytest.raises(UnknownTargetError):
        resolve_target("右肺")
