"""Coded values of DICOM audit messages (PS3.15 A.5, PS3.16 CID 400-405, RFC 3881).

Each code is written as the schema of PS3.15 A.5.1 spells a coded value: ``csd-code``,
``codeSystemName`` and ``originalText`` (the DICOM Code Meaning).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AuditCode",
    "EventID",
    "EventTypeCode",
    "ParticipantObjectIDTypeCode",
    "RoleIDCode",
]


@dataclass(frozen=True)
class AuditCode:
    """One coded value (``csd-code``, ``codeSystemName``, ``originalText``)."""

    csd_code: str
    code_system_name: str
    original_text: str

    def __post_init__(self) -> None:
        if not (self.csd_code and self.code_system_name and self.original_text):
            raise ValueError("a coded value needs csd-code, codeSystemName and originalText")


def _dcm(code: str, meaning: str) -> AuditCode:
    return AuditCode(code, "DCM", meaning)


class EventID:
    """Audit Event IDs (PS3.16 CID 400)."""

    APPLICATION_ACTIVITY = _dcm("110100", "Application Activity")
    DICOM_INSTANCES_TRANSFERRED = _dcm("110104", "DICOM Instances Transferred")
    EXPORT = _dcm("110106", "Export")
    QUERY = _dcm("110112", "Query")
    SECURITY_ALERT = _dcm("110113", "Security Alert")
    USER_AUTHENTICATION = _dcm("110114", "User Authentication")


class EventTypeCode:
    """Audit Event Type Codes (PS3.16 CID 401: application activity, security alerts, logins)."""

    APPLICATION_START = _dcm("110120", "Application Start")
    APPLICATION_STOP = _dcm("110121", "Application Stop")
    LOGIN = _dcm("110122", "Login")
    LOGOUT = _dcm("110123", "Logout")
    NODE_AUTHENTICATION = _dcm("110126", "Node Authentication")
    NETWORK_CONFIGURATION = _dcm("110128", "Network Configuration")
    SECURITY_CONFIGURATION = _dcm("110129", "Security Configuration")
    SOFTWARE_CONFIGURATION = _dcm("110131", "Software Configuration")
    USE_OF_RESTRICTED_FUNCTION = _dcm("110132", "Use of Restricted Function")
    SECURITY_ROLES_CHANGED = _dcm("110136", "Security Roles Changed")
    USER_SECURITY_ATTRIBUTES_CHANGED = _dcm("110137", "User security Attributes Changed")


class RoleIDCode:
    """Audit Active Participant Role ID Codes (PS3.16 CID 402)."""

    APPLICATION = _dcm("110150", "Application")
    APPLICATION_LAUNCHER = _dcm("110151", "Application Launcher")
    DESTINATION = _dcm("110152", "Destination Role ID")
    SOURCE = _dcm("110153", "Source Role ID")
    DESTINATION_MEDIA = _dcm("110154", "Destination Media")


class ParticipantObjectIDTypeCode:
    """Audit Participant Object ID Type Codes (PS3.16 CID 404; RFC 3881 §5.5.4)."""

    PATIENT_NUMBER = AuditCode("2", "RFC-3881", "Patient Number")
    USER_IDENTIFIER = AuditCode("11", "RFC-3881", "User Identifier")
    URI = AuditCode("12", "RFC-3881", "URI")
    STUDY_INSTANCE_UID = _dcm("110180", "Study Instance UID")
    SOP_CLASS_UID = _dcm("110181", "SOP Class UID")
    NODE_ID = _dcm("110182", "Node ID")
