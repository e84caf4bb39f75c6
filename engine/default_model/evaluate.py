"""Evaluating the shipped detector on the validation patients (numbers for MODEL_CARD.md).

For every class: MedRegA Region-Aligned metrics (both conventions, see
:mod:`engine.evaluation`) at the model's operating thresholds, and AP@0.5 over
all detections (threshold 0.01), for the ONNX model and for the baseline that
predicts, on every image, each class's mean training box (scored with the
class's training prevalence), plus a bootstrap interval of each class's AP
margin over that baseline. All boxes are compared in pixels of the 512 x 512
PNGs. Thresholds are never chosen on validation: the per-class ones stored in
the model come from the tuning patients (``--tuning`` on a model trained with
``train --tuning``); a model without them gets one threshold chosen on the
training images (the best overall aligned F1, usual convention).

Scored at per-class thresholds, the result also holds ``operating_points``:
which classes the validation patients bear out at those thresholds
(:mod:`engine.default_model.operating_points`), ready for
``export --operating-points`` to store in the model.

Run it::

    python -m engine.default_model.evaluate --data ../shared/data/nih-cxr-boxes \\
        --model engine/default_model/radground-cxr-det.onnx --json /tmp/metrics.json
    # a tuning run: scores the tuning patients and chooses per-class thresholds
    python -m engine.default_model.evaluate --data ../shared/data/nih-cxr-boxes \\
        --model /tmp/tuning-run/model.onnx --tuning --json /tmp/tuning.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.default_model.config import CLASSES, INPUT_SIZE
from engine.default_model.data import (
    LabelledImage,
    load_dataset,
    load_image,
    split_by_patient,
    split_for_tuning,
)
from engine.default_model.operating_points import decide_operating_points
from engine.evaluation import (
    Convention,
    Detection,
    ImageMatch,
    mean_average_precision,
    region_aligned_metrics,
)

if TYPE_CHECKING:
    from engine.backends.onnxruntime_backend import OnnxDetector

__all__ = [
    "bootstrap",
    "choose_class_thresholds",
    "choose_threshold",
    "evaluate",
    "main",
    "mean_box_baseline",
    "model_detections",
]

logger = logging.getLogger(__name__)

Pairs = list[tuple[list[Detection], list[Detection]]]
LOW_THRESHOLD = 0.01


def truths_of(image: LabelledImage) -> list[Detection]:
    return [
        Detection(CLASSES[int(c)], tuple(b)) for b, c in zip(image.boxes, image.labels, strict=True)
    ]


def model_detections(
    detector: OnnxDetector, root: Path, images: Sequence[LabelledImage]
) -> list[list[Detection]]:
    """Detections (score >= 0.01) per image, in PNG pixels."""
    width, height = INPUT_SIZE
    out: list[list[Detection]] = []
    batch: list[np.ndarray] = []
    sizes: list[tuple[int, int]] = []

    def flush() -> None:
        decoded_batch = detector.detect(
            batch, score_threshold=LOW_THRESHOLD, include_unreported=True
        )
        for decoded, (ow, oh) in zip(decoded_batch, sizes, strict=True):
            scale = np.array([ow / width, oh / height, ow / width, oh / height])
            out.append(
                [
                    Detection(CLASSES[int(c)], tuple((b * scale).tolist()), float(s))
                    for b, s, c in zip(decoded.boxes, decoded.scores, decoded.classes, strict=True)
                ]
            )
        batch.clear()
        sizes.clear()

    for image in images:
        gray, original = load_image(root, image.name, size=INPUT_SIZE)
        batch.append(np.repeat(gray[..., None], 3, axis=2))
        sizes.append(original)
        if len(batch) == 8:
            flush()
    if batch:
        flush()
    return out


def mean_box_baseline(train: Sequence[LabelledImage], n_images: int) -> list[list[Detection]]:
    """Each class's mean training box on every image, scored with its training prevalence."""
    boxes: dict[str, list[np.ndarray]] = {c: [] for c in CLASSES}
    present = {c: 0 for c in CLASSES}
    for image in train:
        for label in {CLASSES[int(c)] for c in image.labels}:
            present[label] += 1
        for b, c in zip(image.boxes, image.labels, strict=True):
            boxes[CLASSES[int(c)]].append(b)
    guesses = [
        Detection(c, tuple(np.mean(boxes[c], axis=0).tolist()), present[c] / len(train))
        for c in CLASSES
        if boxes[c]
    ]
    return [list(guesses) for _ in range(n_images)]


#: The operating thresholds tried.
THRESHOLD_GRID = tuple(float(t) for t in np.round(np.arange(0.05, 0.71, 0.05), 2))


def _above(
    detections: list[list[Detection]], threshold: float | dict[str, float]
) -> list[list[Detection]]:
    if isinstance(threshold, dict):
        return [[d for d in image if d.score >= threshold[d.label]] for image in detections]
    return [[d for d in image if d.score >= threshold] for image in detections]


