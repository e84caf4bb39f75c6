"""MedRegA's two region-centric tasks on one DICOM frame, as suggestions for a reviewer.

* :func:`describe_region` — region → text: "what is in this box?" A box drawn on
  the source image (source pixels) is mapped into the model's 0–999 coordinates
  and asked about (``Task.REGION_TO_TEXT``).
* :func:`locate_finding` — text → region: "where is this finding?"
  (``Task.TEXT_TO_REGION``); the model's boxes are mapped back to source pixels.

The frame is prepared by :func:`engine.pixels.prepare_image` exactly as
:func:`engine.analyze.analyze_study` prepares it (same model input size and
resize mode, no crop, the image's own window), so a box maps between the model
and the source image exactly as the report's boxes do. The model is asked once
per language (the same prepared array each time); every answer is read by the
one grammar parser (:mod:`engine.grammar`). The first language's answer decides
the suggestions and their regions; the others contribute their text, matched by
vocabulary key, else by order when both answers have as many items. A label the
vocabulary knows is named in every language.

What counts as a suggestion
---------------------------
Region → text: each ``<ref>`` with a label (its boxes, or the asked box when it
has none; a box equal to the asked one is the asked box exactly), and plain text
(how a VLM may answer "what is this?"; a bare vocabulary name becomes the label,
other text the description of an "unlabelled region"). An unlabelled ``<box>``
is the asked region echoed, not an answer: the default detector answers so when
it found nothing there ("No cardiomegaly detected by the model in this region.").
Text → region: each ``<ref>`` with a box (unlabelled boxes are the query's);
plain text (the detector's "No cardiomegaly found by the model in this image.")
locates nothing. No suggestion means the model found nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pydicom

from engine import vocabulary
from engine.errors import EngineError
from engine.grammar import Box999, GroundedPhrase, parse_grounded_text
from engine.model import GenerationRequest, ModelError, RegionAwareModel
from engine.pixels import PreparedImage, prepare_image
from engine.report import Box, CodedConcept, Region, ReportError, Task, Text
from engine.uids import short_uid

__all__ = [
    "RegionSuggestion",
    "RegionTaskError",
    "describe_region",
    "locate_finding",
]

logger = logging.getLogger(__name__)

Generate = Callable[[Sequence[GenerationRequest]], list[str]]


class RegionTaskError(EngineError, ValueError):
    """A region task cannot be asked as given: a box outside the image or too small for
    the model, an unsupported language or task, a query the model cannot answer, an image
    the model is not made for. The message says which."""


@dataclass(frozen=True)
class RegionSuggestion:
    """One answer of the model to a region task, for a radiologist to accept or not.

    Attributes
    ----------
    label
        What the model names, in each language it was asked in.
    description
        The model's sentence about it (its label when it wrote none), per language.
    region
        Where: a box in source pixels on the exact image (and frame) asked about.
    confidence
        The model's score in [0, 1] when it gives one (the default detector does;
        MedRegA does not).
    concept
        A coded concept, when one is known (none yet from the model itself).
    """

    label: Text
    description: Text
    region: Region
    confidence: float | None
    concept: CodedConcept | None = None


@dataclass(frozen=True)
class _Item:
    """One candidate answer of one language: a label, a sentence, 0–999 boxes, scores."""

    label: str | None
    description: str
    boxes: tuple[Box999, ...]
    confidence: float | None

    @property
    def key(self) -> str | None:
        known = vocabulary.lookup(self.label) if self.label else None
        return known.key if known is not None else None


def _check_languages(model: RegionAwareModel, languages: Sequence[str]) -> tuple[str, ...]:
    if isinstance(languages, str):
        raise RegionTaskError(f"languages must be a sequence of tags, got {languages!r}")
    chosen = tuple(dict.fromkeys(languages))
    if not chosen:
        raise RegionTaskError("at least one language is needed")
    unknown = [tag for tag in chosen if tag not in model.languages]
    if unknown:
        raise RegionTaskError(
            f"{model.info.name} answers in {', '.join(model.languages)}, not {', '.join(unknown)}"
        )
    return chosen


def _prepare(
    model: RegionAwareModel,
    dataset: pydicom.Dataset,
    frame: int | None,
    task: Task,
    *,
    enforce_applicability: bool,
) -> PreparedImage:
    if task not in model.tasks:
        raise RegionTaskError(
            f"{model.info.name} does not do {task.value}; it does "
            f"{', '.join(t.value for t in model.tasks)}"
        )
    rule = model.applicability
    refusal = None if rule is None else rule.explain(dataset, model_name=model.info.name)
    if refusal is not None and enforce_applicability:
        raise RegionTaskError(refusal)
    # exactly as engine.analyze prepares an image: the boxes map back the same way
    return prepare_image(
        dataset, frame_number=frame, size=model.input_size, resize_mode=model.resize_mode
    )


def _ask(
    model: RegionAwareModel, generate: Generate | None, requests: list[GenerationRequest]
) -> list[str]:
    for request in requests:
        try:
            model.check_request(request)  # a request the model cannot answer fails alone
        except ModelError as exc:
            raise RegionTaskError(str(exc)) from None
    if generate is None:
        outputs = list(model.generate(requests))
    else:
        outputs = list(generate(requests))
    if len(outputs) != len(requests) or not all(isinstance(o, str) for o in outputs):
        raise ModelError(
            f"the model returned {len(outputs)} outputs for {len(requests)} requests "
            "(one text each expected)"
        )
    return outputs


def _confidence(scores: tuple[float | None, ...]) -> float | None:
    if not scores or any(s is None for s in scores):
        return None
    return max(s for s in scores if s is not None)


def _items(phrases: Sequence[GroundedPhrase], task: Task, query: str | None) -> list[_Item]:
    items = []
    for phrase in phrases:
        if not phrase.refs:
            if task is Task.REGION_TO_TEXT and phrase.description.strip():
                # a VLM's plain answer about the asked region: a bare name is its label
                bare = phrase.description.strip().rstrip(".。!！")
                named = vocabulary.lookup(bare) is not None
                items.append(_Item(bare if named else None, phrase.description, (), None))
            continue  # text→region: plain text locates nothing
        for ref in phrase.refs:
            if task is Task.REGION_TO_TEXT and ref.label is None:
                continue  # an unlabelled box: the asked region echoed, not an answer
            if task is Task.TEXT_TO_REGION and not ref.boxes:
                continue  # named but not located
            items.append(
                _Item(
                    ref.label if ref.label is not None else query,
                    phrase.description,
                    tuple(ref.boxes),
                    _confidence(tuple(ref.scores or ())),
                )
            )
    return items


def _match(primary: list[_Item], other: list[_Item]) -> list[_Item | None]:
    """For each primary item, its counterpart in another language's answer."""
    matched: list[_Item | None] = [None] * len(primary)
    free = list(range(len(other)))
    for i, item in enumerate(primary):
        if item.key is None:
            continue
        for j in free:
            if other[j].key == item.key:
                matched[i] = other[j]
                free.remove(j)
                break
    unmatched = [i for i, m in enumerate(matched) if m is None]
    if unmatched and len(unmatched) == len(free):
        for i, j in zip(unmatched, free, strict=True):
            if primary[i].key is None and other[j].key is None:
                matched[i] = other[j]
    return matched


