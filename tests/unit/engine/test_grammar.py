"""Tests for engine.grammar: the MedRegA grounding grammar parser and writer."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.grammar import (
    Box999,
    GrammarError,
    GroundedPhrase,
    ParseResult,
    RefBoxes,
    parse_grounded_text,
    write_grounded_text,
)

# -- golden: outputs shaped exactly as MEDREGA.md shows them ------------------------


def test_medrega_chest_grounded_report_two_refs_one_description():
    text = (
        "<ref>right lung</ref><box>[[102, 106, 481, 910]]</box>, "
        "<ref>left lung</ref><box>[[535, 128, 923, 889]]</box>: No focal consolidation, "
        "pleural effusion or pneumothorax. "
        "<ref>cardiac silhouette</ref><box>[[380, 420, 760, 800]]</box>: The cardiac silhouette is "
        "normal in size."
    )
    result = parse_grounded_text(text)
    assert result.problems == ()
    first, second = result.phrases
    assert first.labels == ("right lung", "left lung")
    assert first.boxes == ((102, 106, 481, 910), (535, 128, 923, 889))
    assert first.description == "No focal consolidation, pleural effusion or pneumothorax."
    assert first.scores == (None, None)  # MedRegA gives no confidence
    assert second.labels == ("cardiac silhouette",)
    assert second.description == "The cardiac silhouette is normal in size."


def test_medrega_several_boxes_per_ref():
    result = parse_grounded_text(
        "<ref>kidney</ref><box>[[365, 293, 416, 598], [596, 316, 635, 464]]</box>"
    )
    assert result.problems == ()
    (phrase,) = result.phrases
    assert phrase.refs == (
        RefBoxes("kidney", (Box999(365, 293, 416, 598), Box999(596, 316, 635, 464))),
    )
    assert phrase.description == ""


def test_medrega_chinese_lesion_report_full_width_colon():
    text = (
        "<ref>胰腺癌</ref><box>[[412, 388, 521, 470]]</box>：胰头部见不规则低密度肿块，考虑胰腺癌。"
    )
    (phrase,) = parse_grounded_text(text).phrases
    assert phrase.labels == ("胰腺癌",)
    assert phrase.boxes == ((412, 388, 521, 470),)
    # Chinese punctuation inside the description is kept as the model wrote it
    assert phrase.description == "胰头部见不规则低密度肿块，考虑胰腺癌。"


def test_single_brackets_full_width_brackets_and_commas():
    for text in (
        "<ref>liver</ref><box>[10, 20, 300, 400]</box>",
        "<ref>liver</ref><box>［［10，20，300，400］］</box>",
        "<REF>liver</REF><BOX>[[ 10 ,20, 300,400 ]]</BOX>",
        "＜ref＞liver＜/ref＞＜box＞[[10, 20, 300, 400]]＜/box＞",
    ):
        result = parse_grounded_text(text)
        assert result.problems == (), text
        assert result.phrases[0].refs == (RefBoxes("liver", (Box999(10, 20, 300, 400),)),), text


def test_boxes_without_ref_and_plain_text():
    text = "影像诊断：右肺上叶见结节。<box>[[1, 2, 30, 40]]</box>：结节。"
    first, second = parse_grounded_text(text).phrases
    assert first.refs == () and first.description == "影像诊断：右肺上叶见结节。"
    assert second.refs == (RefBoxes(None, (Box999(1, 2, 30, 40),)),)
    assert second.description == "结节。"


def test_ref_and_box_separated_by_white_space_and_several_box_tags():
    (phrase,) = parse_grounded_text(
        "<ref>lung</ref> <box>[[1,2,3,4]]</box>\n<box>[[5,6,7,8]]</box>: x"
    ).phrases
    assert phrase.refs == (RefBoxes("lung", (Box999(1, 2, 3, 4), Box999(5, 6, 7, 8))),)


def test_ref_separators_in_both_languages():
    for sep in (", ", "，", "、", " and ", "和", " ; "):
        text = f"<ref>A</ref><box>[[1,2,3,4]]</box>{sep}<ref>B</ref><box>[[5,6,7,8]]</box>: both"
        (phrase,) = parse_grounded_text(text).phrases
        assert phrase.labels == ("A", "B"), sep


def test_inline_description_without_colon():
    (phrase,) = parse_grounded_text(
        "<ref>nodule</ref><box>[[1,2,3,4]]</box> in the right upper lobe."
    ).phrases
    assert phrase.description == "in the right upper lobe."


def test_phrases_separated_by_commas_lose_the_trailing_comma():
    text = "<ref>A</ref><box>[[1,2,3,4]]</box>: normal, <ref>B</ref><box>[[5,6,7,8]]</box>：正常，"
    first, second = parse_grounded_text(text).phrases
    assert first.description == "normal"
    assert second.description == "正常，"  # the last description is kept as written


# -- the RadGround <score> extension ----------------------------------------------


def test_scores_attach_to_their_boxes():
    text = (
        "<ref>nodule</ref><box>[[613, 200, 700, 287]]</box><score>0.82</score>: Nodule. "
        "<ref>mass</ref><box>[[1, 2, 30, 40], [500, 500, 600, 650]]</box><score>[0.91, "
        "0.47]</score>: Mass."
    )
    result = parse_grounded_text(text)
    assert result.problems == ()
    assert result.phrases[0].scores == (0.82,)
    assert result.phrases[1].scores == (0.91, 0.47)


def test_score_of_a_dropped_box_is_dropped_with_it():
    result = parse_grounded_text(
        "<ref>m</ref><box>[[1, 2, 30, 40], [9, 9, 9, 9]]</box><score>[0.9, 0.4]</score>"
    )
    assert result.phrases[0].refs[0].boxes == ((1, 2, 30, 40),)
    assert result.phrases[0].scores == (0.9,)
    assert len(result.problems) == 1 and "zero or negative area" in result.problems[0]


@pytest.mark.parametrize(
    ("score", "why"),
    [
        ("[0.9, 0.1]", "2 scores for 1 boxes"),
        ("1.5", "not a number in [0, 1]"),
        ("high", "not a number"),
    ],
)
def test_bad_scores_are_ignored_and_reported(score, why):
    result = parse_grounded_text(
        f"<ref>m</ref><box>[[1, 2, 30, 40]]</box><score>{score}</score>: x"
    )
    assert result.phrases[0].boxes == ((1, 2, 30, 40),)
    assert result.phrases[0].scores == (None,)
    assert any(why in p for p in result.problems)


def test_score_without_box_is_reported():
    result = parse_grounded_text("<ref>m</ref><score>0.5</score>: x")
    assert result.phrases[0].refs == (RefBoxes("m"),)
    assert any("does not follow" in p for p in result.problems)


# -- malformed output --------------------------------------------------------------


@pytest.mark.parametrize(
    ("box", "why"),
    [
        ("[[0, 0, 1000, 500]]", "outside 0-999"),
        ("[[-1, 0, 10, 10]]", "outside 0-999"),
        ("[[10, 10, 10, 20]]", "zero or negative area"),
        ("[[50, 10, 20, 20]]", "zero or negative area"),
        ("[[1, 2, 3]]", "needs 4 numbers"),
        ("[[1, 2, 3, 4, 5]]", "needs 4 numbers"),
        ("[[0.1, 0.2, 0.3, 0.4]]", "not four integers"),
        ("[[a, b, c, d]]", "not four integers"),
        ("the left lung", "holds no [x1, y1, x2, y2]"),
    ],
)
def test_bad_boxes_are_dropped_and_reported(box, why):
    result = parse_grounded_text(f"<ref>left lung</ref><box>{box}</box>: text")
    (phrase,) = result.phrases
    assert phrase.refs == (RefBoxes("left lung"),)  # the ref survives, without the box
    assert phrase.description == "text"
    assert len(result.problems) == 1 and why in result.problems[0], result.problems


def test_good_boxes_next_to_bad_ones_are_kept():
    result = parse_grounded_text("<box>[[1, 2, 3, 4], [1, 2, 3], [5, 6, 7, 8]]</box>")
    assert result.phrases[0].boxes == ((1, 2, 3, 4), (5, 6, 7, 8))
    assert len(result.problems) == 1


def test_truncated_output_drops_the_cut_box():
    # generation stopped at max_new_tokens in the middle of a box: "9" may be "910"
    result = parse_grounded_text("<ref>right lung</ref><box>[[102, 106, 481, 9")
    assert result.phrases == (GroundedPhrase((RefBoxes("right lung"),)),)
    assert result.problems == ("unclosed <box> at offset 21 (content up to the end of the text)",)
    result = parse_grounded_text("<ref>right lung</ref><box>[[1, 2, 3, 4]]</box>: ok. <ref>left lu")
    assert [p.labels for p in result.phrases] == [("right lung",)]
    assert "unclosed <ref>" in result.problems[0]


def test_unclosed_ref_before_a_box_keeps_the_label_and_stray_tags_are_reported():
    result = parse_grounded_text("<ref>left lung<box>[[1, 2, 3, 4]]</box></box>: clear </ref>")
    assert result.phrases == (
        GroundedPhrase((RefBoxes("left lung", (Box999(1, 2, 3, 4),)),), "clear"),
    )
    assert [p.split(" at ")[0] for p in result.problems] == [
        "unclosed <ref>",
        "stray </box>",
        "stray </ref>",
    ]


def test_empty_and_plain_outputs():
    assert parse_grounded_text("") == ParseResult((), ())
    assert parse_grounded_text("   \n") == ParseResult((), ())
    assert parse_grounded_text("No acute findings.").phrases == (
        GroundedPhrase((), "No acute findings."),
    )
    assert parse_grounded_text(None).problems  # type: ignore[arg-type]


# -- value objects -----------------------------------------------------------------


def test_value_objects_validate():
    with pytest.raises(GrammarError, match="0-999"):
        Box999(0, 0, 1000, 10)
    with pytest.raises(GrammarError, match="x1 < x2"):
        Box999(5, 0, 5, 10)
    with pytest.raises(GrammarError, match="integer"):
        Box999(0.5, 0, 5, 10)  # type: ignore[arg-type]
    with pytest.raises(GrammarError, match="label or at least one box"):
        RefBoxes(None)
    with pytest.raises(GrammarError, match="stripped"):
        RefBoxes(" lung ")
    with pytest.raises(GrammarError, match="one score per box"):
        RefBoxes("lung", (Box999(0, 0, 1, 1),), (0.5, 0.5))
    with pytest.raises(GrammarError, match="ref or a description"):
        GroundedPhrase(())
    box = Box999(1, 2, 3, 4)
    assert pickle.loads(pickle.dumps(box)) == box and box == (1, 2, 3, 4)


# -- writer ------------------------------------------------------------------------


def test_writer_formats_in_both_languages():
    phrase = GroundedPhrase(
        (
            RefBoxes("right lung", (Box999(102, 106, 481, 910),)),
            RefBoxes("left lung", (Box999(535, 128, 923, 889),)),
        ),
        "No focal consolidation.",
    )
    assert write_grounded_text([phrase], language="en") == (
        "<ref>right lung</ref><box>[[102, 106, 481, 910]]</box>, "
        "<ref>left lung</ref><box>[[535, 128, 923, 889]]</box>: No focal consolidation."
    )
    zh = GroundedPhrase((RefBoxes("结节", (Box999(1, 2, 3, 4),), (0.82,)),), "右上肺野结节。")
    assert write_grounded_text([zh], language="zh-CN") == (
        "<ref>结节</ref><box>[[1, 2, 3, 4]]</box><score>0.82</score>：右上肺野结节。"
    )


def test_writer_refuses_what_would_not_read_back():
    ok = GroundedPhrase((RefBoxes("a", (Box999(1, 2, 3, 4),)),), "x")
    with pytest.raises(GrammarError, match="grammar tag"):
        write_grounded_text([GroundedPhrase((RefBoxes("a</ref>b"),), "x")], language="en")
    with pytest.raises(GrammarError, match="grammar tag"):
        write_grounded_text([GroundedPhrase((RefBoxes("a"),), "see <box>")], language="en")
    with pytest.raises(GrammarError, match="only be the first"):
        write_grounded_text([ok, GroundedPhrase((), "text")], language="en")
    with pytest.raises(GrammarError, match="only the last phrase"):
        write_grounded_text([GroundedPhrase((RefBoxes("a"),)), ok], language="en")
    with pytest.raises(GrammarError, match="some boxes but not all"):
        write_grounded_text(
            [
                GroundedPhrase(
                    (RefBoxes("a", (Box999(1, 2, 3, 4), Box999(1, 2, 3, 4)), (0.5, None)),)
                )
            ],
            language="en",
        )


# -- properties --------------------------------------------------------------------

_LABEL_CHARS = st.sampled_from(
    list("abcxyz ABC09-_.()/")
    + list("右左肺结节心影胸腔积液气")
    + list(",:;，：、；<>[]［］＜＞")
    + ["\n"]
)
_labels = st.text(_LABEL_CHARS, min_size=1, max_size=20).map(str.strip).filter(bool)
_descriptions = st.text(_LABEL_CHARS, max_size=40).map(str.strip)

#: Pieces that look like (or are) grammar tags: the writer must refuse them or write them safely.
_TAG_LIKE = st.sampled_from(
    ["<ref>", "</box>", "＜score＞", "< /REF >", "<box", "ref>", "[[1, 2, 3, 4]]", ": ", "，"]
)
_tricky_text = st.lists(st.one_of(st.text(_LABEL_CHARS, max_size=4), _TAG_LIKE), max_size=4).map(
    lambda parts: "".join(parts).strip()
)


@st.composite
def _box999(draw):
    x1 = draw(st.integers(0, 998))
    y1 = draw(st.integers(0, 998))
    return Box999(x1, y1, draw(st.integers(x1 + 1, 999)), draw(st.integers(y1 + 1, 999)))


@st.composite
def _refs(draw):
    boxes = tuple(draw(st.lists(_box999(), max_size=3)))
    label = draw(st.none() | _labels) if boxes else draw(_labels)
    scores = None
    if boxes and draw(st.booleans()):
        scores = tuple(draw(st.floats(0.0, 1.0)) for _ in boxes)
    return RefBoxes(label, boxes, scores)


@st.composite
def _phrase_lists(draw):
    phrases = []
    if draw(st.booleans()):
        phrases.append(GroundedPhrase((), draw(_descriptions.filter(bool))))
    for _ in range(draw(st.integers(0, 4))):
        phrases.append(
            GroundedPhrase(
                tuple(draw(st.lists(_refs(), min_size=1, max_size=3))), draw(_descriptions)
            )
        )
    return phrases


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(phrases=_phrase_lists(), language=st.sampled_from(["en", "zh-CN"]))
def test_write_then_parse_round_trips(phrases, language):
    try:
        text = write_grounded_text(phrases, language=language)
    except GrammarError:
        assume(False)
        return
    result = parse_grounded_text(text)
    assert result.problems == ()
    assert list(result.phrases) == phrases


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "<ref>",
                "</ref>",
                "<box>",
                "</box>",
                "<score>",
                "</score>",
                "[[",
                "]]",
                "[",
                "]",
                ",",
                "，",
                ":",
                "：",
                " ",
                "1",
                "0",
                "999",
                "1000",
                "-",
                ".",
                "e",
                "a",
                "右",
                "\n",
                "＜",
                "＞",
                "and",
            ]
        ),
        max_size=60,
    ).map("".join)
    | st.text(max_size=80)
)
def test_parse_never_raises_and_returns_valid_values(text):
    result = parse_grounded_text(text)
    assert isinstance(result, ParseResult)
    for phrase in result.phrases:
        for box in phrase.boxes:
            assert 0 <= box.x1 < box.x2 <= 999 and 0 <= box.y1 < box.y2 <= 999
        for score in phrase.scores:
            assert score is None or 0.0 <= score <= 1.0


@settings(max_examples=200, deadline=None)
@given(
    label=_tricky_text.filter(bool),
    description=_tricky_text,
    box=_box999(),
    language=st.sampled_from(["en", "zh-CN"]),
)
def test_writer_refuses_or_round_trips_tag_like_text(label, description, box, language):
    phrases = [
        GroundedPhrase((RefBoxes(label, (box,)),), description),
        GroundedPhrase((RefBoxes("heart", (box,)),), "last"),
    ]
    try:
        text = write_grounded_text(phrases, language=language)
    except GrammarError:
        return  # refused: fine, as long as what is written reads back exactly
    result = parse_grounded_text(text)
    assert result.problems == ()
    assert list(result.phrases) == phrases
