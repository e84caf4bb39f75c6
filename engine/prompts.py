"""MedRegA's prompt families, in English and Chinese.

A served MedRegA only behaves as evaluated when it is prompted with the exact
instructions it was trained on (``MEDREGA.md``, "Prompts"; the MedRegA paper,
Wang et al., and its public demo data). This module renders a
:class:`~engine.model.GenerationRequest` into that text. The text is the *user
turn* only: it contains one ``<image>`` placeholder, which the backend expands
into the model's image tokens, and the backend wraps it in the model's chat
template (Hermes-2 for MedRegA/InternVL-chat).

Which wordings are MedRegA's own and which are RadGround's:

- verbatim from MedRegA: English text→region, region→text, grounded report and
  report; Chinese grounded (lesion) report and report;
- RadGround's, written in the same style because MedRegA publishes none:
  Chinese text→region and region→text, and the sentence that inserts the
  critical regions found by the first pass of regional CoT
  (:data:`NOT_FROM_MEDREGA` lists them, so callers and tests can tell).

Boxes are written as MedRegA writes them: integers 0–999 relative to the model
input's width and height, ``[x1, y1, x2, y2]`` (top left, bottom right).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from engine import vocabulary
from engine.errors import EngineError
from engine.model import GenerationRequest
from engine.report import Task

__all__ = [
    "CHEST_IMAGENOME_STRUCTURES",
    "CHEST_XRAY",
    "IMAGE_PLACEHOLDER",
    "NOT_FROM_MEDREGA",
    "PromptError",
    "build_prompt",
    "format_boxes",
    "organ_list",
    "prompt_language",
]

logger = logging.getLogger(__name__)


class PromptError(EngineError, ValueError):
    """A request cannot be rendered into a MedRegA prompt."""


#: The placeholder the backend replaces with the image tokens.
IMAGE_PLACEHOLDER = "<image>"

#: The modality phrase MedRegA uses for chest radiographs ("You are given a chest x-ray image").
CHEST_XRAY = "chest x-ray image"

#: The 12 Chest ImaGenome structures MedRegA grounds chest reports on, in MEDREGA.md's order.
CHEST_IMAGENOME_STRUCTURES: tuple[str, ...] = tuple(
    e.name("en") for e in vocabulary.CHEST_IMAGENOME_STRUCTURES
)

#: MedRegA's organ lists (``MEDREGA.md``, "Organ lists") by the name :func:`organ_list` takes.
_ORGAN_LISTS = {
    "chest": vocabulary.CHEST_IMAGENOME_STRUCTURES,
    "ct_mr_organs": vocabulary.CT_MR_ORGANS,
    "lesions": vocabulary.LESIONS,
}

#: ``(task, language family)`` pairs whose wording is RadGround's, not MedRegA's.
NOT_FROM_MEDREGA: frozenset[tuple[Task, str]] = frozenset(
    {
        (Task.TEXT_TO_REGION, "zh"),
        (Task.DETECTION, "zh"),
        (Task.REGION_TO_TEXT, "zh"),
    }
)

# ---------------------------------------------------------------------------
# English (MedRegA, verbatim)
# ---------------------------------------------------------------------------
_EN_BOX_DEFINITION = (
    "The region is represented in the form of bounding box, [x1, y1, x2, y2], with integers "
    "ranging from 0 to 999. These values correspond to the top left x, top left y, bottom "
    "right x, and bottom right y."
)
_EN_BOX_FORMAT = (
    "For each object, please utilize this format to represent the region with its bounding "
    'box: "<ref>object</ref><box>[[x1, y1, x2, y2]]</box>".'
)
_EN_PREFIX = "You are a helpful medical assistant."

_EN_TEXT_TO_REGION = (
    f"{_EN_PREFIX} Your task is object detection. You are required to find all the regions of "
    f"the given objects. {_EN_BOX_DEFINITION} {_EN_BOX_FORMAT} {IMAGE_PLACEHOLDER}\n"
    "Please locate {refs} in this {modality}."
)
_EN_REGION_TO_TEXT = (
    f"{_EN_PREFIX} Your task is object recognition. You are required to recognize the object "
    f"in the given region. {_EN_BOX_DEFINITION} {IMAGE_PLACEHOLDER}\n"
    "What is <ref>this</ref>{boxes} in this {modality}?"
)
_EN_GROUNDED_REPORT = (
    f"{_EN_PREFIX} Your task is report phrase grounding. You are given {{modality_a}}, and you "
    "are required to locate the region and generate a report for the given organ. "
    f"{_EN_BOX_DEFINITION} {_EN_BOX_FORMAT} {IMAGE_PLACEHOLDER}\n"
    "Please locate the region and describe the condition of {refs}"
)
_EN_REPORT = (
    f"{_EN_PREFIX} Your task is report generation. You are given {{modality_a}}, and you are "
    "required to generate a medical report consisting of findings and impressions based on "
    f"the image. {IMAGE_PLACEHOLDER}\n"
)
# RadGround's: the second pass of regional CoT.
_EN_REGION_HINT = "The critical regions in this image are {boxes}."

# ---------------------------------------------------------------------------
# Chinese (MedRegA verbatim where MedRegA has one)
# ---------------------------------------------------------------------------
_ZH_BOX_DEFINITION = (
    "[x1, y1, x2, y2]，整数范围从0到999。这些值分别对应左上角的x，左上角的y，右下角的x和右下角的y。"
)
_ZH_GROUNDED_REPORT = (
    "你是一个医疗助手，你的任务是定位并描述病种。病种区域用边界框的形式表示，"
    f"{_ZH_BOX_DEFINITION}"
    "对于每个病种，请使用这种格式用边界框表示区域："
    '"<ref>病种</ref><box>[[x1, y1, x2, y2]]</box>：诊断"。'
    f"{IMAGE_PLACEHOLDER}\n"
    "请定位并描述这张医学影像中的{refs}"
)
_ZH_REPORT = (
    "你是一个医疗助手，你的任务是生成诊断报告。请为这张医学影像撰写诊断报告，需包括影像诊断和影像结论两部分。"
    "影像诊断描述可见信息，影响结论列举最终的诊断结果。"
    f"{IMAGE_PLACEHOLDER}\n"
)
# RadGround's, in the style of the two above.
_ZH_TEXT_TO_REGION = (
    "你是一个医疗助手，你的任务是目标检测。你需要找到给定目标的所有区域。区域用边界框的形式表示，"
    f"{_ZH_BOX_DEFINITION}"
    '对于每个目标，请使用这种格式用边界框表示区域："<ref>目标</ref><box>[[x1, y1, x2, y2]]</box>"。'
    f"{IMAGE_PLACEHOLDER}\n"
    "请定位这张医学影像中的{refs}"
)
_ZH_REGION_TO_TEXT = (
    "你是一个医疗助手，你的任务是目标识别。你需要识别给定区域中的目标。区域用边界框的形式表示，"
    f"{_ZH_BOX_DEFINITION}"
    f"{IMAGE_PLACEHOLDER}\n"
    "这张医学影像中的<ref>这个</ref>{boxes}是什么？"
)
_ZH_REGION_HINT = "这张医学影像中的关键区域为{boxes}。"

#: Letters whose spoken name starts with a vowel ("an MRI scan", "an X-ray", "an OCT image").
_VOWEL_SOUND_INITIALS = frozenset("AEFHILMNORSX")


def prompt_language(language: str) -> str:
    """The prompt family (``"en"`` or ``"zh"``) for a BCP-47 tag; MedRegA is bilingual only."""
    family = language.split("-", 1)[0].lower()
    if family not in ("en", "zh"):
        raise PromptError(f"MedRegA prompts exist in English and Chinese only, not {language!r}")
    return family


def format_boxes(boxes: Sequence[Sequence[int]]) -> str:
    """Boxes in MedRegA's grammar: ``<box>[[x1, y1, x2, y2], [...]]</box>`` (0–999 integers)."""
    if not boxes:
        raise PromptError("format_boxes needs at least one box")
    parts = []
    for box in boxes:
        values = [int(v) for v in box]
        if len(values) != 4 or not all(0 <= v <= 999 for v in values):
            raise PromptError(
                f"a MedRegA box is four integers 0-999 (x1, y1, x2, y2), got {tuple(box)!r}"
            )
        if values[0] > values[2] or values[1] > values[3]:
            raise PromptError(
                f"a MedRegA box goes from top left to bottom right, got {tuple(values)!r}"
            )
        parts.append("[" + ", ".join(str(v) for v in values) + "]")
    return "<box>[" + ", ".join(parts) + "]</box>"


