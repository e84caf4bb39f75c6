"""Bilingual (English / Simplified Chinese) names of what RadGround's models ground.

Frozen data, looked up by a stable key (``"nodule"``) or by a name in either
language. Four groups:

* the 12 Chest ImaGenome structures MedRegA grounds on chest radiographs
  (MEDREGA.md, "Organ lists");
* the 7 organs of MedRegA's organ-grounded CT/MR data;
* MedRegA's 12 lesion types;
* the 8 NIH ChestX-ray14 finding classes with radiologist boxes (Wang et al.,
  CVPR 2017), which the shipped default detector reports.

Terminology choices (zh-CN)
---------------------------
Chinese names follow the usage of Chinese radiology reports (全国科学技术名词审定委员会
《放射医学与防护名词》 and common report wording) rather than literal translation:

* ``cardiomegaly`` → **心影增大**. A radiograph shows the cardiac *silhouette*;
  Chinese chest-film reports say 心影增大 for what English reports call
  cardiomegaly. 心脏增大 / 心脏扩大 are accepted as synonyms on lookup.
* ``effusion`` → **胸腔积液** (NIH's "Effusion" is pleural effusion); the English
  canonical name is therefore "pleural effusion", with "effusion" as synonym.
* ``infiltrate`` → **浸润影** ("infiltrate" as a radiographic opacity; 浸润 alone
  is accepted). English canonical name "infiltrate" (NIH's box file spells the
  class "Infiltrate", the image labels "Infiltration"; both are synonyms).
* ``atelectasis`` → **肺不张** (肺膨胀不全 accepted).
* ``mass`` → **肿块**, ``nodule`` → **结节**, ``pneumonia`` → **肺炎**,
  ``pneumothorax`` → **气胸**.
* Hemidiaphragms → **左侧膈肌 / 右侧膈肌** (左膈, 左半膈, 左膈面 accepted); hilar
  structures → **左肺门 / 右肺门**; cardiac silhouette → **心影**.
* ``vestibular_schwannoma`` → **前庭神经鞘瘤** (the older 听神经瘤 accepted).
* ``pancreas_cancer`` → **胰腺癌**, as in MedRegA's own Chinese prompt.

Body parts are DICOM Body Part Examined (0018,0015) defined terms
(PS3.16 Annex L) of the region an entry belongs to.

Chest zones and sentence templates
----------------------------------
:func:`finding_sentence` writes the default detector's one-sentence finding,
e.g. "Nodule in the right upper zone, confidence 0.82." / "右上肺野结节，置信度
0.82。"; :data:`NEGATIVE_REPORT` is the explicit negative sentence of a study in
which the model found nothing. Zones are the radiographic lung zones (upper,
middle, lower thirds of each lung field: 上、中、下肺野), named from the
*patient's* side.
"""

from __future__ import annotations

import enum
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from engine.errors import EngineError
from engine.report import FindingKind, Text

__all__ = [
    "CHEST_IMAGENOME_STRUCTURES",
    "CHEST_ZONES",
    "CT_MR_ORGANS",
    "LESIONS",
    "NEGATIVE_REPORT",
    "NEGATIVE_REPORT_GENERIC",
    "NIH_CXR_FINDINGS",
    "UNLABELLED_REGION",
    "UNREADABLE_OUTPUT",
    "VOCABULARY",
    "VocabularyEntry",
    "VocabularyError",
    "VocabularyGroup",
    "below_threshold_note",
    "chest_zone",
    "entry",
    "finding_sentence",
    "lookup",
    "normalize_name",
    "not_found_sentence",
    "not_reported_sentence",
    "region_negative_report",
    "scoped_negative_report",
    "vocabulary_language",
]