def choose_threshold(detections: list[list[Detection]], truths: list[list[Detection]]) -> float:
    """The threshold in 0.05..0.70 with the best overall aligned F1 (usual convention)."""
    best, best_f1 = 0.3, -1.0
    for threshold in THRESHOLD_GRID:
        pairs = list(zip(_above(detections, threshold), truths, strict=True))
        f1 = region_aligned_metrics(pairs, convention=Convention.USUAL).aligned["f1"]
        if f1 > best_f1:
            best, best_f1 = float(threshold), f1
    return best


#: A per-class threshold must keep at least this share of that class's
#: reported boxes right (IoU >= 0.5) on the tuning patients.
MIN_CLASS_PRECISION = 0.2


def choose_class_thresholds(
    detections: list[list[Detection]], truths: list[list[Detection]]
) -> dict[str, float]:
    """Per class, the threshold in 0.05..0.70 with the best F1 of that class.

    Only thresholds at which at least :data:`MIN_CLASS_PRECISION` of the class's
    boxes (pooled over the images) hit a ground truth are eligible: a class
    whose best F1 comes from reporting it everywhere at low confidence is not
    worth a radiologist's attention. A class with no eligible threshold gets
    the top of the grid, 0.70 (reported only when the model is very sure).
    Ties go to the higher threshold. Call it on images the model was not
    trained on (the tuning patients).
    """
    chosen: dict[str, float] = {}
    for label in CLASSES:
        best, best_f1 = THRESHOLD_GRID[-1], 0.0
        for threshold in THRESHOLD_GRID:
            matches = [
                ImageMatch.of(kept, wanted)
                for p, g in zip(detections, truths, strict=True)
                for kept, wanted in [([d for d in p if d.label == label and d.score >= threshold],
                                      [t for t in g if t.label == label])]
                if kept or wanted
            ]
            reported = sum(m.n_predictions for m in matches)
            hits = sum(m.aligned for m in matches)
            if not hits or hits < MIN_CLASS_PRECISION * reported:
                continue
            # the class's aligned F1, averaged per image as region_aligned_metrics does
            f1 = sum(m.precision_recall(m.aligned, Convention.USUAL)[2] for m in matches) / len(
                matches
            )
            if f1 >= best_f1:
                best, best_f1 = threshold, f1
        chosen[label] = best
    return chosen


def _class_rows(
    detections: list[list[Detection]],
    truths: list[list[Detection]],
    threshold: float | dict[str, float],
) -> dict:
    rows: dict[str, dict] = {}
    _, ap = mean_average_precision(list(zip(detections, truths, strict=True)), CLASSES)
    kept = _above(detections, threshold)
    for label in (*CLASSES, "all"):
        if label == "all":
            pairs = list(zip(kept, truths, strict=True))
        else:
            pairs = [
                ([d for d in p if d.label == label], [t for t in g if t.label == label])
                for p, g in zip(kept, truths, strict=True)
            ]
        medrega = region_aligned_metrics(pairs, convention=Convention.MEDREGA)
        usual = region_aligned_metrics(pairs, convention=Convention.USUAL)
        rows[label] = {
            "gt_boxes": sum(len(g) for _, g in pairs),
            "predictions": sum(len(p) for p, _ in pairs),
            # pooled over the images: reported boxes that are right (IoU >= 0.5, same class)
            "hits": sum(ImageMatch.of(p, g).aligned for p, g in pairs if p and g),
            "images": medrega.images,
            "medrega": {
                "region": medrega.region,
                "object": medrega.object,
                "aligned": medrega.aligned,
            },
            "usual": {"region": usual.region, "object": usual.object, "aligned": usual.aligned},
            "mean_iou": medrega.mean_iou,
            "ap50": float(np.nanmean(list(ap.values()))) if label == "all" else ap[label],
        }
    return rows


def bootstrap(
    detections: list[list[Detection]],
    baseline: list[list[Detection]],
    truths: list[list[Detection]],
    *,
    rounds: int = 200,
    seed: int = 0,
) -> dict:
    """Resample the images ``rounds`` times: the spread of the model's mAP and, per
    class, the 95 % interval of AP@0.5(model) - AP@0.5(baseline).

    A class is beaten *clearly* when that interval lies above zero: the margin
    is not an accident of which few images happen to be in the validation set.
    """
    rng = np.random.default_rng(seed)
    n = len(truths)
    maps: list[float] = []
    margins: dict[str, list[float]] = {label: [] for label in CLASSES}
    for _ in range(rounds):
        idx = rng.integers(0, n, n)
        model_map, model_ap = mean_average_precision(
            [(detections[i], truths[i]) for i in idx], CLASSES
        )
        _, base_ap = mean_average_precision([(baseline[i], truths[i]) for i in idx], CLASSES)
        maps.append(model_map)
        for label in CLASSES:
            if not math.isnan(model_ap[label]):
                margins[label].append(model_ap[label] - base_ap[label])
    return {
        "model_map_std": float(np.std(maps)),
        "ap_margin_95": {
            label: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v else None
            for label, v in margins.items()
        },
    }