def _format_refs(targets: Sequence[str], *, separator: str) -> str:
    for target in targets:
        if not isinstance(target, str) or not target.strip():
            raise PromptError(f"targets must be non-empty strings, got {target!r}")
        if "<" in target or ">" in target:
            raise PromptError(f"targets may not contain markup, got {target!r}")
    return separator.join(f"<ref>{t.strip()}</ref>" for t in targets)


def _with_article(phrase: str) -> str:
    first = phrase.split(" ", 1)[0]
    if first.isupper():  # an acronym is read letter by letter: "an MRI scan", "a CT scan"
        vowel = first[0] in _VOWEL_SOUND_INITIALS
    else:
        vowel = first[:1].lower() in "aeiou"
    return f"{'an' if vowel else 'a'} {phrase}"


def organ_list(body_part: str = "chest", *, language: str = "en") -> tuple[str, ...]:
    """The structures MedRegA grounds a report on, named in ``language``.

    Parameters
    ----------
    body_part
        ``"chest"``: the 12 Chest ImaGenome structures of a chest radiograph;
        ``"ct_mr_organs"``: the 7 organs of organ-grounded CT/MR;
        ``"lesions"``: the 12 lesion types (``MEDREGA.md``, "Organ lists").
    language
        BCP-47 tag; names come from :mod:`engine.vocabulary`.
    """
    entries = _ORGAN_LISTS.get(body_part.lower())
    if entries is None:
        raise PromptError(f"no organ list for {body_part!r}; known: {', '.join(_ORGAN_LISTS)}")
    prompt_language(language)
    return tuple(e.name(language) for e in entries)