class VocabularyError(EngineError, KeyError):
    """A key or name is not in the vocabulary, or a template was misused."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class VocabularyGroup(enum.StrEnum):
    """Which list an entry comes from."""

    CHEST_IMAGENOME = "chest_imagenome"
    CT_MR_ORGAN = "ct_mr_organ"
    LESION = "lesion"
    NIH_CXR_FINDING = "nih_cxr_finding"


@dataclass(frozen=True)
class VocabularyEntry:
    """One named thing a model may ground.

    Parameters
    ----------
    key
        Stable ASCII key (lower case, ``_`` between words), e.g. ``"right_lung"``.
    names
        Canonical names, ``Text({"en": ..., "zh-CN": ...})``.
    kind
        Anatomy (a structure or organ) or abnormality (a lesion or finding).
    body_part
        DICOM Body Part Examined defined term (PS3.16 Annex L), e.g. ``"CHEST"``.
    group
        The list the entry belongs to.
    synonyms
        Further names accepted on lookup (either language), never written.
    """

    key: str
    names: Text
    kind: FindingKind
    body_part: str
    group: VocabularyGroup
    synonyms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.key):
            raise ValueError(
                "VocabularyEntry.key must be lower-case ASCII words joined by '_', "
                f"got {self.key!r}"
            )
        if "en" not in self.names or "zh-CN" not in self.names:
            raise ValueError(f"VocabularyEntry {self.key!r} needs names in 'en' and 'zh-CN'")
        object.__setattr__(self, "kind", FindingKind(self.kind))
        object.__setattr__(self, "group", VocabularyGroup(self.group))

    def name(self, language: str) -> str:
        """The canonical name in ``language`` (see :func:`vocabulary_language`)."""
        return self.names[vocabulary_language(language)]


_SIMPLIFIED_CHINESE = frozenset({"zh", "zh-cn", "zh-hans", "zh-hans-cn", "zh-sg"})


def vocabulary_language(language: str) -> str:
    """The vocabulary's language for a BCP-47 tag: ``"en"`` for any English tag,
    ``"zh-CN"`` for Simplified Chinese (``zh``, ``zh-CN``, ``zh-Hans``); anything
    else (including Traditional Chinese, ``zh-TW``) raises :class:`VocabularyError`
    rather than being answered in the wrong script or language."""
    tag = str(language).lower()
    if tag == "en" or tag.startswith("en-"):
        return "en"
    if tag in _SIMPLIFIED_CHINESE:
        return "zh-CN"
    raise VocabularyError(
        f"the vocabulary has English and Simplified Chinese only, not {language!r}"
    )


def _e(
    key: str,
    en: str,
    zh: str,
    kind: FindingKind,
    body_part: str,
    group: VocabularyGroup,
    *synonyms: str,
) -> VocabularyEntry:
    return VocabularyEntry(
        key, Text({"en": en, "zh-CN": zh}), kind, body_part, group, tuple(synonyms)
    )


_A, _X = FindingKind.ANATOMY, FindingKind.ABNORMALITY
_CI, _OR, _LE, _NIH = (
    VocabularyGroup.CHEST_IMAGENOME,
    VocabularyGroup.CT_MR_ORGAN,
    VocabularyGroup.LESION,
    VocabularyGroup.NIH_CXR_FINDING,
)

#: The 12 Chest ImaGenome structures of MedRegA's grounded chest report, in its order.
CHEST_IMAGENOME_STRUCTURES: tuple[VocabularyEntry, ...] = (
    _e("left_lung", "left lung", "左肺", _A, "CHEST", _CI),
    _e("right_lung", "right lung", "右肺", _A, "CHEST", _CI),
    _e("mediastinum", "mediastinum", "纵隔", _A, "CHEST", _CI),
    _e("cardiac_silhouette", "cardiac silhouette", "心影", _A, "CHEST", _CI, "心脏轮廓"),
    _e(
        "left_hilar_structures",
        "left hilar structures",
        "左肺门",
        _A,
        "CHEST",
        _CI,
        "left hilum",
        "left hilar structure",
        "左肺门结构",
    ),
    _e(
        "right_hilar_structures",
        "right hilar structures",
        "右肺门",
        _A,
        "CHEST",
        _CI,
        "right hilum",
        "right hilar structure",
        "右肺门结构",
    ),
    _e("left_clavicle", "left clavicle", "左锁骨", _A, "CHEST", _CI),
    _e("right_clavicle", "right clavicle", "右锁骨", _A, "CHEST", _CI),
    _e(
        "left_hemidiaphragm",
        "left hemidiaphragm",
        "左侧膈肌",
        _A,
        "CHEST",
        _CI,
        "左膈",
        "左半膈",
        "左膈面",
    ),
    _e(
        "right_hemidiaphragm",
        "right hemidiaphragm",
        "右侧膈肌",
        _A,
        "CHEST",
        _CI,
        "右膈",
        "右半膈",
        "右膈面",
    ),
    _e("right_atrium", "right atrium", "右心房", _A, "CHEST", _CI),
    _e("abdomen", "abdomen", "腹部", _A, "CHEST", _CI),
)

#: The 7 organs of MedRegA's organ-grounded CT/MR data.
CT_MR_ORGANS: tuple[VocabularyEntry, ...] = (
    _e("heart", "heart", "心脏", _A, "HEART", _OR),
    _e("lung", "lung", "肺", _A, "LUNG", _OR, "lungs", "肺脏", "肺部"),
    _e("liver", "liver", "肝脏", _A, "LIVER", _OR, "肝"),
    _e("colon", "colon", "结肠", _A, "COLON", _OR),
    _e("kidney", "kidney", "肾脏", _A, "KIDNEY", _OR, "kidneys", "肾"),
    _e("spleen", "spleen", "脾脏", _A, "SPLEEN", _OR, "脾"),
    _e("pancreas", "pancreas", "胰腺", _A, "PANCREAS", _OR),
)

#: MedRegA's 12 lesion types.
LESIONS: tuple[VocabularyEntry, ...] = (
    _e("brain_tumor", "brain tumor", "脑肿瘤", _X, "BRAIN", _LE, "brain tumour"),
    _e(
        "ischemic_stroke",
        "ischemic stroke",
        "缺血性脑卒中",
        _X,
        "BRAIN",
        _LE,
        "ischaemic stroke",
        "缺血性卒中",
        "脑梗死",
    ),
    _e(
        "cerebral_hemorrhage",
        "cerebral hemorrhage",
        "脑出血",
        _X,
        "BRAIN",
        _LE,
        "cerebral haemorrhage",
        "intracerebral hemorrhage",
    ),
    _e("nasopharyngeal_carcinoma", "nasopharyngeal carcinoma", "鼻咽癌", _X, "NASOPHARYNX", _LE),
    _e(
        "vestibular_schwannoma",
        "vestibular schwannoma",
        "前庭神经鞘瘤",
        _X,
        "HEAD",
        _LE,
        "acoustic neuroma",
        "听神经瘤",
    ),
    _e("lung_cancer", "lung cancer", "肺癌", _X, "LUNG", _LE),
    _e("pulmonary_embolism", "pulmonary embolism", "肺栓塞", _X, "CHEST", _LE, "肺动脉栓塞"),
    _e("liver_cancer", "liver cancer", "肝癌", _X, "LIVER", _LE),
    _e("colon_cancer", "colon cancer", "结肠癌", _X, "COLON", _LE),
    _e("kidney_cancer", "kidney cancer", "肾癌", _X, "KIDNEY", _LE),
    _e("pancreas_cancer", "pancreas cancer", "胰腺癌", _X, "PANCREAS", _LE, "pancreatic cancer"),
    _e("prostate_cancer", "prostate cancer", "前列腺癌", _X, "PROSTATE", _LE),
)

#: The 8 NIH ChestX-ray14 classes with radiologist boxes (the default detector's classes).
NIH_CXR_FINDINGS: tuple[VocabularyEntry, ...] = (
    _e("atelectasis", "atelectasis", "肺不张", _X, "CHEST", _NIH, "肺膨胀不全"),
    _e("cardiomegaly", "cardiomegaly", "心影增大", _X, "CHEST", _NIH, "心脏增大", "心脏扩大"),
    _e("effusion", "pleural effusion", "胸腔积液", _X, "CHEST", _NIH, "effusion", "胸水"),
    _e("infiltrate", "infiltrate", "浸润影", _X, "CHEST", _NIH, "infiltration", "浸润"),
    _e("mass", "mass", "肿块", _X, "CHEST", _NIH),
    _e("nodule", "nodule", "结节", _X, "CHEST", _NIH),
    _e("pneumonia", "pneumonia", "肺炎", _X, "CHEST", _NIH),
    _e("pneumothorax", "pneumothorax", "气胸", _X, "CHEST", _NIH),
)

del _A, _X, _CI, _OR, _LE, _NIH


def normalize_name(name: str) -> str:
    """The form names are compared in: NFKC (full-width → ASCII), case-folded,
    ``_``/``-`` and runs of white space turned into one space, stripped."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return " ".join(re.sub(r"[_\-]+", " ", folded).split())


