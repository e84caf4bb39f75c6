"""Which classes the default model reports, and at what threshold (its operating points).

A class is *reported* at a threshold chosen on the tuning patients
(``evaluate --tuning``) only when, at that threshold, the boxes it reports on
the held-out validation patients are right (IoU >= 0.5, same class) at least
:data:`MIN_REPORTED_PRECISION` of the time, with at least one right box.
Otherwise it is *not reported by this model*: the backend never emits it, the
model card, ``radground model info`` and the SR's algorithm identification
(TID 4019 Algorithm Parameters) say so.

The decision and the held-out counts behind it are stored in the ONNX metadata
as one JSON entry, ``operating_points``::

    {"min_precision": 0.2,
     "heldout": "validation patients (145 images, 124 patients)",
     "classes": {"Cardiomegaly": {"threshold": 0.15, "tuning_threshold": 0.15,
                                  "images": 145, "boxes": 21, "predictions": 40, "hits": 15},
                 "Effusion": {"threshold": null, "tuning_threshold": 0.70, ...}, ...}}

``threshold`` is ``null`` for a class that is not reported. :func:`parse_operating_points`
refuses entries that contradict each other or the rule, with a message naming
the class and the entry.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.default_model.config import CLASSES
from engine.errors import EngineError

__all__ = [
    "METADATA_KEY",
    "MIN_REPORTED_PRECISION",
    "ClassOperatingPoint",
    "OperatingPointError",
    "OperatingPoints",
    "decide_operating_points",
    "parse_operating_points",
]

#: The ONNX metadata key holding the operating points.
METADATA_KEY = "operating_points"

#: At least one in five of a reported class's boxes must be right on held-out patients.
MIN_REPORTED_PRECISION = 0.2

_COUNTS = ("images", "boxes", "predictions", "hits")


class OperatingPointError(EngineError, ValueError):
    """Stored operating points that are malformed or contradict the reporting rule."""


@dataclass(frozen=True)
class ClassOperatingPoint:
    """One class's operating point and its held-out counts.

    Attributes
    ----------
    label
        The class (one of :data:`engine.default_model.config.CLASSES`).
    threshold
        The reporting threshold, or ``None``: not reported by this model.
    tuning_threshold
        The threshold chosen on the tuning patients (the one scored on held-out patients).
    images, boxes, predictions, hits
        Held-out images scored, ground-truth boxes of the class, boxes the model
        reported at ``tuning_threshold`` and how many of those were right
        (IoU >= 0.5, Hungarian-matched per image).
    """

    label: str
    threshold: float | None
    tuning_threshold: float
    images: int
    boxes: int
    predictions: int
    hits: int

    @property
    def reported(self) -> bool:
        """Whether the model reports this class at all."""
        return self.threshold is not None

    @property
    def precision(self) -> float | None:
        """Held-out share of reported boxes that were right (``None`` when it reported none)."""
        return self.hits / self.predictions if self.predictions else None

    @property
    def recall(self) -> float | None:
        """Held-out share of ground-truth boxes found (``None`` without ground truth)."""
        return self.hits / self.boxes if self.boxes else None

    def meets(self, min_precision: float) -> bool:
        """At least one right box, and at least ``min_precision`` of the reported ones."""
        return self.hits > 0 and self.hits >= min_precision * self.predictions

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "tuning_threshold": self.tuning_threshold,
            **{name: getattr(self, name) for name in _COUNTS},
        }


@dataclass(frozen=True)
class OperatingPoints:
    """Every class's operating point (:data:`CLASSES` order) and the rule they follow."""

    classes: tuple[ClassOperatingPoint, ...]
    min_precision: float = MIN_REPORTED_PRECISION
    heldout: str = ""

    @property
    def reported_classes(self) -> tuple[str, ...]:
        return tuple(p.label for p in self.classes if p.reported)

    @property
    def unreported_classes(self) -> tuple[str, ...]:
        return tuple(p.label for p in self.classes if not p.reported)

    @property
    def thresholds(self) -> dict[str, float | None]:
        """Reporting threshold per class; ``None`` for the classes not reported."""
        return {p.label: p.threshold for p in self.classes}

    def to_metadata(self) -> str:
        """The JSON stored under :data:`METADATA_KEY`."""
        return json.dumps(
            {
                "min_precision": self.min_precision,
                "heldout": self.heldout,
                "classes": {p.label: p.as_dict() for p in self.classes},
            }
        )