def _texts(
    item: _Item, counterparts: dict[str, _Item | None], languages: Sequence[str]
) -> tuple[Text, Text]:
    known = vocabulary.lookup(item.label) if item.label else None
    labels: dict[str, str] = {}
    descriptions: dict[str, str] = {}
    for index, language in enumerate(languages):
        source = item if index == 0 else counterparts.get(language)
        label = source.label if source is not None else None
        if known is not None and _has_vocabulary_language(language):
            label = known.name(language)
        elif source is not None and not (label or "").strip():
            base = (
                vocabulary.vocabulary_language(language)
                if _has_vocabulary_language(language)
                else "en"
            )
            label = vocabulary.UNLABELLED_REGION[base]
        if not label or not label.strip():
            continue
        labels[language] = label.strip()
        if source is not None and source.description.strip():
            descriptions[language] = source.description.strip()
        elif source is not None:
            descriptions[language] = label.strip()
    if not descriptions:
        descriptions = dict(labels)
    return Text(labels), Text(descriptions)


def _has_vocabulary_language(language: str) -> bool:
    try:
        vocabulary.vocabulary_language(language)
    except vocabulary.VocabularyError:
        return False
    return True


def _suggestions(
    prepared: PreparedImage,
    answers: dict[str, str],
    *,
    languages: Sequence[str],
    task: Task,
    query: str | None,
    asked: tuple[Box999, Box] | None,
) -> list[RegionSuggestion]:
    parsed = {language: parse_grounded_text(text) for language, text in answers.items()}
    where = f"SOP instance {short_uid(prepared.image.sop_instance_uid)}"
    for language, result in parsed.items():
        for problem in result.problems:
            logger.info("%s (%s, %s): %s", where, task.value, language, problem)
    primary_language = languages[0]
    primary = _items(parsed[primary_language].phrases, task, query)
    matches = {
        language: _match(primary, _items(parsed[language].phrases, task, query))
        for language in languages[1:]
        if language in parsed
    }
    suggestions = []
    for index, item in enumerate(primary):
        counterparts = {language: found[index] for language, found in matches.items()}
        try:
            label, description = _texts(item, counterparts, [*languages])
        except ReportError as exc:  # e.g. a language tag the report model does not take
            logger.info("%s: answer %d not usable (%s); dropped", where, index + 1, exc)
            continue
        if item.boxes:
            boxes = list(item.boxes)
        elif asked is not None:
            boxes = [asked[0]]
        else:
            continue
        for box in boxes:
            if asked is not None and box == asked[0]:
                source_box = asked[1]  # the drawn box itself, not its 0-999 rounding
            else:
                try:
                    source_box = prepared.transform.from_normalized(tuple(box))
                except EngineError as exc:
                    logger.info("%s: box %s not mapped back (%s); dropped", where, list(box), exc)
                    continue
            suggestions.append(
                RegionSuggestion(
                    label=label,
                    description=description,
                    region=Region(image=prepared.image, box=source_box),
                    confidence=item.confidence,
                )
            )
    return suggestions


