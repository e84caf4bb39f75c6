"""What a job's export builds: one request per output kind (and per FHIR or HL7 destination),
each with the exporter options it takes (:func:`worklist.pipeline.run_export` runs them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporters.protocol import ExportOptions, OutputKind, SignOff
from worklist.context import PipelineContext
from worklist.routing import Route

if TYPE_CHECKING:
    from worklist.review.signoff import SignedSet

__all__ = ["ALWAYS_BUILT", "ExportRequest", "export_requests", "per_destination_label"]


#: DICOM outputs every job builds (written under the outputs root), whatever its destinations ask
#: for.
ALWAYS_BUILT = (OutputKind.SR, OutputKind.GSPS)


@dataclass(frozen=True)
class ExportRequest:
    """One exporter run of a job: which kind, with which options, and the name
    its failure is recorded under (``"sr"``, ``"fhir for EHR"``)."""

    kind: OutputKind
    options: ExportOptions
    label: str


def export_requests(
    ctx: PipelineContext, route: Route, revision: int, signed: SignedSet | None = None
) -> list[ExportRequest]:
    """What a job builds, in the registry's build order: the DICOM kinds every job
    builds plus those its DICOM destinations ask for; a FHIR Bundle per FHIR
    endpoint of the route (or one local Bundle when it names none); an ORU^R01
    per HL7 receiver of the route. For a signed set, every option carries the sign-off (a
    FHIR/HL7 destination's its own: amended when an earlier set reached it) and only the
    reviewed languages."""
    from exporters.fhir import FhirOptions
    from exporters.hl7 import HL7Options
    from exporters.registry import BUILD_ORDER, exporter_for

    def languages(wanted: Sequence[str]) -> tuple[str, ...]:
        return tuple(wanted) if signed is None else signed.languages_of(wanted)

    def sign_off(destination: str = "") -> SignOff | None:
        if signed is None:
            return None
        return signed.for_destination(destination) if destination else signed.sign_off

    base = ExportOptions(
        revision=revision,
        languages=languages(route.languages),
        local_node=ctx.scu_ae_title,
        sign_off=sign_off(),
    )
    wanted = set(ALWAYS_BUILT) | {
        exporter_for(kind).kind
        for name in route.destinations
        if name in ctx.dicom_targets
        for kind in ctx.dicom_targets[name].outputs
    }
    requests = [ExportRequest(kind, base, kind.value) for kind in BUILD_ORDER if kind in wanted]
    fhir_names = [name for name in route.destinations if name in ctx.fhir_targets]
    options: ExportOptions
    for name in fhir_names:
        target = ctx.fhir_targets[name]
        options = FhirOptions(
            revision=revision,
            languages=languages((target.primary_language,))[:1],
            destination=name,
            local_node=ctx.scu_ae_title,
            patient_identifier_system=target.patient_identifier_system,
            sign_off=sign_off(name),
        )
        label = per_destination_label(OutputKind.FHIR_BUNDLE, name)
        requests.append(ExportRequest(OutputKind.FHIR_BUNDLE, options, label))
    if not fhir_names:
        options = FhirOptions(
            revision=revision,
            languages=languages(route.languages)[:1],
            local_node=ctx.scu_ae_title,
            sign_off=sign_off(),
        )
        requests.append(
            ExportRequest(OutputKind.FHIR_BUNDLE, options, OutputKind.FHIR_BUNDLE.value)
        )
    for name in (n for n in route.destinations if n in ctx.hl7_targets):
        hl7 = ctx.hl7_targets[name]
        options = HL7Options(
            revision=revision,
            languages=languages(hl7.languages or route.languages),
            destination=name,
            local_node=ctx.scu_ae_title,
            sending_facility=hl7.sending_facility,
            receiving_application=hl7.receiving_application,
            receiving_facility=hl7.receiving_facility,
            processing_id=hl7.processing_id,
            sign_off=sign_off(name),
        )
        label = per_destination_label(OutputKind.HL7_ORU, name)
        requests.append(ExportRequest(OutputKind.HL7_ORU, options, label))
    return requests


def per_destination_label(kind: OutputKind, destination: str) -> str:
    """How a per-destination output's failure is named: ``"fhir for EHR"``."""
    return f"{kind.value} for {destination}"
