"""Read views for the HTTP API, the operator console and the CLI.

Every function takes an open SQLAlchemy session (the caller owns it) and returns frozen
dataclasses, never ORM objects; lists come as a :class:`Page` with the total. Unknown IDs give
``None``; a bad filter or page raises :class:`worklist.errors.InvalidFilterError` naming the
parameter. No patient data is returned.

========================================  ==================================================
``list_studies(session, StudyFilter(...), offset=, limit=)``  studies, newest first, with revisions
``get_study(session, study_instance_uid)``                     one study: series, senders
``list_jobs(session, JobFilter(...), offset=, limit=)``        jobs, newest first
``get_job(session, job_id)``                                   timings, artifacts, deliveries, audit
``get_artifact(session, job_id, artifact_id)``                 one artifact (path, media type)
``dashboard(session, day, tz=)``                               a day's counts and the queues now
``queue_depths(session)`` / ``worker_leases(session)``         what waits; workers holding jobs
``dry_run_routes(session, study_instance_uid, routes)``        which route the study would take
========================================  ==================================================
"""

from worklist.views.common import MAX_PAGE_SIZE, Page
from worklist.views.jobs import (
    ACTIVE_JOB_STATES,
    ArtifactView,
    AuditEntry,
    DeliveryView,
    JobDetail,
    JobFilter,
    JobSummary,
    StageTimings,
    artifact_media_type,
    get_artifact,
    get_job,
    list_jobs,
)
from worklist.views.node import (
    Dashboard,
    DestinationFailures,
    QueueDepths,
    WorkerLease,
    dashboard,
    day_bounds,
    queue_depths,
    worker_leases,
)
from worklist.views.routes import RouteDryRun, RouteJudgement, dry_run_routes
from worklist.views.studies import (
    JobRef,
    OutcomeKind,
    RevisionOutcomeView,
    RevisionView,
    SeriesView,
    StudyDetail,
    StudyFilter,
    StudySummary,
    describe_outcome,
    get_study,
    list_studies,
)

__all__ = [
    "ACTIVE_JOB_STATES",
    "MAX_PAGE_SIZE",
    "ArtifactView",
    "AuditEntry",
    "Dashboard",
    "DeliveryView",
    "DestinationFailures",
    "JobDetail",
    "JobFilter",
    "JobRef",
    "JobSummary",
    "OutcomeKind",
    "Page",
    "QueueDepths",
    "RevisionOutcomeView",
    "RevisionView",
    "RouteDryRun",
    "RouteJudgement",
    "SeriesView",
    "StageTimings",
    "StudyDetail",
    "StudyFilter",
    "StudySummary",
    "WorkerLease",
    "artifact_media_type",
    "dashboard",
    "day_bounds",
    "describe_outcome",
    "dry_run_routes",
    "get_artifact",
    "get_job",
    "get_study",
    "list_jobs",
    "list_studies",
    "queue_depths",
    "worker_leases",
]
