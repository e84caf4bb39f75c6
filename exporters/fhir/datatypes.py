"""FHIR R4 data-type values the resources share: codings, identifiers, translations.

Every code here was checked against the FHIR R4 (4.0.1) specification, because
the ``fhir.resources`` models do not check codes in required bindings:

* ``urn:dicom:uid`` with ``urn:oid:`` values for DICOM UIDs (R4 datatypes.html#Identifier
  "Identifier", and ImagingStudy.identifier's notes);
* the translation extension ``http://hl7.org/fhir/StructureDefinition/translation``
  with sub-extensions ``lang`` (code, 1..1) and ``content`` (string or
  markdown, 1..1), usable on string, code and markdown elements;
* no per-string language marker: R4's ``language`` extension may only be used
  on HumanName, Address and Annotation, so a resource whose strings do not
  share one language declares the language its strings do share, or none
  (:func:`resource_language`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.fhirprimitiveextension import FHIRPrimitiveExtension
from fhir.resources.R4B.identifier import Identifier

from engine.report import CodedConcept, Text

__all__ = [
    "DCM_SYSTEM",
    "DICOM_UID_SYSTEM",
    "TRANSLATION_URL",
    "coding_for",
    "dicom_uid_identifier",
    "localized",
    "resource_language",
    "system_for_scheme",
]

#: Identifier.system for DICOM UIDs; values are ``urn:oid:<uid>``.
DICOM_UID_SYSTEM = "urn:dicom:uid"
#: The DICOM Controlled Terminology (PS3.16) as a FHIR code system.
DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
TRANSLATION_URL = "http://hl7.org/fhir/StructureDefinition/translation"

#: DICOM Coding Scheme Designators (PS3.16 Table 8-1) and their FHIR system URIs
#: (FHIR R4 terminologies-systems.html, "External code systems").
_SCHEME_SYSTEMS: Mapping[str, str] = {
    "SCT": "http://snomed.info/sct",
    "SRT": "http://snomed.info/sct",
    "LN": "http://loinc.org",
    "DCM": DCM_SYSTEM,
    "RADLEX": "http://radlex.org",
    "RADLEX-ID": "http://radlex.org",
    "UCUM": "http://unitsofmeasure.org",
    "NCIT": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl",
}


def system_for_scheme(scheme_designator: str) -> str:
    """The FHIR code system URI for a DICOM Coding Scheme Designator.

    Standard schemes map to their FHIR URIs. FHIR defines no URI for a
    private DICOM scheme (PS3.16 §8.2, designators starting ``99``), so those
    are carried as ``urn:radground:coding-scheme:<designator>``: unambiguous
    within RadGround's outputs and never mistaken for a standard system.
    """
    known = _SCHEME_SYSTEMS.get(scheme_designator.upper())
    if known is not None:
        return known
    return f"urn:radground:coding-scheme:{scheme_designator}"


def coding_for(concept: CodedConcept) -> Coding:
    """A FHIR Coding for a DICOM-style coded concept (value, scheme, meaning)."""
    return Coding(
        system=system_for_scheme(concept.scheme_designator),
        version=concept.scheme_version,
        code=concept.value,
        display=concept.meaning,
    )


def dicom_uid_identifier(
    uid: str, *, use: str | None = None, type_: CodeableConcept | None = None
) -> Identifier:
    """An Identifier for a DICOM UID: system ``urn:dicom:uid``, value ``urn:oid:<uid>``."""
    return Identifier(use=use, type=type_, system=DICOM_UID_SYSTEM, value=f"urn:oid:{uid}")


def _translation(language: str, content: str, *, markdown: bool) -> Extension:
    value = (
        Extension(url="content", valueMarkdown=content)
        if markdown
        else Extension(url="content", valueString=content)
    )
    return Extension(
        url=TRANSLATION_URL, extension=[Extension(url="lang", valueCode=language), value]
    )


def resource_language(texts: Sequence[Text], preferred: str) -> str | None:
    """The ``Resource.language`` for a resource whose strings are ``texts``.

    ``preferred`` when every text has it; else the first language (in the
    first text's order) that every text has; else ``None`` (mixed languages:
    R4 has no per-string language marker for plain strings, so the resource
    declares none rather than a wrong one).
    """
    if all(preferred in text for text in texts):
        return preferred
    if not texts:
        return preferred
    for tag in texts[0].languages:
        if all(tag in text for text in texts):
            return tag
    return None


def localized(
    text: Text, language: str | None, *, markdown: bool = False
) -> tuple[str, FHIRPrimitiveExtension | None]:
    """A string element's value in ``language`` and its ``_element`` extensions.

    The value is the text in ``language`` (the resource's language, see
    :func:`resource_language`), or the text's own primary value when
    ``language`` is ``None`` or missing; every other language of ``text``
    follows as a translation extension.

    Returns
    -------
    (value, extensions)
        ``extensions`` is ``None`` when there is nothing to add.
    """
    value = text.get(language) if language is not None else None
    own = language
    if value is None:
        value, own = text.primary, text.languages[0]
    extensions = [
        _translation(tag, content, markdown=markdown) for tag, content in text.items() if tag != own
    ]
    return value, (FHIRPrimitiveExtension(extension=extensions) if extensions else None)
