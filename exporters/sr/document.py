"""The Comprehensive 3D SR document around a TID 1500 content tree, assembled without re-parsing it.

highdicom's :class:`highdicom.sr.Comprehensive3DSR` constructor deep-copies
the whole content tree, parses the copy back into content-item objects and
searches it for image references (about 60% of the time it takes to build a
TID 1500 SR). Our content tree was itself built by highdicom's templates from
validated content items, and the images it references were already checked
against the evidence (:func:`exporters.regions.plan_regions`), so
:class:`AssembledComprehensive3DSR` does the document-level work of that
constructor — the same highdicom ``SOPClass`` initialisation, flags, evidence
sequences (highdicom's :func:`~highdicom.sr.utils.collect_evidence` on the
given evidence), patient/study copy and contributing equipment — and adopts
the content tree as it is, without the copy and re-parse.

The result is the same dataset the highdicom constructor produces (the tests
and ``bench/exporters.py`` compare the two element by element); what differs
is that ``.content`` is the tree that was passed in rather than a re-parsed
copy, so the caller must not keep modifying that tree.

A radiologist's sign-off makes the document VERIFIED (PS3.3 C.17.2 SR Document
General Module): :class:`Verification` gives the Verifying Observer Sequence
(0040,A073) with the verifier's name, organisation, identification code and the
time they signed — highdicom's constructor stamps the wall-clock time and leaves
the identification code empty, so :func:`mark_verified` writes that module for
both constructors — and the Predecessor Documents Sequence (0040,A360) names the
documents the verified one replaces (hierarchical SOP instance references:
study → series → SOP instance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import highdicom as hd
from highdicom.base import SOPClass
from highdicom.sr.utils import collect_evidence
from highdicom.valuerep import check_person_name
from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage, ExplicitVRLittleEndian
from pydicom.valuerep import DT

from engine.uids import is_valid_uid
from exporters.protocol import PredecessorDocument

__all__ = ["AssembledComprehensive3DSR", "Verification", "mark_verified"]

#: Maximum length of Verifying Organization (0040,A027), LO.
_LO_MAX = 64


@dataclass(frozen=True)
class Verification:
    """Who verified an SR document and when (one Verifying Observer Sequence item).

    Parameters
    ----------
    verifying_observer_name
        Verifying Observer Name (0040,A075), a DICOM PN (``Doe^Jane``).
    verifying_organization
        Verifying Organization (0040,A027), LO (at most 64 characters).
    verification_datetime
        Verification DateTime (0040,A030); timezone-aware (written with its offset).
    verifying_observer_identification
        The one item of Verifying Observer Identification Code Sequence (0040,A088):
        the verifier's account as a code (value = account name).
    """

    verifying_observer_name: str
    verifying_organization: str
    verification_datetime: datetime
    verifying_observer_identification: hd.sr.CodedConcept

    def __post_init__(self) -> None:
        check_person_name(self.verifying_observer_name)
        if not self.verifying_observer_name.strip("^ "):
            raise ValueError("verifying_observer_name must not be empty")
        if not self.verifying_organization.strip():
            raise ValueError("verifying_organization must not be empty (type 1)")
        if len(self.verifying_organization) > _LO_MAX:
            raise ValueError(f"verifying_organization is longer than {_LO_MAX} characters (LO)")
        if self.verification_datetime.tzinfo is None:
            raise ValueError("verification_datetime must be timezone-aware")


def _predecessor_item(study_uid: str, documents: Sequence[PredecessorDocument]) -> Dataset:
    """One Predecessor Documents Sequence item: a study with its series and instances
    (Hierarchical SOP Instance Reference Macro, PS3.3 Table C.17-3)."""
    item = Dataset()
    item.StudyInstanceUID = study_uid
    series_items = []
    for series_uid in dict.fromkeys(d.series_instance_uid for d in documents):
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        references = []
        for document in documents:
            if document.series_instance_uid != series_uid:
                continue
            reference = Dataset()
            reference.ReferencedSOPClassUID = document.sop_class_uid
            reference.ReferencedSOPInstanceUID = document.sop_instance_uid
            references.append(reference)
        series.ReferencedSOPSequence = references
        series_items.append(series)
    item.ReferencedSeriesSequence = series_items
    return item


def mark_verified(
    dataset: Dataset,
    verification: Verification,
    predecessor_documents: Sequence[PredecessorDocument] = (),
) -> None:
    """Make ``dataset`` (an SR document) VERIFIED by ``verification``, FINAL, replacing
    ``predecessor_documents`` (PS3.3 C.17.2.1: the Predecessor Documents Sequence lists the
    documents whose content this one supersedes).

    Raises
    ------
    ValueError
        A predecessor has an invalid UID, or is this very document.
    """
    for document in predecessor_documents:
        for uid in (
            document.study_instance_uid,
            document.series_instance_uid,
            document.sop_instance_uid,
            document.sop_class_uid,
        ):
            if not is_valid_uid(uid):
                raise ValueError(f"predecessor document has an invalid UID {uid!r}")
        if document.sop_instance_uid == dataset.SOPInstanceUID:
            raise ValueError("an SR document cannot be its own predecessor")
    observer = Dataset()
    observer.VerifyingObserverName = verification.verifying_observer_name
    observer.VerifyingObserverIdentificationCodeSequence = [
        verification.verifying_observer_identification
    ]
    observer.VerifyingOrganization = verification.verifying_organization
    observer.VerificationDateTime = DT(verification.verification_datetime)
    dataset.VerificationFlag = "VERIFIED"
    dataset.VerifyingObserverSequence = [observer]
    dataset.PreliminaryFlag = "FINAL"
    if predecessor_documents:
        studies = dict.fromkeys(d.study_instance_uid for d in predecessor_documents)
        dataset.PredecessorDocumentsSequence = [
            _predecessor_item(
                study, [d for d in predecessor_documents if d.study_instance_uid == study]
            )
            for study in studies
        ]


class AssembledComprehensive3DSR(hd.sr.Comprehensive3DSR):
    """A Comprehensive 3D SR (PS3.3 A.35.13) around an already built TID 1500 tree.

    Parameters
    ----------
    evidence
        Headers of the referenced source images (same study); the first gives
        the patient and study modules. Every image the content references
        must be among them (checked by the caller).
    content
        The root of the content tree, as built by :class:`highdicom.sr.MeasurementReport`.
    series_instance_uid, series_number, sop_instance_uid, instance_number
        Series and instance identification.
    manufacturer, institution_name, is_complete, is_final
        As for :class:`highdicom.sr.Comprehensive3DSR`.
    is_verified, verification
        A document verified by a person (the radiologist who signed off the AI
        findings) needs ``verification``; the document is then FINAL whatever
        ``is_final`` says (see :func:`mark_verified`).
    predecessor_documents
        The documents a verified document replaces (Predecessor Documents Sequence).
    contributing_equipment
        Contributing Equipment items added after the source's acquisition equipment.
    **kwargs
        Further arguments of :class:`highdicom.base.SOPClass` (series
        description, content date/time, specific character set, ...).
    """

    def __init__(
        self,
        evidence: Sequence[Dataset],
        content: hd.sr.MeasurementReport,
        series_instance_uid: str,
        series_number: int,
        sop_instance_uid: str,
        instance_number: int,
        *,
        manufacturer: str | None = None,
        is_complete: bool = False,
        is_final: bool = False,
        is_verified: bool = False,
        verification: Verification | None = None,
        predecessor_documents: Sequence[PredecessorDocument] = (),
        institution_name: str | None = None,
        contributing_equipment: Sequence[hd.ContributingEquipment] | None = None,
        **kwargs: Any,
    ) -> None:
        if len(evidence) == 0:
            raise ValueError("No evidence was provided.")
        if is_verified != (verification is not None):
            raise ValueError("a verified document needs a verification, and only it has one")
        if predecessor_documents and not is_verified:
            raise ValueError("only a verified document replaces predecessor documents")
        if not isinstance(content, hd.sr.MeasurementReport) or len(content) != 1:
            raise TypeError("content must be a highdicom MeasurementReport (one root CONTAINER)")
        first = evidence[0]
        SOPClass.__init__(
            self,
            study_instance_uid=first.StudyInstanceUID,
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            sop_instance_uid=sop_instance_uid,
            sop_class_uid=Comprehensive3DSRStorage,
            instance_number=instance_number,
            manufacturer=manufacturer,
            modality="SR",
            transfer_syntax_uid=ExplicitVRLittleEndian,
            patient_id=first.PatientID,
            patient_name=first.PatientName,
            patient_birth_date=first.PatientBirthDate,
            patient_sex=first.PatientSex,
            accession_number=first.AccessionNumber,
            study_id=first.StudyID,
            study_date=first.StudyDate,
            study_time=first.StudyTime,
            referring_physician_name=getattr(first, "ReferringPhysicianName", None),
            **kwargs,
        )
        if institution_name is not None:
            self.InstitutionName = institution_name
        self.CompletionFlag = "COMPLETE" if is_complete else "PARTIAL"
        self.VerificationFlag = "UNVERIFIED"
        self.PreliminaryFlag = "FINAL" if is_final else "PRELIMINARY"
        root = content[0]
        self._content = content
        for tag, value in root.items():
            self[tag] = value
        # Evidence: every given instance, grouped by study and series as highdicom
        # does; the tree's references were checked against it by the caller, so the
        # search over the tree is done on an empty stand-in.
        stand_in = Dataset()
        stand_in.ContentSequence = []
        same_study, other_study = collect_evidence(
            evidence, stand_in, study_instance_uid=self.StudyInstanceUID
        )
        if same_study:
            self.CurrentRequestedProcedureEvidenceSequence = same_study
        if other_study:
            self.PertinentOtherEvidenceSequence = other_study
        self.PerformedProcedureCodeSequence = []
        self.ReferencedPerformedProcedureStepSequence = []
        self.copy_patient_and_study_information(first)
        self._add_contributing_equipment(contributing_equipment, first)
        if verification is not None:
            mark_verified(self, verification, predecessor_documents)
