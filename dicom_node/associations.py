"""What the SCP tells its caller about associations, for the audit trail.

:class:`AssociationRefused` when an association is refused at admission (calling or called
AE title, association limit); :class:`AssociationEnded` when an association that stored
instances closes, with one :class:`ReceivedInstance` per stored instance (the facts an audit
message names: study, SOP class, patient). The node turns them into DICOM audit messages
(PS3.15 A.5.3.4 and A.5.3.11) without the SCP knowing of audit messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydicom.dataset import Dataset

__all__ = ["AssociationEnded", "AssociationRefused", "ReceivedInstance"]


@dataclass(frozen=True)
class AssociationRefused:
    """An association refused at admission; ``reason`` names the check, without patient data."""

    calling_ae_title: str
    called_ae_title: str
    peer_host: str
    reason: str
    at: datetime


@dataclass(frozen=True)
class ReceivedInstance:
    """One instance stored on an association, as its audit message names it."""

    study_instance_uid: str
    sop_class_uid: str
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    accession_number: str = ""

    @classmethod
    def from_header(cls, header: Dataset, *, study_instance_uid: str,
                    sop_class_uid: str) -> ReceivedInstance:
        return cls(
            study_instance_uid=study_instance_uid,
            sop_class_uid=sop_class_uid,
            patient_id=str(header.get("PatientID", "") or ""),
            issuer_of_patient_id=str(header.get("IssuerOfPatientID", "") or ""),
            accession_number=str(header.get("AccessionNumber", "") or ""),
        )


@dataclass(frozen=True)
class AssociationEnded:
    """An association that stored instances has closed (released, aborted or lost)."""

    calling_ae_title: str
    called_ae_title: str
    peer_host: str
    instances: tuple[ReceivedInstance, ...]
    at: datetime
