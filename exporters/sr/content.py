"""Pieces of the SR content tree that highdicom does not build.

* :func:`comment_item`, :func:`report_qualitative_evaluations`,
  :func:`language_item`, :func:`in_language`: TEXT / CONTAINER content items
  for the grounded sentence (DCM 121106 "Comment" in each TID 1410/1501
  measurement group), the impression (TID 1500 row 12 "Qualitative
  Evaluations", row 14 TEXT), the TID 1204 language of the document, and the
  TID 1204 modifier on a text in another language (bilingual documents).

Region planning (shared by every exporter) is :mod:`exporters.regions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import highdicom as hd

from exporters import codes

__all__ = [
    "LANGUAGE_NAMES",
    "comment_item",
    "impression_item",
    "in_language",
    "language_item",
    "report_qualitative_evaluations",
]


#: Code Meanings of the RFC 5646 language tags as CID 5000 "Languages" spells them (TID 1204).
LANGUAGE_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "en": "English",
        "en-US": "English (United States)",
        "en-GB": "English (United Kingdom)",
        "zh-CN": "Chinese (S)",
        "zh-TW": "Chinese (T)",
        "de": "German",
        "fr": "French",
        "es": "Spanish",
    }
)


def language_item(language: str) -> hd.sr.LanguageOfContentItemAndDescendants:
    """TID 1204 "Language of Content Item and Descendants" for a BCP-47 tag (RFC 5646)."""
    if language not in LANGUAGE_NAMES:
        raise ValueError(
            f"language: unsupported tag {language!r}; supported: {', '.join(LANGUAGE_NAMES)}"
        )
    return hd.sr.LanguageOfContentItemAndDescendants(
        hd.sr.CodedConcept(
            value=language, scheme_designator="RFC5646", meaning=LANGUAGE_NAMES[language]
        )
    )


def comment_item(text: str) -> hd.sr.TextContentItem:
    """TEXT (DCM 121106 "Comment"), CONTAINS: the grounded sentence in a measurement group.

    TEXT is UT (up to 2**32-2 bytes): the sentence is kept whole.
    """
    return hd.sr.TextContentItem(
        name=codes.to_hd(codes.COMMENT),
        value=text,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )


def impression_item(impression: str) -> hd.sr.TextContentItem:
    """TEXT (DCM 121073 "Impression"), CONTAINS (TID 1500 row 14)."""
    return hd.sr.TextContentItem(
        name=codes.to_hd(codes.IMPRESSION),
        value=impression,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )


def report_qualitative_evaluations(impression: str) -> hd.sr.ContainerContentItem:
    """TID 1500 row 12 CONTAINER "Qualitative Evaluations" holding the impression (row 14 TEXT)."""
    container = hd.sr.ContainerContentItem(
        name=codes.to_hd(codes.QUALITATIVE_EVALUATIONS),
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = [impression_item(impression)]
    return container


def in_language(item: hd.sr.TextContentItem, language: str) -> hd.sr.TextContentItem:
    """``item`` with a TID 1204 "Language of Content Item and Descendants" modifier
    (HAS CONCEPT MOD child): a text in another language than the document's."""
    item.ContentSequence = list(language_item(language))
    return item
