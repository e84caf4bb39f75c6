"""DICOM audit messages (PS3.15 A.5, the successor of RFC 3881), built as validated values.

An :class:`AuditMessage` is the event (:class:`EventIdentification`), its active participants
(people and processes), the audit source (this node) and the participant objects (patients,
studies, queries, accounts); :meth:`AuditMessage.to_xml` writes the XML of PS3.15 A.5.1, in the
order its schema gives. The event builders in :mod:`worklist.atna.events` make the messages of
PS3.15 A.5.3.
"""

from __future__ import annotations

import base64
import enum
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from xml.etree import ElementTree

from worklist.atna.codes import AuditCode

__all__ = [
    "ActiveParticipant",
    "AuditMessage",
    "AuditSource",
    "EventActionCode",
    "EventIdentification",
    "EventOutcomeIndicator",
    "ParticipantObject",
    "ParticipantObjectDescription",
    "ParticipantObjectTypeCode",
    "ParticipantObjectTypeCodeRole",
    "SOPClassCount",
]

_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>'
# What XML 1.0 cannot carry (a peer's AE title or a client's user name may hold anything),
# and line breaks (one message is one line in the audit file).
_NOT_XML = re.compile("[^\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(value: str) -> str:
    """``value`` as XML can carry it on one line: other characters become spaces."""
    return _NOT_XML.sub(" ", value)


def _element(parent: ElementTree.Element, tag: str,
             attributes: dict[str, str] | None = None, text: str | None = None
             ) -> ElementTree.Element:
    element = ElementTree.SubElement(
        parent, tag, {name: _clean(value) for name, value in (attributes or {}).items()}
    )
    if text is not None:
        element.text = _clean(text)
    return element


class EventActionCode(enum.StrEnum):
    """What was done (PS3.15 A.5.1: EventActionCode)."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class EventOutcomeIndicator(enum.StrEnum):
    """How it ended (PS3.15 A.5.1: EventOutcomeIndicator)."""

    SUCCESS = "0"
    MINOR_FAILURE = "4"
    SERIOUS_FAILURE = "8"
    MAJOR_FAILURE = "12"


class ParticipantObjectTypeCode(enum.StrEnum):
    """PS3.15 A.5.1: ParticipantObjectTypeCode."""

    PERSON = "1"
    SYSTEM_OBJECT = "2"
    ORGANIZATION = "3"
    OTHER = "4"


class ParticipantObjectTypeCodeRole(enum.StrEnum):
    """PS3.15 A.5.1.2.2: the participant object's role (the values RadGround uses)."""

    PATIENT = "1"
    REPORT = "3"
    RESOURCE = "4"
    USER = "6"
    SECURITY_USER_ENTITY = "11"
    DATA_DESTINATION = "16"
    JOB = "20"
    QUERY = "24"


def _coded(parent: ElementTree.Element, tag: str, code: AuditCode) -> None:
    _element(parent, tag, {
        "csd-code": code.csd_code,
        "codeSystemName": code.code_system_name,
        "originalText": code.original_text,
    })


def _require(value: str, name: str) -> None:
    if not value or not value.strip():
        raise ValueError(f"{name} must not be empty")


@dataclass(frozen=True)
class EventIdentification:
    """The event: its ID, type codes, action, time and outcome (PS3.15 A.5.1)."""

    event_id: AuditCode
    event_action_code: EventActionCode
    event_date_time: datetime
    event_outcome_indicator: EventOutcomeIndicator = EventOutcomeIndicator.SUCCESS
    event_type_codes: tuple[AuditCode, ...] = ()
    #: Why it failed, for a failure (no patient data).
    event_outcome_description: str = ""

    def __post_init__(self) -> None:
        if self.event_date_time.tzinfo is None:
            raise ValueError("event_date_time must carry its time zone")
        object.__setattr__(self, "event_action_code", EventActionCode(self.event_action_code))
        object.__setattr__(
            self, "event_outcome_indicator", EventOutcomeIndicator(self.event_outcome_indicator)
        )


@dataclass(frozen=True)
class ActiveParticipant:
    """A person or process taking part (PS3.15 A.5.1: ActiveParticipant).

    ``alternative_user_id`` for a DICOM application is ``AETITLES=...`` (PS3.15 A.5.2.1);
    ``network_access_point_id`` is an IP address (type code 2) or a host name (type code 1).
    """

    user_id: str
    user_is_requestor: bool
    role_id_codes: tuple[AuditCode, ...] = ()
    alternative_user_id: str = ""
    user_name: str = ""
    network_access_point_id: str = ""
    #: For the Destination Media of an export (PS3.15 A.5.3.6): what the media is.
    media_type: AuditCode | None = None

    def __post_init__(self) -> None:
        _require(self.user_id, "ActiveParticipant user_id")

    @property
    def network_access_point_type_code(self) -> str:
        """1 for a machine name, 2 for an IP address (PS3.15 A.5.1)."""
        try:
            ipaddress.ip_address(self.network_access_point_id)
        except ValueError:
            return "1"
        return "2"


@dataclass(frozen=True)
class AuditSource:
    """The system that reports the event (PS3.15 A.5.1: AuditSourceIdentification)."""

    audit_source_id: str
    audit_enterprise_site_id: str = ""
    #: PS3.15 A.5.1.2.1: 4 = application server process.
    audit_source_type_code: str = "4"

    def __post_init__(self) -> None:
        _require(self.audit_source_id, "audit_source_id")


@dataclass(frozen=True)
class SOPClassCount:
    """How many instances of one SOP class (PS3.15 A.5.1: SOPClass/@NumberOfInstances)."""

    uid: str
    number_of_instances: int

    def __post_init__(self) -> None:
        _require(self.uid, "SOP class UID")
        if self.number_of_instances < 0:
            raise ValueError(f"number_of_instances must be >= 0, got {self.number_of_instances}")


@dataclass(frozen=True)
class ParticipantObjectDescription:
    """The DICOM description of a study participant object (PS3.15 A.5.1)."""

    sop_classes: tuple[SOPClassCount, ...] = ()
    accession_numbers: tuple[str, ...] = ()
    anonymized: bool | None = None


@dataclass(frozen=True)
class ParticipantObject:
    """A data object the event is about (PS3.15 A.5.1: ParticipantObjectIdentification).

    ``query`` is the query as sent (base64 in the XML); ``details`` are (type, value) pairs,
    their values base64 in the XML (PS3.15 A.5.1: ValuePair).
    """

    participant_object_id: str
    participant_object_id_type_code: AuditCode
    participant_object_type_code: ParticipantObjectTypeCode | None = None
    participant_object_type_code_role: ParticipantObjectTypeCodeRole | None = None
    participant_object_name: str = ""
    participant_object_query: bytes | None = None
    participant_object_details: tuple[tuple[str, bytes], ...] = ()
    participant_object_descriptions: tuple[ParticipantObjectDescription, ...] = ()

    def __post_init__(self) -> None:
        _require(self.participant_object_id, "participant_object_id")
        if self.participant_object_name and self.participant_object_query is not None:
            raise ValueError("a participant object has a name or a query, not both")


@dataclass(frozen=True)
class AuditMessage:
    """One audit message (PS3.15 A.5.1: AuditMessage)."""

    event: EventIdentification
    active_participants: tuple[ActiveParticipant, ...]
    audit_source: AuditSource
    participant_objects: tuple[ParticipantObject, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.active_participants:
            raise ValueError("an audit message needs at least one active participant")

    def to_element(self) -> ElementTree.Element:
        """The message as an XML element tree."""
        root = ElementTree.Element("AuditMessage")
        event = self.event
        identification = _element(root, "EventIdentification", {
            "EventActionCode": event.event_action_code.value,
            "EventDateTime": event.event_date_time.isoformat(timespec="milliseconds"),
            "EventOutcomeIndicator": event.event_outcome_indicator.value,
        })
        _coded(identification, "EventID", event.event_id)
        for code in event.event_type_codes:
            _coded(identification, "EventTypeCode", code)
        if event.event_outcome_description:
            _element(identification, "EventOutcomeDescription",
                     text=event.event_outcome_description)
        for participant in self.active_participants:
            _participant(root, participant)
        source = self.audit_source
        attributes = {"AuditSourceID": source.audit_source_id}
        if source.audit_enterprise_site_id:
            attributes["AuditEnterpriseSiteID"] = source.audit_enterprise_site_id
        identification = _element(root, "AuditSourceIdentification", attributes)
        _element(
            identification, "AuditSourceTypeCode", {"csd-code": source.audit_source_type_code}
        )
        for participant_object in self.participant_objects:
            _participant_object(root, participant_object)
        return root

    def to_xml(self) -> bytes:
        """The message as UTF-8 XML on one line (with an XML declaration)."""
        return _DECLARATION + ElementTree.tostring(self.to_element(), encoding="unicode").encode()


def _participant(root: ElementTree.Element, participant: ActiveParticipant) -> None:
    attributes = {
        "UserID": participant.user_id,
        "UserIsRequestor": "true" if participant.user_is_requestor else "false",
    }
    if participant.alternative_user_id:
        attributes["AlternativeUserID"] = participant.alternative_user_id
    if participant.user_name:
        attributes["UserName"] = participant.user_name
    if participant.network_access_point_id:
        attributes["NetworkAccessPointID"] = participant.network_access_point_id
        attributes["NetworkAccessPointTypeCode"] = participant.network_access_point_type_code
    element = _element(root, "ActiveParticipant", attributes)
    for code in participant.role_id_codes:
        _coded(element, "RoleIDCode", code)
    if participant.media_type is not None:
        _coded(_element(element, "MediaIdentifier"), "MediaType",
               participant.media_type)


def _participant_object(root: ElementTree.Element, item: ParticipantObject) -> None:
    attributes = {"ParticipantObjectID": item.participant_object_id}
    if item.participant_object_type_code is not None:
        attributes["ParticipantObjectTypeCode"] = item.participant_object_type_code.value
    if item.participant_object_type_code_role is not None:
        attributes["ParticipantObjectTypeCodeRole"] = item.participant_object_type_code_role.value
    element = _element(root, "ParticipantObjectIdentification", attributes)
    _coded(element, "ParticipantObjectIDTypeCode", item.participant_object_id_type_code)
    if item.participant_object_name:
        _element(element, "ParticipantObjectName", text=item.participant_object_name)
    elif item.participant_object_query is not None:
        _element(element, "ParticipantObjectQuery", text=_base64(item.participant_object_query))
    for detail_type, value in item.participant_object_details:
        _element(
            element, "ParticipantObjectDetail", {"type": detail_type, "value": _base64(value)}
        )
    for description in item.participant_object_descriptions:
        _description(_element(element, "ParticipantObjectDescription"), description)


def _description(element: ElementTree.Element, description: ParticipantObjectDescription) -> None:
    for number in description.accession_numbers:
        _element(element, "Accession", {"Number": number})
    for sop_class in description.sop_classes:
        _element(element, "SOPClass", {
            "UID": sop_class.uid, "NumberOfInstances": str(sop_class.number_of_instances),
        })
    if description.anonymized is not None:
        _element(element, "Anonymized", text=str(description.anonymized).lower())


def _base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def sop_class_counts(sop_class_uids: Sequence[str]) -> tuple[SOPClassCount, ...]:
    """One :class:`SOPClassCount` per SOP class in ``sop_class_uids`` (one entry per instance),
    in the order first seen."""
    counts: dict[str, int] = {}
    for uid in sop_class_uids:
        counts[uid] = counts.get(uid, 0) + 1
    return tuple(SOPClassCount(uid, n) for uid, n in counts.items())
