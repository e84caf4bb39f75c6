"""The FHIR R4 resources of a RadGround result, built with ``fhir.resources``.

One function per resource (FHIR R4 4.0.1; the R4B models used here have the
same elements as R4 for every resource and data type emitted):

* :func:`build_patient` — Patient from the DICOM Patient module;
* :func:`build_imaging_study` — ImagingStudy (R4 imagingstudy.html) with the source series
  and RadGround's output series;
* :func:`build_device` — the model version as a Device (R4 device.html);
* :func:`build_observation` — one imaging Observation per finding;
* :func:`build_diagnostic_report` — the DiagnosticReport (R4 diagnosticreport.html);
* :func:`build_practitioner` — the radiologist who signed (R4 practitioner.html);
* :func:`build_provenance` — who verified what, when (R4 provenance.html).

All codes in required bindings are named constants checked against the R4
value sets: ``ObservationStatus`` / ``DiagnosticReportStatus`` ``preliminary``
(AI output is unverified until a radiologist signs), then ``final`` /
``amended`` and ``entered-in-error`` after a sign-off, ``ImagingStudyStatus``
``available``, ``DeviceNameType`` ``model-name``, ``FHIRDeviceStatus``
``active``, ``AdministrativeGender`` ``male | female | other``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from fhir.resources.R4B.annotation import Annotation
from fhir.resources.R4B.attachment import Attachment
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.device import Device, DeviceDeviceName, DeviceVersion
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.humanname import HumanName
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.imagingstudy import (
    ImagingStudy,
    ImagingStudySeries,
    ImagingStudySeriesInstance,
)
from fhir.resources.R4B.narrative import Narrative
from fhir.resources.R4B.observation import Observation, ObservationComponent
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.provenance import Provenance, ProvenanceAgent
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.reference import Reference
from pydicom.valuerep import PersonName

from engine.report import Finding, FindingKind, GroundedReport, ModelInfo, Presence

from .. import codes
from ..codes import SiteCode
from ..codes import coding_for as finding_coding
from ..protocol import Verifier
from ..signoff import name_parts
from .datatypes import DCM_SYSTEM, coding_for, dicom_uid_identifier, localized, resource_language
from .inputs import PatientHeader, SeriesHeader, StudyHeader
from .rendering import RenderedPage, ReportVerification, finding_narrative, report_narrative

__all__ = [
    "DIAGNOSTIC_REPORT_STATUSES",
    "OBSERVATION_STATUSES",
    "build_device",
    "build_diagnostic_report",
    "build_imaging_study",
    "build_observation",
    "build_patient",
    "build_practitioner",
    "build_provenance",
    "practitioner_reference",
]

#: The R4 ObservationStatus codes RadGround writes (required binding): the model's
#: findings, the radiologist's verified ones, and rejected ones withdrawn.
OBSERVATION_STATUSES = frozenset({"preliminary", "final", "entered-in-error"})
#: The R4 DiagnosticReportStatus codes RadGround writes (required binding): the model's
#: report, the signed one, and the signed one replacing a preliminary one already sent.
DIAGNOSTIC_REPORT_STATUSES = frozenset({"preliminary", "final", "amended"})
#: R4 provenance-participant-type (extensible binding of Provenance.agent.type).
PROVENANCE_PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
PROVENANCE_AUTHOR = Coding(system=PROVENANCE_PARTICIPANT_TYPE, code="author", display="Author")
PROVENANCE_VERIFIER = Coding(
    system=PROVENANCE_PARTICIPANT_TYPE, code="verifier", display="Verifier"
)
PROVENANCE_CONTRIBUTOR = Coding(
    system=PROVENANCE_PARTICIPANT_TYPE, code="contributor", display="Contributor"
)

LOINC = "http://loinc.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
UCUM = "http://unitsofmeasure.org"
EN_REPRESENTATION_URL = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"

#: DiagnosticReport.category: LOINC LP29684-5 "Radiology" and v2-0074 RAD
#: (R4 ValueSet diagnostic-service-sections), one concept in two code systems.
RADIOLOGY_CATEGORY = (
    Coding(system=LOINC, code="LP29684-5", display="Radiology"),
    Coding(system=V2_0074, code="RAD", display="Radiology"),
)
#: DiagnosticReport.code: LOINC 18748-4 "Diagnostic imaging study".
DIAGNOSTIC_IMAGING_STUDY = Coding(system=LOINC, code="18748-4", display="Diagnostic imaging study")
#: Observation.category: observation-category ``imaging``.
IMAGING_CATEGORY = Coding(system=OBSERVATION_CATEGORY, code="imaging", display="Imaging")
#: Observation.code of an anatomy finding (a sentence about a structure, the
#: structure in bodySite): LOINC 18782-3 "Radiology Study observation (narrative)".
RADIOLOGY_OBSERVATION = Coding(
    system=LOINC, code="18782-3", display="Radiology Study observation (narrative)"
)
#: DICOM Tracking Unique Identifier (DCM 112040), the type of the tracking-UID identifier.
TRACKING_UID_TYPE = Coding(system=DCM_SYSTEM, code="112040", display="Tracking Unique Identifier")
#: Presence as the SR's qualitative evaluation values (valueCodeableConcept).
PRESENCE_VALUES = {
    presence: coding_for(concept) for presence, concept in codes.PRESENCE_VALUES.items()
}
#: Model confidence as in the SR: DCM 111012 "Certainty of Finding", in percent.
CERTAINTY_OF_FINDING = coding_for(codes.CERTAINTY_OF_FINDING)
#: Presence of an abnormality as v3 ObservationInterpretation (interpretation).
PRESENCE_INTERPRETATIONS = {
    Presence.PRESENT: Coding(system=V3_INTERPRETATION, code="POS", display="Positive"),
    Presence.ABSENT: Coding(system=V3_INTERPRETATION, code="NEG", display="Negative"),
    Presence.INDETERMINATE: Coding(system=V3_INTERPRETATION, code="IND", display="Indeterminate"),
}


def _ref(full_url: str) -> Reference:
    return Reference(reference=full_url)


def _human_name(representation: str, name: PersonName, *, tagged: bool) -> HumanName:
    given = [part for part in (name.given_name, name.middle_name) if part]
    return HumanName(
        extension=[Extension(url=EN_REPRESENTATION_URL, valueCode=representation)]
        if tagged
        else None,
        family=name.family_name or None,
        given=given or None,
        prefix=[name.name_prefix] if name.name_prefix else None,
        suffix=[name.name_suffix] if name.name_suffix else None,
    )


def build_patient(header: PatientHeader) -> Patient:
    """The Patient from the source's Patient module (PS3.3 C.7.1.1).

    Identifier: Patient ID with the system derived from its issuer (see
    :func:`~exporters.fhir.inputs.patient_identifier_system`). Name, birth
    date and gender only when the source has them; with several Person Name
    component groups each becomes a HumanName tagged with the
    ``iso21090-EN-representation`` extension (ABC, IDE, SYL).
    """
    tagged = len(header.names) > 1
    return Patient(
        identifier=[Identifier(system=header.identifier_system, value=header.identifier_value)],
        name=[_human_name(rep, name, tagged=tagged) for rep, name in header.names] or None,
        gender=header.gender,
        birthDate=header.birth_date,
    )


def _series(series: SeriesHeader) -> ImagingStudySeries:
    return ImagingStudySeries(
        uid=series.series_instance_uid,
        number=series.series_number,
        modality=Coding(system=DCM_SYSTEM, code=series.modality),
        description=series.description,
        numberOfInstances=len(series.instances),
        started=series.started,
        instance=[
            ImagingStudySeriesInstance(
                uid=instance.sop_instance_uid,
                sopClass=Coding(
                    system="urn:ietf:rfc:3986", code=f"urn:oid:{instance.sop_class_uid}"
                ),
                number=instance.instance_number,
            )
            for instance in series.instances
        ],
    )


def build_imaging_study(
    study: StudyHeader, output_series: Sequence[SeriesHeader], *, patient: str
) -> ImagingStudy:
    """The ImagingStudy: identifier ``urn:oid:<StudyInstanceUID>`` (system
    ``urn:dicom:uid``), status ``available``, the source series and
    RadGround's output series with their instances.

    ``modality`` lists the acquisition modalities only (R4: "the series.modality
    values that are actual acquisition modalities"), so the SR and PR of the
    outputs are not in it.
    """
    identifiers = [dicom_uid_identifier(study.study_instance_uid)]
    if study.accession_number:
        identifiers.append(
            Identifier(
                type=CodeableConcept(
                    coding=[
                        Coding(
                            system="http://terminology.hl7.org/CodeSystem/v2-0203",
                            code="ACSN",
                            display="Accession ID",
                        )
                    ]
                ),
                value=study.accession_number,
            )
        )
    all_series = list(study.series) + list(output_series)
    modalities = dict.fromkeys(s.modality for s in study.series)
    return ImagingStudy(
        identifier=identifiers,
        status="available",
        modality=[Coding(system=DCM_SYSTEM, code=m) for m in modalities],
        subject=_ref(patient),
        started=study.started,
        numberOfSeries=len(all_series),
        numberOfInstances=sum(len(s.instances) for s in all_series),
        description=study.description,
        series=[_series(s) for s in all_series],
    )


def build_device(model: ModelInfo) -> Device:
    """The model version as a Device: identifier = its device UID (``urn:oid:``),
    model name, version and manufacturer (as DICOM Contributing Equipment names it)."""
    return Device(
        identifier=[dicom_uid_identifier(model.device_uid)],
        status="active",
        manufacturer=model.manufacturer,
        deviceName=[DeviceDeviceName(name=model.name, type="model-name")],
        type=CodeableConcept(
            text="AI image analysis software (region-aware vision-language model)"
        ),
        version=[DeviceVersion(value=model.version)],
    )


def _site(site: SiteCode) -> CodeableConcept:
    """A finding site as ``bodySite``: R4 Observation has no laterality element,
    so a laterality (CID 244) is kept in the text beside the coded location."""
    text = site.location.meaning
    if site.laterality is not None:
        text = f"{site.location.meaning}, {site.laterality.meaning}"
    return CodeableConcept(coding=[coding_for(site.location)], text=text)


def _finding_code(
    finding: Finding, language: str | None
) -> tuple[CodeableConcept, CodeableConcept | None]:
    """``(code, bodySite)`` of a finding's Observation, from the shared code table.

    The codes are those of the DICOM SR copy of the finding
    (:func:`exporters.codes.coding_for`: the finding's own concept, else the
    code table, else a generic SNOMED CT concept). An abnormality's code is
    its finding type and its bodySite the table's finding site; an anatomy
    finding is a narrative radiology observation (LOINC 18782-3) about the
    structure, which is its bodySite. The label, in the resource language
    with translations, is the text of whichever names the finding.
    """
    label, label_ext = localized(finding.label, language)
    coded = finding_coding(finding)
    concept = [coding_for(coded.finding_type)]
    if finding.kind is FindingKind.ANATOMY:
        site: CodeableConcept | None = CodeableConcept(
            coding=concept, text=label, text__ext=label_ext
        )
        return CodeableConcept(coding=[RADIOLOGY_OBSERVATION]), site
    site = _site(coded.site) if coded.site is not None else None
    return CodeableConcept(coding=concept, text=label, text__ext=label_ext), site


def build_observation(
    finding: Finding,
    *,
    identifier_uid: str,
    language: str,
    patient: str,
    imaging_study: str,
    device: str,
    effective: str | None,
    issued: datetime,
    status: str = "preliminary",
    performer: str | None = None,
) -> Observation:
    """One imaging Observation for a finding.

    Parameters
    ----------
    finding
        The finding.
    identifier_uid
        The Observation's own deterministic UID (official identifier; the
        transaction's conditional update matches on it). The finding's
        tracking UID is a second identifier, typed DCM 112040.
    language
        The preferred resource language: texts are in it, other languages
        follow as translation extensions. A finding whose label and sentence
        lack it declares the language they share instead (see
        :func:`~exporters.fhir.datatypes.resource_language`).
    patient, imaging_study, device
        ``fullUrl`` values of the Patient, ImagingStudy and Device entries.
    effective
        Study date/time (FHIR dateTime) or ``None``.
    issued
        When the result was made available (timezone-aware).
    status
        ``preliminary`` (the model's), ``final`` (verified by a radiologist) or
        ``entered-in-error`` (a model finding the radiologist rejected).
    performer
        ``fullUrl`` of the Practitioner responsible for the verified observation.

    Notes
    -----
    Presence is ``valueCodeableConcept`` with the SR's presence values
    (:data:`exporters.codes.PRESENCE_VALUES`); for abnormalities also
    ``interpretation`` (v3 POS / NEG / IND). Model confidence is a component
    only when the model gave one (never invented): DCM 111012 "Certainty of
    Finding" in percent, as in the SR. The grounded sentence is the note.
    """
    if status not in OBSERVATION_STATUSES:
        raise ValueError(f"status must be one of {sorted(OBSERVATION_STATUSES)}, got {status!r}")
    own_language = resource_language((finding.label, finding.description), language)
    code, body_site = _finding_code(finding, own_language)
    note, note_ext = localized(finding.description, own_language, markdown=True)
    presence = Presence(finding.presence)
    components = None
    if finding.confidence is not None:
        percent = Decimal(repr(finding.confidence)) * 100
        components = [
            ObservationComponent(
                code=CodeableConcept(coding=[CERTAINTY_OF_FINDING]),
                valueQuantity=Quantity(value=percent.normalize(), unit="%", system=UCUM, code="%"),
            )
        ]
    return Observation(
        language=own_language,
        text=Narrative(
            status="generated",
            div=finding_narrative(finding, own_language or language, declared=own_language),
        ),
        identifier=[
            dicom_uid_identifier(identifier_uid, use="official"),
            dicom_uid_identifier(
                finding.tracking_uid,
                use="secondary",
                type_=CodeableConcept(coding=[TRACKING_UID_TYPE]),
            ),
        ],
        status=status,
        category=[CodeableConcept(coding=[IMAGING_CATEGORY])],
        code=code,
        subject=_ref(patient),
        effectiveDateTime=effective,
        issued=issued,
        performer=[_ref(performer)] if performer is not None else None,
        device=_ref(device),
        derivedFrom=[_ref(imaging_study)],
        bodySite=body_site,
        valueCodeableConcept=CodeableConcept(coding=[PRESENCE_VALUES[presence]]),
        interpretation=(
            [CodeableConcept(coding=[PRESENCE_INTERPRETATIONS[presence]])]
            if finding.kind is FindingKind.ABNORMALITY
            else None
        ),
        note=[Annotation(text=note, text__ext=note_ext)],
        component=components,
    )


def build_diagnostic_report(
    report: GroundedReport,
    *,
    identifier_uid: str,
    language: str,
    patient: str,
    imaging_study: str,
    results: Sequence[str],
    effective: str | None,
    issued: datetime,
    pages: Sequence[RenderedPage],
    status: str = "preliminary",
    results_interpreter: Reference | None = None,
    verification: ReportVerification | None = None,
) -> DiagnosticReport:
    """The DiagnosticReport (R4 diagnosticreport.html): status ``preliminary`` (or, after a
    radiologist's sign-off, ``final``, or ``amended`` when it replaces a preliminary one
    already sent), category Radiology (LOINC LP29684-5, v2-0074 RAD), code LOINC 18748-4,
    the impression as ``conclusion`` in ``language`` with translation extensions,
    ``resultsInterpreter`` the signing radiologist (a reference to their Practitioner),
    and one ``presentedForm`` HTML page per language (``language``, ``size`` and SHA-1
    ``hash`` of the exact bytes). ``verification`` names the signing radiologist in the
    narrative.
    """
    if status not in DIAGNOSTIC_REPORT_STATUSES:
        raise ValueError(
            f"status must be one of {sorted(DIAGNOSTIC_REPORT_STATUSES)}, got {status!r}"
        )
    own_language = resource_language((report.impression,), language)
    conclusion, conclusion_ext = localized(report.impression, own_language)
    return DiagnosticReport(
        language=own_language,
        text=Narrative(
            status="generated",
            div=report_narrative(
                report,
                own_language or language,
                study_date=effective,
                declared=own_language,
                verification=verification,
            ),
        ),
        identifier=[dicom_uid_identifier(identifier_uid, use="official")],
        status=status,
        category=[CodeableConcept(coding=list(RADIOLOGY_CATEGORY))],
        code=CodeableConcept(coding=[DIAGNOSTIC_IMAGING_STUDY]),
        subject=_ref(patient),
        effectiveDateTime=effective,
        issued=issued,
        resultsInterpreter=[results_interpreter] if results_interpreter is not None else None,
        imagingStudy=[_ref(imaging_study)],
        result=[_ref(url) for url in results] or None,
        conclusion=conclusion,
        conclusion__ext=conclusion_ext,
        presentedForm=[
            Attachment(
                contentType="text/html; charset=utf-8",
                language=page.language,
                data=base64.b64encode(page.data),
                size=page.size,
                hash=page.sha1_base64.encode("ascii"),
                title=page.title,
                creation=issued,
            )
            for page in pages
        ],
    )


def practitioner_reference(full_url: str, verifier: Verifier) -> Reference:
    """A reference to the verifier's Practitioner entry, with their name as display."""
    return Reference(reference=full_url, display=verifier.name.strip())


def build_practitioner(verifier: Verifier) -> Practitioner:
    """The radiologist who signed, as a Practitioner: identifier = their account
    (``identifier_system`` | account name), name as written on the account with its
    family and given parts (:func:`exporters.signoff.name_parts`)."""
    parts = name_parts(verifier.name)
    return Practitioner(
        identifier=[Identifier(system=verifier.identifier_system, value=verifier.identifier)],
        active=True,
        name=[
            HumanName(
                use="official",
                text=" ".join(verifier.name.split()),
                family=parts.family or None,
                given=list(parts.given) or None,
            )
        ],
    )


def build_provenance(
    *,
    resource_id: str,
    targets: Sequence[str],
    recorded: datetime,
    practitioner: Reference,
    device: str,
    organisation: str = "",
) -> Provenance:
    """Who verified the signed resources (R4 provenance.html): the radiologist as ``author``
    and ``verifier`` (provenance-participant-type), on behalf of their organisation when
    the account names one, and the model Device as ``contributor``.

    Parameters
    ----------
    resource_id
        The Provenance's id, chosen by RadGround (R4 has no Provenance.identifier to
        update on: the Bundle writes it with ``PUT Provenance/<id>``).
    targets
        ``fullUrl`` values of the DiagnosticReport and Observations the sign-off wrote.
    recorded
        When the radiologist signed (timezone-aware).
    practitioner
        Reference to the radiologist's Practitioner entry.
    device
        ``fullUrl`` of the model's Device entry.
    organisation
        The radiologist's organisation (``onBehalfOf`` display), if known.
    """
    if not targets:
        raise ValueError("a Provenance needs at least one target")
    on_behalf_of = Reference(display=organisation.strip()) if organisation.strip() else None
    return Provenance(
        id=resource_id,
        target=[_ref(url) for url in targets],
        recorded=recorded,
        agent=[
            ProvenanceAgent(
                type=CodeableConcept(coding=[PROVENANCE_AUTHOR]),
                who=practitioner,
                onBehalfOf=on_behalf_of,
            ),
            ProvenanceAgent(
                type=CodeableConcept(coding=[PROVENANCE_VERIFIER]),
                who=practitioner,
                onBehalfOf=on_behalf_of,
            ),
            ProvenanceAgent(
                type=CodeableConcept(coding=[PROVENANCE_CONTRIBUTOR]), who=_ref(device)
            ),
        ],
    )
