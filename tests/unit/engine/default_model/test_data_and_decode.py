"""Dataset split by patient, train/serve input parity, and heatmap decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.default_model import CLASSES, INPUT_SIZE, OUTPUT_STRIDE
from engine.default_model.data import (
    DatasetError,
    load_dataset,
    load_image,
    split_by_patient,
    to_model_input,
)
from engine.default_model.decode import decode_batch


@pytest.fixture(scope="module")
def nih(shared_data: Path) -> Path:
    return shared_data / "nih-cxr-boxes"


def test_dataset_reads_every_box_with_known_classes(nih: Path) -> None:
    images = load_dataset(nih)
    assert len(images) == 721
    assert sum(len(im.labels) for im in images) == 804
    assert {CLASSES[int(c)] for im in images for c in im.labels} == set(CLASSES)
    for im in images:
        assert (im.boxes[:, 0] < im.boxes[:, 2]).all() and (im.boxes[:, 1] < im.boxes[:, 3]).all()


def test_findings_labelled_but_not_boxed_are_known_per_image(nih: Path) -> None:
    by_name = {im.name: im for im in load_dataset(nih)}
    # all_labels "Atelectasis|Cardiomegaly|Effusion|Infiltration", one Atelectasis box
    image = by_name["00000211_010.png"]
    assert [CLASSES[int(c)] for c in image.labels] == ["Atelectasis"]
    assert [CLASSES[int(c)] for c in image.unboxed] == ["Cardiomegaly", "Effusion", "Infiltrate"]
    for im in by_name.values():
        assert not set(im.unboxed.tolist()) & set(im.labels.tolist())
    assert sum(len(im.unboxed) > 0 for im in by_name.values()) == 428  # of 721


def test_split_is_by_patient_reproducible_and_about_a_fifth(nih: Path) -> None:
    images = load_dataset(nih)
    train, validation = split_by_patient(images, seed=0)
    assert len(train) + len(validation) == len(images)
    assert not {im.patient_id for im in train} & {im.patient_id for im in validation}
    assert 0.18 <= len(validation) / len(images) <= 0.25
    again = split_by_patient(images, seed=0)[1]
    assert [im.name for im in again] == [im.name for im in validation]
    other = split_by_patient(images, seed=1)[1]
    assert [im.name for im in other] != [im.name for im in validation]
    with pytest.raises(DatasetError):
        split_by_patient(images, validation_fraction=1.0)


def test_training_input_matches_the_dicom_pipeline_resize(nih: Path) -> None:
    """A PNG through to_model_input equals engine.pixels' stretch of the same pixels."""
    from engine.model import ResizeMode
    from engine.pixels.geometry import fit_to_size, plan_transform

    array, original = load_image(nih, "00000072_000.png", size=INPUT_SIZE)
    assert array.shape == (INPUT_SIZE[1], INPUT_SIZE[0]) and array.dtype == np.float32
    from PIL import Image

    with Image.open(nih / "images" / "00000072_000.png") as png:
        gray = np.asarray(png.convert("L"), dtype=np.float32) / 255.0
    transform = plan_transform(original, size=INPUT_SIZE, resize_mode=ResizeMode.STRETCH)
    served = fit_to_size(gray, transform)
    np.testing.assert_allclose(served[..., 0], array, atol=1e-6)
    with pytest.raises(DatasetError):
        to_model_input(np.zeros((4, 4, 3), np.float32), INPUT_SIZE)


def _synthetic(batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w, h = INPUT_SIZE[0] // OUTPUT_STRIDE, INPUT_SIZE[1] // OUTPUT_STRIDE
    heat = np.zeros((batch, len(CLASSES), h, w), np.float32)
    size = np.zeros((batch, 2, h, w), np.float32)
    offset = np.zeros((batch, 2, h, w), np.float32)
    for i in range(batch):
        heat[i, 1, 10, 12] = 0.9  # cardiomegaly at cell (12, 10)
        size[i, :, 10, 12] = (8.0, 4.0)
        offset[i, :, 10, 12] = (0.5, 0.25)
        heat[i, 5, 3, 3] = 0.2  # a weak nodule
        size[i, :, 3, 3] = (1.0, 1.0)
    return heat, size, offset


def test_decode_places_boxes_from_cell_offset_and_size() -> None:
    heat, size, offset = _synthetic(1)
    [decoded] = decode_batch(heat, size, offset, input_size=INPUT_SIZE, score_threshold=0.5)
    assert len(decoded) == 1
    assert CLASSES[int(decoded.classes[0])] == "Cardiomegaly"
    assert decoded.scores[0] == pytest.approx(0.9)
    cx, cy = (12 + 0.5) * OUTPUT_STRIDE, (10 + 0.25) * OUTPUT_STRIDE
    np.testing.assert_allclose(decoded.boxes[0], [cx - 32, cy - 16, cx + 32, cy + 16])
    [both] = decode_batch(heat, size, offset, input_size=INPUT_SIZE, score_threshold=0.1)
    assert [CLASSES[int(c)] for c in both.classes] == ["Cardiomegaly", "Nodule"]


def test_decode_takes_one_threshold_per_class() -> None:
    heat, size, offset = _synthetic(1)  # cardiomegaly 0.9, nodule 0.2
    thresholds = np.full(len(CLASSES), 0.95, np.float32)
    thresholds[CLASSES.index("Nodule")] = 0.15
    [decoded] = decode_batch(heat, size, offset, input_size=INPUT_SIZE, score_threshold=thresholds)
    assert [CLASSES[int(c)] for c in decoded.classes] == ["Nodule"]
    thresholds[CLASSES.index("Cardiomegaly")] = 0.9  # at the threshold counts
    [decoded] = decode_batch(heat, size, offset, input_size=INPUT_SIZE, score_threshold=thresholds)
    assert [CLASSES[int(c)] for c in decoded.classes] == ["Cardiomegaly", "Nodule"]


def test_decode_clips_to_the_input_and_removes_duplicates() -> None:
    heat, size, offset = _synthetic(1)
    heat[0, 1, 10, 14] = 0.8  # a second cardiomegaly peak, same box almost
    size[0, :, 10, 14] = (8.0, 4.0)
    offset[0, :, 10, 14] = (-1.5, 0.25)
    heat[0, 2, 0, 0] = 0.7  # effusion spilling over the top-left corner
    size[0, :, 0, 0] = (6.0, 6.0)
    [decoded] = decode_batch(heat, size, offset, input_size=INPUT_SIZE, score_threshold=0.5)
    labels = [CLASSES[int(c)] for c in decoded.classes]
    assert labels.count("Cardiomegaly") == 1
    effusion = decoded.boxes[labels.index("Effusion")]
    assert effusion[0] == 0 and effusion[1] == 0


def test_decode_is_the_same_per_image_in_any_batch() -> None:
    rng = np.random.default_rng(3)
    heat = rng.random((8, len(CLASSES), 32, 32), dtype=np.float32) ** 8
    size = rng.random((8, 2, 32, 32), dtype=np.float32) * 10
    offset = rng.random((8, 2, 32, 32), dtype=np.float32)
    batched = decode_batch(heat, size, offset, input_size=INPUT_SIZE, score_threshold=0.3)
    for i in range(8):
        [single] = decode_batch(
            heat[i : i + 1],
            size[i : i + 1],
            offset[i : i + 1],
            input_size=INPUT_SIZE,
            score_threshold=0.3,
        )
        np.testing.assert_array_equal(single.boxes, batched[i].boxes)
        np.testing.assert_array_equal(single.classes, batched[i].classes)
