"""The default detector's answers to MedRegA's two region tasks, from its heatmaps.

A CenterNet detector has no language model, but its outputs answer both
region-centric questions in a way a radiologist can check:

* **Region → text** ("what is in this box?"): for each class, the highest
  heatmap peak whose *centre* (cell + predicted offset, times the stride) lies
  inside the asked region, i.e. the detector's best detection of that class
  centred there. The exported graph returns the heatmap already peak-suppressed
  (non-peak cells are zero), so pooling the maximum over the region's cells is
  exactly "the best detection centred in the region"; the raw (unsuppressed)
  heatmap is not needed, and the ONNX export is unchanged.
* **Text → region** ("where is this finding?"): the best box of the named
  class, decoded by :func:`engine.default_model.decode.decode_batch` (the same
  code as the report's boxes) with that class alone.

Only the classes the model *reports* are answered (see the model card's
operating points): the others' boxes were not reliable enough to report, and a
drawn box does not make them so. An answer at or above :data:`REGION_MIN_SCORE`
is given with its score; one below the class's reporting threshold says so in
its sentence. Answers are MedRegA grammar with RadGround's ``<score>``
extension, sentences from :mod:`engine.vocabulary`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from engine.default_model.config import CLASSES, OUTPUT_STRIDE
from engine.default_model.decode import decode_batch
from engine.errors import EngineError
from engine.grammar import Box999, GroundedPhrase, RefBoxes, write_grounded_text
from engine.vocabulary import (
    NIH_CXR_FINDINGS,
    VocabularyGroup,
    below_threshold_note,
    chest_zone,
    entry,
    finding_sentence,
    lookup,
    not_found_sentence,
    not_reported_sentence,
    region_negative_report,
)

__all__ = [
    "REGION_MIN_SCORE",
    "Heads",
    "UnknownTargetError",
    "class_key",
    "describe_region_text",
    "known_target_names",
    "locate_text",
    "pooled_class_scores",
    "resolve_target",
]

#: Lowest score the region tasks answer with (below it: "not found"). Measured on the
#: validation patients of the NIH boxes (MODEL_CARD, "Region tasks"): the best
#: Cardiomegaly peak reaches it on 17 of the 21 images with a Cardiomegaly box and on 29
#: of the 113 images labelled without cardiomegaly; answers below the class's reporting
#: threshold (0.15) say so.
REGION_MIN_SCORE = 0.05


class UnknownTargetError(EngineError, ValueError):
    """A text→region target that is not one of the detector's finding classes."""


@dataclass(frozen=True)
class Heads:
    """The graph's three outputs for one image (``heatmap`` peak-suppressed).

    Attributes
    ----------
    heatmap
        float32 (C, h, w) class probabilities, zero off the peaks.
    size, offset
        float32 (2, h, w) box size and centre offset, in cells.
    """

    heatmap: np.ndarray
    size: np.ndarray
    offset: np.ndarray


def class_key(label: str) -> str:
    """The vocabulary key of a detector class (``"Effusion"`` → ``"effusion"``)."""
    return label.lower()


def known_target_names() -> tuple[str, ...]:
    """The names a text→region query may use: each class's English and Chinese name."""
    return tuple(
        name for item in NIH_CXR_FINDINGS for name in (item.name("en"), item.name("zh-CN"))
    )


def resolve_target(query: str) -> str:
    """The detector class (as in :data:`CLASSES`) a text→region query names.

    Any name or synonym the vocabulary knows for one of the eight NIH findings is
    accepted, in English or Chinese, case-insensitively (``"Cardiomegaly"``,
    ``"心影增大"``, ``"pleural effusion"``, ``"胸水"``).

    Raises
    ------
    UnknownTargetError
        Any other name, with the names it knows.
    """
    item = lookup(query)
    if item is None or item.group is not VocabularyGroup.NIH_CXR_FINDING:
        what = "a finding this model detects" if item is not None else "a name it knows"
        raise UnknownTargetError(
            f"{query!r}: not {what}; ask for one of: {', '.join(known_target_names())}"
        )
    for label in CLASSES:
        if class_key(label) == item.key:
            return label
    raise UnknownTargetError(f"{query!r} has no class in this model")  # pragma: no cover


def _region_pixels(box: Box999, input_size: tuple[int, int]) -> tuple[float, ...]:
    width, height = input_size
    return (
        box.x1 * width / 999,
        box.y1 * height / 999,
        box.x2 * width / 999,
        box.y2 * height / 999,
    )


def pooled_class_scores(
    heads: Heads, regions: Sequence[Box999], *, input_size: tuple[int, int]
) -> np.ndarray:
    """Per class, the highest peak centred inside any of ``regions`` (0 where none).

    Parameters
    ----------
    heads
        One image's outputs.
    regions
        Boxes in 0–999 model coordinates (MedRegA's, de-normalised with ``/ 999``).
    input_size
        Model input ``(width, height)``.

    Returns
    -------
    numpy.ndarray
        float32 (C,).
    """
    heat = np.asarray(heads.heatmap, dtype=np.float32)
    n_classes, h, w = heat.shape
    ys, xs = np.mgrid[0:h, 0:w]
    cx = (xs + heads.offset[0]) * OUTPUT_STRIDE
    cy = (ys + heads.offset[1]) * OUTPUT_STRIDE
    inside = np.zeros((h, w), dtype=bool)
    for box in regions:
        x1, y1, x2, y2 = _region_pixels(box, input_size)
        inside |= (cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2)
    if not inside.any():
        return np.zeros(n_classes, dtype=np.float32)
    return heat[:, inside].max(axis=1).astype(np.float32)