def build_prompt(request: GenerationRequest, *, modality_phrase: str = CHEST_XRAY) -> str:
    """Render ``request`` as MedRegA's user turn, with one ``<image>`` placeholder.

    Parameters
    ----------
    request
        What to ask: ``task`` picks the prompt family, ``language`` its language
        (English or Chinese), ``targets`` the objects/organs (grounded report,
        text→region), ``regions`` the 0–999 boxes (region→text; for a grounded
        report or a report they are the critical regions of regional CoT's
        first pass and are inserted into the question).
    modality_phrase
        How the English prompts name the image, with its noun: ``"chest x-ray
        image"`` (grounded report, report), ``"CT scan"``, ``"MRI scan"``
        (text→region, region→text). The Chinese prompts say "这张医学影像".

    Returns
    -------
    str
        The prompt text; MedRegA's own strings are reproduced exactly.

    Raises
    ------
    PromptError
        The task needs targets or regions that the request lacks (or has ones it
        cannot use), or the language is neither English nor Chinese.
    """
    if not isinstance(modality_phrase, str) or not modality_phrase.strip():
        raise PromptError(f"modality_phrase must be a non-empty string, got {modality_phrase!r}")
    modality = modality_phrase.strip()
    family = prompt_language(request.language)
    task = request.task
    regions = request.regions

    if task in (Task.TEXT_TO_REGION, Task.DETECTION):
        if regions:
            raise PromptError(
                f"{task.value} locates targets; it takes no regions (got {len(regions)})"
            )
        if not request.targets:
            raise PromptError(f"{task.value} needs at least one target to locate")
        if family == "en":
            return _EN_TEXT_TO_REGION.format(
                refs=_format_refs(request.targets, separator=", "), modality=modality
            )
        return _ZH_TEXT_TO_REGION.format(refs=_format_refs(request.targets, separator="、"))

    if task is Task.REGION_TO_TEXT:
        if not regions:
            raise PromptError("region_to_text needs at least one region to recognise")
        if family == "en":
            return _EN_REGION_TO_TEXT.format(boxes=format_boxes(regions), modality=modality)
        return _ZH_REGION_TO_TEXT.format(boxes=format_boxes(regions))

    if task is Task.GROUNDED_REPORT:
        if not request.targets:
            raise PromptError(
                "grounded_report needs the organs (or lesions) to describe; "
                "organ_list('chest', language=...) gives the 12 Chest ImaGenome structures"
            )
        if family == "en":
            text = _EN_GROUNDED_REPORT.format(
                modality_a=_with_article(modality),
                refs=_format_refs(request.targets, separator=", "),
            )
        else:
            text = _ZH_GROUNDED_REPORT.format(refs=_format_refs(request.targets, separator="、"))
        return text + _region_hint(
            regions, family=family, separator=" " if family == "en" else "。"
        )

    if task is Task.REPORT:
        if request.targets:
            raise PromptError(f"report takes no targets (got {len(request.targets)})")
        text = (
            _EN_REPORT.format(modality_a=_with_article(modality)) if family == "en" else _ZH_REPORT
        )
        return text + _region_hint(regions, family=family, separator="")

    raise PromptError(f"no MedRegA prompt for task {task!r}")  # pragma: no cover - Task is closed


def _region_hint(regions: Sequence[Sequence[int]], *, family: str, separator: str) -> str:
    """Regional CoT, second pass: the first pass's critical regions, inserted after the question."""
    if not regions:
        return ""
    template = _EN_REGION_HINT if family == "en" else _ZH_REGION_HINT
    return separator + template.format(boxes=format_boxes(regions))
