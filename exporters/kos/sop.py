"""GroundedReport → Key Object Selection Document (PS3.3 A.35.4, TID 2010; IHE KIN / AIR).

One KOS per study and job lists the source images that carry findings
(:func:`exporters.kos.content.select_key_images`), so that PACS worklists and
viewers that flag "key images" (IHE Key Image Note) can mark AI-positive
studies without reading the SR. The document:

* has the Document Title (CID 7010) given, by default (113000, DCM,
  "Of Interest"), the title IHE KIN uses for key images;
* names the model as the Observer (TID 1002 device observer context, Device
  Observer UID = ``ModelInfo.device_uid``), as IHE AIR asks of every AI result;
* carries a Key Object Description (DCM 113012) saying the selection is
  unverified AI output, and the labels of the findings that made it;
* references each key image as an IMAGE content item ("Source", SCT
  260753009), with Referenced Frame Numbers for multi-frame images, and,
  optionally, RadGround's own SR / presentation states as COMPOSITE items;
* lists exactly those instances, grouped by series, in the Current Requested
  Procedure Evidence Sequence (PS3.3 C.17.6.2.1);
* copies patient and study from the first key image's header (highdicom
  :class:`~highdicom.ko.KeyObjectSelectionDocument`), Manufacturer
  "RadGround", the model as Contributing Equipment "Processing Equipment";
* uses Specific Character Set ISO_IR 192 when any of its texts (its own or
  those copied from the source header) is not ASCII, and none otherwise.

A report with no located finding gives **no** KOS: :func:`build_key_object_selection`
returns ``None`` (a negative study is a normal outcome, not an error; an empty
KOS is not allowed, TID 2010 needs at least one reference).

UIDs are derived like every other RadGround output (see
:func:`exporters.uids.output_uid`): the same study revision and model version
give the same Series and SOP Instance UIDs, so a redelivered job stores no
second KOS. Content and Series Date/Time come from the report's
``created_at``; only highdicom's Instance Creation Date/Time differ between runs.

After a radiologist's sign-off (:class:`~exporters.protocol.SignOff`; the report
is the reviewed one) the KOS is a new one (UIDs derived with the sign-off
number) selecting the images of the reviewed findings only; its Series
Description and Key Object Description say "verified by radiologist", and the
radiologist is a person observer (TID 1002) beside the model's device.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.uid import KeyObjectSelectionDocumentStorage

from engine.report import GroundedReport, Presence, is_valid_uid
from exporters import codes
from exporters.errors import ExportError, SourceError
from exporters.kos.content import DEFAULT_PRESENCES, KeyImage, select_key_images
from exporters.kos.enum import DocumentTitle
from exporters.protocol import OutputKind, SignOff
from exporters.regions import RegionPlan, source_index
from exporters.signoff import dicom_person_name, signoff_number
from exporters.sr.tree import person_observer
from exporters.uids import output_uid

__all__ = [
    "DEFAULT_KOS_SERIES_NUMBER",
    "KOS_OUTPUT_KIND",
    "SERIES_DESCRIPTION",
    "SOP_CLASS_UIDS",
    "VERIFIED_SERIES_DESCRIPTION",
    "build_key_object_selection",
    "kos_uid",
]

#: SOP classes this exporter writes: Key Object Selection Document Storage (PS3.4 B.5).
SOP_CLASS_UIDS: frozenset[str] = frozenset({str(KeyObjectSelectionDocumentStorage)})

#: Series Number of the KOS series (SR 9100.., GSPS 9902, Secondary Capture 9903).
DEFAULT_KOS_SERIES_NUMBER = 9904

#: Series Description (0008,103E) of the KOS series.
SERIES_DESCRIPTION = "AI key images (unverified)"
#: Series Description (0008,103E) of the KOS series after a radiologist's sign-off.
VERIFIED_SERIES_DESCRIPTION = "AI key images (verified by radiologist)"

#: The output kind of the KOS (its value goes into the KOS's derived UIDs).
KOS_OUTPUT_KIND = OutputKind.KOS

#: Concept name of each reference (PS3.3 C.17.3: "Source", as highdicom names it).
_SOURCE = hd.sr.CodedConcept("260753009", "SCT", "Source")

#: "Key Object Description" lead-in per language; other languages use English.
_DESCRIPTION_LEAD = {
    "en": "AI findings (unverified)",
    "zh-CN": "AI 检出结果（未经审核）",
    "zh-TW": "AI 檢出結果（未經審核）",
    "de": "KI-Befunde (nicht verifiziert)",
    "fr": "Résultats IA (non vérifiés)",
    "es": "Hallazgos de IA (no verificados)",
}
#: The lead-in after a radiologist's sign-off.
_VERIFIED_DESCRIPTION_LEAD = {
    "en": "AI findings (verified by radiologist)",
    "zh-CN": "AI 检出结果（经放射科医师审核）",
    "zh-TW": "AI 檢出結果（經放射科醫師審核）",
    "de": "KI-Befunde (radiologisch verifiziert)",
    "fr": "Résultats IA (vérifiés par un radiologue)",
    "es": "Hallazgos de IA (verificados por un radiólogo)",
}

#: Header texts copied from the first source that decide the character set.
_COPIED_TEXT_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
    "StudyDescription",
)


def kos_uid(
    report: GroundedReport, *, revision: int, language: str, role: str, signoff: int = 0
) -> str:
    """The deterministic UID of the KOS series (``role="series"``) or instance (``"instance"``).

    Derived like :func:`exporters.uids.output_uid` with output kind
    :data:`KOS_OUTPUT_KIND`: same study, revision, model version, language and
    sign-off number (0: the model's own) → same UID.
    """
    return output_uid(
        report,
        revision=revision,
        kind=KOS_OUTPUT_KIND,
        language=language,
        role=role,
        signoff=signoff,
    )


def build_key_object_selection(
    report: GroundedReport,
    sources: Sequence[Dataset],
    *,
    revision: int,
    language: str | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = DEFAULT_KOS_SERIES_NUMBER,
    instance_number: int = 1,
    document_title: DocumentTitle = DocumentTitle.OF_INTEREST,
    referenced_documents: Sequence[Dataset] = (),
    include_anatomy: bool = False,
    presences: frozenset[Presence] = DEFAULT_PRESENCES,
    manufacturer: str = "RadGround",
    software_versions: str = "0.1.0",
    institution_name: str | None = None,
    plan: RegionPlan | None = None,
    sign_off: SignOff | None = None,
) -> hd.ko.KeyObjectSelectionDocument | None:
    """A Key Object Selection Document listing the images of ``report``'s findings.

    Parameters
    ----------
    report
        The grounded report (one study).
    sources
        Headers of the study's source images (pixel data not needed); every
        region's image must be among them.
    revision
        Study revision (goes into the derived UIDs).
    language
        BCP-47 tag of the Key Object Description's text; default: the
        impression's first language. Labels missing in it fall back to each
        finding's primary language.
    series_instance_uid, sop_instance_uid
        Series Instance UID (0020,000E) and SOP Instance UID (0008,0018);
        default: derived with :func:`kos_uid`.
    series_number, instance_number
        Series Number (0020,0011) and Instance Number (0020,0013).
    document_title
        Concept name of the root container (CID 7010).
    referenced_documents
        RadGround's own objects of the same study to list as well (e.g. the SR
        documents and presentation states of the job), as COMPOSITE items.
    include_anatomy, presences
        Which findings select an image (see
        :func:`~exporters.kos.content.select_key_images`).
    manufacturer, software_versions
        General Equipment Manufacturer (0008,0070) and Software Versions
        (0018,1020) of RadGround itself.
    institution_name
        Institution Name (0008,0080) of the node, if configured.
    plan
        The job's region plan (:func:`exporters.regions.plan_regions`); made
        here if omitted.
    sign_off
        The radiologist's sign-off of ``report`` (the reviewed report): a new KOS
        saying "verified by radiologist", the radiologist as person observer.

    Returns
    -------
    highdicom.ko.KeyObjectSelectionDocument | None
        The document, or ``None`` when no selected finding has a region inside
        its image (no key images: no KOS).

    Raises
    ------
    SourceError
        The sources do not fit the report, or a referenced document belongs to
        another study or lacks its UIDs.
    ExportError
        An argument is invalid, or highdicom refused a value.
    """
    if not isinstance(document_title, DocumentTitle):
        raise ExportError(f"document_title must be a DocumentTitle, got {document_title!r}")
    for name, uid in (
        ("series_instance_uid", series_instance_uid),
        ("sop_instance_uid", sop_instance_uid),
    ):
        if uid is not None and not is_valid_uid(uid):
            raise ExportError(f"{name} must be a valid DICOM UID, got {uid!r}")
    language = language or report.impression.languages[0]
    by_uid = source_index(report, sources)
    key_images = select_key_images(
        report, sources, include_anatomy=include_anatomy, presences=presences, plan=plan
    )
    if not key_images:
        return None
    documents = _checked_documents(report, referenced_documents)
    images = [by_uid[k.sop_instance_uid] for k in key_images]
    verified = sign_off is not None
    signoff = signoff_number(sign_off)
    description = _description(report, key_images, language, verified=verified)
    created: datetime = report.created_at
    try:
        person = (
            None
            if sign_off is None
            else person_observer(sign_off.verifier, dicom_person_name(sign_off.verifier.name))
        )
        content = hd.ko.KeyObjectSelection(
            document_title=codes.to_hd(document_title.value),
            referenced_objects=[*images, *documents],
            observer_person_context=person,
            observer_device_context=_observer(report),
            description=description,
        )
        _add_frame_numbers(content, key_images)
        equipment = hd.ContributingEquipment(
            manufacturer=report.model.manufacturer,
            purpose_of_reference=codes.to_hd(codes.PROCESSING_EQUIPMENT),
            manufacturer_model_name=report.model.name,
            software_versions=report.model.version,
            contribution_datetime=created,
            contribution_description="Key images selected from AI findings",
        )
        return hd.ko.KeyObjectSelectionDocument(
            evidence=[*images, *documents],
            content=content,
            series_instance_uid=series_instance_uid
            or kos_uid(
                report, revision=revision, language=language, role="series", signoff=signoff
            ),
            series_number=series_number,
            sop_instance_uid=sop_instance_uid
            or kos_uid(
                report, revision=revision, language=language, role="instance", signoff=signoff
            ),
            instance_number=instance_number,
            manufacturer=manufacturer,
            institution_name=institution_name,
            contributing_equipment=[equipment],
            software_versions=software_versions,
            series_description=VERIFIED_SERIES_DESCRIPTION if verified else SERIES_DESCRIPTION,
            content_date=created.date(),
            content_time=created.time().replace(tzinfo=None),
            series_date=created.date(),
            series_time=created.time().replace(tzinfo=None),
            specific_character_set=_character_set(
                images[0],
                description,
                institution_name,
                *(
                    ()
                    if sign_off is None
                    else (sign_off.verifier.name, sign_off.verifier.organisation)
                ),
            ),
        )
    except (ValueError, TypeError) as exc:  # highdicom refuses non-conformant values
        raise ExportError(f"the Key Object Selection could not be built: {exc}") from exc


def _checked_documents(report: GroundedReport, documents: Sequence[Dataset]) -> list[Dataset]:
    checked = []
    for n, ds in enumerate(documents):
        for keyword in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"):
            if not ds.get(keyword):
                raise SourceError(f"referenced_documents[{n}] lacks {keyword}")
        if ds.StudyInstanceUID != report.study_instance_uid:
            raise SourceError(f"referenced_documents[{n}] belongs to another study than the report")
        if "Rows" in ds:
            raise SourceError(
                f"referenced_documents[{n}] is an image; key images come from the findings"
            )
        checked.append(ds)
    return checked


def _description(
    report: GroundedReport, key_images: Sequence[KeyImage], language: str, *, verified: bool
) -> str:
    """Key Object Description (DCM 113012): lead-in (unverified, or verified by a
    radiologist), model, and the selecting findings' labels."""
    selected = {uid for k in key_images for uid in k.tracking_uids}
    labels = dict.fromkeys(
        f.label.get(language) or f.label.primary
        for f in report.findings
        if f.tracking_uid in selected
    )
    leads = _VERIFIED_DESCRIPTION_LEAD if verified else _DESCRIPTION_LEAD
    lead = leads.get(language) or leads.get(language.split("-")[0], leads["en"])
    separator = "；" if language.startswith("zh") else "; "
    return f"{lead}, {report.model.name} {report.model.version}: {separator.join(labels)}"


