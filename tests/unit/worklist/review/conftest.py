"""Jobs with a model's report, its review, and a radiologist's account, on SQLite and the real
PostgreSQL server (the ``migrated_engine`` fixture)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select

from engine.report import (
    Box,
    Finding,
    FindingKind,
    GroundedReport,
    ImageRef,
    ModelInfo,
    Region,
    Task,
    Text,
    derive_uid,
)
from tests.index_rows import CR_STORAGE, add_job, add_study
from worklist.accounts_models import Account, Role
from worklist.context import LoadedModel, PipelineContext
from worklist.db import make_session_factory, utcnow
from worklist.jobs_models import Job, JobState
from worklist.models import Instance, Series, Study
from worklist.review.records import create_review


@dataclass
class Recorder:
    """An Enqueuer that keeps what was sent."""

    sent: list[tuple] = field(default_factory=list)

    def inference(self, job_id: int) -> None:
        self.sent.append(("infer", job_id))

    def export(self, job_id: int) -> None:
        self.sent.append(("export", job_id))

    def delivery(self, delivery_id: int, attempt: int, countdown: float = 0.0) -> None:
        self.sent.append(("deliver", delivery_id, attempt))


def _no_model(name: str) -> LoadedModel:
    raise AssertionError(f"the review never loads model {name!r}")


@pytest.fixture
def ctx(migrated_engine, tmp_path: Path) -> PipelineContext:
    return PipelineContext(
        sessions=make_session_factory(migrated_engine),
        storage_root=tmp_path / "instances",
        outputs_root=tmp_path / "outputs",
        routes=(),
        models=_no_model,
        enqueue=Recorder(),
    )


MODEL = ModelInfo.for_version(name="default", version="1", manufacturer="RadGround")


def model_report(study_uid: str, image_uid: str, *, findings: int = 3) -> GroundedReport:
    """The model's report: ``findings`` boxes on one image, in English and Chinese."""
    names = [("Cardiomegaly", "心脏肥大"), ("Effusion", "积液"), ("Nodule", "结节")]
    return GroundedReport(
        study_instance_uid=study_uid,
        findings=tuple(
            Finding(
                kind=FindingKind.ABNORMALITY,
                label=Text({"en": en, "zh-CN": zh}),
                description=Text({"en": f"{en} is seen.", "zh-CN": f"可见{zh}。"}),
                regions=(Region(ImageRef(image_uid, CR_STORAGE), Box(10 + i, 10, 110 + i, 60)),),
                tracking_uid=derive_uid("test-finding", study_uid, i),
                confidence=0.8,
            )
            for i, (en, zh) in enumerate(names[:findings])
        ),
        impression=Text({"en": "Findings as listed.", "zh-CN": "所见如上。"}),
        model=MODEL,
        task=Task.DETECTION,
        raw_output="",
    )


@dataclass(frozen=True)
class Reviewed:
    """A job with a report (and its review when ``review``), and the uids the tests use."""

    job_id: int
    study_pk: int
    study_uid: str
    image_uid: str
    report: GroundedReport

    @property
    def uids(self) -> list[str]:
        return [f.tracking_uid for f in self.report.findings]


def add_reviewed_job(ctx, *, state: JobState = JobState.AWAITING_REVIEW, review: bool = True,
                     findings: int = 3, study_pk: int | None = None,
                     revision: int | None = None) -> Reviewed:
    """A job of a new study (or of study ``study_pk``, at ``revision``) in ``state``."""
    with ctx.sessions.begin() as session:
        study = add_study(session, revisions=2) if study_pk is None else session.get_one(
            Study, study_pk)
        study_pk = study.id
        image_uid = session.scalars(
            select(Instance.sop_instance_uid).join(Series).where(Series.study_pk == study_pk)
        ).first()
        report = model_report(study.study_instance_uid, image_uid, findings=findings)
        job = add_job(session, study, state=state, finished_at=utcnow(), revision=revision or 1)
        job.report_json = report.to_json()
        if review:
            create_review(session, job.id, report)
        return Reviewed(job.id, study_pk, study.study_instance_uid, image_uid, report)


@pytest.fixture
def radiologists(ctx) -> list[str]:
    with ctx.sessions.begin() as session:
        for name, full_name in (("ann", "Ann Smith"), ("bob", "")):
            session.add(Account(name=name, role=Role.RADIOLOGIST, full_name=full_name,
                                organisation="General Hospital", created_at=utcnow()))
    return ["ann", "bob"]


def job_state(ctx, job_id: int) -> JobState:
    with ctx.sessions() as session:
        return session.get_one(Job, job_id).state
