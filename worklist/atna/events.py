"""The audit messages RadGround sends, one builder per event of PS3.15 A.5.3.

Every builder takes this node's :class:`NodeIdentity` and the event's facts and returns an
:class:`~worklist.atna.messages.AuditMessage`. Patient data appears only where PS3.15 asks for
it (the Patient ID of a patient participant object): audit messages go to the audit
repository or the audit file, never to the log.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from worklist.atna.codes import (
    AuditCode,
    EventID,
    EventTypeCode,
    ParticipantObjectIDTypeCode,
    RoleIDCode,
)
from worklist.atna.messages import (
    ActiveParticipant,
    AuditMessage,
    AuditSource,
    EventActionCode,
    EventIdentification,
    EventOutcomeIndicator,
    ParticipantObject,
    ParticipantObjectDescription,
    ParticipantObjectTypeCode,
    ParticipantObjectTypeCodeRole,
    sop_class_counts,
)

__all__ = [
    "DicomPeer",
    "NodeIdentity",
    "StudyObjects",
    "account_changed",
    "application_activity",
    "association_refused",
    "data_export",
    "instances_transferred",
    "query",
    "user_authentication",
]

#: PS3.16 CID 405 Media Type Code: an export goes to a directory or URL, named by its URI.
_MEDIA_URI = AuditCode("110037", "DCM", "URI")


@dataclass(frozen=True)
class NodeIdentity:
    """This node as audit messages name it: its AE title, host and process, and the audit source."""

    ae_title: str
    audit_source: AuditSource
    host: str = ""
    process_id: str = ""

    @classmethod
    def here(cls, ae_title: str, *, audit_source_id: str = "", enterprise_site_id: str = "",
             host: str = "") -> NodeIdentity:
        """This process on this machine (``audit_source_id`` defaults to the AE title)."""
        return cls(
            ae_title=ae_title,
            audit_source=AuditSource(audit_source_id or ae_title, enterprise_site_id),
            host=host or socket.gethostname(),
            process_id=str(os.getpid()),
        )

    def participant(self, *, requestor: bool, role: AuditCode | None) -> ActiveParticipant:
        """This node as an active participant (UserID: the process; AE title in
        AlternativeUserID, PS3.15 A.5.2.1)."""
        return ActiveParticipant(
            user_id=self.process_id or self.ae_title,
            user_is_requestor=requestor,
            role_id_codes=(role,) if role is not None else (),
            alternative_user_id=f"AETITLES={self.ae_title}",
            user_name="RadGround",
            network_access_point_id=self.host,
        )


@dataclass(frozen=True)
class DicomPeer:
    """Another application: its AE title and host (IP address or name); for an HTTP or MLLP
    peer its URL, for an HTTP client the account it signed in with (either is then its
    UserID)."""

    ae_title: str
    host: str
    url: str = ""
    user: str = ""

    def participant(self, *, requestor: bool, role: AuditCode) -> ActiveParticipant:
        return ActiveParticipant(
            user_id=self.user or self.url or self.ae_title.strip() or self.host,
            user_is_requestor=requestor,
            role_id_codes=(role,),
            alternative_user_id=f"AETITLES={self.ae_title.strip()}" if self.ae_title.strip()
            else "",
            network_access_point_id=self.host,
        )


@dataclass(frozen=True)
class StudyObjects:
    """One study of one patient as participant objects: the study with its SOP classes and
    instance counts, and the patient (PS3.15 A.5.3.4)."""

    study_instance_uid: str
    sop_class_uids: tuple[str, ...]
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    accession_number: str = ""

    def participant_objects(self) -> tuple[ParticipantObject, ...]:
        study = ParticipantObject(
            participant_object_id=self.study_instance_uid,
            participant_object_id_type_code=ParticipantObjectIDTypeCode.STUDY_INSTANCE_UID,
            participant_object_type_code=ParticipantObjectTypeCode.SYSTEM_OBJECT,
            participant_object_type_code_role=ParticipantObjectTypeCodeRole.REPORT,
            participant_object_descriptions=(ParticipantObjectDescription(
                sop_classes=sop_class_counts(self.sop_class_uids),
                accession_numbers=(self.accession_number,) if self.accession_number else (),
            ),),
        )
        # Patient ID is type 2 in DICOM; the Patient object is mandatory (PS3.15 A.5.3.4)
        patient_id = self.patient_id.strip() or "<none>"
        # with its issuer as HL7 CX, as IHE writes a patient identifier
        if self.patient_id.strip() and self.issuer_of_patient_id.strip():
            patient_id = f"{patient_id}^^^{self.issuer_of_patient_id.strip()}"
        patient = ParticipantObject(
            participant_object_id=patient_id,
            participant_object_id_type_code=ParticipantObjectIDTypeCode.PATIENT_NUMBER,
            participant_object_type_code=ParticipantObjectTypeCode.PERSON,
            participant_object_type_code_role=ParticipantObjectTypeCodeRole.PATIENT,
        )
        return (study, patient)


def _now(at: datetime | None) -> datetime:
    return at if at is not None else datetime.now(UTC)


def _outcome(succeeded: bool, failure: EventOutcomeIndicator) -> EventOutcomeIndicator:
    return EventOutcomeIndicator.SUCCESS if succeeded else failure


def application_activity(
    node: NodeIdentity, *, started: bool, launcher: str = "", at: datetime | None = None,
) -> AuditMessage:
    """Application Activity: the node started or stopped (PS3.15 A.5.3.1).

    ``launcher``: the operating-system user who started it, when known.
    """
    participants = [node.participant(requestor=False, role=RoleIDCode.APPLICATION)]
    if launcher:
        participants.append(ActiveParticipant(
            user_id=launcher, user_is_requestor=True,
            role_id_codes=(RoleIDCode.APPLICATION_LAUNCHER,),
        ))
    return AuditMessage(
        event=EventIdentification(
            event_id=EventID.APPLICATION_ACTIVITY,
            event_action_code=EventActionCode.EXECUTE,
            event_date_time=_now(at),
            event_type_codes=(
                EventTypeCode.APPLICATION_START if started else EventTypeCode.APPLICATION_STOP,
            ),
        ),
        active_participants=tuple(participants),
        audit_source=node.audit_source,
    )


def _security_alert(
    node: NodeIdentity, *, alert_type: AuditCode, performer: ActiveParticipant | None,
    subject: ParticipantObject, outcome: EventOutcomeIndicator, description: str,
    at: datetime | None,
) -> AuditMessage:
    """Security Alert (PS3.15 A.5.3.11): the node reports; ``performer`` did it."""
    participants = [node.participant(requestor=performer is None, role=RoleIDCode.APPLICATION)]
    if performer is not None:
        participants.append(performer)
    return AuditMessage(
        event=EventIdentification(
            event_id=EventID.SECURITY_ALERT,
            event_action_code=EventActionCode.EXECUTE,
            event_date_time=_now(at),
            event_outcome_indicator=outcome,
            event_type_codes=(alert_type,),
            event_outcome_description=description,
        ),
        active_participants=tuple(participants),
        audit_source=node.audit_source,
        participant_objects=(subject,),
    )


def association_refused(
    node: NodeIdentity, peer: DicomPeer, *, reason: str, at: datetime | None = None,
) -> AuditMessage:
    """Security Alert, Node Authentication failed: an association (or a TLS handshake) from
    ``peer`` was refused; ``reason`` says why (no patient data)."""
    return _security_alert(
        node,
        alert_type=EventTypeCode.NODE_AUTHENTICATION,
        performer=peer.participant(requestor=True, role=RoleIDCode.SOURCE),
        subject=ParticipantObject(
            participant_object_id=peer.host,
            participant_object_id_type_code=ParticipantObjectIDTypeCode.NODE_ID,
            participant_object_type_code=ParticipantObjectTypeCode.SYSTEM_OBJECT,
            participant_object_details=(("Alert Description", reason.encode()),),
        ),
        outcome=EventOutcomeIndicator.MINOR_FAILURE,
        description=reason,
        at=at,
    )


def account_changed(
    node: NodeIdentity, *, actor: str, account: str, change: str, roles_changed: bool = False,
    client_address: str = "", at: datetime | None = None,
) -> AuditMessage:
    """Security Alert for a change of an account (created, password set, unlocked, token
    issued): the configuration of who may use the node."""
    return _security_alert(
        node,
        alert_type=EventTypeCode.SECURITY_ROLES_CHANGED if roles_changed
        else EventTypeCode.USER_SECURITY_ATTRIBUTES_CHANGED,
        performer=ActiveParticipant(
            user_id=actor, user_is_requestor=True, network_access_point_id=client_address,
        ),
        subject=ParticipantObject(
            participant_object_id=account,
            participant_object_id_type_code=ParticipantObjectIDTypeCode.USER_IDENTIFIER,
            participant_object_type_code=ParticipantObjectTypeCode.PERSON,
            participant_object_type_code_role=ParticipantObjectTypeCodeRole.SECURITY_USER_ENTITY,
            participant_object_details=(("Alert Description", change.encode()),),
        ),
        outcome=EventOutcomeIndicator.SUCCESS,
        description=change,
        at=at,
    )


def instances_transferred(
    node: NodeIdentity, *, received: bool, peer: DicomPeer, study: StudyObjects,
    succeeded: bool = True, outcome_description: str = "", at: datetime | None = None,
) -> AuditMessage:
    """DICOM Instances Transferred (PS3.15 A.5.3.4): one study received from ``peer`` on one
    association (``received``, action Create), or sent to ``peer`` (action Read)."""
    if received:
        source = peer.participant(requestor=True, role=RoleIDCode.SOURCE)
        destination = node.participant(requestor=False, role=RoleIDCode.DESTINATION)
    else:
        source = node.participant(requestor=True, role=RoleIDCode.SOURCE)
        destination = peer.participant(requestor=False, role=RoleIDCode.DESTINATION)
    return AuditMessage(
        event=EventIdentification(
            event_id=EventID.DICOM_INSTANCES_TRANSFERRED,
            event_action_code=EventActionCode.CREATE if received else EventActionCode.READ,
            event_date_time=_now(at),
            event_outcome_indicator=_outcome(succeeded, EventOutcomeIndicator.MINOR_FAILURE),
            event_outcome_description=outcome_description,
        ),
        active_participants=(source, destination),
        audit_source=node.audit_source,
        participant_objects=study.participant_objects(),
    )


def query(
    node: NodeIdentity, *, requestor: str, client_address: str, query_text: bytes,
    sop_class_uid: str = "1.2.840.10008.5.1.4.1.2.2.1", matches: int | None = None,
    succeeded: bool = True, at: datetime | None = None,
) -> AuditMessage:
    """Query (PS3.15 A.5.3.12): ``requestor`` searched this node; ``query_text`` as sent (a
    REST query string); ``sop_class_uid`` names the information model (default: Study Root
    Query/Retrieve - FIND, what a study search is)."""
    details: list[tuple[str, bytes]] = []
    if matches is not None:
        details.append(("NumberOfMatches", str(matches).encode()))
    return AuditMessage(
        event=EventIdentification(
            event_id=EventID.QUERY,
            event_action_code=EventActionCode.EXECUTE,
            event_date_time=_now(at),
            event_outcome_indicator=_outcome(succeeded, EventOutcomeIndicator.MINOR_FAILURE),
        ),
        active_participants=(
            ActiveParticipant(
                user_id=requestor, user_is_requestor=True, role_id_codes=(RoleIDCode.SOURCE,),
                network_access_point_id=client_address,
            ),
            node.participant(requestor=False, role=RoleIDCode.DESTINATION),
        ),
        audit_source=node.audit_source,
        participant_objects=(ParticipantObject(
            participant_object_id=sop_class_uid,
            participant_object_id_type_code=ParticipantObjectIDTypeCode.SOP_CLASS_UID,
            participant_object_type_code=ParticipantObjectTypeCode.SYSTEM_OBJECT,
            participant_object_type_code_role=ParticipantObjectTypeCodeRole.QUERY,
            participant_object_query=query_text,
            participant_object_details=tuple(details),
        ),),
    )


def data_export(
    node: NodeIdentity, *, exporter: str, destination: str, studies: Sequence[StudyObjects],
    client_address: str = "", succeeded: bool = True, at: datetime | None = None,
) -> AuditMessage:
    """Export (PS3.15 A.5.3.6): ``exporter`` (a person or process) wrote ``studies`` out of
    the node to ``destination`` (the Destination Media: a URI, ``file://`` for a directory)."""
    objects: list[ParticipantObject] = []
    for study in studies:
        objects.extend(study.participant_objects())
    return AuditMessage(
        event=EventIdentification(
            event_id=EventID.EXPORT,
            event_action_code=EventActionCode.READ,
            event_date_time=_now(at),
            event_outcome_indicator=_outcome(succeeded, EventOutcomeIndicator.MINOR_FAILURE),
        ),
        active_participants=(
            ActiveParticipant(
                user_id=exporter, user_is_requestor=True, role_id_codes=(RoleIDCode.SOURCE,),
                network_access_point_id=client_address,
            ),
            ActiveParticipant(
                user_id=destination, user_is_requestor=False,
                role_id_codes=(RoleIDCode.DESTINATION_MEDIA,), media_type=_MEDIA_URI,
            ),
        ),
        audit_source=node.audit_source,
        participant_objects=tuple(objects),
    )


def user_authentication(
    node: NodeIdentity, *, user: str, client_address: str, succeeded: bool, logout: bool = False,
    reason: str = "", at: datetime | None = None,
) -> AuditMessage:
    """User Authentication (PS3.15 A.5.3.15): ``user`` logged in (or failed to, ``reason``
    saying why) or out, from ``client_address``."""
    return AuditMessage(
        event=EventIdentification(
            event_id=EventID.USER_AUTHENTICATION,
            event_action_code=EventActionCode.EXECUTE,
            event_date_time=_now(at),
            event_outcome_indicator=_outcome(succeeded, EventOutcomeIndicator.MINOR_FAILURE),
            event_type_codes=(EventTypeCode.LOGOUT if logout else EventTypeCode.LOGIN,),
            event_outcome_description=reason,
        ),
        active_participants=(
            ActiveParticipant(
                user_id=user, user_is_requestor=True, network_access_point_id=client_address,
            ),
            node.participant(requestor=False, role=RoleIDCode.APPLICATION),
        ),
        audit_source=node.audit_source,
    )
