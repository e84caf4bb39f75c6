"""A node's database with many jobs, filled fast for the web benchmark (``bench/web.py``).

The schema comes from the migrations (:func:`worklist.migrate.upgrade_database`), so the
indexes are the ones a node has; the rows go in with PostgreSQL's ``COPY`` (explicit primary
keys, sequences moved past them afterwards), then ``ANALYZE``. What is written looks like a
node that ran for ``days`` days: studies with their revisions, series and instances from a
handful of modalities and calling AE titles; one job per routed revision (a few studies were
sent twice and have two), most ``done``, some ``failed`` with a reason, a few ``dead`` or
``cancelled``, the latest ones still on their way; artifacts (SR and GSPS per language, a FHIR
Bundle) for jobs that exported; one DICOM and one FHIR delivery per job that got that far,
with attempts, retries and the peer's answer; the audit trail of each step. Made-up values, no
patient data.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from worklist.jobs_models import JobState

__all__ = ["FillReport", "fill_database"]

_CR = "1.2.840.10008.5.1.4.1.1.1"
_DX = "1.2.840.10008.5.1.4.1.1.1.1"
_CT = "1.2.840.10008.5.1.4.1.1.2"
_MR = "1.2.840.10008.5.1.4.1.1.4"
_SR = "1.2.840.10008.5.1.4.1.1.88.34"
_GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
#: (modality, SOP class, share of studies, instances per study)
_MODALITIES = (("DX", _DX, 0.60, (1, 2)), ("CR", _CR, 0.25, (1, 2)), ("CT", _CT, 0.10, (3, 6)),
               ("MR", _MR, 0.05, (3, 6)))
_CALLING_AES = ("CR_ROOM1", "CR_ROOM2", "DX_WARD3", "DX_ED", "PACS_MAIN", "CT_SCANNER")
_ROUTES = (("chest", "chest-default", 0.85), ("research", "chest-default", 0.15))
#: How jobs older than a few minutes ended ("cancelled" where this version has it).
_ENDED = ("done", "failed", "dead") + (("cancelled",) if "cancelled" in set(JobState) else ())
_ENDED_WEIGHTS = (0.93, 0.055, 0.005, 0.01)[: len(_ENDED)]
_UID_ROOT = "1.2.826.0.1.3680043.10.1418"  # a made-up root for the benchmark's UIDs


@dataclass
class FillReport:
    """What :func:`fill_database` wrote: rows per table, and ids the benchmark asks for."""

    rows: dict[str, int] = field(default_factory=dict)
    #: Job ids to open (done and failed jobs, with artifacts and deliveries), spread over time.
    job_ids: list[int] = field(default_factory=list)
    #: The span the jobs were created in.
    first_created_at: datetime | None = None
    last_created_at: datetime | None = None


def _uid(kind: int, number: int) -> str:
    return f"{_UID_ROOT}.{kind}.{number}"


def _weighted(rng: random.Random, choices: Sequence[tuple[Any, ...]], weight_index: int) -> Any:
    return rng.choices(choices, weights=[c[weight_index] for c in choices])[0]


class _Tables:
    """Rows per table, in ``COPY`` order (parents first)."""

    COLUMNS: ClassVar[dict[str, tuple[str, ...]]] = {
        "patients": ("id", "patient_id", "issuer_of_patient_id", "patients_name",
                     "patients_birth_date", "patients_sex"),
        "studies": ("id", "study_instance_uid", "patient_pk", "study_date", "study_time",
                    "accession_number", "study_description", "current_revision",
                    "instance_count", "first_received_at", "last_received_at"),
        "study_revisions": ("id", "study_pk", "revision", "state", "opened_at",
                            "last_received_at", "instances_received", "ready_at",
                            "ready_reason", "dispatch_claimed_at", "dispatched_at", "outcome",
                            "outcome_detail"),
        "series": ("id", "series_instance_uid", "study_pk", "modality", "series_number",
                   "series_description", "body_part_examined"),
        "instances": ("id", "sop_instance_uid", "series_pk", "sop_class_uid",
                      "transfer_syntax_uid", "instance_number", "size", "path",
                      "calling_ae_title", "received_at", "revision", "is_own_output"),
        "jobs": ("id", "study_pk", "revision", "route", "model", "state", "inference_starts",
                 "worker", "lease_expires_at", "retries", "created_at", "updated_at",
                 "enqueued_at", "inference_started_at", "inference_seconds", "export_seconds",
                 "finished_at", "last_error", "output_errors", "report_json"),
        "artifacts": ("id", "job_id", "kind", "language", "object_uid", "series_instance_uid",
                      "sop_class_uid", "path", "created_at"),
        "deliveries": ("id", "job_id", "destination", "protocol", "state", "attempts",
                       "next_attempt_at", "retry_until", "remaining_objects", "last_error",
                       "operation_outcome", "delivered_at"),
        "audit_events": ("id", "at", "actor", "action", "job_id", "detail", "source"),
    }

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in self.COLUMNS}

    def add(self, table: str, *values: Any) -> int:
        """Append a row whose first value is its id; returns that id."""
        self.rows[table].append(values)
        return int(values[0])

    def next_id(self, table: str) -> int:
        return len(self.rows[table]) + 1


#: Placeholders in the report template, replaced per job.
_STUDY, _IMAGE, _TRACK_1, _TRACK_2 = (f"{_UID_ROOT}.0.{n}" for n in range(1, 5))


def _report_template() -> str:
    """A two-finding bilingual GroundedReport (boxes on the study's first image) as JSON, with
    placeholder UIDs: what a job that finished inference keeps."""
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
    )

    image = ImageRef(_IMAGE, _DX)
    findings = (
        Finding(FindingKind.ABNORMALITY, Text({"en": "cardiomegaly", "zh-CN": "心脏增大"}),
                Text({"en": "The heart is enlarged.", "zh-CN": "心影增大。"}),
                (Region(image, Box(120.0, 210.0, 400.0, 430.0)),), _TRACK_1, confidence=0.81),
        Finding(FindingKind.ABNORMALITY, Text({"en": "effusion", "zh-CN": "胸腔积液"}),
                Text({"en": "Small left pleural effusion.", "zh-CN": "左侧少量胸腔积液。"}),
                (Region(image, Box(300.0, 380.0, 470.0, 500.0)),), _TRACK_2, confidence=0.64),
    )
    return GroundedReport(
        study_instance_uid=_STUDY, findings=findings,
        impression=Text({"en": "Cardiomegaly with a small left pleural effusion.",
                         "zh-CN": "心脏增大，伴左侧少量胸腔积液。"}),
        model=ModelInfo("chest-default", "1", "RadGround", f"{_UID_ROOT}.0.9"),
        task=Task.GROUNDED_REPORT,
        raw_output="<ref>cardiomegaly</ref><box>[[234, 410, 781, 839]]</box>",
    ).to_json()


def _job_rows(t: _Tables, rng: random.Random, *, study_pk: int, revision: int, study_uid: str,
              first_image: str, created: datetime, now: datetime, report: FillReport,
              report_json: str) -> None:
    """One job with what its state implies: artifacts, deliveries, audit events."""
    route, model, _ = _weighted(rng, _ROUTES, 2)
    age = (now - created).total_seconds()
    if age < 120:
        state = rng.choice(("queued", "inferring", "exporting", "delivering"))
    elif age < 3600 * 6 and rng.random() < 0.03:
        state = "delivering"  # a retry pending
    else:
        state = rng.choices(_ENDED, weights=_ENDED_WEIGHTS)[0]
    worker = f"worker:gpu-{rng.randint(1, 4)}:{rng.randint(1000, 60000)}"
    enqueued = created + timedelta(seconds=rng.uniform(0.01, 0.2))
    started = None if state in ("queued", "cancelled") else (
        enqueued + timedelta(seconds=rng.uniform(0.05, 30)))
    inference = None if state in ("queued", "inferring", "cancelled", "dead") else rng.uniform(
        0.3, 4.0)
    exported = state in ("delivering", "done") or (state == "failed" and rng.random() < 0.7)
    export_s = rng.uniform(0.2, 1.5) if exported else None
    finished = None
    if state in ("done", "failed", "dead", "cancelled") and started is not None:
        finished = started + timedelta(seconds=(inference or 1) + (export_s or 0)
                                       + rng.uniform(0.1, 3))
    elif state == "cancelled":
        finished = created + timedelta(seconds=rng.uniform(1, 60))
    last_error = None
    if state == "failed":
        last_error = rng.choice((
            ("not sent to pacs: association rejected (0x0002: calling AE not recognized); "
             "delivered to ehr"),
            "gave up after 12 attempts over 8 h: ehr answered 503 Service Unavailable",
            "no image the model is made for (lateral view)",
            "pixel data could not be decoded: JPEG 2000 codestream truncated",
        ))
    elif state == "dead":
        last_error = "inference started 3 times without finishing (worker killed?)"
    updated = finished or started or created
    job_id_next = t.next_id("jobs")
    job_id = t.add(
        "jobs", job_id_next, study_pk, revision, route, model, state,
        0 if started is None else (3 if state == "dead" else 1),
        worker if state in ("inferring",) else None,
        now + timedelta(seconds=60) if state == "inferring" else None,
        1 if rng.random() < 0.01 else 0, created, updated, enqueued, started, inference,
        export_s, finished, last_error, None,
        None if inference is None else report_json.replace(_STUDY, study_uid).replace(
            _IMAGE, first_image).replace(_TRACK_1, _uid(6, 2 * job_id_next)).replace(
            _TRACK_2, _uid(6, 2 * job_id_next + 1)),
    )
    actor = worker
    events = [(created, "node", "job-created", f"route={route} revision={revision}")]
    if started is not None:
        events.append((started, actor, "inference-started", "attempt 1"))
    if inference is not None and started is not None:
        events.append((started + timedelta(seconds=inference), actor, "inferred",
                       f"attempt 1: {rng.randint(0, 4)} findings, 2 languages"))
    if exported and started is not None:
        at = started + timedelta(seconds=(inference or 0) + (export_s or 0))
        events.append((at, actor.replace("gpu", "io"), "exported", "sr, gsps, fhir"))
        for kind, language, sop_class in (("sr", "en", _SR), ("sr", "zh-CN", _SR),
                                          ("gsps", "en", _GSPS), ("fhir", "en", None)):
            artifact_id = t.next_id("artifacts")
            object_uid = _uid(9, artifact_id)
            t.add("artifacts", artifact_id, job_id, kind, language, object_uid,
                  _uid(8, artifact_id) if sop_class else None, sop_class,
                  f"{study_uid}/r{revision}/{kind}-{language}-{object_uid}."
                  f"{'dcm' if sop_class else 'json'}", at)
        for destination, protocol in (("pacs", "dicom"), ("ehr", "fhir")):
            _delivery_rows(t, rng, job_id=job_id, destination=destination, protocol=protocol,
                           job_state=state, exported_at=at, finished=finished, events=events,
                           actor=actor.replace("gpu", "io"))
    if state == "done" and finished is not None:
        events.append((finished, actor.replace("gpu", "io"), "job-done", ""))
    elif state == "failed" and finished is not None:
        events.append((finished, actor, "job-failed", (last_error or "")[:60]))
    elif state == "dead" and finished is not None:
        events.append((finished, "node", "job-dead", last_error or ""))
    elif state == "cancelled" and finished is not None:
        events.append((finished, "web:operator1", "job-cancelled", ""))
    for at, who, action, detail in events:
        t.add("audit_events", t.next_id("audit_events"), at, who, action, job_id, detail,
              "10.0.0.12" if who.startswith("web:") else "")
    if state in ("done", "failed") and rng.random() < 0.01:
        report.job_ids.append(job_id)


def _delivery_rows(t: _Tables, rng: random.Random, *, job_id: int, destination: str,
                   protocol: str, job_state: str, exported_at: datetime,
                   finished: datetime | None, events: list[tuple[datetime, str, str, str]],
                   actor: str) -> None:
    at = exported_at + timedelta(seconds=rng.uniform(0.05, 0.5))
    if job_state == "done":
        state, attempts = "done", 1 if rng.random() < 0.95 else rng.randint(2, 4)
    elif job_state == "delivering":
        state, attempts = "pending", rng.randint(0, 3)
    else:
        state = rng.choice(("done", "failed"))
        attempts = 1 if state == "done" else rng.randint(1, 12)
    for attempt in range(1, attempts):
        events.append((at, actor, "delivery-retry",
                       f"{destination} attempt {attempt}, next at later"))
    pending_retry = state == "pending" and attempts > 0
    last_error = None
    if state == "failed" or attempts > 1 or pending_retry:
        last_error = ("503 Service Unavailable" if protocol == "fhir"
                      else "association rejected (0x0002: calling AE not recognized)")
    delivered = (finished or at) if state == "done" else None
    t.add("deliveries", t.next_id("deliveries"), job_id, destination, protocol, state, attempts,
          at + timedelta(minutes=5) if pending_retry else None,
          at + timedelta(hours=8) if last_error else None, None, last_error,
          '{"resourceType": "OperationOutcome"}' if protocol == "fhir" and last_error else None,
          delivered)
    if state == "done" and delivered is not None:
        events.append((delivered, actor, "delivered", f"{destination} attempt {attempts}"))
    elif state == "failed":
        events.append((finished or at, actor, "delivery-failed", destination))


def _generate(jobs: int, *, days: int, seed: int, now: datetime) -> tuple[_Tables, FillReport]:
    rng = random.Random(seed)
    t, report = _Tables(), FillReport()
    report_json = _report_template()
    start = now - timedelta(days=days)
    span = (now - start).total_seconds()
    # arrivals spread over the days (busier in working hours), the newest last
    times = sorted(start + timedelta(seconds=rng.uniform(0, span)) for _ in range(jobs))
    recent = min(50, jobs // 100)  # the newest still on their way
    times[len(times) - recent:] = sorted(
        now - timedelta(seconds=rng.uniform(0, 100)) for _ in range(recent))
    made = 0
    patient_pk = 0
    for arrival in times:
        if made >= jobs:
            break
        if patient_pk == 0 or rng.random() < 0.7:
            patient_pk = t.add("patients", t.next_id("patients"), f"BENCH{t.next_id('patients')}",
                               "", "", "", "")
        study_pk = t.next_id("studies")
        study_uid = _uid(1, study_pk)
        modality, sop_class, _, (low, high) = _weighted(rng, _MODALITIES, 2)
        count = rng.randint(low, high)
        revisions = 2 if rng.random() < 0.04 else 1
        aet = rng.choice(_CALLING_AES)
        first = arrival - timedelta(seconds=rng.uniform(5, 60))
        t.add("studies", study_pk, study_uid, patient_pk, arrival.strftime("%Y%m%d"),
              arrival.strftime("%H%M%S"), f"A{study_pk:08d}", f"{modality} CHEST",
              revisions, count, first, arrival + timedelta(minutes=10 * (revisions - 1)))
        series_pk = t.add("series", t.next_id("series"), _uid(2, study_pk), study_pk, modality,
                          1, f"{modality} series", "CHEST")
        first_image = _uid(3, t.next_id("instances"))
        for number in range(1, count + 1):
            instance_pk = t.next_id("instances")
            sop_uid = _uid(3, instance_pk)
            t.add("instances", instance_pk, sop_uid, series_pk, sop_class, _EXPLICIT_LE, number,
                  rng.randint(200_000, 9_000_000), f"{study_uid}/{_uid(2, study_pk)}/{sop_uid}.dcm",
                  aet, first + timedelta(seconds=number), revisions, False)
        for revision in range(1, revisions + 1):
            opened = first + timedelta(minutes=10 * (revision - 1))
            ready = opened + timedelta(seconds=rng.uniform(30, 40))
            routed = made < jobs and rng.random() < 0.97
            outcome, detail = ("job", "chest") if routed else ("no-route", "chest: modality")
            t.add("study_revisions", t.next_id("study_revisions"), study_pk, revision, "ready",
                  opened, opened + timedelta(seconds=count), count, ready, "idle", ready, ready,
                  outcome, detail)
            if routed:
                _job_rows(t, rng, study_pk=study_pk, revision=revision, study_uid=study_uid,
                          first_image=first_image, created=min(ready, now), now=now,
                          report=report, report_json=report_json)
                made += 1
    report.first_created_at, report.last_created_at = times[0], times[-1]
    return t, report


def fill_database(url: str, jobs: int, *, days: int = 30, seed: int = 14,
                  progress: Callable[[str, int], None] | None = None) -> FillReport:
    """Write ``jobs`` jobs and everything around them into the migrated database at ``url``
    (``postgresql://``); ``progress(table, rows)`` is called after each table."""
    import psycopg

    now = datetime.now(UTC)
    tables, report = _generate(jobs, days=days, seed=seed, now=now)
    with psycopg.connect(url) as connection:
        for table, columns in _Tables.COLUMNS.items():
            rows = tables.rows[table]
            with connection.cursor() as cursor:
                with cursor.copy(
                    f"COPY {table} ({', '.join(columns)}) FROM STDIN"
                ) as copy:
                    for row in rows:
                        copy.write_row(row)
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), %s)",
                    (max(len(rows), 1),),
                )
            report.rows[table] = len(rows)
            if progress is not None:
                progress(table, len(rows))
        connection.commit()
        connection.autocommit = True
        connection.execute("VACUUM ANALYZE")
    return report

