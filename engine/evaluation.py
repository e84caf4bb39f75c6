"""Evaluating grounded detections: MedRegA's Region-Aligned metrics and mAP@0.5.

Region-Aligned metrics (MedRegA, Wang et al., "Interpretable Bilingual
Multimodal Large Language Model for Diverse Biomedical Tasks"; see MEDREGA.md):
for each image, predicted and ground-truth (label, box) pairs are matched
one-to-one by the Hungarian algorithm on the cost ``1 - IoU``. A matched pair is

* a **detected region** when its IoU >= 0.5 (whatever the labels),
* a **detected object** when its labels agree (whatever the IoU),
* **aligned** when both hold.

Per image, with ``M`` ground-truth and ``N`` predicted boxes and ``k`` hits of
one kind, two conventions are computed:

* :attr:`Convention.MEDREGA` — MedRegA's published code divides **precision by
  M** (``k / M``) and **recall by N** (``k / N``);
* :attr:`Convention.USUAL` — the usual detection convention: precision ``k / N``,
  recall ``k / M``.

A zero denominator gives 0 (as MedRegA's code does). F1 is computed per image
from that image's precision and recall and, like both, averaged over images.
The mean IoU is the mean over all Hungarian pairs (hits or not) of all images.

mAP@0.5 is the PASCAL VOC all-point interpolated average precision per class
(Everingham et al., IJCV 2010): detections of a class are ranked by score over
all images, greedily matched to unmatched ground truth of that class with
IoU >= 0.5; detections with **equal scores** are taken as one threshold step,
so a constant-score baseline gets a single precision/recall point instead of an
order-dependent curve.

Pure numpy/scipy; no model code.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from engine.errors import EngineError

__all__ = [
    "Convention",
    "Detection",
    "EvaluationError",
    "ImageMatch",
    "RegionAlignedMetrics",
    "average_precision",
    "box_iou_matrix",
    "hungarian_match",
    "mean_average_precision",
    "region_aligned_metrics",
]

#: IoU at which a matched pair counts as a detected region / true positive.
IOU_THRESHOLD = 0.5


class EvaluationError(EngineError, ValueError):
    """Evaluation inputs are malformed."""


class Convention(enum.StrEnum):
    """Which count divides precision and recall (see the module docstring)."""

    #: MedRegA's code: precision = hits / ground-truth count M, recall = hits / prediction count N.
    MEDREGA = "medrega"
    #: The usual detection convention: precision = hits / N, recall = hits / M.
    USUAL = "usual"


@dataclass(frozen=True)
class Detection:
    """One labelled box (a prediction or a ground truth).

    Parameters
    ----------
    label
        Class or object name; compared exactly (normalise before).
    box
        ``(x_min, y_min, x_max, y_max)`` in any one pixel space shared by the
        predictions and ground truth of the image.
    score
        Confidence for ranking (mAP); ground truth leaves the default 1.
    """

    label: str
    box: tuple[float, float, float, float]
    score: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label:
            raise EvaluationError(f"Detection.label must be a non-empty string, got {self.label!r}")
        try:
            box = tuple(float(v) for v in self.box)
        except (TypeError, ValueError):
            raise EvaluationError(f"Detection.box must be four numbers, got {self.box!r}") from None
        if (
            len(box) != 4
            or not all(math.isfinite(v) for v in box)
            or box[0] > box[2]
            or box[1] > box[3]
        ):
            raise EvaluationError(
                f"Detection.box must be finite (x_min, y_min, x_max, y_max), got {self.box!r}"
            )
        object.__setattr__(self, "box", box)
        if not math.isfinite(float(self.score)):
            raise EvaluationError(f"Detection.score must be finite, got {self.score!r}")
        object.__setattr__(self, "score", float(self.score))


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (n, 4) with every box in ``b`` (m, 4); shape (n, m).

    Boxes are ``x_min, y_min, x_max, y_max``; a pair with zero union has IoU 0.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(
        np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    iy = np.clip(
        np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None
    )
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def hungarian_match(
    predictions: Sequence[Detection], truths: Sequence[Detection]
) -> list[tuple[int, int, float]]:
    """One-to-one matching minimising the summed ``1 - IoU`` (MedRegA).

    Returns
    -------
    list of (prediction index, truth index, IoU)
        ``min(N, M)`` pairs, whatever their IoU (labels are not used).
    """
    if not predictions or not truths:
        return []
    iou = box_iou_matrix(np.array([p.box for p in predictions]), np.array([t.box for t in truths]))
    rows, cols = linear_sum_assignment(1.0 - iou)
    return [(int(r), int(c), float(iou[r, c])) for r, c in zip(rows, cols, strict=True)]


@dataclass(frozen=True)
class ImageMatch:
    """Counts of one image's matching.

    Attributes
    ----------
    n_predictions, n_truths
        N and M.
    regions, objects, aligned
        Hits of each kind among the Hungarian pairs.
    ious
        IoU of every Hungarian pair.
    """

    n_predictions: int
    n_truths: int
    regions: int
    objects: int
    aligned: int
    ious: tuple[float, ...]

    @classmethod
    def of(
        cls,
        predictions: Sequence[Detection],
        truths: Sequence[Detection],
        *,
        iou_threshold: float = IOU_THRESHOLD,
    ) -> ImageMatch:
        """Match ``predictions`` to ``truths`` and count the hits."""
        pairs = hungarian_match(predictions, truths)
        region = [iou >= iou_threshold for _, _, iou in pairs]
        obj = [predictions[p].label == truths[t].label for p, t, _ in pairs]
        return cls(
            n_predictions=len(predictions),
            n_truths=len(truths),
            regions=sum(region),
            objects=sum(obj),
            aligned=sum(r and o for r, o in zip(region, obj, strict=True)),
            ious=tuple(iou for _, _, iou in pairs),
        )

    def precision_recall(self, hits: int, convention: Convention) -> tuple[float, float, float]:
        """(precision, recall, F1) of this image for ``hits`` under ``convention``."""
        by_truth = hits / self.n_truths if self.n_truths else 0.0
        by_prediction = hits / self.n_predictions if self.n_predictions else 0.0
        if Convention(convention) is Convention.MEDREGA:
            precision, recall = by_truth, by_prediction
        else:
            precision, recall = by_prediction, by_truth
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        return precision, recall, f1


@dataclass(frozen=True)
class RegionAlignedMetrics:
    """Region-Aligned metrics over a set of images, under one convention.

    Each of ``region``, ``object`` and ``aligned`` maps ``"precision"``,
    ``"recall"`` and ``"f1"`` to the per-image average; ``mean_iou`` is over all
    Hungarian pairs (NaN when there was none); ``images`` is how many images
    were averaged.
    """

    convention: Convention
    images: int
    region: Mapping[str, float] = field(default_factory=dict)
    object: Mapping[str, float] = field(default_factory=dict)
    aligned: Mapping[str, float] = field(default_factory=dict)
    mean_iou: float = float("nan")


def region_aligned_metrics(
    images: Iterable[tuple[Sequence[Detection], Sequence[Detection]]],
    *,
    convention: Convention = Convention.MEDREGA,
    iou_threshold: float = IOU_THRESHOLD,
) -> RegionAlignedMetrics:
    """MedRegA Region-Aligned metrics over ``(predictions, truths)`` per image.

    Images with neither predictions nor truths are skipped (nothing to score).
    """
    convention = Convention(convention)
    sums = {kind: np.zeros(3) for kind in ("region", "object", "aligned")}
    ious: list[float] = []
    count = 0
    for predictions, truths in images:
        if not predictions and not truths:
            continue
        match = ImageMatch.of(predictions, truths, iou_threshold=iou_threshold)
        count += 1
        ious.extend(match.ious)
        for kind, hits in (
            ("region", match.regions),
            ("object", match.objects),
            ("aligned", match.aligned),
        ):
            sums[kind] += match.precision_recall(hits, convention)
    averages = {
        kind: dict(
            zip(
                ("precision", "recall", "f1"),
                (s / count if count else np.zeros(3)).tolist(),
                strict=True,
            )
        )
        for kind, s in sums.items()
    }
    return RegionAlignedMetrics(
        convention=convention,
        images=count,
        region=averages["region"],
        object=averages["object"],
        aligned=averages["aligned"],
        mean_iou=float(np.mean(ious)) if ious else float("nan"),
    )


def average_precision(
    images: Sequence[tuple[Sequence[Detection], Sequence[Detection]]],
    label: str,
    *,
    iou_threshold: float = IOU_THRESHOLD,
) -> float:
    """VOC all-point AP of ``label`` over ``(predictions, truths)`` per image.

    Returns NaN when no image has a ground-truth box of ``label``.
    """
    scored: list[tuple[float, int, Detection]] = []
    truths_by_image: list[list[Detection]] = []
    n_truths = 0
    for index, (predictions, truths) in enumerate(images):
        mine = [t for t in truths if t.label == label]
        truths_by_image.append(mine)
        n_truths += len(mine)
        scored.extend((p.score, index, p) for p in predictions if p.label == label)
    if n_truths == 0:
        return float("nan")
    scored.sort(key=lambda item: -item[0])
    used = [np.zeros(len(t), dtype=bool) for t in truths_by_image]
    recalls, precisions = [0.0], [1.0]
    tp = fp = 0
    for position, (score, index, prediction) in enumerate(scored):
        truths = truths_by_image[index]
        hit = False
        if truths:
            iou = box_iou_matrix(np.array([prediction.box]), np.array([t.box for t in truths]))[0]
            iou[used[index]] = -1.0
            best = int(np.argmax(iou))
            if iou[best] >= iou_threshold:
                used[index][best] = True
                hit = True
        tp += hit
        fp += not hit
        last_of_tie = position + 1 == len(scored) or scored[position + 1][0] != score
        if last_of_tie:
            recalls.append(tp / n_truths)
            precisions.append(tp / (tp + fp))
    recall = np.array(recalls + [recalls[-1]])
    precision = np.array(precisions + [0.0])
    # precision envelope: monotonically non-increasing from the right
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def mean_average_precision(
    images: Sequence[tuple[Sequence[Detection], Sequence[Detection]]],
    labels: Sequence[str],
    *,
    iou_threshold: float = IOU_THRESHOLD,
) -> tuple[float, dict[str, float]]:
    """mAP over ``labels`` (classes without ground truth are left out) and AP per label."""
    per_label = {
        label: average_precision(images, label, iou_threshold=iou_threshold) for label in labels
    }
    present = [ap for ap in per_label.values() if not math.isnan(ap)]
    return (float(np.mean(present)) if present else float("nan")), per_label
