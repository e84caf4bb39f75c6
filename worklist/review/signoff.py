"""What the export step builds for a signed review: artifact set *n* from the reviewed report.

:func:`signed_set` is called by :func:`worklist.pipeline.run_export`: when the job's review is
signed, the export builds the sign-off's set instead of the model's (set 0), with
:class:`~exporters.protocol.SignOff` in the exporters' options (the SR VERIFIED with its
predecessors, the GSPS/KOS replaced, FHIR ``final``/``amended``, HL7 ``F``/``C``), and delivers
it to every destination of the route. :func:`held_destinations` says which destinations the
model's set goes to while a route holds outputs for review.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.report import Finding, GroundedReport, Text
from exporters.protocol import OutputKind, PredecessorDocument, SignOff, Verifier
from worklist.accounts_models import Account
from worklist.context import PipelineContext, StepError
from worklist.jobs_models import Artifact, Delivery, DeliveryState, Job
from worklist.models import Study
from worklist.review.records import final_finding, model_finding, split_tags
from worklist.review_models import FindingDecision, Review, ReviewFinding, ReviewState
from worklist.routing import ReviewPolicy, Route

__all__ = ["SignedSet", "built_again", "destinations_now", "reviewed_report", "signed_set"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignedSet:
    """A signed review's artifact set, as the export builds it.

    Parameters
    ----------
    number
        The sign-off's number: the ``artifact_set`` of its artifacts and deliveries.
    report
        The reviewed report (rejected findings removed, edited and added ones in, the reviewed
        languages only).
    sign_off
        What every exporter is told (``amends`` false; see :meth:`for_destination`).
    amended_destinations
        FHIR and HL7 destinations an earlier set of the job reached: their copy amends.
    """

    number: int
    report: GroundedReport
    sign_off: SignOff
    amended_destinations: frozenset[str] = frozenset()

    @property
    def languages(self) -> tuple[str, ...]:
        """The reviewed languages (the only ones published as verified)."""
        return self.report.languages

    def for_destination(self, name: str) -> SignOff:
        """The sign-off of one FHIR or HL7 destination's copy."""
        return dataclasses.replace(self.sign_off, amends=name in self.amended_destinations)

    def languages_of(self, wanted: Sequence[str]) -> tuple[str, ...]:
        """``wanted`` limited to the reviewed languages (all of those when none is left)."""
        kept = tuple(tag for tag in wanted if tag in self.languages)
        return kept or self.languages


def destinations_now(ctx: PipelineContext, route: Route, signed: SignedSet | None) -> list[str]:
    """The route's destinations the export delivers to now: all of them for a signed set or a
    route without review; only the DICOM ones (C-STORE, STOW-RS) while ``before_ehr`` holds the
    EHR's; none while ``before_all`` holds everything."""
    if signed is not None or route.review is ReviewPolicy.NONE:
        return list(route.destinations)
    if route.review is ReviewPolicy.BEFORE_ALL:
        return []
    ehr = set(ctx.fhir_targets) | set(ctx.hl7_targets)
    return [name for name in route.destinations if name not in ehr]


def signed_set(ctx: PipelineContext, session: Session, job: Job) -> SignedSet | None:
    """The signed set the export of ``job`` builds, or ``None`` (the model's set) when its
    review is not signed.

    Raises
    ------
    StepError
        The reviewed report cannot be made (no text left in the reviewed languages).
    """
    review = session.scalar(
        select(Review).where(Review.job_id == job.id, Review.state == ReviewState.SIGNED)
    )
    if review is None or review.signoff is None or review.signed_at is None:
        return None
    if job.report_json is None:
        raise StepError(f"job {job.id} has a signed review but no report")
    rows = list(session.scalars(
        select(ReviewFinding).where(ReviewFinding.review_id == review.id)
        .order_by(ReviewFinding.position)
    ))
    languages = split_tags(review.reviewed_languages)
    report = reviewed_report(GroundedReport.from_json(job.report_json), rows, languages)
    study_uid = session.get_one(Study, job.study_pk).study_instance_uid
    sign_off = SignOff(
        verifier=_verifier(ctx, session, review.signed_by or "unknown"),
        verified_at=review.signed_at,
        number=review.signoff,
        predecessors=_predecessors(ctx, session, job.id, review.signoff, study_uid),
        withdrawn=tuple(
            finding for row in rows
            if row.decision is FindingDecision.REJECTED
            and (finding := model_finding(row)) is not None
        ),
        edited=frozenset(
            row.tracking_uid for row in rows
            if row.decision is FindingDecision.ACCEPTED and _changed(row)
        ),
    )
    return SignedSet(
        number=review.signoff,
        report=report,
        sign_off=sign_off,
        amended_destinations=_reached_ehr(ctx, session, job.id, review.signoff),
    )


def _changed(row: ReviewFinding) -> bool:
    """Whether the radiologist added or changed a finding (they are its observer)."""
    if row.model_finding is None:
        return True
    return bool(json.loads(row.model_finding) != json.loads(row.final_finding))


