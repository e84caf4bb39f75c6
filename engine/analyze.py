"""Study orchestration: DICOM images in, one bilingual :class:`GroundedReport` out.

:func:`analyze_study` selects the study's images (:func:`engine.pixels.select_images`),
prepares each for the model (:func:`engine.pixels.prepare_image`), asks the model
once per image and language, reads every output with the grounding-grammar
parser (:mod:`engine.grammar`), maps boxes from MedRegA's 0–999 coordinates back
to source pixels (``ImageTransform.from_normalized``, which divides by 999 as
MedRegA's code does) and merges the languages into bilingual findings.

Merging languages
-----------------
The first language's generation (the *primary*) decides the regions. Each other
language's generation only contributes text: its refs are matched to the
primary's by vocabulary key (:mod:`engine.vocabulary`) where a label maps to one,
otherwise by order (only when both sides have the same number of unmatched
refs). Whatever does not match is recorded in ``report.problems`` and left out:
a finding then carries the primary text alone, never a guessed translation.
Canonical vocabulary names are not guesses, so a known label is always
bilingual.

Findings
--------
One finding per ``<ref>`` of the primary output (a phrase with two refs sharing
one description gives two findings with that description), with one region per
box. ``kind`` comes from the vocabulary (unknown labels are abnormalities);
``confidence`` is the highest box score when the model scored every box
(RadGround's ``<score>`` extension), otherwise ``None``. Tracking UIDs derive from
the study, the model's device UID, the image and frame, and the finding's
position and key, so a re-run reproduces them.

A study in which the model found nothing (every output read cleanly and held
nothing) gets an explicit negative impression and no findings. Outputs that
could not be read are *not* negative: the impression says so and the problems
say why.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pydicom

from engine import vocabulary
from engine.errors import EngineError
from engine.grammar import GroundedPhrase, ParseResult, RefBoxes, parse_grounded_text
from engine.model import GenerationRequest, RegionAwareModel
from engine.pixels import (
    ImageSelection,
    PixelError,
    PreparedImage,
    image_views,
    non_image_reason,
    prepare_image,
    select_images,
)
from engine.report import (
    SUPPORTED_LANGUAGES,
    Finding,
    FindingKind,
    GroundedReport,
    Region,
    Task,
    Text,
    derive_uid,
)
from engine.uids import is_valid_uid, short_uid

__all__ = ["AnalysisError", "NotApplicableError", "analyze_study"]

logger = logging.getLogger(__name__)

#: Most regions from the first regional-CoT pass inserted into the second prompt.
MAX_COT_REGIONS = 16

#: Tasks whose prompt names targets (others get them only in the regional-CoT first pass).
_TARGET_TASKS = frozenset({Task.GROUNDED_REPORT, Task.TEXT_TO_REGION, Task.DETECTION})

#: Tasks whose prompt can carry regions (the second pass of regional CoT).
_REGION_TASKS = (Task.GROUNDED_REPORT, Task.REPORT, Task.REGION_TO_TEXT)


class AnalysisError(EngineError, RuntimeError):
    """A study could not be analysed (no usable image, inconsistent study, bad arguments)."""


class NotApplicableError(AnalysisError):
    """No image of the study is one the model is made for (``model.applicability``)."""


# -- image selection ---------------------------------------------------------------


def _why_not_selected(dataset: pydicom.Dataset, selection: ImageSelection) -> str:
    reason = non_image_reason(dataset)
    if reason is not None:
        return reason
    checks = [
        (
            "Modality (0008,0060)",
            str(dataset.get("Modality", "") or "").upper(),
            selection.modalities,
        ),
        (
            "Body Part Examined (0018,0015)",
            str(dataset.get("BodyPartExamined", "") or "").upper(),
            selection.body_parts,
        ),
        ("SOP Class UID", str(dataset.get("SOPClassUID", "") or ""), selection.sop_class_uids),
    ]
    for name, value, wanted in checks:
        if wanted and value not in wanted:
            return f"{name} {value or '(empty)'} is not one of {', '.join(sorted(wanted))}"
    if selection.view_positions and not image_views(dataset) & selection.view_positions:
        views = ", ".join(sorted(image_views(dataset))) or "none recorded"
        return f"view ({views}) is not one of {', '.join(sorted(selection.view_positions))}"
    description = str(dataset.get("SeriesDescription", "") or "")
    if selection.series_description is not None and not re.search(
        selection.series_description, description, re.IGNORECASE
    ):
        return f"Series Description does not match {selection.series_description!r}"
    image_type = dataset.get("ImageType") or []
    if isinstance(image_type, str):
        image_type = image_type.split("\\")
    if (
        selection.exclude_localizers
        and len(image_type) >= 3
        and str(image_type[2]).upper() == "LOCALIZER"
    ):
        return "it is a localizer (Image Type value 3 LOCALIZER)"
    return f"not the slice or frame the {selection.volume_strategy.value} strategy takes"


def _study_uid(datasets: Sequence[pydicom.Dataset]) -> str:
    uids = {str(ds.get("StudyInstanceUID", "") or "") for ds in datasets}
    uids.discard("")
    if not uids:
        raise AnalysisError("no dataset carries a Study Instance UID (0020,000D)")
    if len(uids) > 1:
        raise AnalysisError(
            f"the datasets belong to {len(uids)} different studies; analyse one study at a time"
        )
    (uid,) = uids
    if not is_valid_uid(uid):
        raise AnalysisError(f"Study Instance UID {short_uid(uid)} is not a valid DICOM UID")
    return uid


def _prepare_all(
    datasets: Sequence[pydicom.Dataset],
    model: RegionAwareModel,
    selection: ImageSelection,
    problems: list[str],
    *,
    enforce_applicability: bool,
) -> list[tuple[pydicom.Dataset, PreparedImage]]:
    candidates = select_images(datasets, selection)
    chosen = {id(ds) for ds, _ in candidates}
    refusals = [
        f"SOP instance {short_uid(ds.get('SOPInstanceUID', '?'))}: "
        f"{_why_not_selected(ds, selection)}"
        for ds in datasets
        if id(ds) not in chosen
    ]
    rule = model.applicability
    not_applicable = 0
    prepared: list[tuple[pydicom.Dataset, PreparedImage]] = []
    for dataset, frame in candidates:
        where = f"SOP instance {short_uid(dataset.get('SOPInstanceUID', '?'))}" + (
            f" frame {frame}" if frame else ""
        )
        refusal = None if rule is None else rule.explain(dataset, model_name=model.info.name)
        if refusal is not None and not enforce_applicability:
            problems.append(f"{where} analysed although {refusal} (forced)")
        elif refusal is not None:
            not_applicable += 1
            refusals.append(f"{where}: {refusal}")
            problems.append(f"{where} skipped: {refusal}")
            continue
        try:
            prepared.append(
                (
                    dataset,
                    prepare_image(
                        dataset,
                        frame_number=frame,
                        size=model.input_size,
                        resize_mode=model.resize_mode,
                    ),
                )
            )
        except PixelError as exc:
            refusals.append(f"{where}: {exc}")
            problems.append(f"{where} skipped: {exc}")
    if not prepared:
        detail = "; ".join(refusals) if refusals else "the study has no instances"
        if not_applicable:
            raise NotApplicableError(f"no image the model is made for: {detail}")
        raise AnalysisError(f"no usable images to analyse: {detail}")
    return prepared


# -- generation ----------------------------------------------------------------------


def _target_names(targets: Sequence[str], language: str) -> tuple[str, ...]:
    """Targets in ``language``: vocabulary names where known, else as given."""
    names = []
    for target in targets:
        known = vocabulary.lookup(target)
        try:
            names.append(known.name(language) if known is not None else target)
        except vocabulary.VocabularyError:
            names.append(target)
    return tuple(names)


def _run(
    requests: list[GenerationRequest],
    model: RegionAwareModel,
    generate: Callable[[Sequence[GenerationRequest]], list[str]] | None,
) -> list[str]:
    if generate is None:
        step = max(1, int(model.max_batch_size))
        outputs = []
        for start in range(0, len(requests), step):
            outputs.extend(model.generate(requests[start : start + step]))
    else:
        outputs = list(generate(requests))
    if len(outputs) != len(requests) or not all(isinstance(o, str) for o in outputs):
        raise AnalysisError(
            f"the model returned {len(outputs)} outputs for {len(requests)} requests "
            "(one text each expected)"
        )
    return outputs


def _raw_header(image: PreparedImage, index: int, total: int, language: str, task: Task) -> str:
    frame = f", frame {image.image.frame_number}" if image.image.frame_number else ""
    return (
        f"### image {index + 1}/{total} (SOP Instance UID "
        f"{image.image.sop_instance_uid}{frame}), {task.value}, {language}"
    )


# -- merging -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ref:
    """One ref of one output with the description of its phrase."""

    ref: RefBoxes
    description: str

    @property
    def key(self) -> str | None:
        known = vocabulary.lookup(self.ref.label) if self.ref.label is not None else None
        return None if known is None else known.key


def _flatten(phrases: Sequence[GroundedPhrase]) -> list[_Ref]:
    return [_Ref(ref, phrase.description) for phrase in phrases for ref in phrase.refs]


def _match(
    primary: list[_Ref], other: list[_Ref], *, language: str, where: str, problems: list[str]
) -> list[_Ref | None]:
    """For each primary ref, its counterpart in ``other`` (or None)."""
    matched: list[_Ref | None] = [None] * len(primary)
    used = [False] * len(other)
    for i, item in enumerate(primary):
        if item.key is None:
            continue
        for j, candidate in enumerate(other):
            if not used[j] and candidate.key == item.key:
                matched[i], used[j] = candidate, True
                break
        else:
            problems.append(
                f"{where}: the {language} output has no counterpart for {item.key!r}; "
                f"{language} text left out"
            )
    rest_primary = [i for i, item in enumerate(primary) if item.key is None]
    rest_other = [j for j, candidate in enumerate(other) if not used[j] and candidate.key is None]
    if len(rest_primary) == len(rest_other):
        for i, j in zip(rest_primary, rest_other, strict=True):
            matched[i], used[j] = other[j], True
    elif rest_primary or rest_other:
        problems.append(
            f"{where}: {len(rest_primary)} unnamed or unknown refs in the primary "
            f"output but {len(rest_other)} "
            f"in the {language} output; they cannot be paired by order, {language} text left out"
        )
    extra = [other[j].ref.label or "(unlabelled box)" for j in range(len(other)) if not used[j]]
    if extra:
        problems.append(
            f"{where}: {language} output has refs the primary output lacks "
            f"({', '.join(extra)}); ignored"
        )
    return matched


def _label(item: _Ref, counterparts: dict[str, _Ref | None], languages: Sequence[str]) -> Text:
    known = vocabulary.lookup(item.ref.label) if item.ref.label is not None else None
    if known is not None:
        values = {}
        for language in languages:
            try:
                values[language] = known.name(language)
            except vocabulary.VocabularyError:  # no canonical name: the model's own label
                found = item if language == languages[0] else counterparts.get(language)
                if found is not None and found.ref.label is not None:
                    values[language] = found.ref.label
        return Text(values)
    if item.ref.label is None:
        unnamed = {}
        for language in languages:
            try:
                unnamed[language] = vocabulary.UNLABELLED_REGION[
                    vocabulary.vocabulary_language(language)
                ]
            except vocabulary.VocabularyError:
                continue
        return Text(unnamed or {"en": vocabulary.UNLABELLED_REGION["en"]})
    values = {languages[0]: item.ref.label}
    for language in languages[1:]:
        found = counterparts.get(language)
        if found is not None and found.ref.label is not None:
            values[language] = found.ref.label
    return Text(values)


def _description(
    item: _Ref, counterparts: dict[str, _Ref | None], languages: Sequence[str], label: Text
) -> Text:
    values = {}
    for language in languages:
        source = item if language == languages[0] else counterparts.get(language)
        if source is not None and source.description:
            values[language] = source.description
    if not values:
        return label  # no text at all (e.g. text→region): the finding is described by its name
    return Text(values)


def _confidence(ref: RefBoxes) -> float | None:
    scores = ref.scores or ()
    if not scores or any(s is None for s in scores):
        return None
    return max(scores)  # type: ignore[type-var]


def _findings_for_image(
    image: PreparedImage,
    results: dict[str, ParseResult],
    *,
    languages: Sequence[str],
    study_uid: str,
    model: RegionAwareModel,
    where: str,
    problems: list[str],
) -> list[Finding]:
    primary = _flatten(results[languages[0]].phrases)
    matches = {
        language: _match(
            primary,
            _flatten(results[language].phrases),
            language=language,
            where=where,
            problems=problems,
        )
        for language in languages[1:]
    }
    findings = []
    for index, item in enumerate(primary):
        counterparts = {language: matches[language][index] for language in languages[1:]}
        label = _label(item, counterparts, languages)
        regions = []
        for box in item.ref.boxes:
            try:
                regions.append(
                    Region(image=image.image, box=image.transform.from_normalized(tuple(box)))
                )
            except PixelError as exc:
                problems.append(
                    f"{where}: box {list(box)} could not be mapped to source pixels "
                    f"({exc}); dropped"
                )
        known = vocabulary.lookup(item.ref.label) if item.ref.label is not None else None
        findings.append(
            Finding(
                kind=known.kind if known is not None else FindingKind.ABNORMALITY,
                label=label,
                description=_description(item, counterparts, languages, label),
                regions=tuple(regions),
                tracking_uid=derive_uid(
                    "radground-finding",
                    study_uid,
                    model.info.device_uid,
                    image.image.sop_instance_uid,
                    image.image.frame_number or 0,
                    index,
                    known.key if known is not None else (item.ref.label or ""),
                ),
                confidence=_confidence(item.ref),
            )
        )
    return findings


_SENTENCE_END = re.compile(r"[.!?。！？]$")


def _join(texts: Sequence[str], language: str) -> str:
    unique = list(dict.fromkeys(t for t in texts if t))
    if language.startswith("zh"):
        return "".join(t if _SENTENCE_END.search(t) else t + "。" for t in unique)
    return " ".join(t if _SENTENCE_END.search(t) else t + "." for t in unique)


def _impression(
    findings: Sequence[Finding],
    plain: dict[str, list[str]],
    *,
    languages: Sequence[str],
    all_clean_and_empty: bool,
    chest: bool,
) -> Text:
    if not findings and not any(plain.values()):
        if not all_clean_and_empty:
            fixed = vocabulary.UNREADABLE_OUTPUT
        else:
            fixed = vocabulary.NEGATIVE_REPORT if chest else vocabulary.NEGATIVE_REPORT_GENERIC
        values = {}
        for language in languages:
            try:
                values[language] = fixed[vocabulary.vocabulary_language(language)]
            except vocabulary.VocabularyError:
                continue  # no fixed wording in this language: left out rather than mislabelled
        return Text(values or {"en": fixed["en"]})
    values = {}
    for language in languages:
        if plain.get(language):
            values[language] = _join(plain[language], language)
        else:
            texts = [f.description.get(language) or "" for f in findings]
            if any(texts):
                values[language] = _join(texts, language)
    if not values:  # only when no description is in a requested language (unnamed boxes, "de")
        first = findings[0].description.languages[0]
        values[first] = _join([f.description.get(first) or "" for f in findings], first)
    return Text(values)


# -- the orchestration -----------------------------------------------------------------


def _check_arguments(
    model: RegionAwareModel,
    languages: Sequence[str],
    task: Task,
    *,
    targets: Sequence[str],
    regional_cot: bool,
) -> tuple[str, ...]:
    if isinstance(languages, str) or not languages:
        raise AnalysisError(
            f"languages must be a non-empty sequence of language tags, got {languages!r}"
        )
    languages = tuple(dict.fromkeys(languages))
    for language in languages:
        if language not in SUPPORTED_LANGUAGES:
            raise AnalysisError(
                f"language {language!r} is not supported; "
                f"supported: {', '.join(SUPPORTED_LANGUAGES)}"
            )
        if language not in model.languages:
            raise AnalysisError(
                f"model {model.info.name} cannot answer in {language!r} "
                f"(it knows {', '.join(model.languages)})"
            )
    if task not in model.tasks:
        raise AnalysisError(
            f"model {model.info.name} does not do {task.value} "
            f"(it does {', '.join(t.value for t in model.tasks)})"
        )
    if isinstance(targets, str) or not all(isinstance(t, str) and t.strip() for t in targets):
        raise AnalysisError(f"targets must be a sequence of non-empty names, got {targets!r}")
    if regional_cot:
        if Task.TEXT_TO_REGION not in model.tasks:
            raise AnalysisError(
                f"regional CoT needs text_to_region, which model {model.info.name} does not do"
            )
        if task not in _REGION_TASKS:
            raise AnalysisError(
                f"regional CoT puts regions into the {task.value} prompt, which takes none; "
                f"use it with {', '.join(t.value for t in _REGION_TASKS)}"
            )
        if not targets:
            raise AnalysisError("regional CoT needs targets: its first pass locates them")
    elif task is Task.REGION_TO_TEXT:
        raise AnalysisError(
            "region_to_text needs regions: use regional_cot=True with targets to find them"
        )
    return languages


def analyze_study(
    datasets: Sequence[pydicom.Dataset],
    model: RegionAwareModel,
    *,
    selection: ImageSelection,
    languages: Sequence[str] = ("en", "zh-CN"),
    task: Task = Task.GROUNDED_REPORT,
    targets: Sequence[str] = (),
    generate: Callable[[Sequence[GenerationRequest]], list[str]] | None = None,
    regional_cot: bool = False,
    created_at: datetime | None = None,
    enforce_applicability: bool = True,
) -> GroundedReport:
    """Analyse one study with a region-aware model.

    Parameters
    ----------
    datasets
        The study's instances (one Study Instance UID); non-images are skipped.
    model
        The loaded model; its ``input_size`` and ``resize_mode`` drive the pixel
        pipeline.
    selection
        Which images and frames go to the model (:class:`engine.pixels.ImageSelection`).
    languages
        BCP-47 tags, primary first; one generation per image and language.
    task
        What to ask (:class:`engine.report.Task`).
    targets
        Objects to locate or organs to describe, as vocabulary keys or names in
        any language (translated per language where the vocabulary knows them).
        Grounded report, text→region and detection prompts name them (a MedRegA
        grounded chest report needs the organ list,
        ``engine.prompts.organ_list("chest", language=...)``); report and
        region→text prompts take none, so there only the regional-CoT first pass
        uses them.
    generate
        Callable running a batch of requests, e.g. ``MicroBatcher.generate``;
        defaults to ``model.generate`` in chunks of ``model.max_batch_size``.
    regional_cot
        MedRegA's regional chain of thought: a text→region pass in the primary
        language finds the critical regions, which are then put in every
        request of the task (``GenerationRequest.regions``).
    created_at
        Timestamp of the report (timezone-aware); now (UTC) when omitted.
    enforce_applicability
        Skip the images the model is not made for (``model.applicability``),
        each with its reason in ``report.problems``. ``False`` sends them anyway
        (``radground model predict --force``); the job pipeline never does.

    Returns
    -------
    GroundedReport

    Raises
    ------
    NotApplicableError
        Images were selected, but the model is made for none of them (each
        image's reason in the message).
    AnalysisError
        No usable image (the message gives each candidate's reason), several
        studies, an unsupported language or task, regional CoT without targets or
        with a task whose prompt takes no regions, region→text without regional
        CoT, or a model that returned the wrong number of outputs.
    engine.model.ModelError
        Whatever the model raises, unchanged (callers decide on retries).
    """
    task = Task(task)
    if isinstance(targets, str):
        raise AnalysisError(f"targets must be a sequence of non-empty names, got {targets!r}")
    targets = tuple(targets)
    languages = _check_arguments(model, languages, task, targets=targets, regional_cot=regional_cot)
    if created_at is not None and (
        not isinstance(created_at, datetime) or created_at.tzinfo is None
    ):
        raise AnalysisError(f"created_at must be a timezone-aware datetime, got {created_at!r}")
    datasets = list(datasets)
    if not datasets:
        raise AnalysisError("no datasets given: a study needs at least one instance")
    study_uid = _study_uid(datasets)
    problems: list[str] = []
    prepared = _prepare_all(
        datasets, model, selection, problems, enforce_applicability=enforce_applicability
    )
    images = [image for _, image in prepared]
    total = len(images)
    raw: list[str] = []

    regions_by_image: list[tuple[tuple[int, int, int, int], ...]] = [()] * total
    if regional_cot:
        cot_requests = [
            GenerationRequest(
                im.array,
                Task.TEXT_TO_REGION,
                language=languages[0],
                targets=_target_names(targets, languages[0]),
            )
            for im in images
        ]
        for index, (image, output) in enumerate(
            zip(images, _run(cot_requests, model, generate), strict=True)
        ):
            raw.append(
                _raw_header(image, index, total, languages[0], Task.TEXT_TO_REGION) + "\n" + output
            )
            result = parse_grounded_text(output)
            problems.extend(f"image {index + 1} regional CoT pass: {p}" for p in result.problems)
            boxes = list(dict.fromkeys((*b,) for phrase in result.phrases for b in phrase.boxes))
            if len(boxes) > MAX_COT_REGIONS:
                problems.append(
                    f"image {index + 1} regional CoT pass: {len(boxes)} regions, only "
                    f"the first {MAX_COT_REGIONS} used"
                )
            regions_by_image[index] = tuple(boxes[:MAX_COT_REGIONS])

    requests = [
        GenerationRequest(
            image.array,
            task,
            language=language,
            targets=_target_names(targets, language) if task in _TARGET_TASKS else (),
            regions=regions_by_image[i],
        )
        for i, image in enumerate(images)
        for language in languages
    ]
    outputs = iter(_run(requests, model, generate))
    findings: list[Finding] = []
    plain: dict[str, list[str]] = {language: [] for language in languages}
    all_clean_and_empty = True
    for index, image in enumerate(images):
        where = f"image {index + 1} (SOP instance {short_uid(image.image.sop_instance_uid)}" + (
            f" frame {image.image.frame_number})" if image.image.frame_number else ")"
        )
        results: dict[str, ParseResult] = {}
        for language in languages:
            output = next(outputs)
            raw.append(_raw_header(image, index, total, language, task) + "\n" + output)
            result = parse_grounded_text(output)
            results[language] = result
            problems.extend(f"{where} {language} output: {p}" for p in result.problems)
            all_clean_and_empty = all_clean_and_empty and not result.problems and not result.phrases
            plain[language].extend(p.description for p in result.phrases if not p.refs)
        findings.extend(
            _findings_for_image(
                image,
                results,
                languages=languages,
                study_uid=study_uid,
                model=model,
                where=where,
                problems=problems,
            )
        )

    chest = all(str(ds.get("BodyPartExamined", "") or "").upper() == "CHEST" for ds, _ in prepared)
    impression = _impression(
        findings, plain, languages=languages, all_clean_and_empty=all_clean_and_empty, chest=chest
    )
    if problems:
        logger.info("study %s analysed with %d problem(s)", short_uid(study_uid), len(problems))
    return GroundedReport(
        study_instance_uid=study_uid,
        findings=tuple(findings),
        impression=impression,
        model=model.info,
        task=task,
        raw_output="\n\n".join(raw),
        created_at=created_at if created_at is not None else datetime.now(UTC),
        problems=tuple(problems),
    )
