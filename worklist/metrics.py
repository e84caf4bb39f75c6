"""Prometheus metrics of the worklist: revision outcomes, stage durations, deliveries, queues.

Counters and histograms are module-level :mod:`prometheus_client` objects,
counted by the steps where things happen (:mod:`worklist.pipeline`,
:mod:`worklist.delivery`); in multi-process mode (set up by the application
before it imports this module) each worker process writes its own file and
the web process sums them. Queue depths are read from the database when
Prometheus scrapes (:class:`QueueDepthCollector`), so they are right however
many processes work the queues. Labels carry no patient data: outcomes,
stages, states and configured destination names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import datetime

from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from worklist.destinations.protocol import DeliveryStatus
from worklist.jobs_models import Delivery, DeliveryState, Job, JobState
from worklist.models import RevisionOutcome, RevisionState, StudyRevision
from worklist.review_classes import metric_class
from worklist.review_models import FindingDecision, FindingOrigin, Review

__all__ = [
    "DELIVERIES",
    "DELIVERY_ATTEMPTS",
    "DELIVERY_RETRIES",
    "REVIEW_BOX_IOU",
    "REVIEW_FINDINGS_ADDED",
    "REVIEW_FINDINGS_DECIDED",
    "REVIEW_SIGNOFFS",
    "REVIEW_WAIT_SECONDS",
    "STAGES",
    "STAGE_SECONDS",
    "STUDY_REVISIONS",
    "QueueDepthCollector",
    "delivery_recorded",
    "queue_wait",
    "record_signed_review",
    "review_signed",
    "revision_routed",
    "stage_finished",
]

logger = logging.getLogger(__name__)

#: The ``stage`` label of :data:`STAGE_SECONDS`.
STAGES = ("queue_wait", "inference", "export", "delivery")

STUDY_REVISIONS = Counter(
    "radground_study_revisions",
    "Study revisions routed when they became ready, by outcome (job, no-route, own-output).",
    ["outcome"],
)
STAGE_SECONDS = Histogram(
    "radground_job_stage_duration_seconds",
    "Seconds a job spends in one stage: queue_wait (enqueued until an inference attempt "
    "claims it), inference (reading the images and the model), export (building and writing "
    "the outputs), delivery (one attempt at one destination).",
    ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0),
)
DELIVERY_ATTEMPTS = Counter(
    "radground_delivery_attempts",
    "Delivery attempts, by destination and result (delivered, retryable, final).",
    ["destination", "result"],
)
DELIVERY_RETRIES = Counter(
    "radground_delivery_retries",
    "Retries scheduled after a retryable failure, by destination.",
    ["destination"],
)
DELIVERIES = Counter(
    "radground_deliveries",
    "Deliveries that ended, by destination and result (delivered, failed).",
    ["destination", "result"],
)
REVIEW_FINDINGS_DECIDED = Counter(
    "radground_review_findings_decided",
    "Model findings in signed reviews, by class (the default model's class name, another "
    "vocabulary name, or 'other'), decision (accepted, rejected) and reject reason "
    "(wrong_place, not_present, duplicate, other; 'none' when accepted).",
    ["class", "decision", "reason"],
)
REVIEW_FINDINGS_ADDED = Counter(
    "radground_review_findings_added",
    "Findings radiologists added in signed reviews (the model missed them), by class.",
    ["class"],
)
REVIEW_BOX_IOU = Histogram(
    "radground_review_box_iou",
    "IoU of the model's box and the radiologist's final box of accepted model findings at "
    "sign-off (1: not moved), by class.",
    ["class"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)

REVIEW_SIGNOFFS = Counter(
    "radground_review_signoffs",
    "Reviews a radiologist signed, by route.",
    ["route"],
)
REVIEW_WAIT_SECONDS = Histogram(
    "radground_review_wait_seconds",
    "Seconds from a review's opening (the job awaiting review) to its sign-off, by route.",
    ["route"],
    buckets=(60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 259200.0),
)

for _outcome in RevisionOutcome:
    STUDY_REVISIONS.labels(_outcome.value)
_STAGE = {stage: STAGE_SECONDS.labels(stage) for stage in STAGES}


def revision_routed(outcome: RevisionOutcome) -> None:
    """Count a ready revision's outcome (once per revision: the caller counts a job only
    when it created it)."""
    STUDY_REVISIONS.labels(outcome.value).inc()


def stage_finished(stage: str, seconds: float) -> None:
    """Observe how long a job spent in ``stage`` (one of :data:`STAGES`)."""
    _STAGE[stage].observe(max(0.0, seconds))


def queue_wait(enqueued_at: datetime | None, claimed_at: datetime) -> None:
    """Observe the queue wait of an inference attempt that claimed its job at ``claimed_at``."""
    if enqueued_at is not None:
        stage_finished("queue_wait", (claimed_at - enqueued_at).total_seconds())


def delivery_recorded(destination: str, result: DeliveryStatus, *, retry: bool) -> None:
    """Count one recorded delivery attempt: its ``result``, and the retry it scheduled
    (``retry``) or the end of the delivery it made."""
    DELIVERY_ATTEMPTS.labels(destination, result.value).inc()
    if retry:
        DELIVERY_RETRIES.labels(destination).inc()
    else:
        DELIVERIES.labels(
            destination, "delivered" if result is DeliveryStatus.DELIVERED else "failed"
        ).inc()


def review_signed(route: str, waited_seconds: float) -> None:
    """Count one sign-off on ``route`` and observe how long its review waited."""
    REVIEW_SIGNOFFS.labels(route).inc()
    REVIEW_WAIT_SECONDS.labels(route).observe(max(0.0, waited_seconds))


def record_signed_review(review: Review) -> None:
    """Count the decisions of a review just signed (call once per sign-off, after its commit
    succeeded, with the review's findings loaded or loadable).

    Model findings count in :data:`REVIEW_FINDINGS_DECIDED` by the class the model gave them,
    their decision and reject reason; accepted ones with a model and a final box observe
    :data:`REVIEW_BOX_IOU`; findings the radiologist added count in
    :data:`REVIEW_FINDINGS_ADDED` by their final class. Class labels are bounded
    (:func:`worklist.review_classes.metric_class`), never free text.
    """
    for finding in review.findings:
        if finding.origin is not FindingOrigin.MODEL:
            if finding.decision is FindingDecision.ACCEPTED:
                REVIEW_FINDINGS_ADDED.labels(metric_class(finding.final_class)).inc()
            continue
        label = metric_class(finding.model_class)
        reason = finding.reject_reason.value if finding.reject_reason is not None else "none"
        REVIEW_FINDINGS_DECIDED.labels(label, finding.decision.value, reason).inc()
        if finding.decision is FindingDecision.ACCEPTED and finding.box_iou is not None:
            REVIEW_BOX_IOU.labels(label).observe(finding.box_iou)


class QueueDepthCollector(Collector):
    """Queue depths read from the database at each scrape.

    ``radground_jobs{state}`` (every job state, 0 included),
    ``radground_deliveries_pending{destination}`` (waiting for their next
    attempt; 0 for each of ``destinations``, the configured ones, when none
    waits), ``radground_study_revisions_receiving`` (revisions not yet
    complete), ``radground_jobs_awaiting_review{route}`` (0 for each of ``routes`` when none
    waits), and ``radground_queue_depth_up`` (0 when the database could not
    be read: the other three are then left out).
    """

    def __init__(
        self, sessions: sessionmaker[Session], *, destinations: Iterable[str] = (),
        routes: Iterable[str] = (),
    ) -> None:
        self._sessions = sessions
        self._destinations = tuple(destinations)
        self._routes = tuple(routes)

    def describe(self) -> list[Metric]:
        return []  # nothing is read when the collector is registered

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "radground_queue_depth_up", "1 when the queue depths could be read from the database."
        )
        try:
            families = self._read()
        except SQLAlchemyError as exc:
            logger.warning("Queue depths could not be read (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list[Metric]:
        with self._sessions() as session:
            jobs = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
            pending = session.execute(
                select(Delivery.destination, func.count())
                .where(Delivery.state == DeliveryState.PENDING)
                .group_by(Delivery.destination)
            ).all()
            awaiting = session.execute(
                select(Job.route, func.count())
                .where(Job.state == JobState.AWAITING_REVIEW)
                .group_by(Job.route)
            ).all()
            receiving = session.scalar(
                select(func.count())
                .select_from(StudyRevision)
                .where(StudyRevision.state == RevisionState.RECEIVING)
            )
        by_state = GaugeMetricFamily("radground_jobs", "Jobs by state.", labels=["state"])
        for state in JobState:
            by_state.add_metric([state.value], jobs.get(state, 0))
        deliveries = GaugeMetricFamily(
            "radground_deliveries_pending",
            "Deliveries waiting for their next attempt, by destination.",
            labels=["destination"],
        )
        counts = dict.fromkeys(self._destinations, 0) | {name: count for name, count in pending}
        for destination, count in sorted(counts.items()):
            deliveries.add_metric([destination], count)
        revisions = GaugeMetricFamily(
            "radground_study_revisions_receiving",
            "Study revisions still receiving (not yet complete).",
        )
        revisions.add_metric([], receiving or 0)
        review = GaugeMetricFamily(
            "radground_jobs_awaiting_review",
            "Jobs waiting for a radiologist's sign-off, by route.",
            labels=["route"],
        )
        waiting = dict.fromkeys(self._routes, 0) | {route: count for route, count in awaiting}
        for route, count in sorted(waiting.items()):
            review.add_metric([route], count)
        return [by_state, deliveries, revisions, review]