def evaluate(
    root: Path,
    model_path: Path | None = None,
    *,
    seed: int = 0,
    threshold: float | None = None,
    tuning: bool = False,
) -> dict:
    """All numbers of the model card's metrics table, as a dict.

    ``tuning`` scores a model trained with ``train --tuning`` on the held-out
    part of the training patients instead of the validation patients, and
    chooses per-class thresholds there (``class_thresholds`` in the result).

    The operating point of the rows: ``threshold`` for every class when given;
    else the model's own per-class thresholds when its metadata has them; else
    one threshold chosen on the training images.
    """
    from engine.backends.onnxruntime_backend import OnnxDetector

    dataset = load_dataset(root)
    train, validation = split_by_patient(dataset, validation_fraction=0.2, seed=seed)
    if tuning:
        train, validation = split_for_tuning(train, seed=seed)
    detector = OnnxDetector(model_path, intra_op_threads=2)
    val_truths = [truths_of(im) for im in validation]
    val_dets = model_detections(detector, root, validation)
    operating: float | dict[str, float]
    if threshold is not None:
        operating = threshold
    # every class at its tuning threshold, reported or not
    elif detector.operating_points is not None:
        operating = {p.label: p.tuning_threshold for p in detector.operating_points.classes}
    elif detector.stored_class_thresholds:
        operating = detector.class_score_thresholds
    else:
        train_dets = model_detections(detector, root, train)
        operating = choose_threshold(train_dets, [truths_of(im) for im in train])
    baseline = mean_box_baseline(train, len(validation))
    result: dict[str, Any] = {
        "model": str(detector.path.name),
        "version": detector.info.version,
        "train_images": len(train),
        "validation_images": len(validation),
        "validation_patients": len({im.patient_id for im in validation}),
        "scored_on": "tuning" if tuning else "validation",
        "threshold": operating,
        "model_rows": _class_rows(val_dets, val_truths, operating),
        "baseline_rows": _class_rows(baseline, val_truths, 0.0),
    }
    if tuning:
        result["class_thresholds"] = choose_class_thresholds(val_dets, val_truths)
    elif isinstance(operating, dict) and set(operating) == set(CLASSES):
        # which classes the held-out patients bear out at their tuning thresholds
        points = decide_operating_points(
            operating,
            result["model_rows"],
            images=len(validation),
            heldout=f"validation patients ({len(validation)} images, "
            f"{result['validation_patients']} patients)",
        )
        result["operating_points"] = json.loads(points.to_metadata())
    spread = bootstrap(val_dets, baseline, val_truths)
    result["model_map_bootstrap_std"] = spread["model_map_std"]
    result["ap_margin_95"] = spread["ap_margin_95"]
    return result


def markdown_table(result: dict) -> str:
    """The per-class table for the model card."""

    def pct(value: float) -> str:
        return (
            "–"
            if value is None or (isinstance(value, float) and math.isnan(value))
            else f"{100 * value:.1f}"
        )

    lines = [
        (
            "| class | val boxes | who | AP@0.5 | AP margin, 95 % | mean IoU | Region "
            "P / R / F1 (MedRegA) | Region P / R / F1 (usual) | Aligned F1 (usual) |"
        ),
        "|---|---:|---|---:|---|---:|---|---|---:|",
    ]
    margins = result.get("ap_margin_95", {})

    def margin(label: str) -> str:
        interval = margins.get(label)
        return "" if interval is None else f"{100 * interval[0]:+.1f} to {100 * interval[1]:+.1f}"

    for label in (*CLASSES, "all"):
        for who, rows in (("model", result["model_rows"]), ("mean box", result["baseline_rows"])):
            row = rows[label]
            m, u = row["medrega"]["region"], row["usual"]["region"]
            lines.append(
                f"| {label if who == 'model' else ''} | "
                f"{row['gt_boxes'] if who == 'model' else ''} | {who} | {pct(row['ap50'])} | "
                f"{margin(label) if who == 'model' else ''} | {pct(row['mean_iou'])} | "
                f"{pct(m['precision'])} / {pct(m['recall'])} / {pct(m['f1'])} | "
                f"{pct(u['precision'])} / {pct(u['recall'])} / {pct(u['f1'])} | "
                f"{pct(row['usual']['aligned']['f1'])} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (``python -m engine.default_model.evaluate``)."""
    parser = argparse.ArgumentParser(
        description="Evaluate the default detector on the validation patients"
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="score every class at this threshold instead of the model's own",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--tuning",
        action="store_true",
        help="score on the tuning part of the training patients (a model from train --tuning)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    result = evaluate(args.data, args.model, threshold=args.threshold, tuning=args.tuning)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    logger.info(
        "threshold %s; mAP@0.5 model %.3f (bootstrap std %.3f), baseline %.3f",
        result["threshold"],
        result["model_rows"]["all"]["ap50"],
        result["model_map_bootstrap_std"],
        result["baseline_rows"]["all"]["ap50"],
    )
    import sys

    sys.stdout.write(markdown_table(result) + "\n")


if __name__ == "__main__":
    main()
