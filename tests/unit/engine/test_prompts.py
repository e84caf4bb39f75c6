"""Golden tests: the prompts RadGround sends are MedRegA's, character for character.

The expected strings are read from ``../shared/MEDREGA.md`` ("Prompts"), the
project's record of MedRegA's training interface, so a drift on either side fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from engine.model import GenerationRequest
from engine.prompts import (
    CHEST_IMAGENOME_STRUCTURES,
    IMAGE_PLACEHOLDER,
    NOT_FROM_MEDREGA,
    PromptError,
    build_prompt,
    format_boxes,
    organ_list,
)
from engine.report import Task

MEDREGA_MD = Path(__file__).resolve().parents[3].parent / "shared" / "MEDREGA.md"


@pytest.fixture(scope="module")
def medrega_prompts() -> dict[str, str]:
    """``label -> prompt`` from MEDREGA.md's "Prompts" section (``\\n`` written as in the file)."""
    if not MEDREGA_MD.is_file():
        pytest.fail(f"{MEDREGA_MD} not found; CI puts shared/ beside the repository")
    text = MEDREGA_MD.read_text(encoding="utf-8")
    section = text.split("## Prompts", 1)[1].split("\n## ", 1)[0]
    prompts = {}
    for line in section.splitlines():
        match = re.match(r"^- ([^:]+): `([^`]*)`", line)
        if match:
            prompts[match.group(1).strip()] = match.group(2).replace("\\n", "\n")
    assert len(prompts) == 6, prompts.keys()
    return prompts


def _request(task: Task, *, language: str = "en", targets=(), regions=()) -> GenerationRequest:
    return GenerationRequest(
        image=np.zeros((4, 4, 3), np.float32),
        task=task,
        language=language,
        targets=tuple(targets),
        regions=tuple(regions),
    )


def test_text_to_region_is_medregas(medrega_prompts):
    prompt = build_prompt(
        _request(Task.TEXT_TO_REGION, targets=["carotid vessel wall"]), modality_phrase="MRI scan"
    )
    assert prompt == medrega_prompts["Text→region"]


def test_region_to_text_is_medregas(medrega_prompts):
    prompt = build_prompt(
        _request(Task.REGION_TO_TEXT, regions=[(421, 351, 505, 470)]), modality_phrase="CT scan"
    )
    assert prompt == medrega_prompts["Region→text"]


def test_grounded_chest_report_is_medregas(medrega_prompts):
    request = _request(Task.GROUNDED_REPORT, targets=["right lung", "left lung"])
    assert build_prompt(request) == medrega_prompts["Grounded report (chest radiograph)"]


def test_chinese_lesion_grounding_is_medregas(medrega_prompts):
    request = _request(Task.GROUNDED_REPORT, language="zh-CN", targets=["胰腺癌"])
    assert build_prompt(request) == medrega_prompts["Grounded lesion report (Chinese)"]


def test_reports_are_medregas(medrega_prompts):
    assert (
        build_prompt(_request(Task.REPORT)) == medrega_prompts["Report (English, chest radiograph)"]
    )
    assert (
        build_prompt(_request(Task.REPORT, language="zh-CN")) == medrega_prompts["Report (Chinese)"]
    )


def test_regional_english_variants_are_all_accepted():
    # en-US / en-GB use the English family; the output equals plain "en".
    base = build_prompt(_request(Task.REPORT))
    assert build_prompt(_request(Task.REPORT, language="en-GB")) == base


def test_full_chest_organ_list_is_rendered_in_order():
    prompt = build_prompt(_request(Task.GROUNDED_REPORT, targets=organ_list("chest")))
    refs = re.findall(r"<ref>(.*?)</ref>", prompt.split(IMAGE_PLACEHOLDER, 1)[1])
    assert tuple(refs) == CHEST_IMAGENOME_STRUCTURES
    assert len(refs) == 12


