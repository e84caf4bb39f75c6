"""Turning the detector's heatmaps into boxes (numpy; one code path for any batch).

The exported graph already applies the sigmoid and CenterNet's 3x3 max-pool
peak suppression, so a surviving heatmap cell is a local maximum. Here, per
image: the top-``k`` peaks over all classes at or above ``score_threshold``
(one value, or one per class) become
boxes (centre = cell + offset, size = predicted w, h; times the stride), boxes
are clipped to the input, then a per-class greedy NMS at ``nms_iou`` removes
duplicates that the 3x3 suppression let through (large findings can peak twice).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.default_model.config import OUTPUT_STRIDE

__all__ = ["DecodedImage", "decode_batch"]


@dataclass(frozen=True)
class DecodedImage:
    """Detections of one image, best first.

    Attributes
    ----------
    boxes
        float32 (n, 4) ``x_min, y_min, x_max, y_max`` in model-input pixels.
    scores
        float32 (n,) detector confidence in [0, 1] (the heatmap peak).
    classes
        int64 (n,) class indices.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        ix = np.clip(
            np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]),
            0,
            None,
        )
        iy = np.clip(
            np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]),
            0,
            None,
        )
        inter = ix * iy
        union = areas[i] + areas[rest] - inter
        overlap = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
        order = rest[overlap <= iou]
    return keep


def decode_batch(
    heatmap: np.ndarray,
    size: np.ndarray,
    offset: np.ndarray,
    *,
    input_size: tuple[int, int],
    score_threshold: float | np.ndarray,
    top_k: int = 20,
    nms_iou: float = 0.5,
    max_detections: int = 10,
    emit_classes: np.ndarray | None = None,
) -> list[DecodedImage]:
    """Decode the graph's outputs for a batch.

    Parameters
    ----------
    heatmap
        (N, C, h, w) peak-suppressed class probabilities.
    size, offset
        (N, 2, h, w) box (w, h) in cells and centre offset in cells.
    input_size
        Model input ``(width, height)`` in pixels (boxes are clipped to it).
    score_threshold
        Minimum peak probability for a detection: one value for every class,
        or a (C,) array with one per class.
    top_k
        Peaks considered per image before NMS.
    nms_iou
        Per-class NMS IoU.
    max_detections
        Detections kept per image after NMS.
    emit_classes
        (C,) booleans: the classes that may be emitted at all (the model's
        reported classes); the others are never decoded, whatever their score.
        Default: every class.
    """
    heatmap = np.asarray(heatmap, dtype=np.float32)
    n, n_classes, h, w = heatmap.shape
    width, height = input_size
    thresholds = np.broadcast_to(np.asarray(score_threshold, dtype=np.float32), (n_classes,))
    if emit_classes is not None:
        emit = np.asarray(emit_classes, dtype=bool)
        if emit.shape != (n_classes,):
            raise ValueError(
                f"emit_classes must have one flag per class ({n_classes}), got shape {emit.shape}"
            )
        # a class that may not be emitted has no peaks at all: it cannot crowd others out of the top
        # k
        heatmap = np.where(emit[None, :, None, None], heatmap, np.float32(-1.0))
    results = []
    for i in range(n):
        flat = heatmap[i].reshape(-1)
        k = min(top_k, flat.size)
        candidates = np.argpartition(-flat, k - 1)[:k]
        candidates = candidates[np.argsort(-flat[candidates], kind="stable")]
        cls, rem = np.divmod(candidates, h * w)
        above = flat[candidates] >= thresholds[cls]
        candidates, cls, rem = candidates[above], cls[above], rem[above]
        ys, xs = np.divmod(rem, w)
        cx = (xs + offset[i, 0, ys, xs]) * OUTPUT_STRIDE
        cy = (ys + offset[i, 1, ys, xs]) * OUTPUT_STRIDE
        bw = size[i, 0, ys, xs] * OUTPUT_STRIDE
        bh = size[i, 1, ys, xs] * OUTPUT_STRIDE
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).astype(
            np.float32
        )
        boxes = boxes.reshape(-1, 4)
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
        scores = flat[candidates].astype(np.float32)
        valid = (boxes[:, 2] - boxes[:, 0] >= 1.0) & (boxes[:, 3] - boxes[:, 1] >= 1.0)
        boxes, scores, cls = boxes[valid], scores[valid], cls[valid]
        keep: list[int] = []
        for label in np.unique(cls):
            idx = np.flatnonzero(cls == label)
            keep.extend(int(idx[j]) for j in _nms(boxes[idx], scores[idx], nms_iou))
        keep.sort(key=lambda j: (-scores[j], j))
        keep = keep[:max_detections]
        results.append(
            DecodedImage(
                boxes=boxes[keep].reshape(-1, 4),
                scores=scores[keep],
                classes=cls[keep].astype(np.int64),
            )
        )
    return results
