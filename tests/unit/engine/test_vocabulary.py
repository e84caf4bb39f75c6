"""Tests for engine.vocabulary: bilingual names, lookup, sentence templates."""

from __future__ import annotations

import pytest

from engine.report import FindingKind
from engine.vocabulary import (
    CHEST_IMAGENOME_STRUCTURES,
    CHEST_ZONES,
    CT_MR_ORGANS,
    LESIONS,
    NEGATIVE_REPORT,
    NEGATIVE_REPORT_GENERIC,
    UNLABELLED_REGION,
    UNREADABLE_OUTPUT,
    NIH_CXR_FINDINGS,
    VOCABULARY,
    VocabularyError,
    VocabularyGroup,
    chest_zone,
    entry,
    finding_sentence,
    lookup,
)

MEDREGA_STRUCTURES = [
    "left lung",
    "right lung",
    "mediastinum",
    "cardiac silhouette",
    "left hilar structures",
    "right hilar structures",
    "left clavicle",
    "right clavicle",
    "left hemidiaphragm",
    "right hemidiaphragm",
    "right atrium",
    "abdomen",
]
MEDREGA_ORGANS = ["heart", "lung", "liver", "colon", "kidney", "spleen", "pancreas"]
MEDREGA_LESIONS = [
    "brain tumor",
    "ischemic stroke",
    "cerebral hemorrhage",
    "nasopharyngeal carcinoma",
    "vestibular schwannoma",
    "lung cancer",
    "pulmonary embolism",
    "liver cancer",
    "colon cancer",
    "kidney cancer",
    "pancreas cancer",
    "prostate cancer",
]
NIH_CLASSES = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltrate",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
]


def test_lists_match_medrega_and_nih_in_order():
    assert [e.name("en") for e in CHEST_IMAGENOME_STRUCTURES] == MEDREGA_STRUCTURES
    assert [e.name("en") for e in CT_MR_ORGANS] == MEDREGA_ORGANS
    assert [e.name("en") for e in LESIONS] == MEDREGA_LESIONS
    # every NIH class name as written in boxes.csv resolves to its entry
    assert [lookup(c) for c in NIH_CLASSES] == list(NIH_CXR_FINDINGS)
    assert len(VOCABULARY) == 12 + 7 + 12 + 8


def test_kinds_and_groups():
    assert all(e.kind is FindingKind.ANATOMY for e in CHEST_IMAGENOME_STRUCTURES + CT_MR_ORGANS)
    assert all(e.kind is FindingKind.ABNORMALITY for e in LESIONS + NIH_CXR_FINDINGS)
    assert {e.group for e in NIH_CXR_FINDINGS} == {VocabularyGroup.NIH_CXR_FINDING}
    assert all(e.body_part == "CHEST" for e in CHEST_IMAGENOME_STRUCTURES + NIH_CXR_FINDINGS)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Right Lung", "right_lung"),
        ("  RIGHT   lung ", "right_lung"),
        ("right_lung", "right_lung"),
        ("右肺", "right_lung"),
        ("ｒｉｇｈｔ ｌｕｎｇ", "right_lung"),  # full-width Latin
        ("心影增大", "cardiomegaly"),
        ("心脏增大", "cardiomegaly"),
        ("Infiltration", "infiltrate"),
        ("浸润", "infiltrate"),
        ("胸腔积液", "effusion"),
        ("pleural effusion", "effusion"),
        ("胰腺癌", "pancreas_cancer"),
        ("听神经瘤", "vestibular_schwannoma"),
    ],
)
def test_lookup_by_key_or_either_language(name, key):
    assert lookup(name).key == key


def test_lookup_unknown_and_entry_errors():
    assert lookup("spleen cancer") is None
    assert lookup("") is None
    assert entry("nodule").names["zh-CN"] == "结节"
    with pytest.raises(VocabularyError, match="no vocabulary entry"):
        entry("Nodule")  # keys are exact


def test_every_canonical_name_round_trips():
    for e in VOCABULARY.values():
        assert lookup(e.name("en")) is e
        assert lookup(e.name("zh-CN")) is e
        assert e.name("zh") == e.name("zh-CN") and e.name("en-GB") == e.name("en")


def test_finding_sentences():
    assert finding_sentence("nodule", language="en", zone="right_upper_zone", confidence=0.82) == (
        "Nodule in the right upper zone, confidence 0.82."
    )
    assert finding_sentence(
        "nodule", language="zh-CN", zone="right_upper_zone", confidence=0.82
    ) == ("右上肺野结节，置信度 0.82。")
    assert (
        finding_sentence("cardiomegaly", language="zh-CN", zone="left_lower_zone") == "心影增大。"
    )
    assert finding_sentence("pneumothorax", language="en") == "Pneumothorax."
    for e in NIH_CXR_FINDINGS:
        for lang in ("en", "zh-CN"):
            for zone in (None, *CHEST_ZONES):
                text = finding_sentence(e.key, language=lang, zone=zone, confidence=0.5)
                assert "{" not in text and text.endswith("." if lang == "en" else "。")
    with pytest.raises(VocabularyError):
        finding_sentence("right_lung", language="en")
    with pytest.raises(VocabularyError):
        finding_sentence("nodule", language="en", zone="apex")
    with pytest.raises(ValueError, match="confidence"):
        finding_sentence("nodule", language="en", confidence=1.5)
    with pytest.raises(VocabularyError):
        finding_sentence("nodule", language="de")
    with pytest.raises(VocabularyError, match="Simplified Chinese only"):
        finding_sentence("nodule", language="zh-TW")  # never answer in the wrong script


def test_chest_zone_uses_patient_side():
    # image left half = patient's right on a PA/AP display
    assert chest_zone(0.25, 0.1) == "right_upper_zone"
    assert chest_zone(0.75, 0.5) == "left_middle_zone"
    assert chest_zone(0.75, 0.9) == "left_lower_zone"
    assert chest_zone(0.25, 0.9, patient_right_on_image_left=False) == "left_lower_zone"
    with pytest.raises(ValueError):
        chest_zone(1.2, 0.5)


def test_negative_report_is_bilingual():
    assert NEGATIVE_REPORT.languages == ("en", "zh-CN")
    assert "No acute cardiopulmonary abnormality" in NEGATIVE_REPORT["en"]


def test_fixed_report_sentences_are_bilingual_and_distinct():
    texts = (NEGATIVE_REPORT, NEGATIVE_REPORT_GENERIC, UNREADABLE_OUTPUT, UNLABELLED_REGION)
    for text in texts:
        assert text.languages == ("en", "zh-CN")
    # an unreadable output must never read like a negative result
    assert len({t["en"] for t in texts}) == len(texts) and len({t["zh-CN"] for t in texts}) == len(
        texts
    )
    assert "could not be read" in UNREADABLE_OUTPUT["en"]


def test_a_partial_model_s_negative_sentence_names_what_it_does_not_report() -> None:
    from engine.vocabulary import scoped_negative_report

    en = scoped_negative_report(["cardiomegaly"], ["effusion", "mass"], language="en")
    assert en == "No cardiomegaly detected by the model. This model does not report pleural effusion or mass."
    zh = scoped_negative_report(["cardiomegaly"], ["effusion", "mass"], language="zh-CN")
    assert zh == "模型未检出心影增大。本模型不报告胸腔积液、肿块。"
    assert scoped_negative_report(["cardiomegaly"], [], language="en") == NEGATIVE_REPORT["en"]
    assert scoped_negative_report([], ["mass"], language="en") == "This model reports no findings."