def _build() -> tuple[Mapping[str, VocabularyEntry], Mapping[str, VocabularyEntry]]:
    by_key: dict[str, VocabularyEntry] = {}
    by_name: dict[str, VocabularyEntry] = {}
    for item in CHEST_IMAGENOME_STRUCTURES + CT_MR_ORGANS + LESIONS + NIH_CXR_FINDINGS:
        if item.key in by_key:
            raise AssertionError(f"duplicate vocabulary key {item.key!r}")
        by_key[item.key] = item
        for name in (item.key, *(text for _, text in item.names.items()), *item.synonyms):
            norm = normalize_name(name)
            other = by_name.setdefault(norm, item)
            if other is not item:
                raise AssertionError(
                    f"vocabulary name {name!r} maps to {other.key!r} and {item.key!r}"
                )
    return MappingProxyType(by_key), MappingProxyType(by_name)


#: Every entry by key.
VOCABULARY: Mapping[str, VocabularyEntry]
VOCABULARY, _BY_NAME = _build()


def lookup(name: str) -> VocabularyEntry | None:
    """The entry whose key, canonical name or synonym is ``name``, or ``None``.

    English is matched case-insensitively; full-width characters, ``_``/``-``
    and repeated white space are normalised (:func:`normalize_name`).

    Examples
    --------
    >>> lookup("Right Lung").key
    'right_lung'
    >>> lookup("心脏增大").key
    'cardiomegaly'
    """
    if not isinstance(name, str):
        return None
    return _BY_NAME.get(normalize_name(name))


