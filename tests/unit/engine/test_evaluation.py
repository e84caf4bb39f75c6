"""MedRegA Region-Aligned metrics and mAP@0.5 on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.evaluation import (
    Convention,
    Detection,
    EvaluationError,
    ImageMatch,
    average_precision,
    box_iou_matrix,
    hungarian_match,
    mean_average_precision,
    region_aligned_metrics,
)


def strip(x1: float, x2: float, label: str = "a", score: float = 1.0) -> Detection:
    """A box 10 pixels high spanning x1..x2 (IoUs reduce to 1-D overlaps)."""
    return Detection(label, (x1, 0, x2, 10), score)


def test_iou_matrix_by_hand() -> None:
    iou = box_iou_matrix(
        np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    )
    assert iou.shape == (1, 3)
    assert iou[0] == pytest.approx([50 / 150, 0.0, 1.0])


def test_hungarian_maximises_total_iou_not_greedy() -> None:
    # P0 overlaps T0 best (0.667) but P1 overlaps only T0 well (0.818): the optimum
    # gives T0 to P1 and T1 (0.429) to P0, total 1.247 > greedy's 0.667 + 0.176.
    truths = [strip(0, 10), strip(6, 16)]
    predictions = [strip(2, 12), strip(-1, 9)]
    pairs = sorted(hungarian_match(predictions, truths))
    assert [(p, t) for p, t, _ in pairs] == [(0, 1), (1, 0)]
    assert pairs[0][2] == pytest.approx(6 / 14)
    assert pairs[1][2] == pytest.approx(9 / 11)
    match = ImageMatch.of(predictions, truths)
    assert (match.regions, match.objects, match.aligned) == (1, 2, 1)


def test_region_object_and_aligned_are_distinct() -> None:
    truths = [strip(0, 10, "cat"), strip(100, 110, "dog")]
    # IoU 1 wrong label; IoU 7/13 right label
    predictions = [strip(0, 10, "dog"), strip(103, 113, "dog")]
    match = ImageMatch.of(predictions, truths)
    assert match.regions == 2
    assert match.objects == 1
    assert match.aligned == 1
    far = ImageMatch.of([strip(100, 120, "dog")], [strip(100, 110, "dog")])  # IoU 0.5 counts (>=)
    assert (far.regions, far.aligned) == (1, 1)
    miss = ImageMatch.of([strip(100, 130, "dog")], [strip(100, 110, "dog")])  # IoU 1/3
    assert (miss.regions, miss.objects, miss.aligned) == (0, 1, 0)


def test_medrega_divides_precision_by_truths_and_recall_by_predictions() -> None:
    # image 1: N=3 predictions, M=1 truth, 1 hit; image 2: N=1, M=2, 1 hit
    image1 = ([strip(0, 10), strip(50, 60), strip(200, 210)], [strip(0, 10)])
    image2 = ([strip(0, 10)], [strip(0, 10), strip(300, 310)])
    medrega = region_aligned_metrics([image1, image2], convention=Convention.MEDREGA)
    usual = region_aligned_metrics([image1, image2], convention=Convention.USUAL)
    assert medrega.images == usual.images == 2
    assert medrega.region["precision"] == pytest.approx((1 / 1 + 1 / 2) / 2)
    assert medrega.region["recall"] == pytest.approx((1 / 3 + 1 / 1) / 2)
    assert usual.region["precision"] == pytest.approx((1 / 3 + 1 / 1) / 2)
    assert usual.region["recall"] == pytest.approx((1 / 1 + 1 / 2) / 2)
    # F1 is per image, then averaged: 0.5 and 2/3 under both conventions
    assert medrega.region["f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert usual.region["f1"] == pytest.approx(medrega.region["f1"])
    # mean IoU over the Hungarian pairs: image 1 has one pair (IoU 1), image 2 one pair (IoU 1)
    assert medrega.mean_iou == pytest.approx(1.0)


def test_empty_images_are_skipped_and_missed_truths_score_zero() -> None:
    result = region_aligned_metrics(
        [([], []), ([], [strip(0, 10)]), ([strip(0, 10)], [strip(0, 10)])]
    )
    assert result.images == 2
    assert result.aligned["precision"] == pytest.approx(0.5)
    assert result.aligned["recall"] == pytest.approx(0.5)
    assert math.isnan(region_aligned_metrics([]).mean_iou)


def test_average_precision_by_hand() -> None:
    # two truths on two images; ranked hits: 0.9 hit, 0.8 miss, 0.7 hit
    images = [
        ([strip(0, 10, score=0.9), strip(50, 60, score=0.8)], [strip(0, 10)]),
        ([strip(0, 10, score=0.7)], [strip(1, 11)]),
    ]
    # PR points (0.5, 1), (0.5, 0.5), (1, 2/3): envelope gives 0.5 * 1 + 0.5 * 2/3
    assert average_precision(images, "a") == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_duplicate_detections_of_one_truth_are_false_positives() -> None:
    images = [([strip(0, 10, score=0.9), strip(0, 10, score=0.8)], [strip(0, 10)])]
    # the duplicate comes after full recall
    assert average_precision(images, "a") == pytest.approx(1.0)
    images = [([strip(0, 10, score=0.9), strip(0, 10, score=0.8)], [strip(0, 10), strip(500, 510)])]
    assert average_precision(images, "a") == pytest.approx(0.5)


def test_tied_scores_are_one_threshold_step_whatever_their_order() -> None:
    hit_first = [([strip(0, 10, score=0.5), strip(50, 60, score=0.5)], [strip(0, 10)])]
    miss_first = [([strip(50, 60, score=0.5), strip(0, 10, score=0.5)], [strip(0, 10)])]
    # one PR point: recall 1, precision 1/2
    assert average_precision(hit_first, "a") == pytest.approx(0.5)
    assert average_precision(miss_first, "a") == pytest.approx(0.5)


def test_map_skips_classes_without_truths_and_ignores_other_labels() -> None:
    images = [([strip(0, 10, "a"), strip(0, 10, "b")], [strip(0, 10, "a")])]
    value, per_label = mean_average_precision(images, ["a", "b"])
    assert per_label["a"] == pytest.approx(1.0)
    assert math.isnan(per_label["b"])
    assert value == pytest.approx(1.0)
    assert average_precision([([strip(0, 10, "b")], [strip(0, 10, "a")])], "a") == 0.0


def test_detection_validates() -> None:
    with pytest.raises(EvaluationError):
        Detection("", (0, 0, 1, 1))
    with pytest.raises(EvaluationError):
        Detection("a", (5, 0, 1, 1))
    with pytest.raises(EvaluationError):
        Detection("a", (0, 0, 1))
