"""The FHIR exporter: one R4 transaction Bundle per FHIR endpoint (or one local copy)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydicom.dataset import Dataset

from engine.report import GroundedReport

from ..errors import SourceError
from ..protocol import Artifact, ExportOptions, OutputKind
from ..regions import RegionPlan
from ..signoff import signoff_number
from ..uids import output_uid
from .bundle import build_fhir_bundle, bundle_json
from .inputs import output_series_from_datasets, patient_identifier_system

__all__ = ["FHIR_MEDIA_TYPE", "FhirExporter", "FhirOptions", "local_system_used"]

#: Media type of a FHIR resource in JSON (FHIR R4 http.html#mime-type).
FHIR_MEDIA_TYPE = "application/fhir+json"


@dataclass(frozen=True)
class FhirOptions(ExportOptions):
    """:class:`~exporters.protocol.ExportOptions` plus the endpoint's Patient
    identifier system (for Patient IDs whose DICOM issuer is not a URI/OID)."""

    patient_identifier_system: str | None = None


def local_system_used(sources: Sequence[Dataset], options: ExportOptions) -> str | None:
    """The node's own Patient identifier system when a Bundle built with
    ``options`` had to use it (the source has no usable issuer and none is
    configured), else ``None``."""
    configured = options.patient_identifier_system if isinstance(options, FhirOptions) else None
    try:
        patient_identifier_system(sources[0], configured)
    except SourceError:
        return patient_identifier_system(sources[0], configured, local_node=options.local_node)
    return None


class FhirExporter:
    """:class:`~exporters.protocol.Exporter` of the transaction Bundle
    (:func:`exporters.fhir.build_fhir_bundle`) in the primary language, its
    ImagingStudy listing the DICOM objects built before it in the job. With
    ``options.sign_off`` the Bundle finalises the preliminary resources (its
    artifact UID and file name carry the sign-off number: ``fhir[-DEST]-signoffN.json``)."""

    kind: ClassVar[OutputKind] = OutputKind.FHIR_BUNDLE
    produces: ClassVar[frozenset[OutputKind]] = frozenset({OutputKind.FHIR_BUNDLE})
    sop_class_uids: ClassVar[frozenset[str]] = frozenset()
    media_type: ClassVar[str] = FHIR_MEDIA_TYPE

    def export(
        self,
        report: GroundedReport,
        sources: Sequence[Dataset],
        plan: RegionPlan,
        options: ExportOptions,
    ) -> list[Artifact]:
        language = options.languages[0]
        configured = options.patient_identifier_system if isinstance(options, FhirOptions) else None
        series = output_series_from_datasets(
            a.dataset for a in options.references if a.dataset is not None
        )
        bundle = build_fhir_bundle(
            report,
            sources,
            revision=options.revision,
            output_series=series,
            primary_language=language,
            patient_identifier_system=configured,
            local_node=options.local_node,
            sign_off=options.sign_off,
        )
        signoff = signoff_number(options)
        uid = output_uid(
            report,
            revision=options.revision,
            kind=self.kind,
            language=language,
            role="bundle",
            part=options.destination,
            signoff=signoff,
        )
        stem = f"fhir-{options.destination}" if options.destination else "fhir"
        name = f"{stem}-signoff{signoff}.json" if signoff else f"{stem}.json"
        return [
            Artifact(
                self.kind, language, name, self.media_type, bundle_json(bundle).encode("utf-8"), uid
            )
        ]