def test_exactly_one_image_placeholder_in_every_family():
    requests = [
        _request(Task.TEXT_TO_REGION, targets=["lung"]),
        _request(Task.TEXT_TO_REGION, language="zh-CN", targets=["肺"]),
        _request(Task.DETECTION, targets=["nodule"]),
        _request(Task.REGION_TO_TEXT, regions=[(1, 2, 3, 4)]),
        _request(Task.REGION_TO_TEXT, language="zh-CN", regions=[(1, 2, 3, 4)]),
        _request(Task.GROUNDED_REPORT, targets=["heart"]),
        _request(Task.GROUNDED_REPORT, language="zh-CN", targets=["心脏"]),
        _request(Task.REPORT),
        _request(Task.REPORT, language="zh-CN"),
    ]
    for request in requests:
        assert build_prompt(request).count(IMAGE_PLACEHOLDER) == 1, request.task


def test_regional_cot_second_pass_inserts_the_first_pass_boxes():
    boxes = [(10, 20, 300, 400), (500, 520, 600, 610)]
    first = build_prompt(_request(Task.REPORT))
    second = build_prompt(_request(Task.REPORT, regions=boxes))
    assert second.startswith(first)
    assert "<box>[[10, 20, 300, 400], [500, 520, 600, 610]]</box>" in second[len(first):]
    zh = build_prompt(
        _request(Task.GROUNDED_REPORT, language="zh-CN", targets=["肺癌"], regions=boxes[:1])
    )
    assert zh.startswith(
        build_prompt(_request(Task.GROUNDED_REPORT, language="zh-CN", targets=["肺癌"]))
    )
    assert zh.endswith("<box>[[10, 20, 300, 400]]</box>。")


def test_article_follows_the_modality_phrase():
    assert "You are given an MRI scan, and" in build_prompt(
        _request(Task.REPORT), modality_phrase="MRI scan"
    )
    assert "You are given a CT scan, and" in build_prompt(
        _request(Task.REPORT), modality_phrase="CT scan"
    )
    assert "You are given an abdominal" in build_prompt(
        _request(Task.REPORT), modality_phrase="abdominal CT scan"
    )


def test_several_regions_share_one_box_tag():
    prompt = build_prompt(
        _request(Task.REGION_TO_TEXT, regions=[(1, 2, 3, 4), (5, 6, 7, 8)]),
        modality_phrase="CT scan",
    )
    assert prompt.endswith(
        "What is <ref>this</ref><box>[[1, 2, 3, 4], [5, 6, 7, 8]]</box> in this CT scan?"
    )


@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        ({"task": Task.TEXT_TO_REGION}, "at least one target"),
        ({"task": Task.TEXT_TO_REGION, "targets": ["a"], "regions": [(1, 1, 2, 2)]}, "no regions"),
        ({"task": Task.REGION_TO_TEXT}, "at least one region"),
        ({"task": Task.GROUNDED_REPORT}, "organ_list"),
        ({"task": Task.REPORT, "targets": ["lung"]}, "no targets"),
        ({"task": Task.REPORT, "language": "de"}, "English and Chinese"),
        ({"task": Task.TEXT_TO_REGION, "targets": ["<ref>x"]}, "markup"),
        ({"task": Task.TEXT_TO_REGION, "targets": ["  "]}, "non-empty"),
    ],
)
def test_requests_that_cannot_be_prompted_are_refused(request_kwargs, message):
    with pytest.raises(PromptError, match=message):
        build_prompt(_request(**request_kwargs))


def test_inverted_box_is_refused():
    with pytest.raises(PromptError, match="top left to bottom right"):
        format_boxes([(500, 10, 100, 20)])


def test_our_own_wordings_are_declared():
    assert (Task.REGION_TO_TEXT, "zh") in NOT_FROM_MEDREGA
    assert (Task.GROUNDED_REPORT, "en") not in NOT_FROM_MEDREGA
    assert (Task.REPORT, "zh") not in NOT_FROM_MEDREGA


def test_chinese_chest_organ_list_comes_from_the_vocabulary():
    names = organ_list("chest", language="zh-CN")
    assert len(names) == 12 and names[1] == "右肺"
    prompt = build_prompt(_request(Task.GROUNDED_REPORT, language="zh-CN", targets=names))
    assert prompt.endswith(
        "<ref>左肺</ref>、<ref>右肺</ref>、" + "、".join(f"<ref>{n}</ref>" for n in names[2:])
    )
    assert len(organ_list("ct_mr_organs")) == 7 and len(organ_list("lesions")) == 12
    with pytest.raises(PromptError, match="known"):
        organ_list("knee")
