"""The HL7 v2 exporter: one ORU^R01 per HL7 receiver."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydicom.dataset import Dataset

from engine.report import GroundedReport
from exporters.hl7.enum import ProcessingId
from exporters.hl7.oru import build_oru_r01, message_control_id
from exporters.protocol import Artifact, ExportOptions, OutputKind
from exporters.regions import RegionPlan
from exporters.signoff import signoff_number

__all__ = ["HL7_MEDIA_TYPE", "HL7Exporter", "HL7Options"]

#: Media type of an ER7-encoded HL7 v2 message.
HL7_MEDIA_TYPE = "x-application/hl7-v2+er7"


@dataclass(frozen=True)
class HL7Options(ExportOptions):
    """:class:`~exporters.protocol.ExportOptions` plus the receiver's MSH fields
    (MSH-4 sending facility, MSH-5/-6 receiving application and facility,
    MSH-11 processing ID) and PV1-2 patient class."""

    sending_facility: str | None = None
    receiving_application: str | None = None
    receiving_facility: str | None = None
    processing_id: ProcessingId = ProcessingId.PRODUCTION
    patient_class: str = "U"


class HL7Exporter:
    """:class:`~exporters.protocol.Exporter` of the ORU^R01
    (:func:`exporters.hl7.build_oru_r01`): MSH-10 derived from the study, the
    revision, the model version and the receiver's name
    (:func:`exporters.hl7.message_control_id`), so a redelivered job sends the
    same control ID; one RP OBX per SR document built before it in the job. With
    ``options.sign_off``: result status ``F`` (``C`` when it amends a preliminary
    result sent before), the radiologist in OBR-32, a control ID, artifact UID and
    file name (``hl7[-DEST]-signoffN.hl7``) of its own."""

    kind: ClassVar[OutputKind] = OutputKind.HL7_ORU
    produces: ClassVar[frozenset[OutputKind]] = frozenset({OutputKind.HL7_ORU})
    sop_class_uids: ClassVar[frozenset[str]] = frozenset()
    media_type: ClassVar[str] = HL7_MEDIA_TYPE

    def export(
        self,
        report: GroundedReport,
        sources: Sequence[Dataset],
        plan: RegionPlan,
        options: ExportOptions,
    ) -> list[Artifact]:
        extra = (
            options
            if isinstance(options, HL7Options)
            else HL7Options(options.revision, options.languages)
        )
        signoff = signoff_number(options)
        control_id = message_control_id(
            report, revision=options.revision, part=options.destination, signoff=signoff
        )
        srs = [a.object_uid for a in options.references if a.kind is OutputKind.SR]
        message = build_oru_r01(
            report,
            sources,
            control_id=control_id,
            sr_sop_instance_uids=srs,
            languages=[lang for lang in options.languages if lang in report.languages] or None,
            sending_facility=extra.sending_facility,
            receiving_application=extra.receiving_application,
            receiving_facility=extra.receiving_facility,
            processing_id=extra.processing_id,
            patient_class=extra.patient_class,
            sign_off=options.sign_off,
        )
        stem = f"hl7-{options.destination}" if options.destination else "hl7"
        name = f"{stem}-signoff{signoff}.hl7" if signoff else f"{stem}.hl7"
        return [
            Artifact(
                self.kind,
                options.languages[0],
                name,
                self.media_type,
                message.er7.encode("utf-8"),
                control_id,
            )
        ]
