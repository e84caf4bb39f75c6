"""A RadGround result as one FHIR R4 transaction Bundle.

The Bundle (FHIR R4 bundle.html; a ``transaction``, http.html#transaction) holds the
Patient, the model as a Device, the ImagingStudy, the DiagnosticReport and one
Observation per finding. Entries refer to each other by their ``fullUrl``
(``urn:uuid:``), which the EHR replaces with the ids it assigns (R4 http.html#trules).

Idempotent delivery
-------------------
Deliveries are retried (a lost HTTP response, a redelivered Celery task), so
posting the same Bundle twice must not create anything twice. Every entry is
therefore a *conditional* interaction keyed on a business identifier
(R4 http.html#ccreate conditional create, http.html#cond-update conditional update):

* **Patient** — ``POST`` with ``ifNoneExist: identifier=<system>|<PatientID>``.
  The EHR (or its MPI) owns demographics: an existing patient is referred to,
  never overwritten from DICOM headers; a missing one is created once.
* **ImagingStudy** — ``POST`` with ``ifNoneExist`` on the Study Instance UID
  (``urn:dicom:uid|urn:oid:<uid>``). Where the imaging integration already
  registered the study it usually knows more series than the images we
  analysed; overwriting it would lose them. Our output series reach such a
  record through the PACS, which receives our SR/GSPS.
* **Device** — ``POST`` with ``ifNoneExist`` on the device UID of the model
  version: one Device per model version, never duplicated.
* **DiagnosticReport** and **Observation** — ``PUT`` conditional update
  (``DiagnosticReport?identifier=…``) on identifiers derived from (study,
  revision, model version[, tracking UID]) with
  :func:`exporters.uids.output_uid`. They are ours: a redelivery updates the
  same resources in place (creating them if missing), and a new revision or
  model version gets new identifiers, hence new resources beside the old ones.
  An Observation's conditional URL uses its own derived identifier, not the
  finding's tracking UID, because DICOM tracking UIDs follow one finding
  across reports over time: keyed on them, a later report would overwrite an
  earlier report's observation.

A new revision's DiagnosticReport stands beside the earlier one; retiring the
earlier one is left to the delivery layer, which knows whether it was sent.

After a radiologist's sign-off
------------------------------
The signed Bundle (``sign_off``; the report is the reviewed one) updates the
*same* resources: the DiagnosticReport's and each Observation's identifier are
derived exactly as for the preliminary Bundle (not with the sign-off number,
unlike the DICOM objects' UIDs), so the EHR's conditional update replaces the
preliminary ones in place, without a duplicate. It adds:

* **Practitioner** — the radiologist, ``POST`` with ``ifNoneExist`` on their
  account identifier (``<identifier_system>|<account>``): one per account;
* the DiagnosticReport ``final``, or ``amended`` when a preliminary one already
  reached this EHR (``SignOff.amends``), ``resultsInterpreter`` = the
  Practitioner, ``issued`` = the time of signing, and a presentedForm/narrative
  saying who verified it;
* the reviewed findings' Observations ``final`` (performer = the Practitioner);
  when the preliminary Bundle reached this EHR (``SignOff.amends``), the rejected
  model findings (``SignOff.withdrawn``) again, under their preliminary
  identifiers, ``entered-in-error`` (an EHR that never received them is not sent
  Observations only to retract them);
* **Provenance** — target the DiagnosticReport and every Observation written,
  ``recorded`` = the time of signing, agents: the Practitioner as author and
  verifier, the model Device as contributor. R4 Provenance has no identifier to
  match on, so it is a ``PUT Provenance/<id>`` with an id derived from the
  report and the sign-off number: a redelivery rewrites the same Provenance.

The Bundle's own identifier is derived with the sign-off number (it is another
Bundle than the preliminary one).

Patient identity is never guessed: a source with an empty Patient ID, or whose
issuer is neither an OID nor a URI with no configured system for it, is refused
(:class:`~exporters.errors.SourceError`) rather than filed against a patient
the EHR might match wrongly. The SR and GSPS for such a study still go to the
PACS.

``fullUrl`` values are UUIDv5 of those derived UIDs, so the same report and
revision always give the same Bundle, byte for byte (with the same ``issued``).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from urllib.parse import quote

from fhir.resources.R4B.bundle import Bundle, BundleEntry, BundleEntryRequest
from fhir.resources.R4B.resource import Resource
from pydicom.dataset import Dataset

from engine.report import GroundedReport
from engine.uids import short_uid

from ..errors import ExportError
from ..protocol import OutputKind, SignOff
from ..signoff import signoff_number
from ..uids import output_uid
from .datatypes import DICOM_UID_SYSTEM, dicom_uid_identifier
from .inputs import OutputSeriesRef, output_series_header, read_study_header
from .rendering import ReportVerification, render_report_html
from .resources import (
    build_device,
    build_diagnostic_report,
    build_imaging_study,
    build_observation,
    build_patient,
    build_practitioner,
    build_provenance,
    practitioner_reference,
)

__all__ = ["build_fhir_bundle", "bundle_json"]

_log = logging.getLogger(__name__)

#: The ``language`` part of output UIDs: a FHIR Bundle carries every language
#: (ISO 639-2 "mul", multiple languages), so choosing another primary language
#: updates the same resources instead of creating new ones.
_ALL_LANGUAGES = "mul"


def _search_value(value: str) -> str:
    """A token search parameter value, escaped (R4 search.html#escaping: ``\\`` before
    ``$ , |``) and percent-encoded for a URL query."""
    escaped = (
        value.replace("\\", "\\\\").replace("|", "\\|").replace(",", "\\,").replace("$", "\\$")
    )
    return quote(escaped, safe=":/.-_~")


def _identifier_query(system: str, value: str) -> str:
    return f"identifier={_search_value(system)}|{_search_value(value)}"


def _full_url(uid: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, uid)}"


def _create(full_url: str, resource: Resource, *, if_none_exist: str) -> BundleEntry:
    return BundleEntry(
        fullUrl=full_url,
        resource=resource,
        request=BundleEntryRequest(
            method="POST", url=resource.get_resource_type(), ifNoneExist=if_none_exist
        ),
    )


def _put(full_url: str, resource: Resource) -> BundleEntry:
    """``PUT Type/<id>``: create or update the resource with the client-chosen id
    (R4 http.html#update), for a resource with no business identifier to match on."""
    return BundleEntry(
        fullUrl=full_url,
        resource=resource,
        request=BundleEntryRequest(
            method="PUT", url=f"{resource.get_resource_type()}/{resource.id}"
        ),
    )


def _update(full_url: str, resource: Resource, *, uid: str) -> BundleEntry:
    url = f"{resource.get_resource_type()}?{_identifier_query(DICOM_UID_SYSTEM, f'urn:oid:{uid}')}"
    return BundleEntry(
        fullUrl=full_url, resource=resource, request=BundleEntryRequest(method="PUT", url=url)
    )


def build_fhir_bundle(
    report: GroundedReport,
    sources: Sequence[Dataset],
    *,
    revision: int,
    output_series: Sequence[OutputSeriesRef] = (),
    primary_language: str = "en",
    issued: datetime | None = None,
    patient_identifier_system: str | Mapping[str, str] | None = None,
    local_node: str | None = None,
    study_timezone: tzinfo | None = None,
    sign_off: SignOff | None = None,
) -> Bundle:
    """Build the FHIR R4 transaction Bundle for a report.

    Parameters
    ----------
    report
        The grounded report.
    sources
        Headers (pydicom datasets, pixel data not needed) of the report's
        source images: all of the report's study and of one patient.
    revision
        The study revision the report is about (part of every derived id).
    output_series
        RadGround's own output series (SR, GSPS) to list in the ImagingStudy.
    primary_language
        Language of the resources' texts (``Resource.language``); the other
        report languages follow as translation extensions, and every report
        language gets its own ``presentedForm`` page.
    issued
        ``DiagnosticReport.issued`` / ``Observation.issued`` (timezone-aware);
        by default the report's ``created_at``, so a rebuild is identical.
    patient_identifier_system
        Identifier system for the Patient ID when the source's issuer is
        neither an OID nor a URI: one URI, or a mapping from issuer text
        (``""`` for a missing issuer) to a URI. See
        :func:`exporters.fhir.inputs.patient_identifier_system`.
    local_node
        The node (its AE title) whose own identifier system
        (:func:`exporters.fhir.inputs.local_patient_identifier_system`) is used
        when neither the source nor ``patient_identifier_system`` gives one;
        None raises :class:`SourceError` instead.
    study_timezone
        Timezone of the source's dates and times when it carries no
        Timezone Offset From UTC (0008,0201). Without either, effective
        times are given to the day only: FHIR requires an offset on a
        time, and a guessed one would shift the study by hours.
    sign_off
        The radiologist's sign-off of ``report`` (the reviewed report): the Bundle
        finalises the preliminary resources (see the module docstring); ``issued``
        then defaults to the time of signing.

    Returns
    -------
    fhir.resources.R4B.bundle.Bundle
        A ``transaction`` Bundle; serialise it with :func:`bundle_json`.

    Raises
    ------
    SourceError
        The sources are empty, of another study or patient, lack a Patient ID,
        or their patient-ID issuer has no usable system.
    ExportError
        Bad arguments (revision, language, naive ``issued``).
    """
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
        raise ExportError(f"revision must be a non-negative int, got {revision!r}")
    if primary_language not in report.languages:
        raise ExportError(
            f"primary_language {primary_language!r} is not a language of the report "
            f"({', '.join(report.languages)})"
        )
    if issued is None:
        issued = report.created_at if sign_off is None else sign_off.verified_at
    if not isinstance(issued, datetime) or issued.tzinfo is None:
        raise ExportError(f"issued must be a timezone-aware datetime, got {issued!r}")
    output_series = tuple(output_series)
    if not all(isinstance(s, OutputSeriesRef) for s in output_series):
        raise ExportError("output_series must contain only OutputSeriesRef values")

    study = read_study_header(
        sources,
        study_instance_uid=report.study_instance_uid,
        patient_identifier_system_config=patient_identifier_system,
        local_node=local_node,
        default_timezone=study_timezone,
    )
    known = {s.series_instance_uid for s in study.series}
    clashes = [s for s in output_series if s.series_instance_uid in known]
    if clashes:
        raise ExportError("an output series has the Series Instance UID of a source series")

    if sign_off is not None:
        reviewed = {f.tracking_uid for f in report.findings}
        if any(f.tracking_uid in reviewed for f in sign_off.withdrawn):
            raise ExportError("a withdrawn finding is also in the reviewed report")

    def uid(role: str, part: str = "", *, signoff: int = 0) -> str:
        # the resources' identifiers never take the sign-off number: the signed Bundle
        # updates the preliminary resources in place
        return output_uid(
            report,
            revision=revision,
            kind=OutputKind.FHIR_BUNDLE,
            language=_ALL_LANGUAGES,
            role=role,
            part=part,
            signoff=signoff,
        )

    patient_url = _full_url(uid("patient"))
    study_url = _full_url(uid("imaging-study"))
    device_url = _full_url(uid("device"))
    report_uid = uid("diagnostic-report")

    patient = build_patient(study.patient)
    imaging_study = build_imaging_study(
        study, [output_series_header(s) for s in output_series], patient=patient_url
    )
    device = build_device(report.model)
    practitioner_entries: list[BundleEntry] = []  # the verifier's, after a sign-off
    provenance_entries: list[BundleEntry] = []
    interpreter = None
    if sign_off is not None:
        verifier = sign_off.verifier
        practitioner_url = _full_url(
            f"radground-practitioner\x1f{verifier.identifier_system}\x1f{verifier.identifier}"
        )
        interpreter = practitioner_reference(practitioner_url, verifier)
        practitioner_entries.append(
            _create(
                practitioner_url,
                build_practitioner(verifier),
                if_none_exist=_identifier_query(verifier.identifier_system, verifier.identifier),
            )
        )

    observation_entries = []
    observation_urls: list[str] = []
    withdrawn_urls: list[str] = []
    for status, findings in (
        ("preliminary" if sign_off is None else "final", report.findings),
        ("entered-in-error", sign_off.withdrawn if sign_off and sign_off.amends else ()),
    ):
        for finding in findings:
            observation_uid = uid("observation", finding.tracking_uid)
            observation = build_observation(
                finding,
                identifier_uid=observation_uid,
                language=primary_language,
                patient=patient_url,
                imaging_study=study_url,
                device=device_url,
                effective=study.started,
                issued=issued,
                status=status,
                performer=interpreter.reference if status == "final" and interpreter else None,
            )
            url = _full_url(observation_uid)
            (withdrawn_urls if status == "entered-in-error" else observation_urls).append(url)
            observation_entries.append(_update(url, observation, uid=observation_uid))

    languages = (primary_language, *(tag for tag in report.languages if tag != primary_language))
    verification = (
        None
        if sign_off is None
        else ReportVerification(" ".join(sign_off.verifier.name.split()), sign_off.verified_at)
    )
    pages = [
        render_report_html(report, tag, study_date=study.started, verification=verification)
        for tag in languages
    ]
    status = "preliminary"
    if sign_off is not None:
        status = "amended" if sign_off.amends else "final"
    diagnostic_report = build_diagnostic_report(
        report,
        identifier_uid=report_uid,
        language=primary_language,
        patient=patient_url,
        imaging_study=study_url,
        results=observation_urls,
        effective=study.started,
        issued=issued,
        pages=pages,
        status=status,
        results_interpreter=interpreter,
        verification=verification,
    )
    if sign_off is not None and interpreter is not None:
        provenance_uid = uid("provenance", signoff=signoff_number(sign_off))
        provenance = build_provenance(
            resource_id=str(uuid.uuid5(uuid.NAMESPACE_OID, provenance_uid)),
            targets=[_full_url(report_uid), *observation_urls, *withdrawn_urls],
            recorded=sign_off.verified_at,
            practitioner=interpreter,
            device=device_url,
            organisation=sign_off.verifier.organisation,
        )
        provenance_entries.append(_put(_full_url(provenance_uid), provenance))

    entries = [
        _create(
            patient_url,
            patient,
            if_none_exist=_identifier_query(
                study.patient.identifier_system, study.patient.identifier_value
            ),
        ),
        _create(
            device_url,
            device,
            if_none_exist=_identifier_query(DICOM_UID_SYSTEM, f"urn:oid:{report.model.device_uid}"),
        ),
        _create(
            study_url,
            imaging_study,
            if_none_exist=_identifier_query(
                DICOM_UID_SYSTEM, f"urn:oid:{report.study_instance_uid}"
            ),
        ),
        *practitioner_entries,
        _update(_full_url(report_uid), diagnostic_report, uid=report_uid),
        *observation_entries,
        *provenance_entries,
    ]
    bundle = Bundle(
        identifier=dicom_uid_identifier(uid("bundle", signoff=signoff_number(sign_off))),
        type="transaction",
        timestamp=issued,
        entry=entries,
    )
    _log.info(
        "built FHIR transaction bundle for study %s revision %d: %d observations, %d languages, %s",
        short_uid(report.study_instance_uid),
        revision,
        len(observation_entries),
        len(languages),
        "preliminary" if sign_off is None else f"{status} (sign-off {sign_off.number})",
    )
    return bundle


def bundle_json(bundle: Bundle, *, indent: int | None = None) -> str:
    """The Bundle as FHIR R4 JSON text (R4 json.html).

    Non-ASCII text is written as itself, not as ``\\u`` escapes; send the
    result UTF-8 encoded (``application/fhir+json; charset=utf-8``). Only R4
    elements are emitted: the R4B models used have the same elements as R4 for
    every resource and data type RadGround builds, and the tests check each
    entry against the official R4 JSON schema.

    The text is the same as ``bundle.model_dump_json(exclude_comments=True)``
    (compact form) but about a third faster: ``fhir.resources``' JSON
    serialiser re-enters pydantic for every nested element.
    """
    data = bundle.model_dump(mode="json", exclude_comments=True)
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(data, ensure_ascii=False, indent=indent, separators=separators)