def _number(where: str, value: object, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise OperatingPointError(f"{where} must be a number, got {value!r}")
    if integer and (not isinstance(value, int) or value < 0):
        raise OperatingPointError(f"{where} must be a whole number >= 0, got {value!r}")
    return float(value)


def _threshold(where: str, value: object) -> float:
    number = _number(where, value)
    if not 0.0 < number < 1.0:
        raise OperatingPointError(f"{where} must be in (0, 1), got {value!r}")
    return number


def _class_point(label: str, entry: object, min_precision: float) -> ClassOperatingPoint:
    where = f"operating_points: {label}"
    if not isinstance(entry, Mapping):
        raise OperatingPointError(f"{where} must be an object, got {entry!r}")
    missing = [k for k in ("threshold", "tuning_threshold", *_COUNTS) if k not in entry]
    if missing:
        raise OperatingPointError(f"{where} lacks {', '.join(missing)}")
    raw = entry["threshold"]
    threshold = None if raw is None else _threshold(f"{where} threshold", raw)
    tuning = _threshold(f"{where} tuning_threshold", entry["tuning_threshold"])
    counts = {name: int(_number(f"{where} {name}", entry[name], integer=True)) for name in _COUNTS}
    point = ClassOperatingPoint(label=label, threshold=threshold, tuning_threshold=tuning, **counts)
    if point.hits > point.predictions or point.hits > point.boxes:
        raise OperatingPointError(
            f"{where}: {point.hits} hits cannot exceed its {point.predictions} predictions "
            f"or {point.boxes} boxes"
        )
    if point.reported:
        if threshold != tuning:
            raise OperatingPointError(
                f"{where}: threshold {threshold} differs from tuning_threshold {tuning}, the one "
                "scored on held-out patients"
            )
        if not point.meets(min_precision):
            raise OperatingPointError(
                f"{where} is reported but only {point.hits} of its {point.predictions} held-out boxes "
                f"were right (needs at least one, and >= {min_precision:.0%}); set its threshold to null "
                "(not reported)"
            )
    return point


def parse_operating_points(text: str) -> OperatingPoints:
    """Read and check the :data:`METADATA_KEY` JSON.

    Raises
    ------
    OperatingPointError
        Not JSON, a class missing or unknown, a count or threshold out of range,
        more hits than boxes, or a reported class whose threshold is not the one
        scored on held-out patients or whose held-out precision breaks the rule.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise OperatingPointError(f"operating_points is not JSON ({exc})") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("classes"), Mapping):
        raise OperatingPointError("operating_points must be an object with a 'classes' object")
    min_precision = _number("operating_points: min_precision", data.get("min_precision"))
    if not 0.0 < min_precision <= 1.0:
        raise OperatingPointError(f"operating_points: min_precision must be in (0, 1], got {min_precision}")
    entries = data["classes"]
    unknown = sorted(set(entries) - set(CLASSES))
    missing = [label for label in CLASSES if label not in entries]
    if unknown or missing:
        raise OperatingPointError(
            f"operating_points must name each of the model's classes once: unknown {unknown}, missing {missing}"
        )
    return OperatingPoints(
        classes=tuple(_class_point(label, entries[label], min_precision) for label in CLASSES),
        min_precision=min_precision,
        heldout=str(data.get("heldout", "")),
    )


def decide_operating_points(
    tuning_thresholds: Mapping[str, float],
    heldout_rows: Mapping[str, Mapping[str, Any]],
    *,
    images: int,
    heldout: str,
    min_precision: float = MIN_REPORTED_PRECISION,
) -> OperatingPoints:
    """Report a class at its tuning threshold only where held-out patients bear it out.

    Parameters
    ----------
    tuning_thresholds
        Per-class thresholds chosen on the tuning patients.
    heldout_rows
        ``model_rows`` of ``evaluate`` run at those thresholds on held-out patients
        (each with ``gt_boxes``, ``predictions`` and ``hits``).
    images
        How many held-out images were scored.
    heldout
        Which held-out images these are, in words (stored for the card and ``model info``).
    min_precision
        The share of right boxes a reported class needs (with at least one right box).
    """
    points = []
    for label in CLASSES:
        row = heldout_rows[label]
        point = ClassOperatingPoint(
            label=label,
            threshold=None,
            tuning_threshold=float(tuning_thresholds[label]),
            images=int(images),
            boxes=int(row["gt_boxes"]),
            predictions=int(row["predictions"]),
            hits=int(row["hits"]),
        )
        if point.meets(min_precision):
            point = ClassOperatingPoint(**{**point.__dict__, "threshold": point.tuning_threshold})
        points.append(point)
    return OperatingPoints(classes=tuple(points), min_precision=min_precision, heldout=heldout)