def _zone(box: tuple[float, float, float, float], input_size: tuple[int, int]) -> str:
    width, height = input_size
    return chest_zone(
        min(1.0, max(0.0, (box[0] + box[2]) / 2 / width)),
        min(1.0, max(0.0, (box[1] + box[3]) / 2 / height)),
    )


def _sentence(
    label: str, score: float, zone: str, *, threshold: float | None, language: str
) -> str:
    text = finding_sentence(class_key(label), language=language, zone=zone)
    if threshold is not None and score < threshold:
        text += ("" if language.startswith("zh") else " ") + below_threshold_note(
            threshold, language=language
        )
    return text


def describe_region_text(
    heads: Heads,
    regions: Sequence[Box999],
    *,
    input_size: tuple[int, int],
    thresholds: Mapping[str, float],
    language: str,
    min_score: float = REGION_MIN_SCORE,
) -> str:
    """Region → text: the reported classes whose best peak in the region reaches
    ``min_score``, best first, each with the asked region and its score; or, when none
    does, the asked region with a sentence saying what was not found there.

    ``thresholds`` are the reporting thresholds of the reported classes (their keys are
    the only classes answered).
    """
    union = [_region_pixels(b, input_size) for b in regions]
    whole = (
        min(b[0] for b in union),
        min(b[1] for b in union),
        max(b[2] for b in union),
        max(b[3] for b in union),
    )
    zone = _zone(whole, input_size)
    scores = pooled_class_scores(heads, regions, input_size=input_size)
    answered = sorted(
        (
            (float(scores[CLASSES.index(label)]), label)
            for label in thresholds
            if scores[CLASSES.index(label)] >= min_score
        ),
        reverse=True,
    )
    phrases = []
    for score, label in answered:
        rounded = round(score, 2)
        phrases.append(
            GroundedPhrase(
                refs=(
                    RefBoxes(
                        entry(class_key(label)).name(language),
                        tuple(regions),
                        (rounded,) * len(regions),
                    ),
                ),
                description=_sentence(
                    label, score, zone, threshold=thresholds[label], language=language
                ),
            )
        )
    if not phrases:
        reported = [class_key(label) for label in CLASSES if label in thresholds]
        unreported = [class_key(label) for label in CLASSES if label not in thresholds]
        phrases.append(
            GroundedPhrase(
                refs=(RefBoxes(None, tuple(regions)),),
                description=region_negative_report(reported, unreported, language=language),
            )
        )
    return write_grounded_text(phrases, language=language)


def _to_999(value: float, extent: int) -> int:
    return int(min(999, max(0, round(value / extent * 999))))


def locate_text(
    heads: Heads,
    targets: Sequence[str],
    *,
    input_size: tuple[int, int],
    thresholds: Mapping[str, float],
    language: str,
    min_score: float = REGION_MIN_SCORE,
) -> str:
    """Text → region: per target (a name :func:`resolve_target` accepts), the best box of
    its class scoring at least ``min_score``, or a sentence saying it was not found (or
    that this model does not report that class).

    Raises
    ------
    UnknownTargetError
        A target that names none of the detector's classes.
    """
    width, height = input_size
    phrases: list[GroundedPhrase] = []
    statements: list[str] = []
    for target in targets:
        label = resolve_target(target)
        key = class_key(label)
        if label not in thresholds:
            statements.append(not_reported_sentence(key, language=language))
            continue
        emit = np.asarray([c == label for c in CLASSES], dtype=bool)
        (decoded,) = decode_batch(
            heads.heatmap[None],
            heads.size[None],
            heads.offset[None],
            input_size=input_size,
            score_threshold=min_score,
            emit_classes=emit,
            max_detections=1,
        )
        box999 = None
        if len(decoded):
            x1, y1, x2, y2 = (float(v) for v in decoded.boxes[0])
            b = (_to_999(x1, width), _to_999(y1, height), _to_999(x2, width), _to_999(y2, height))
            if b[2] > b[0] and b[3] > b[1]:
                box999 = Box999(*b)
        if box999 is None:
            statements.append(not_found_sentence(key, language=language))
            continue
        score = float(decoded.scores[0])
        phrases.append(
            GroundedPhrase(
                refs=(RefBoxes(entry(key).name(language), (box999,), (round(score, 2),)),),
                description=_sentence(
                    label,
                    score,
                    _zone((x1, y1, x2, y2), input_size),
                    threshold=thresholds[label],
                    language=language,
                ),
            )
        )
    if statements:
        # plain text may only come first (the grammar reads text after a phrase as its
        # description)
        joiner = "" if language.startswith("zh") else " "
        phrases.insert(0, GroundedPhrase(refs=(), description=joiner.join(statements)))
    return write_grounded_text(phrases, language=language)