def entry(key: str) -> VocabularyEntry:
    """The entry with this exact ``key``; raises :class:`VocabularyError` if unknown."""
    try:
        return VOCABULARY[key]
    except (KeyError, TypeError):
        raise VocabularyError(f"no vocabulary entry with key {key!r}") from None


# -- chest zones and the default detector's sentences -----------------------------

#: Radiographic lung zones, from the patient's side (PA/AP display: patient's right on the image
#: left).
CHEST_ZONES: Mapping[str, Text] = MappingProxyType(
    {
        f"{side}_{level}_zone": Text({"en": f"{side} {level} zone", "zh-CN": f"{zs}{zl}肺野"})
        for side, zs in (("right", "右"), ("left", "左"))
        for level, zl in (("upper", "上"), ("middle", "中"), ("lower", "下"))
    }
)


def chest_zone(
    x_center: float, y_center: float, *, patient_right_on_image_left: bool = True
) -> str:
    """The :data:`CHEST_ZONES` key for a box centre on a frontal chest radiograph.

    Parameters
    ----------
    x_center, y_center
        Box centre as fractions of the image width and height, in [0, 1].
    patient_right_on_image_left
        The usual display of a PA or AP radiograph (the patient's right on the
        viewer's left). Pass ``False`` for an image stored mirrored.

    Notes
    -----
    A coarse approximation: the image is cut into thirds vertically and halves
    horizontally, without segmenting the lung fields.
    """
    for name, value in (("x_center", x_center), ("y_center", y_center)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0.0 <= value <= 1.0
        ):
            raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    on_left_half = x_center < 0.5
    side = "right" if on_left_half == patient_right_on_image_left else "left"
    level = "upper" if y_center < 1 / 3 else "middle" if y_center < 2 / 3 else "lower"
    return f"{side}_{level}_zone"