def reviewed_report(
    report: GroundedReport, rows: Sequence[ReviewFinding], languages: Collection[str]
) -> GroundedReport:
    """The report a sign-off publishes: the accepted findings as they are now, in review order,
    and every text limited to the reviewed ``languages``.

    Raises
    ------
    StepError
        A text has none of the reviewed languages.
    """
    findings = tuple(
        _in_languages(final_finding(row), languages)
        for row in rows
        if row.decision is FindingDecision.ACCEPTED
    )
    return dataclasses.replace(
        report, findings=findings, impression=_text(report.impression, languages, "impression")
    )


def _in_languages(finding: Finding, languages: Collection[str]) -> Finding:
    return dataclasses.replace(
        finding,
        label=_text(finding.label, languages, "a finding's label"),
        description=_text(finding.description, languages, "a finding's description"),
    )


def _text(text: Text, languages: Collection[str], what: str) -> Text:
    kept = {tag: value for tag, value in text.items() if tag in languages}
    if not kept:
        raise StepError(f"sign-off: {what} has no text in the reviewed languages")
    return Text(kept)


def _verifier(ctx: PipelineContext, session: Session, account_name: str) -> Verifier:
    """The radiologist as the outputs name them (the account's full name, else its name)."""
    account = session.scalar(select(Account).where(Account.name == account_name))
    full_name = account.full_name.strip() if account is not None else ""
    return Verifier(
        name=full_name or account_name,
        organisation=account.organisation.strip() if account is not None else "",
        identifier=account_name,
        identifier_system=f"urn:radground:{ctx.scu_ae_title}:account",
    )


def _predecessors(
    ctx: PipelineContext, session: Session, job_id: int, number: int, study_uid: str
) -> tuple[PredecessorDocument, ...]:
    """The SRs of the job's latest set before ``number`` that has SRs (the model's, set 0,
    for a first sign-off), read from their files."""
    srs = list(session.scalars(
        select(Artifact).where(
            Artifact.job_id == job_id, Artifact.kind == OutputKind.SR.value,
            Artifact.artifact_set < number,
        ).order_by(Artifact.artifact_set.desc(), Artifact.id)
    ))
    if not srs:
        return ()
    latest = srs[0].artifact_set
    return tuple(
        _predecessor(ctx.outputs_root / a.path, a, study_uid)
        for a in srs if a.artifact_set == latest
    )


def _predecessor(path: Path, artifact: Artifact, study_uid: str) -> PredecessorDocument:
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=[
            "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"])
        return PredecessorDocument(
            sop_class_uid=str(ds.SOPClassUID),
            sop_instance_uid=str(ds.SOPInstanceUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
            study_instance_uid=str(ds.StudyInstanceUID),
            language=artifact.language,
        )
    except (OSError, InvalidDicomError, AttributeError) as exc:
        # the file was cleaned up: what was recorded when it was written says the same
        logger.warning("Predecessor SR file not readable (%s); using its recorded UIDs",
                       type(exc).__name__)
        if artifact.sop_class_uid is None or artifact.series_instance_uid is None:
            raise StepError("sign-off: a predecessor SR is neither readable nor recorded") from exc
        return PredecessorDocument(
            sop_class_uid=artifact.sop_class_uid,
            sop_instance_uid=artifact.object_uid,
            series_instance_uid=artifact.series_instance_uid,
            study_instance_uid=study_uid,
            language=artifact.language,
        )


def _reached_ehr(
    ctx: PipelineContext, session: Session, job_id: int, number: int
) -> frozenset[str]:
    """The FHIR and HL7 destinations an earlier set of the job was delivered to."""
    ehr: Mapping[str, object] = {**ctx.fhir_targets, **ctx.hl7_targets}
    reached = session.scalars(
        select(Delivery.destination).where(
            Delivery.job_id == job_id,
            Delivery.artifact_set < number,
            Delivery.state == DeliveryState.DONE,
        )
    ).all()
    return frozenset(name for name in reached if name in ehr)


def built_again(
    session: Session, job_id: int, number: int, kinds_by_uid: Mapping[str, str]
) -> str | None:
    """Why signed set ``number`` cannot be recorded: an exporter built an object of an earlier
    set again (the same UID: it does not honour ``ExportOptions.sign_off``), else None.

    ``kinds_by_uid`` maps each built object's UID to its output kind.
    """
    again = session.scalars(select(Artifact.object_uid).where(
        Artifact.job_id == job_id, Artifact.artifact_set != number,
        Artifact.object_uid.in_(list(kinds_by_uid)),
    )).all()
    if not again:
        return None
    kinds = ", ".join(sorted({kinds_by_uid[uid] for uid in again}))
    return (f"the {kinds} exporter(s) built an object of an earlier set again (the same UID): "
            "they do not honour the sign-off")
