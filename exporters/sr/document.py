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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import highdicom as hd
from highdicom.base import SOPClass
from highdicom.sr.utils import collect_evidence
from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage, ExplicitVRLittleEndian

__all__ = ["AssembledComprehensive3DSR"]


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
    manufacturer, institution_name, is_complete, is_final, is_verified
        As for :class:`highdicom.sr.Comprehensive3DSR` (verification by a
        person is not supported here: AI output is UNVERIFIED).
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
        institution_name: str | None = None,
        contributing_equipment: Sequence[hd.ContributingEquipment] | None = None,
        **kwargs: Any,
    ) -> None:
        if len(evidence) == 0:
            raise ValueError("No evidence was provided.")
        if is_verified:
            raise ValueError("AssembledComprehensive3DSR builds unverified documents only")
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