def _observer(report: GroundedReport) -> hd.sr.ObserverContext:
    """TID 1002 observer context: the model version as the device that selected the images."""
    return hd.sr.ObserverContext(
        observer_type=dcm_codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=report.model.device_uid,
            name=report.model.name,
            manufacturer_name=report.model.manufacturer,
            model_name=f"{report.model.name} {report.model.version}",
        ),
    )


def _add_frame_numbers(content: hd.ko.KeyObjectSelection, key_images: Sequence[KeyImage]) -> None:
    """Replace the IMAGE items of multi-frame key images by items naming their frames.

    highdicom's :class:`~highdicom.ko.KeyObjectSelection` references whole
    instances; PS3.3 C.18.4 lets an IMAGE item name frames (Referenced Frame
    Number), which a viewer opens directly.
    """
    frames = {k.sop_instance_uid: k.frame_numbers for k in key_images if k.frame_numbers}
    if not frames:
        return
    items = content[0].ContentSequence
    for index, item in enumerate(items):
        if item.value_type is not hd.sr.ValueTypeValues.IMAGE:
            continue
        numbers = frames.get(item.referenced_sop_instance_uid)
        if numbers:
            # slice assignment: ContentSequence.__setitem__ takes a single item
            # (a Dataset) for an iterable of items in highdicom 0.28
            items[index : index + 1] = [
                hd.sr.ImageContentItem(
                    name=_SOURCE,
                    referenced_sop_class_uid=item.referenced_sop_class_uid,
                    referenced_sop_instance_uid=item.referenced_sop_instance_uid,
                    referenced_frame_numbers=list(numbers),
                    relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
                )
            ]


def _character_set(
    source: Dataset, description: str, institution_name: str | None, *others: str
) -> str | None:
    """ISO_IR 192 when any text of the document is not ASCII (``others``: further texts of
    it, e.g. the verifying radiologist's name), otherwise none (default repertoire)."""
    texts = [description, institution_name or "", *others]
    texts += [str(source.get(keyword) or "") for keyword in _COPIED_TEXT_KEYWORDS]
    return None if all(text.isascii() for text in texts) else "ISO_IR 192"