#: Templates: (with zone, without zone) per language; Cardiomegaly is not zoned.
_TEMPLATES: Mapping[str, Mapping[str, tuple[str | None, str]]] = MappingProxyType(
    {
        "en": MappingProxyType(
            {
                "atelectasis": ("Atelectasis in the {zone}", "Atelectasis"),
                "cardiomegaly": (None, "Enlarged cardiac silhouette (cardiomegaly)"),
                "effusion": ("Pleural effusion, {zone}", "Pleural effusion"),
                "infiltrate": ("Infiltrate in the {zone}", "Infiltrate"),
                "mass": ("Mass in the {zone}", "Mass"),
                "nodule": ("Nodule in the {zone}", "Nodule"),
                "pneumonia": ("Pneumonia in the {zone}", "Pneumonia"),
                "pneumothorax": ("Pneumothorax, {zone}", "Pneumothorax"),
            }
        ),
        "zh-CN": MappingProxyType(
            {
                "atelectasis": ("{zone}肺不张", "肺不张"),
                "cardiomegaly": (None, "心影增大"),
                "effusion": ("{zone}胸腔积液", "胸腔积液"),
                "infiltrate": ("{zone}浸润影", "浸润影"),
                "mass": ("{zone}肿块", "肿块"),
                "nodule": ("{zone}结节", "结节"),
                "pneumonia": ("{zone}肺炎", "肺炎"),
                "pneumothorax": ("{zone}气胸", "气胸"),
            }
        ),
    }
)

#: The explicit negative report of a chest radiograph in which the model found nothing.
NEGATIVE_REPORT: Text = Text(
    {
        "en": "No acute cardiopulmonary abnormality detected by the model.",
        "zh-CN": "模型未检出急性心肺异常。",
    }
)

