"""Operating points: which classes the default model reports, stored and checked in its metadata,
and never emitted when not reported."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from engine.backends.onnxruntime_backend import OnnxDetector
from engine.default_model import CLASSES, INPUT_SIZE, ONNX_PATH, OUTPUT_STRIDE
from engine.default_model.decode import decode_batch
from engine.default_model.export import read_operating_points, store_operating_points
from engine.default_model.metadata import read_onnx_metadata
from engine.default_model.operating_points import (
    METADATA_KEY,
    OperatingPointError,
    decide_operating_points,
    parse_operating_points,
)
from engine.grammar import parse_grounded_text
from engine.model import GenerationRequest, ModelError
from engine.vocabulary import lookup

SHIPPED = json.loads(read_onnx_metadata(ONNX_PATH)[METADATA_KEY])


def _rows(counts: dict[str, tuple[int, int, int]]) -> dict[str, dict]:
    """evaluate's model_rows from (boxes, predictions, hits) per class (others: nothing found)."""
    return {
        label: dict(zip(("gt_boxes", "predictions", "hits"), counts.get(label, (10, 0, 0)), strict=True))
        for label in CLASSES
    }


def test_a_class_is_reported_only_where_held_out_patients_bear_its_threshold_out() -> None:
    tuning = dict.fromkeys(CLASSES, 0.3) | {"Infiltrate": 0.1}
    points = decide_operating_points(
        tuning,
        _rows({"Cardiomegaly": (21, 36, 16), "Infiltrate": (25, 16, 2), "Nodule": (13, 5, 1)}),
        images=145,
        heldout="validation patients",
    )
    # 16/36 right: reported; 2/16 (one in eight) and nothing found: not; 1/5 exactly one in five: reported
    assert points.reported_classes == ("Cardiomegaly", "Nodule")
    assert points.thresholds["Infiltrate"] is None and points.thresholds["Cardiomegaly"] == 0.3
    by_label = {p.label: p for p in points.classes}
    assert by_label["Cardiomegaly"].precision == 16 / 36 and by_label["Cardiomegaly"].recall == 16 / 21
    assert by_label["Atelectasis"].precision is None  # it reported nothing
    assert parse_operating_points(points.to_metadata()) == points  # stored and read back unchanged


def test_the_shipped_model_stores_a_consistent_decision() -> None:
    points = parse_operating_points(json.dumps(SHIPPED))
    decided = decide_operating_points(
        {p.label: p.tuning_threshold for p in points.classes},
        {p.label: {"gt_boxes": p.boxes, "predictions": p.predictions, "hits": p.hits} for p in points.classes},
        images=points.classes[0].images,
        heldout=points.heldout,
    )
    assert decided == points  # the stored decision is the rule applied to the stored counts
    detector = OnnxDetector(intra_op_threads=1)
    assert detector.reported_classes == points.reported_classes
    assert set(detector.class_score_thresholds) == set(points.reported_classes)
    assert detector.info.version.startswith(read_onnx_metadata(ONNX_PATH)["model_release"] + "+")
    assert "class_score_thresholds" not in read_onnx_metadata(ONNX_PATH)  # one place for the thresholds


def _broken(**changes) -> str:
    data = json.loads(json.dumps(SHIPPED))
    for label, entry in changes.items():
        if entry is None:
            del data["classes"][label]
        else:
            data["classes"].setdefault(label, {}).update(entry)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_broken(Infiltrate={"threshold": 0.1, "tuning_threshold": 0.1, "predictions": 16, "hits": 2}),
         "Infiltrate is reported but only 2 of its 16 held-out boxes were right"),
        (_broken(Cardiomegaly={"threshold": 0.5, "tuning_threshold": 0.15}),
         "Cardiomegaly: threshold 0.5 differs from tuning_threshold 0.15"),
        (_broken(Mass=None), "missing ['Mass']"),
        (_broken(Bronchitis={"threshold": None}), "unknown ['Bronchitis']"),
        (_broken(Cardiomegaly={"hits": 40}), "Cardiomegaly: 40 hits cannot exceed"),
        (_broken(Effusion={"threshold": 1.5}), "Effusion threshold must be in (0, 1)"),
        (_broken(Nodule={"predictions": -3}), "Nodule predictions must be a whole number"),
        ("not json", "not JSON"),
    ],
)
def test_inconsistent_operating_points_are_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(OperatingPointError) as caught:
        parse_operating_points(text)
    assert message in str(caught.value)


def _with_metadata(tmp_path: Path, **props: str) -> Path:
    import onnx

    proto = onnx.load(str(ONNX_PATH))
    current = {p.key: p.value for p in proto.metadata_props}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {**current, **props})
    out = tmp_path / "model.onnx"
    onnx.save(proto, str(out))
    return out


