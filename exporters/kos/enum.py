"""Enumerated values of the Key Object Selection exporter."""

from __future__ import annotations

import enum

from engine.report import CodedConcept

__all__ = ["DocumentTitle"]


class DocumentTitle(enum.Enum):
    """Key Object Selection Document Titles RadGround may use (PS3.16 CID 7010).

    The title is the concept name of the root CONTAINER of TID 2010 and what
    a PACS or viewer shows for the selection (IHE KIN "Key Image Note").
    ``OF_INTEREST`` is the title IHE KIN names for key images flagged for
    reading and the default here; the others serve sites that route AI
    selections to a conference or a review queue.
    """

    OF_INTEREST = CodedConcept("113000", "DCM", "Of Interest")
    FOR_REFERRING_PROVIDER = CodedConcept("113002", "DCM", "For Referring Provider")
    FOR_CONFERENCE = CodedConcept("113005", "DCM", "For Conference")
    FOR_PEER_REVIEW = CodedConcept("113008", "DCM", "For Peer Review")
    FOR_RESEARCH = CodedConcept("113009", "DCM", "For Research")
    FOR_REPORT_ATTACHMENT = CodedConcept("113020", "DCM", "For Report Attachment")
