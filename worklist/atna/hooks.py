"""Where imaging events happen, turned into audit messages.

- :func:`scp_hooks`: the Storage SCP's association hooks → Security Alert for a refused
  association, DICOM Instances Transferred (received) per study per association.
- :func:`delivery_attempted`: a delivery attempt → DICOM Instances Transferred (sent) to that
  destination.
- :func:`instances_stored_over_http`: instances a STOW-RS request stored → DICOM Instances
  Transferred (received) per study.
- :func:`data_exported`: studies written out of the node by a person or process (``review
  export``) → Export.
- :func:`study_objects`: the participant objects of indexed studies, for any of these.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.associations import AssociationEnded, AssociationRefused
from worklist import atna
from worklist.atna import events
from worklist.atna.trail import AuditTrail
from worklist.context import PipelineContext
from worklist.destinations import DeliveryOutcome
from worklist.jobs_models import Artifact, Delivery, Job
from worklist.models import Instance, Patient, Series, Study

__all__ = [
    "data_exported",
    "delivery_attempted",
    "instances_stored_over_http",
    "scp_hooks",
    "study_objects",
]

logger = logging.getLogger(__name__)

def scp_hooks(trail: AuditTrail) -> tuple[
    Callable[[AssociationRefused], None], Callable[[AssociationEnded], None]
]:
    """``on_association_refused`` and ``on_association_ended`` for
    :class:`~dicom_node.scp.StorageSCP`, recording into ``trail``."""

    def refused(refusal: AssociationRefused) -> None:
        trail.event(
            events.association_refused,
            peer=events.DicomPeer(refusal.calling_ae_title, refusal.peer_host),
            reason=f"association refused: {refusal.reason}", at=refusal.at,
        )

    def ended(association: AssociationEnded) -> None:
        peer = events.DicomPeer(association.calling_ae_title, association.peer_host)
        by_study: dict[str, list[Any]] = {}
        for instance in association.instances:
            by_study.setdefault(instance.study_instance_uid, []).append(instance)
        for study_uid, instances in by_study.items():
            first = instances[0]
            trail.event(
                events.instances_transferred, received=True, peer=peer, at=association.at,
                study=events.StudyObjects(
                    study_instance_uid=study_uid,
                    sop_class_uids=tuple(i.sop_class_uid for i in instances),
                    patient_id=first.patient_id,
                    issuer_of_patient_id=first.issuer_of_patient_id,
                    accession_number=first.accession_number,
                ),
            )

    return refused, ended


def delivery_attempted(ctx: PipelineContext, delivery_id: int, name: str,
                       outcome: DeliveryOutcome) -> None:
    """Record DICOM Instances Transferred (sent) for one delivery attempt to destination
    ``name``, delivered or not. Never raises."""
    if atna.installed() is None:
        return
    try:
        study = _delivered_study(ctx, delivery_id)
    except Exception as exc:  # noqa: BLE001 - auditing never stops the work it audits
        logger.error("Delivery %d: no audit message (%s)", delivery_id, type(exc).__name__)
        return
    if study is None:
        return
    atna.record(
        events.instances_transferred, received=False, peer=_peer(name, ctx.destinations.get(name)),
        study=study, succeeded=outcome.ok,
        outcome_description="" if outcome.ok else (outcome.log_text or outcome.status.value),
    )


def _peer(name: str, target: object) -> events.DicomPeer:
    """The destination as an audit participant: AE title and host for DICOM, the URL for
    HTTP, host and port for MLLP."""
    destination = getattr(target, "destination", None)
    if destination is not None:  # DicomTarget
        return events.DicomPeer(destination.ae_title, destination.host)
    url = getattr(target, "base_url", None) or getattr(target, "url", None)
    if url:
        return events.DicomPeer("", urlsplit(str(url)).hostname or "", url=str(url))
    host = str(getattr(target, "host", "") or "")
    port = getattr(target, "port", None)
    return events.DicomPeer("", host, url=f"mllp://{host}:{port}" if host else name)


def _delivered_study(ctx: PipelineContext, delivery_id: int) -> events.StudyObjects | None:
    with ctx.sessions() as session:
        delivery = session.get(Delivery, delivery_id)
        job = session.get(Job, delivery.job_id) if delivery is not None else None
        if job is None:
            return None
        study, patient = session.execute(
            select(Study, Patient).join(Patient, Study.patient_pk == Patient.id)
            .where(Study.id == job.study_pk)
        ).one()
        sop_classes = tuple(
            uid for uid in session.scalars(
                select(Artifact.sop_class_uid).where(Artifact.job_id == job.id)
            ) if uid
        )
        return events.StudyObjects(
            study_instance_uid=study.study_instance_uid,
            sop_class_uids=sop_classes,
            patient_id=patient.patient_id,
            issuer_of_patient_id=patient.issuer_of_patient_id,
            accession_number=study.accession_number,
        )


def study_objects(session: Session, study_instance_uids: Sequence[str]) -> list[
    events.StudyObjects
]:
    """The indexed studies among ``study_instance_uids`` as audit participant objects (their
    instances' SOP classes, patient and accession number), in the order given."""
    found: list[events.StudyObjects] = []
    for uid in study_instance_uids:
        row = session.execute(
            select(Study, Patient).join(Patient, Study.patient_pk == Patient.id)
            .where(Study.study_instance_uid == uid)
        ).first()
        if row is None:
            continue
        study, patient = row
        sop_classes = tuple(session.scalars(
            select(Instance.sop_class_uid).join(Series, Instance.series_pk == Series.id)
            .where(Series.study_pk == study.id).order_by(Instance.id)
        ))
        found.append(events.StudyObjects(
            study_instance_uid=uid, sop_class_uids=sop_classes, patient_id=patient.patient_id,
            issuer_of_patient_id=patient.issuer_of_patient_id,
            accession_number=study.accession_number,
        ))
    return found


def data_exported(session: Session, *, exporter: str, destination: str,
                  study_instance_uids: Sequence[str], client_address: str = "",
                  succeeded: bool = True) -> None:
    """Record an Export (PS3.15 A.5.3.6): ``exporter`` (an account or ``cli:USER``) wrote the
    studies out of the node to ``destination`` (a ``file://`` URI for a directory, or a URL).
    The command that exports calls it once per export, after writing. Never raises."""
    if atna.installed() is None:
        return
    try:
        studies = study_objects(session, study_instance_uids)
    except Exception as exc:  # noqa: BLE001 - auditing never stops the work it audits
        logger.error("Export: no audit message (%s)", type(exc).__name__)
        return
    atna.record(
        events.data_export, exporter=exporter, destination=destination, studies=studies,
        client_address=client_address, succeeded=succeeded,
    )


def instances_stored_over_http(
    sessions: Any, stored: Sequence[tuple[str, str]], *, user: str, client_address: str,
) -> None:
    """Record DICOM Instances Transferred (received) for one STOW-RS request: ``stored`` holds
    the (Study Instance UID, SOP Class UID) of each instance it stored; one message per study,
    its patient read from the index. ``sessions`` makes database sessions. Never raises."""
    if atna.installed() is None or not stored:
        return
    by_study: dict[str, list[str]] = {}
    for study_uid, sop_class_uid in stored:
        by_study.setdefault(study_uid, []).append(sop_class_uid)
    peer = events.DicomPeer("", client_address, user=user)
    try:
        with sessions() as session:
            indexed = {s.study_instance_uid: s for s in study_objects(session, list(by_study))}
    except Exception as exc:  # noqa: BLE001 - auditing never stops the work it audits
        logger.error("STOW-RS: patients not read for the audit message (%s)", type(exc).__name__)
        indexed = {}
    for study_uid, sop_classes in by_study.items():
        known = indexed.get(study_uid)
        atna.record(
            events.instances_transferred, received=True, peer=peer,
            study=events.StudyObjects(
                study_instance_uid=study_uid, sop_class_uids=tuple(sop_classes),
                patient_id=known.patient_id if known else "",
                issuer_of_patient_id=known.issuer_of_patient_id if known else "",
                accession_number=known.accession_number if known else "",
            ),
        )