def describe_region(
    model: RegionAwareModel,
    generate: Generate | None,
    dataset: pydicom.Dataset,
    frame: int | None,
    box: Box,
    *,
    languages: Sequence[str],
    enforce_applicability: bool = True,
) -> list[RegionSuggestion]:
    """Region → text: what the model sees in ``box`` of one frame.

    Parameters
    ----------
    model
        The loaded model (its input size and resize mode drive the pixel pipeline).
    generate
        Runs a batch of requests (e.g. the worker's micro-batcher); ``None``:
        ``model.generate``.
    dataset
        The source image (whole dataset as stored).
    frame
        1-based frame of a multi-frame image, ``None`` for a single-frame image.
    box
        The drawn box in source pixels (column, row; origin top-left), inside the image.
    languages
        BCP-47 tags to answer in, primary first; one generation each.
    enforce_applicability
        Refuse an image the model is not made for (``model.applicability``).

    Returns
    -------
    list[RegionSuggestion]
        Best first as the model answered; empty when it found nothing in the box.

    Raises
    ------
    RegionTaskError
        Bad box or language, a task the model does not do, an image it is not made for.
    engine.pixels.PixelError
        The frame cannot be decoded (with the reason).
    engine.model.ModelError
        The model failed to run.
    """
    if not isinstance(box, Box):
        raise RegionTaskError(f"box must be an engine.report.Box, got {type(box).__name__}")
    languages = _check_languages(model, languages)
    prepared = _prepare(
        model, dataset, frame, Task.REGION_TO_TEXT, enforce_applicability=enforce_applicability
    )
    columns, rows = prepared.source_size
    if box.x_min < 0 or box.y_min < 0 or box.x_max > columns or box.y_max > rows:
        raise RegionTaskError(
            f"box ({box.x_min:g}, {box.y_min:g}, {box.x_max:g}, {box.y_max:g}) is not inside "
            f"the {columns} x {rows} image"
        )
    asked = Box999(*prepared.transform.to_normalized(box)) if _has_area(prepared, box) else None
    if asked is None:
        raise RegionTaskError(
            f"box ({box.x_min:g}, {box.y_min:g}, {box.x_max:g}, {box.y_max:g}) is too small "
            "for the model: under one step of its 0-999 coordinates"
        )
    requests = [
        GenerationRequest(
            image=prepared.array,
            task=Task.REGION_TO_TEXT,
            language=language,
            regions=((asked.x1, asked.y1, asked.x2, asked.y2),),
        )
        for language in languages
    ]
    answers = dict(zip(languages, _ask(model, generate, requests), strict=True))
    return _suggestions(
        prepared,
        answers,
        languages=languages,
        task=Task.REGION_TO_TEXT,
        query=None,
        asked=(asked, box),
    )