def _series(names: list[str], language: str) -> str:
    if language == "zh-CN":
        return "、".join(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def scoped_negative_report(reported: list[str], unreported: list[str], *, language: str) -> str:
    """The negative sentence of a model that reports only some findings: what it did not
    find, and what it does not report at all (so silence is not read as "normal").

    ``reported`` and ``unreported`` are vocabulary keys (e.g. ``"cardiomegaly"``);
    with nothing unreported this is :data:`NEGATIVE_REPORT`.
    """
    base = vocabulary_language(language)
    if not unreported:
        return NEGATIVE_REPORT[base]
    found = _series([entry(k).name(base) for k in reported], base) if reported else ""
    missing = _series([entry(k).name(base) for k in unreported], base)
    if base == "zh-CN":
        head = f"模型未检出{found}。" if found else "本模型不报告任何所见。"
        return head + (f"本模型不报告{missing}。" if found else "")
    head = f"No {found} detected by the model." if found else "This model reports no findings."
    return head + (f" This model does not report {missing}." if found else "")


def region_negative_report(
    reported: list[str], unreported: list[str], *, language: str
) -> str:
    """What the default detector says of a drawn region in which it found nothing: which
    reported findings it did not find there, and which it does not report at all.

    ``reported`` and ``unreported`` are vocabulary keys, as for :func:`scoped_negative_report`.

    Examples
    --------
    >>> region_negative_report(["cardiomegaly"], ["nodule"], language="en")
    'No cardiomegaly detected by the model in this region. This model does not report nodule.'
    """
    base = vocabulary_language(language)
    found = _series([entry(k).name(base) for k in reported], base) if reported else ""
    missing = _series([entry(k).name(base) for k in unreported], base) if unreported else ""
    if base == "zh-CN":
        head = f"模型未在该区域检出{found}。" if found else "本模型不报告任何所见。"
        return head + (f"本模型不报告{missing}。" if found and missing else "")
    head = (
        f"No {found} detected by the model in this region."
        if found
        else "This model reports no findings."
    )
    return head + (f" This model does not report {missing}." if found and missing else "")


def not_found_sentence(key: str, *, language: str) -> str:
    """The default detector's answer when asked where a finding is and it has no box of it.

    Examples
    --------
    >>> not_found_sentence("cardiomegaly", language="zh-CN")
    '模型未在本图像中检出心影增大。'
    """
    base = vocabulary_language(language)
    name = entry(key).name(base)
    if base == "zh-CN":
        return f"模型未在本图像中检出{name}。"
    return f"No {name} found by the model in this image."


def not_reported_sentence(key: str, *, language: str) -> str:
    """The default detector's answer when asked where a finding is that it does not report
    (its boxes of that class are not reliable enough to show; see the model card)."""
    base = vocabulary_language(language)
    name = entry(key).name(base)
    if base == "zh-CN":
        return f"本模型不报告{name}，无法定位。"
    return f"This model does not report {name}, so it cannot locate it."


def below_threshold_note(threshold: float, *, language: str) -> str:
    """The sentence added to an answer whose score is below the class's reporting threshold
    (an answer the model would not have put in its report).

    Examples
    --------
    >>> below_threshold_note(0.15, language="en")
    "Score below the model's reporting threshold (0.15)."
    """
    base = vocabulary_language(language)
    if base == "zh-CN":
        return f"评分低于本模型的报告阈值（{threshold:.2f}）。"
    return f"Score below the model's reporting threshold ({threshold:.2f})."


#: The explicit negative report of a (non-chest or mixed) study in which the model found nothing.
NEGATIVE_REPORT_GENERIC: Text = Text(
    {
        "en": "No abnormality detected by the model.",
        "zh-CN": "模型未检出异常。",
    }
)

#: What a report says when the model's output could not be read at all (this is
#: *not* a negative result; the report's problems say what went wrong).
UNREADABLE_OUTPUT: Text = Text(
    {
        "en": "The model's output could not be read; no findings are reported.",
        "zh-CN": "无法解析模型输出，未报告任何结果。",
    }
)

#: The label of a box the model drew without naming it (a ``<box>`` without ``<ref>``).
UNLABELLED_REGION: Text = Text({"en": "unlabelled region", "zh-CN": "未标注区域"})


def finding_sentence(
    key: str, *, language: str, zone: str | None = None, confidence: float | None = None
) -> str:
    """The default detector's one-sentence finding.

    Parameters
    ----------
    key
        An NIH ChestX-ray14 finding key (:data:`NIH_CXR_FINDINGS`).
    language
        ``"en"`` or ``"zh-CN"`` (other English/Chinese tags map to these).
    zone
        A :data:`CHEST_ZONES` key, or ``None``; ignored for cardiomegaly, which
        is not a zonal finding.
    confidence
        The model's score in [0, 1], written with two decimals; ``None`` omits it.

    Examples
    --------
    >>> finding_sentence("nodule", language="en", zone="right_upper_zone", confidence=0.82)
    'Nodule in the right upper zone, confidence 0.82.'
    >>> finding_sentence("nodule", language="zh-CN", zone="right_upper_zone", confidence=0.82)
    '右上肺野结节，置信度 0.82。'
    """
    lang = vocabulary_language(language)
    templates = _TEMPLATES[lang].get(key)
    if templates is None:
        raise VocabularyError(
            f"no sentence template for {key!r}; keys: {', '.join(_TEMPLATES[lang])}"
        )
    zoned, plain = templates
    if zone is not None and zone not in CHEST_ZONES:
        raise VocabularyError(f"unknown chest zone {zone!r}; zones: {', '.join(CHEST_ZONES)}")
    text = zoned.format(zone=CHEST_ZONES[zone][lang]) if zone is not None and zoned else plain
    if confidence is not None:
        if (
            isinstance(confidence, bool)
            or not isinstance(confidence, (int, float))
            or not (math.isfinite(confidence) and 0.0 <= confidence <= 1.0)
        ):
            raise ValueError(f"confidence must be in [0, 1] or None, got {confidence!r}")
        text += f", confidence {confidence:.2f}" if lang == "en" else f"，置信度 {confidence:.2f}"
    return text + ("." if lang == "en" else "。")