def test_a_model_with_inconsistent_metadata_does_not_load(tmp_path: Path) -> None:
    bad = _broken(Infiltrate={"threshold": 0.1, "tuning_threshold": 0.1, "predictions": 16, "hits": 2})
    with pytest.raises(ModelError, match="model.onnx: metadata operating_points: Infiltrate is reported"):
        OnnxDetector(_with_metadata(tmp_path, operating_points=bad))
    # the older per-class thresholds may not contradict the operating points
    contradicting = json.dumps(dict.fromkeys(CLASSES, 0.3))
    with pytest.raises(ModelError, match="class_score_thresholds .* contradicts operating_points"):
        OnnxDetector(_with_metadata(tmp_path, class_score_thresholds=contradicting))


def test_store_operating_points_rewrites_metadata_only(tmp_path: Path) -> None:
    import onnx

    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps({"operating_points": SHIPPED}))
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(ONNX_PATH.read_bytes())
    store_operating_points(copy, read_operating_points(evaluation), release="9.9")
    assert onnx.load(str(copy)).graph == onnx.load(str(ONNX_PATH)).graph
    assert read_onnx_metadata(copy)["model_release"] == "9.9"
    assert OnnxDetector(copy).info.version.startswith("9.9+")
    evaluation.write_text(json.dumps({"operating_points": json.loads(_broken(Mass=None))}))
    with pytest.raises(ValueError, match="missing"):
        read_operating_points(evaluation)


def test_metadata_is_read_without_onnx_exactly_as_onnx_reads_it() -> None:
    import onnx

    assert read_onnx_metadata(ONNX_PATH) == {p.key: p.value for p in onnx.load(str(ONNX_PATH)).metadata_props}


# -- never emitted ----------------------------------------------------------------


def _heatmap_with_peaks(peaks: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = INPUT_SIZE[1] // OUTPUT_STRIDE, INPUT_SIZE[0] // OUTPUT_STRIDE
    heat = np.zeros((1, len(CLASSES), h, w), np.float32)
    for i, (label, score) in enumerate(peaks.items()):
        heat[0, CLASSES.index(label), 4 + 5 * i, 4 + 5 * i] = score
    size = np.full((1, 2, h, w), 6.0, np.float32)
    offset = np.zeros((1, 2, h, w), np.float32)
    return heat, size, offset


def test_decode_never_emits_a_class_that_may_not_be_emitted() -> None:
    heat, size, offset = _heatmap_with_peaks({"Effusion": 1.0, "Cardiomegaly": 0.4})
    emit = np.array([label == "Cardiomegaly" for label in CLASSES])
    [decoded] = decode_batch(heat, size, offset, input_size=INPUT_SIZE, score_threshold=0.1, emit_classes=emit)
    assert [CLASSES[int(c)] for c in decoded.classes] == ["Cardiomegaly"]
    with pytest.raises(ValueError, match="one flag per class"):
        decode_batch(heat, size, offset, input_size=INPUT_SIZE, score_threshold=0.1, emit_classes=emit[:3])


class _FixedSession:
    """Stands in for the ONNX Runtime session: every image gets the same outputs."""

    def __init__(self, outputs: tuple[np.ndarray, ...]) -> None:
        self.outputs = outputs

    def get_inputs(self):
        return [type("Input", (), {"name": "images"})()]

    def run(self, _names, feeds):
        n = len(feeds["images"])
        return [np.repeat(o, n, axis=0) for o in self.outputs]


@pytest.mark.parametrize("threshold", [None, 0.01])
def test_unreported_classes_are_never_emitted_even_when_the_model_is_sure(threshold: float | None) -> None:
    detector = OnnxDetector(intra_op_threads=1, score_threshold=threshold)
    unreported = [label for label in CLASSES if label not in detector.reported_classes]
    reported = detector.reported_classes[0]
    assert unreported, "the shipped model reports some classes only"
    detector._session = _FixedSession(_heatmap_with_peaks({**dict.fromkeys(unreported, 0.999), reported: 0.98}))
    detector._session_pid = os.getpid()
    image = np.zeros((INPUT_SIZE[1], INPUT_SIZE[0], 3), np.float32)
    [decoded] = detector.detect([image])
    assert [CLASSES[int(c)] for c in decoded.classes] == [reported]
    for language in ("en", "zh-CN"):
        [text] = detector.generate([GenerationRequest(image, "grounded_report", language=language)])
        labels = [lookup(label).key for phrase in parse_grounded_text(text).phrases for label in phrase.labels]
        assert labels == [reported.lower()]
    # evaluation alone may look at every class
    everything = detector.detect([image], include_unreported=True)[0]
    assert {CLASSES[int(c)] for c in everything.classes} == set(CLASSES)