def _has_area(prepared: PreparedImage, box: Box) -> bool:
    x1, y1, x2, y2 = prepared.transform.to_normalized(box)
    return x1 < x2 and y1 < y2


def locate_finding(
    model: RegionAwareModel,
    generate: Generate | None,
    dataset: pydicom.Dataset,
    frame: int | None,
    query: str,
    *,
    language: str,
    languages: Sequence[str],
    enforce_applicability: bool = True,
) -> list[RegionSuggestion]:
    """Text → region: where the model finds ``query`` on one frame.

    Parameters
    ----------
    query
        The finding to locate, as typed or picked, in ``language``: a name the
        vocabulary knows is asked in each language by its name there; any other
        text is asked in ``language`` only (no guessed translation).
    language
        The language of ``query``; it is the primary language (its answer's boxes
        are the suggestions).
    languages
        Further languages to answer in (one generation each).

    Other parameters, the result and the errors are as for :func:`describe_region`;
    the suggestions' boxes are mapped back to source pixels.
    """
    if not isinstance(query, str) or not query.strip():
        raise RegionTaskError(f"the finding to locate must be non-empty text, got {query!r}")
    if "<" in query or ">" in query:
        raise RegionTaskError("the finding to locate may not contain markup (< or >)")
    query = query.strip()
    if isinstance(languages, str):
        raise RegionTaskError(f"languages must be a sequence of tags, got {languages!r}")
    known = vocabulary.lookup(query)
    if known is None:
        languages = (language,)  # no translation of an unknown name
    chosen = _check_languages(model, (language, *languages))
    prepared = _prepare(
        model, dataset, frame, Task.TEXT_TO_REGION, enforce_applicability=enforce_applicability
    )
    targets = {}
    for tag in chosen:
        try:
            targets[tag] = known.name(tag) if known is not None else query
        except vocabulary.VocabularyError:
            targets[tag] = query
    requests = [
        GenerationRequest(
            image=prepared.array, task=Task.TEXT_TO_REGION, language=tag, targets=(targets[tag],)
        )
        for tag in chosen
    ]
    answers = dict(zip(chosen, _ask(model, generate, requests), strict=True))
    return _suggestions(
        prepared,
        answers,
        languages=chosen,
        task=Task.TEXT_TO_REGION,
        query=targets[chosen[0]],
        asked=None,
    )
