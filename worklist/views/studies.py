"""Read views of the study index: studies, their revisions and what became of each.

Every function takes an open session and returns frozen dataclasses (never ORM objects), so the
HTTP API, the console and the CLI show the same things. No patient data is returned: studies are
named by their UIDs, dates and descriptions only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import and_, case, exists, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from worklist.jobs_models import Job, JobState
from worklist.models import (
    Instance,
    RevisionOutcome,
    RevisionState,
    Series,
    Study,
    StudyRevision,
)
from worklist.views.common import (
    Page,
    check_page,
    check_period,
    check_text,
    in_period,
    studies_from_calling_ae,
    studies_with_modality,
)

__all__ = [
    "JobRef",
    "OutcomeKind",
    "RevisionOutcomeView",
    "RevisionView",
    "SeriesView",
    "StudyDetail",
    "StudyFilter",
    "StudySummary",
    "describe_outcome",
    "get_study",
    "list_studies",
]

#: What became of a revision: a job, ``no-route`` (skipped, ``detail`` says why), ``own-output``
#: (RadGround's own results routed back), ``waiting`` (ready, not routed yet), ``not-recorded``
#: (routed by a version that kept no outcome) or ``receiving`` (instances still arriving).
OutcomeKind = Literal["job", "no-route", "own-output", "waiting", "not-recorded", "receiving"]


def describe_outcome(
    state: RevisionState,
    outcome: RevisionOutcome | None,
    detail: str | None,
    *,
    dispatched: bool,
    job_id: int | None,
    job_state: str | None,
) -> str:
    """What became of a study revision, for people: ``job 7 done``, ``job 8 failed``,
    ``skipped: no route (modality)``, ``skipped: own output``, ``waiting`` (ready,
    not routed yet), ``not recorded`` (routed by a version that kept no outcome)
    or ``-`` (still receiving)."""
    if job_id is not None:
        return f"job {job_id} {job_state}"
    if outcome is RevisionOutcome.NO_ROUTE:
        return f"skipped: no route ({detail or 'no reason recorded'})"
    if outcome is RevisionOutcome.OWN_OUTPUT:
        return "skipped: own output"
    if state is RevisionState.READY:
        return "not recorded" if dispatched else "waiting"
    return "-"


@dataclass(frozen=True)
class JobRef:
    """A job of a revision: enough to link to it."""

    id: int
    state: JobState
    route: str


@dataclass(frozen=True)
class RevisionOutcomeView:
    """What became of one study revision."""

    kind: OutcomeKind
    #: Why no route matched (the failed conditions' names), or the job's route.
    detail: str | None
    #: The revision's jobs (one per route that took it; routing picks one).
    jobs: tuple[JobRef, ...]
    #: The same for people (:func:`describe_outcome`): "job 7 done", "skipped: no route (modality)".
    text: str


@dataclass(frozen=True)
class RevisionView:
    """One round of arrivals of a study (``revision`` counts from 1)."""

    revision: int
    state: RevisionState
    opened_at: datetime
    last_received_at: datetime
    instances_received: int
    ready_at: datetime | None
    #: "idle", "force-complete" or "reprocess".
    ready_reason: str | None
    outcome: RevisionOutcomeView


@dataclass(frozen=True)
class StudySummary:
    """A row of the studies list."""

    study_instance_uid: str
    #: DA, "" when the sender gave none.
    study_date: str
    study_description: str
    #: The series' modalities, sorted.
    modalities: tuple[str, ...]
    series_count: int
    instance_count: int
    current_revision: int
    #: The current revision's state.
    state: RevisionState
    first_received_at: datetime
    last_received_at: datetime
    #: Every revision, oldest first; the last is the current one.
    revisions: tuple[RevisionView, ...]

    @property
    def outcome(self) -> RevisionOutcomeView:
        """What became of the current revision."""
        return self.revisions[-1].outcome


@dataclass(frozen=True)
class SeriesView:
    """A series of a study."""

    series_instance_uid: str
    modality: str
    series_number: int | None
    series_description: str
    body_part_examined: str
    instance_count: int
    #: Only RadGround's own outputs (routed back by the PACS): never processed.
    own_output: bool


@dataclass(frozen=True)
class StudyDetail:
    """One study: its summary, series and the AE titles that sent it."""

    summary: StudySummary
    series: tuple[SeriesView, ...]
    calling_ae_titles: tuple[str, ...]


@dataclass(frozen=True)
class StudyFilter:
    """Which studies :func:`list_studies` returns; every field left ``None`` matches all.

    Times are timezone-aware; periods include their start and exclude their end.
    """

    #: The current revision's state.
    state: RevisionState | None = None
    #: The state of the current revision's job.
    job_state: JobState | None = None
    #: What routing decided for the current revision.
    outcome: RevisionOutcome | None = None
    #: Last instance received at or after this time.
    received_from: datetime | None = None
    #: Last instance received before this time.
    received_until: datetime | None = None
    #: A series of this modality (e.g. "DX").
    modality: str | None = None
    #: An instance sent by this calling AE title.
    calling_ae_title: str | None = None
    #: Study Instance UIDs that start with this.
    study_instance_uid: str | None = None

    def __post_init__(self) -> None:
        check_period(
            self.received_from, self.received_until,
            start_name="received_from", end_name="received_until",
        )
        check_text("modality", self.modality, max_length=16)
        check_text("calling_ae_title", self.calling_ae_title, max_length=16)
        check_text("study_instance_uid", self.study_instance_uid, max_length=64)

    @property
    def needs_revision(self) -> bool:
        """Whether the clauses read the current ``StudyRevision`` (it must be joined)."""
        return self.state is not None or self.outcome is not None

    def clauses(self) -> list[ColumnElement[bool]]:
        """The WHERE clauses over ``Study`` (joined to its current ``StudyRevision`` when
        :attr:`needs_revision`)."""
        found = in_period(Study.last_received_at, self.received_from, self.received_until)
        if self.state is not None:
            found.append(StudyRevision.state == self.state)
        if self.outcome is not None:
            found.append(StudyRevision.outcome == self.outcome)
        if self.job_state is not None:
            found.append(
                exists().where(
                    Job.study_pk == Study.id,
                    Job.revision == Study.current_revision,
                    Job.state == self.job_state,
                )
            )
        if self.modality is not None:
            found.append(Study.id.in_(studies_with_modality(self.modality)))
        if self.calling_ae_title is not None:
            found.append(Study.id.in_(studies_from_calling_ae(self.calling_ae_title)))
        if self.study_instance_uid is not None:
            prefix = self.study_instance_uid.strip()
            found.append(Study.study_instance_uid.startswith(prefix, autoescape=True))
        return found


_CURRENT = and_(
    StudyRevision.study_pk == Study.id, StudyRevision.revision == Study.current_revision
)


def list_studies(
    session: Session, filters: StudyFilter | None = None, *, offset: int = 0, limit: int = 50
) -> Page[StudySummary]:
    """Studies matching ``filters``, the most recently received first, with every revision and
    its outcome.

    Raises
    ------
    worklist.errors.InvalidFilterError
        ``offset`` or ``limit`` is out of range (``parameter`` names it).
    """
    check_page(offset, limit)
    filters = filters or StudyFilter()
    clauses = filters.clauses()
    count = select(func.count()).select_from(Study)
    query = select(Study)
    if filters.needs_revision:  # the join costs a scan of every revision: only when filtered on
        count = count.join(StudyRevision, _CURRENT)
        query = query.join(StudyRevision, _CURRENT)
    total = session.scalar(count.where(*clauses)) or 0
    studies = list(
        session.scalars(
            query.where(*clauses)
            .order_by(Study.last_received_at.desc(), Study.id.desc())
            .offset(offset)
            .limit(limit)
        )
    )
    return Page(tuple(_summaries(session, studies)), total, offset, limit)


def get_study(session: Session, study_instance_uid: str) -> StudyDetail | None:
    """One study by its Study Instance UID, or ``None`` when it is not in the index."""
    study = session.scalar(select(Study).where(Study.study_instance_uid == study_instance_uid))
    if study is None:
        return None
    [summary] = _summaries(session, [study])
    counts: dict[int, tuple[int, bool]] = {
        series_pk: (count, bool(all_own))
        for series_pk, count, all_own in session.execute(
            select(
                Instance.series_pk,
                func.count(Instance.id),
                func.min(case((Instance.is_own_output, 1), else_=0)),
            )
            .join(Series, Series.id == Instance.series_pk)
            .where(Series.study_pk == study.id)
            .group_by(Instance.series_pk)
        )
    }
    series = tuple(
        SeriesView(
            series_instance_uid=s.series_instance_uid,
            modality=s.modality,
            series_number=s.series_number,
            series_description=s.series_description,
            body_part_examined=s.body_part_examined,
            instance_count=counts.get(s.id, (0, False))[0],
            own_output=counts.get(s.id, (0, False))[1],
        )
        for s in session.scalars(
            select(Series).where(Series.study_pk == study.id).order_by(
                Series.series_number, Series.id
            )
        )
    )
    senders = tuple(
        session.scalars(
            select(Instance.calling_ae_title)
            .join(Series, Series.id == Instance.series_pk)
            .where(Series.study_pk == study.id)
            .distinct()
            .order_by(Instance.calling_ae_title)
        )
    )
    return StudyDetail(summary=summary, series=series, calling_ae_titles=senders)


def _summaries(session: Session, studies: Iterable[Study]) -> list[StudySummary]:
    """Summaries of ``studies`` (in that order): three queries for the whole page."""
    studies = list(studies)
    pks = [s.id for s in studies]
    if not pks:
        return []
    modalities: dict[int, set[str]] = defaultdict(set)
    series_counts: dict[int, int] = defaultdict(int)
    for study_pk, modality in session.execute(
        select(Series.study_pk, Series.modality).where(Series.study_pk.in_(pks))
    ):
        series_counts[study_pk] += 1
        if modality:
            modalities[study_pk].add(modality)
    jobs: dict[tuple[int, int], list[JobRef]] = defaultdict(list)
    for study_pk, revision, job_id, state, route in session.execute(
        select(Job.study_pk, Job.revision, Job.id, Job.state, Job.route)
        .where(Job.study_pk.in_(pks))
        .order_by(Job.id)
    ):
        jobs[(study_pk, revision)].append(JobRef(job_id, state, route))
    revisions: dict[int, list[RevisionView]] = defaultdict(list)
    for row in session.scalars(
        select(StudyRevision)
        .where(StudyRevision.study_pk.in_(pks))
        .order_by(StudyRevision.study_pk, StudyRevision.revision)
    ):
        revisions[row.study_pk].append(
            _revision_view(row, tuple(jobs[(row.study_pk, row.revision)]))
        )
    return [
        StudySummary(
            study_instance_uid=study.study_instance_uid,
            study_date=study.study_date,
            study_description=study.study_description,
            modalities=tuple(sorted(modalities[study.id])),
            series_count=series_counts[study.id],
            instance_count=study.instance_count,
            current_revision=study.current_revision,
            state=revisions[study.id][-1].state,
            first_received_at=study.first_received_at,
            last_received_at=study.last_received_at,
            revisions=tuple(revisions[study.id]),
        )
        for study in studies
    ]


def _revision_view(revision: StudyRevision, jobs: tuple[JobRef, ...]) -> RevisionView:
    dispatched = revision.dispatched_at is not None
    kind: OutcomeKind
    if jobs:
        kind = "job"
    elif revision.outcome is RevisionOutcome.NO_ROUTE:
        kind = "no-route"
    elif revision.outcome is RevisionOutcome.OWN_OUTPUT:
        kind = "own-output"
    elif revision.state is RevisionState.READY:
        kind = "not-recorded" if dispatched else "waiting"
    else:
        kind = "receiving"
    latest = jobs[-1] if jobs else None
    text = describe_outcome(
        revision.state,
        revision.outcome,
        revision.outcome_detail,
        dispatched=dispatched,
        job_id=latest.id if latest else None,
        job_state=latest.state.value if latest else None,
    )
    return RevisionView(
        revision=revision.revision,
        state=revision.state,
        opened_at=revision.opened_at,
        last_received_at=revision.last_received_at,
        instances_received=revision.instances_received,
        ready_at=revision.ready_at,
        ready_reason=revision.ready_reason,
        outcome=RevisionOutcomeView(kind, revision.outcome_detail, jobs, text),
    )

