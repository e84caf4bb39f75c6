"""Turnaround benchmark: studies through Orthanc → RadGround → SR+GSPS in Orthanc and FHIR in an
EHR.

For each runtime shape and GPU-worker count, in one run on this machine:

* ``embedded``: ``radground serve`` (SQLite index, SQLite-file Celery broker),
  ``workers.gpu_processes`` = 1 or 2, one io worker;
* ``embedded-polling``: the same with ``workers.broker_url = "sqla+sqlite:///..."``,
  kombu's stock SQLite transport (polls every 1 s, no wake-up on publish):
  what :mod:`worklist.embedded_broker` buys;
* ``cluster``: ``radground node`` + 1 or 2 ``radground worker --queues gpu`` + one
  ``radground worker --queues io`` on Redis (DB 9, flushed before and after) and a
  fresh PostgreSQL database (dropped after).

Each configuration gets fresh studies (one 1024x1024 chest DX image each, made
from ``../shared/data/nih-cxr-boxes/images``), uploaded to a real Orthanc and
sent to RadGround with Orthanc's ``/modalities/RADGROUND/store``. The route sends
SR+GSPS back to Orthanc and a FHIR transaction to :class:`FhirTestServer`.
Three phases per configuration:

1. warm-up: two studies per GPU worker (model loading is not measured);
2. ``sequential``: studies sent one at a time, the next after the previous was
   delivered: the turnaround of an unloaded node (the "pipeline overhead" goal);
3. ``burst``: all studies sent back to back: throughput (studies/min from the
   first ready to the last delivered), and turnaround under load (queueing).

Per study, from the database's own timestamps: turnaround = revision ready →
last delivery done, split into stages (ready → job created, → inference start,
inference, → export start, export, → delivered). The idle wait before "ready"
(completion.idle_seconds, policy rather than overhead) is reported apart.

The peer is the model itself: ``analyze_study`` with ``OnnxDetector`` on the same
images in this process (pixel preparation + ONNX Runtime + decoding), before the
services start. Overhead = turnaround − that model time. Ratios: 2 / 1 GPU
workers throughput, cluster / embedded p95. RadGround's logs are scanned for
deadlocks, task and delivery retries and broker losses, which explain outliers;
a shared Redis restarted by someone else during a run invalidates it (detected).

``--what-if-poll 0.1`` adds embedded configurations whose processes get the
embedded broker's polling interval (0.2 s as shipped: how often a waiting
worker looks for messages when no publisher woke it,
:mod:`worklist.embedded_broker`) patched through a ``sitecustomize`` on
PYTHONPATH, to show what that one setting costs. It is labelled a what-if:
RadGround as shipped does not set it.

``--what-if-accelerator 400`` adds configurations (each mode, each worker
count) in which the gpu workers' model also spends 400 ms per image *off the
CPU* (a sleep after the real inference, patched in the same way): the shape of
a GPU-bound model, where a worker waits on its accelerator. On a 2-core machine
the CPU-bound default model cannot show throughput scaling with workers (the
node, the io worker, Orthanc and the EHR stand-in share the cores); this shows
whether the pipeline itself lets a second gpu worker double throughput when
inference is the bottleneck. Labelled a what-if; the outputs are the real model's.

Usage::

    .venv/bin/python bench/turnaround.py --quick       # 20 burst + 5 sequential studies per
    configuration .venv/bin/python bench/turnaround.py               # 100 burst + 10 sequential
    .venv/bin/python bench/turnaround.py --modes embedded --workers 1 --studies 50
    .venv/bin/python bench/turnaround.py --quick --modes embedded,embedded-polling --workers 1
    .venv/bin/python bench/turnaround.py --quick --private-redis --what-if-poll 0.1
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"
IMAGES = SHARED / "nih-cxr-boxes" / "images"

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench._processes import (
    REDIS_URL,
    ProcessGroup,
    accepts,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    redis_call,
    redis_run_id,
    start_private_redis,
    wait_until,
)

PATIENT_SYSTEM = "urn:oid:2.25.1234"
STAGES = ("dispatch", "to gpu", "inference", "to export", "export", "deliver")
#: Per-destination detail of the "deliver" stage (overlapping, not added up).
DELIVERIES = {
    "PACS": "export done → SR+GSPS stored in Orthanc",
    "EHR": "export done → FHIR transaction answered",
}
STAGE_HELP = {
    "dispatch": "ready → job created (completion monitor)",
    "to gpu": "job created → inference started (enqueue, broker, gpu queue wait)",
    "inference": "inference_seconds (pixels + model + parse, in the worker)",
    "to export": "inference done → export started (broker, io queue wait)",
    "export": "export_seconds (SR, GSPS, FHIR built and written)",
    "deliver": "export done → last delivery done (io queue wait, C-STORE, FHIR POST)",
}


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyTiming:
    """One study's timestamps from RadGround's database, as seconds."""

    study_instance_uid: str
    image: str
    idle: float  # last instance received → ready (policy: completion.idle_seconds)
    ready_at: datetime
    delivered_at: datetime
    turnaround: float
    inference: float
    stages: dict[str, float]


@dataclass
class Phase:
    name: str
    timings: list[StudyTiming] = field(default_factory=list)
    #: Seconds Orthanc took to send all the phase's studies to RadGround.
    send_seconds: float = 0.0

    @property
    def span(self) -> float:
        first = min(t.ready_at for t in self.timings)
        last = max(t.delivered_at for t in self.timings)
        return (last - first).total_seconds()

    def throughput(self) -> float:
        """Studies per minute from the first ready to the last delivered."""
        return len(self.timings) / self.span * 60 if self.span > 0 else float("nan")

    def throughput_95(self) -> float:
        """Studies per minute from the first ready until 95 % of the studies were delivered
        (one straggler, e.g. a retried task, does not decide it)."""
        first = min(t.ready_at for t in self.timings)
        delivered = sorted(t.delivered_at for t in self.timings)
        count = max(1, round(len(delivered) * 0.95))
        span = (delivered[count - 1] - first).total_seconds()
        return count / span * 60 if span > 0 else float("nan")


@dataclass
class ConfigResult:
    mode: str
    gpu_workers: int
    sequential: Phase
    burst: Phase
    startup_seconds: float
    #: What the RadGround logs say went wrong on the way (counts): explains outliers.
    incidents: dict[str, int] = field(default_factory=dict)
    #: What-if: the embedded broker's polling interval patched to this (seconds); None = as shipped.
    broker_poll: float | None = None
    #: What-if: milliseconds per image the gpu workers' model also waits off the CPU; None = as
    #: shipped.
    accelerator_ms: float | None = None

    @property
    def as_shipped(self) -> bool:
        return self.broker_poll is None and self.accelerator_ms is None

    @property
    def label(self) -> str:
        what_ifs = ([f"poll {self.broker_poll:g} s"] if self.broker_poll is not None else []) + (
            [f"accelerator {self.accelerator_ms:g} ms/image"]
            if self.accelerator_ms is not None
            else []
        )
        what_if = f" (what-if: {', '.join(what_ifs)})" if what_ifs else ""
        return f"{self.mode}, {self.gpu_workers} gpu{what_if}"


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# -- the peer: the model alone, in this process ------------------------------------------------


def make_study(png: Path, directory: Path) -> tuple[str, Path]:
    """One single-image chest DX study; its Study Instance UID and file."""
    from pydicom.uid import generate_uid

    from tests.factories import make_chest_dx, write_dataset

    ds = make_chest_dx(
        png, study_instance_uid=generate_uid(), patient_id=f"RG-BENCH-{uuid.uuid4().hex[:8]}"
    )
    return str(ds.StudyInstanceUID), write_dataset(ds, directory / f"{ds.SOPInstanceUID}.dcm")


def measure_model(candidates: list[Path], workdir: Path, *, model_path: Path, need: int,
                  repeats: int = 3) -> dict[str, float]:
    """Median seconds of ``analyze_study`` (OnnxDetector, the route's selection) per image,
    in-process,
    for the first ``need`` candidate images on which the model finds something (so that every
    study yields an SR and a GSPS: a study without findings gets no GSPS)."""
    from pydicom import dcmread

    from engine.analyze import analyze_study
    from engine.backends.onnxruntime_backend import OnnxDetector
    from engine.pixels import ImageSelection
    from engine.report import Task

    model = OnnxDetector(model_path)
    selection = ImageSelection(
        modalities={"DX", "CR"}, body_parts={"CHEST"}, view_positions={"PA", "AP"}
    )

    def run(path: Path) -> tuple[float, int]:
        started = time.perf_counter()
        report = analyze_study([dcmread(path, defer_size="64 KB")], model, selection=selection,
                               languages=("en", "zh-CN"), task=Task.DETECTION)
        return time.perf_counter() - started, sum(len(f.regions) for f in report.findings)

    times: dict[str, float] = {}
    warmed = False
    for png in candidates:
        path = make_study(png, workdir / "model")[1]
        if not warmed:
            run(path)
            warmed = True
        first, regions = run(path)
        if not regions:
            continue
        times[png.name] = statistics.median([first] + [run(path)[0] for _ in range(repeats - 1)])
        if len(times) >= need:
            break
    if not times:
        raise RuntimeError("the model found nothing on any candidate image")
    return times


# -- configuration and services ------------------------------------------------------------------


def write_config(
    path: Path,
    *,
    workdir: Path,
    model_path: Path,
    port: int,
    database_url: str,
    broker_url: str,
    gpu_processes: int,
    pacs: tuple[str, int],
    ehr_url: str,
    idle_seconds: float,
    poll_seconds: float,
) -> Path:
    path.write_text(f"""
[node]
port = {port}
listener_processes = 1

[storage]
root = "{workdir / 'instances'}"
reserve_mb = 0

[database]
url = "{database_url}"

[completion]
idle_seconds = {idle_seconds}
poll_seconds = {poll_seconds}

[workers]
broker_url = "{broker_url}"
gpu_processes = {gpu_processes}
io_processes = 1
outputs_root = "{workdir / 'outputs'}"

[web]
port = 0
state_dir = "{workdir / 'web'}"

[logging]
level = "INFO"

[models.default]
backend = "onnx"
path = "{model_path}"

[[routes]]
name = "chest-radiographs"
modalities = ["CR", "DX"]
body_parts = ["CHEST"]
view_positions = ["PA", "AP"]
task = "detection"
languages = ["en", "zh-CN"]
destinations = ["PACS", "EHR"]

[destinations.PACS]
ae_title = "{pacs[0]}"
host = "127.0.0.1"
port = {pacs[1]}
outputs = ["sr", "gsps"]

[destinations.EHR]
type = "fhir"
url = "{ehr_url}"
patient_identifier_system = "{PATIENT_SYSTEM}"
""")
    return path


# -- reading RadGround's database -------------------------------------------------------------


class Index:
    """Read-only view of one configuration's RadGround database."""

    def __init__(self, url: str) -> None:
        from worklist.db import create_db_engine, make_session_factory

        self.engine = create_db_engine(url)
        self.sessions = make_session_factory(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def finished(self, study_uids: list[str]) -> tuple[int, int]:
        """(jobs done, jobs failed or dead) among these studies."""
        from sqlalchemy import func, select

        from worklist.jobs_models import Job, JobState
        from worklist.models import Study

        with self.sessions() as session:
            rows = session.execute(
                select(Job.state, func.count()).join(Study, Study.id == Job.study_pk)
                .where(Study.study_instance_uid.in_(study_uids)).group_by(Job.state)).all()
        counts = {state: n for state, n in rows}
        bad = counts.get(JobState.FAILED, 0) + counts.get(JobState.DEAD, 0)
        return counts.get(JobState.DONE, 0), bad

    def failures(self, study_uids: list[str]) -> list[str]:
        from sqlalchemy import select

        from worklist.jobs_models import Job, JobState
        from worklist.models import Study

        with self.sessions() as session:
            return [
                f"job {j.id}: {j.state.value}: {j.last_error}"
                for j in session.scalars(
                    select(Job)
                    .join(Study, Study.id == Job.study_pk)
                    .where(
                        Study.study_instance_uid.in_(study_uids),
                        Job.state.in_([JobState.FAILED, JobState.DEAD]),
                    )
                )
            ]

    def dicom_artifacts(self, study_uids: list[str]) -> dict[str, list[tuple[str, str]]]:
        """Study UID → (kind, SOP Instance UID) of the SR and GSPS RadGround produced for it."""
        from sqlalchemy import select

        from worklist.jobs_models import Artifact, Job
        from worklist.models import Study

        found: dict[str, list[tuple[str, str]]] = {}
        with self.sessions() as session:
            for uid, kind, sop in session.execute(
                select(Study.study_instance_uid, Artifact.kind, Artifact.object_uid)
                .join(Job, Job.study_pk == Study.id)
                .join(Artifact, Artifact.job_id == Job.id)
                .where(Study.study_instance_uid.in_(study_uids), Artifact.kind.in_(["sr", "gsps"]))
            ):
                found.setdefault(uid, []).append((kind, sop))
        return found

    def timings(self, studies: dict[str, str]) -> list[StudyTiming]:
        """Per-study stage timings for ``studies`` (Study Instance UID → image name)."""
        from sqlalchemy import func, select

        from worklist.jobs_models import Artifact, Delivery, Job
        from worklist.models import Study, StudyRevision

        out = []
        with self.sessions() as session:
            rows = session.execute(
                select(Study.study_instance_uid, StudyRevision, Job)
                .join(
                    StudyRevision,
                    (StudyRevision.study_pk == Study.id) & (StudyRevision.revision == 1),
                )
                .join(Job, (Job.study_pk == Study.id) & (Job.revision == 1))
                .where(Study.study_instance_uid.in_(list(studies)))
            ).all()
            for uid, revision, job in rows:
                exported_at = session.scalar(
                    select(func.max(Artifact.created_at)).where(Artifact.job_id == job.id)
                )
                done = dict(session.execute(select(Delivery.destination, Delivery.delivered_at)
                                            .where(Delivery.job_id == job.id)).all())
                delivered_at = max(done.values())
                inference_end = job.inference_started_at.timestamp() + job.inference_seconds
                export_start = exported_at.timestamp() - job.export_seconds
                stages = {
                    "dispatch": (job.created_at - revision.ready_at).total_seconds(),
                    "to gpu": (job.inference_started_at - job.created_at).total_seconds(),
                    "inference": job.inference_seconds,
                    "to export": export_start - inference_end,
                    "export": job.export_seconds,
                    "deliver": (delivered_at - exported_at).total_seconds(),
                    **{name: (done[name] - exported_at).total_seconds() for name in DELIVERIES},
                }
                out.append(StudyTiming(
                    study_instance_uid=uid, image=studies[uid],
                    idle=(revision.ready_at - revision.last_received_at).total_seconds(),
                    ready_at=revision.ready_at, delivered_at=delivered_at,
                    turnaround=(delivered_at - revision.ready_at).total_seconds(),
                    inference=job.inference_seconds, stages=stages))
        return out


# -- one configuration ---------------------------------------------------------------------------


@dataclass
class World:
    """The peers shared by every configuration."""

    pacs: object  # OrthancPACS
    ehr: object  # FhirTestServer
    workdir: Path
    images: list[Path]
    console: Console
    idle_seconds: float
    poll_seconds: float
    timeout: float
    #: This run's copy of the default model (workers and the in-process peer use the same file).
    model_path: Path
    #: The cluster's broker; None = start a private redis-server per configuration.
    redis_url: str | None = REDIS_URL
    _next_image: int = 0

    def studies(self, count: int, directory: Path) -> dict[str, tuple[str, Path]]:
        """``count`` fresh studies uploaded to Orthanc: UID → (image name, file)."""
        made = {}
        for _ in range(count):
            png = self.images[self._next_image % len(self.images)]
            self._next_image += 1
            uid, path = make_study(png, directory)
            self.pacs.upload(path)
            made[uid] = (png.name, path)
        return made


def delivered_everywhere(world: World, index: Index, study_uids: list[str]) -> list[str]:
    """What is missing: each study's SR and GSPS in Orthanc (exactly the SOP instances
    RadGround recorded as artifacts; both kinds required), its DiagnosticReport in the EHR."""
    imaging = {
        r["id"]: {i.get("value", "").removeprefix("urn:oid:") for i in r.get("identifier", [])}
        for r in world.ehr.resources("ImagingStudy")
    }
    reported = set()
    for report in world.ehr.resources("DiagnosticReport"):
        for ref in report.get("imagingStudy", []):
            reported |= imaging.get(ref.get("reference", "").split("/")[-1], set())
    artifacts = index.dicom_artifacts(study_uids)
    missing = []
    for uid in study_uids:
        kinds = {kind for kind, _ in artifacts.get(uid, ())}
        expected = {sop for _, sop in artifacts.get(uid, ())}
        study = world.pacs.find_study(uid)
        stored = set()
        if study is not None:
            stored = {i["MainDicomTags"].get("SOPInstanceUID") for i in
                      world.pacs.get_json(f"/studies/{study}/instances", params="expand")}
        if not {"sr", "gsps"} <= kinds:
            missing.append(f"{uid[-12:]}: RadGround made only {sorted(kinds)}")
        elif not expected <= stored:
            missing.append(f"{uid[-12:]}: {len(expected - stored)} of its SR/GSPS not in Orthanc")
        elif uid not in reported:
            missing.append(f"{uid[-12:]}: no DiagnosticReport in the EHR")
    return missing


def run_phase(
    world: World,
    index: Index,
    group: ProcessGroup,
    studies: dict[str, tuple[str, Path]],
    *,
    name: str,
    sequential: bool,
    progress: Progress,
) -> Phase:
    uids = list(studies)
    send_seconds = 0.0
    task = progress.add_task(name, total=len(uids))
    deadline = time.monotonic() + world.timeout

    def wait_done(expected: list[str]) -> None:
        while True:
            group.check_alive()
            done, bad = index.finished(expected)
            if bad:
                raise RuntimeError(f"{name}: {bad} job(s) failed: {index.failures(expected)[:3]}")
            progress.update(
                task,
                completed=done if not sequential else len(expected) - 1 + (done == len(expected)),
            )
            if done >= len(expected):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{name}: {done} of {len(uids)} studies delivered within {world.timeout:g} s"
                )
            time.sleep(0.1)

    if sequential:
        for i, uid in enumerate(uids):
            world.pacs.send_study(uid, to="RADGROUND")
            wait_done(uids[: i + 1])
    else:
        sending = time.perf_counter()
        for uid in uids:
            world.pacs.send_study(uid, to="RADGROUND")
        send_seconds = time.perf_counter() - sending
        wait_done(uids)
    progress.update(task, completed=len(uids))
    missing = delivered_everywhere(world, index, uids)
    if missing:
        raise RuntimeError(
            f"{name}: {len(missing)} studies done in RadGround but missing SR/GSPS in Orthanc "
            "or a DiagnosticReport in the EHR: " + "; ".join(missing[:3])
        )
    return Phase(
        name, index.timings({uid: image for uid, (image, _) in studies.items()}), send_seconds
    )


#: Log lines worth counting: (label, text RadGround's processes log).
INCIDENTS = (
    ("database deadlocks", "deadlock detected"),
    ("Celery task retries", "retry: Retry in"),
    ("delivery retries", "failed, retrying in"),
    ("broker connection lost", "Connection to broker lost"),
    ("errors", " ERROR "),
)


def incidents(log_dir: Path) -> dict[str, int]:
    """Counts of :data:`INCIDENTS` in a configuration's logs (after the warm-up too: whole run)."""
    text = "\n".join(p.read_text(errors="replace") for p in sorted(log_dir.glob("*.log")))
    return {label: text.count(needle) for label, needle in INCIDENTS if needle in text}


#: Imported by every Python process of a what-if configuration (PYTHONPATH): sets the embedded
#: broker's polling interval (0.2 s as shipped; a waiting worker also wakes when a message is
#: published).
_POLL_PATCH = """\
import os
import worklist.embedded_broker as _broker
_broker.Transport.polling_interval = float(os.environ["RADGROUND_BENCH_BROKER_POLL"])
"""

#: Imported by every Python process of an accelerator what-if (PYTHONPATH); acts only in gpu
#: workers: after the real inference, each batch waits its images' accelerator time off the CPU.
_ACCELERATOR_PATCH = """\
import os, sys, time
if "worker" in sys.argv and "gpu" in sys.argv:
    from engine.backends import onnxruntime_backend as _backend
    _seconds_per_image = float(os.environ["RADGROUND_BENCH_ACCELERATOR_MS"]) / 1000
    _detect = _backend.OnnxDetector.detect
    def _detect_then_wait(self, images):
        decoded = _detect(self, images)
        time.sleep(_seconds_per_image * len(images))
        return decoded
    _backend.OnnxDetector.detect = _detect_then_wait
"""


def what_if_environment(directory: Path, *, broker_poll: float | None,
                        accelerator_ms: float | None) -> dict[str, str] | None:
    """The environment of a what-if configuration's processes (None: as shipped)."""
    patches, variables = [], {}
    if broker_poll is not None:
        patches.append(_POLL_PATCH)
        variables["RADGROUND_BENCH_BROKER_POLL"] = str(broker_poll)
    if accelerator_ms is not None:
        patches.append(_ACCELERATOR_PATCH)
        variables["RADGROUND_BENCH_ACCELERATOR_MS"] = str(accelerator_ms)
    if not patches:
        return None
    directory.mkdir()
    (directory / "sitecustomize.py").write_text("\n".join(patches))
    return {
        **os.environ,
        **variables,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")])),
    }


#: Single-machine modes (`radground serve`): the shipped broker, and kombu's stock polling one.
EMBEDDED_MODES = ("embedded", "embedded-polling")


def run_config(
    world: World,
    *,
    mode: str,
    gpu_workers: int,
    burst: int,
    sequential: int,
    broker_poll: float | None = None,
    accelerator_ms: float | None = None,
) -> ConfigResult:
    workdir = world.workdir / (
        f"{mode}-{gpu_workers}"
        + ("" if broker_poll is None else f"-poll{broker_poll:g}")
        + ("" if accelerator_ms is None else f"-accelerator{accelerator_ms:g}")
    )
    workdir.mkdir(parents=True)
    group = ProcessGroup(workdir / "logs")
    pg_name = broker_url = None
    index = None
    try:
        if mode in EMBEDDED_MODES:
            database_url = f"sqlite:///{workdir / 'radground.db'}"
            # embedded-polling: kombu's stock
            scheme = "radground" if mode == "embedded" else "sqla"
            broker_url = f"{scheme}+sqlite:///{workdir / 'broker.sqlite'}"
        else:
            database_url, pg_name = create_postgres_database()
            broker_url = world.redis_url or start_private_redis(group, workdir)
            redis_call(broker_url, "flushdb")
            run_id = redis_run_id(broker_url)
        port = free_port()
        config = write_config(
            workdir / "radground.toml",
            workdir=workdir,
            model_path=world.model_path,
            port=port,
            database_url=database_url,
            broker_url=broker_url,
            gpu_processes=gpu_workers,
            pacs=(world.pacs.aet, world.pacs.dicom_port),
            ehr_url=world.ehr.base_url,
            idle_seconds=world.idle_seconds,
            poll_seconds=world.poll_seconds,
        )
        base = [sys.executable, "-m", "radground", "--config", str(config)]
        env = what_if_environment(
            workdir / "what-if", broker_poll=broker_poll, accelerator_ms=accelerator_ms
        )
        started = time.perf_counter()
        if mode in EMBEDDED_MODES:
            group.start("serve", [*base, "serve"], cwd=workdir, env=env)
        else:
            group.start("node", [*base, "node"], cwd=workdir, env=env)
        wait_until(lambda: accepts(port), 60, "RadGround's DICOM port", group)
        if mode == "cluster":
            for i in range(gpu_workers):
                group.start(
                    f"worker-gpu-{i + 1}",
                    [*base, "worker", "--queues", "gpu"],
                    cwd=workdir,
                    env=env,
                )
            group.start("worker-io", [*base, "worker", "--queues", "io"], cwd=workdir, env=env)
        logs = list((workdir / "logs").glob("*.log"))
        wait_until(
            lambda: (
                sum(p.read_text(errors="replace").count(" ready.") for p in logs) >= gpu_workers + 1
            ),
            120,
            "Celery workers ready",
            group,
        )
        startup = time.perf_counter() - started
        world.pacs.set_modality("RADGROUND", "RADGROUND", "127.0.0.1", port)
        index = Index(database_url)

        studies_dir = workdir / "studies"
        with Progress(
            TextColumn(f"[bold]{mode}, {gpu_workers} gpu[/bold] {{task.description}}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=world.console,
            transient=True,
        ) as progress:
            progress.add_task("preparing studies", total=None)
            warm = world.studies(2 * gpu_workers, studies_dir / "warm")
            seq = world.studies(sequential, studies_dir / "sequential")
            bst = world.studies(burst, studies_dir / "burst")
            run_phase(
                world, index, group, warm, name="warm-up", sequential=False, progress=progress
            )
            seq_phase = run_phase(
                world, index, group, seq, name="sequential", sequential=True, progress=progress
            )
            burst_phase = run_phase(
                world, index, group, bst, name="burst", sequential=False, progress=progress
            )
        if mode == "cluster" and redis_run_id(broker_url) != run_id:
            raise RuntimeError(
                f"Redis at {broker_url} restarted during the run (another process restarted it), "
                "queued messages were lost and the sweeper re-sent them: timings invalid; "
                "run again, or with --private-redis"
            )
        return ConfigResult(
            mode,
            gpu_workers,
            seq_phase,
            burst_phase,
            startup,
            incidents(workdir / "logs"),
            broker_poll,
            accelerator_ms,
        )
    except BaseException:
        world.console.print(
            f"[red]{mode}, {gpu_workers} gpu failed; logs in {workdir / 'logs'}[/red]"
        )
        for log in sorted((workdir / "logs").glob("*.log")):
            world.console.print(f"--- {log.name}\n{group.log_tail(log.stem, 15)}", markup=False)
        raise
    finally:
        if index is not None:
            index.close()
        group.stop()
        if mode == "cluster":
            try:
                if world.redis_url is not None:
                    redis_call(world.redis_url, "flushdb")
            finally:
                if pg_name is not None:
                    drop_postgres_database(pg_name)


# -- report --------------------------------------------------------------------------------------


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if abs(seconds) < 10 else f"{seconds:.1f} s"


def overheads(phase: Phase, model_times: dict[str, float]) -> list[float]:
    return [t.turnaround - model_times[t.image] for t in phase.timings]


def report(
    console: Console,
    results: list[ConfigResult],
    model_times: dict[str, float],
    *,
    idle_seconds: float,
    goal_seconds: float,
) -> None:
    model = list(model_times.values())
    console.print(
        "\n[bold]Peer: the model alone[/bold] (analyze_study + OnnxDetector in this process, "
        f"{len(model)} images): p50 {fmt(percentile(model, 50))}, p95 {fmt(percentile(model, 95))}"
    )

    table = Table(
        title="Turnaround: revision ready → SR+GSPS in Orthanc and FHIR in the EHR (all delivered)",
        header_style="bold",
    )
    for column in (
        "configuration",
        "phase",
        "studies",
        "turnaround p50",
        "p95",
        "max",
        "inference p50 (worker)",
        "overhead p50",
        "overhead p95",
        "studies/min",
        "(first 95 %)",
        "sent in",
        "idle wait (policy)",
    ):
        table.add_column(
            column, justify="left" if column in ("configuration", "phase") else "right"
        )
    for result in results:
        for phase in (result.sequential, result.burst):
            turn = [t.turnaround for t in phase.timings]
            over = overheads(phase, model_times)
            burst = phase.name == "burst"
            table.add_row(
                result.label,
                phase.name,
                str(len(turn)),
                fmt(percentile(turn, 50)),
                fmt(percentile(turn, 95)),
                fmt(max(turn)),
                fmt(percentile([t.inference for t in phase.timings], 50)),
                fmt(percentile(over, 50)),
                fmt(percentile(over, 95)),
                f"{phase.throughput():.1f}" if burst else "-",
                f"{phase.throughput_95():.1f}" if burst else "-",
                fmt(phase.send_seconds) if phase.name == "burst" else "-",
                fmt(statistics.median(t.idle for t in phase.timings)),
            )
    console.print(table)
    console.print(
        "overhead = turnaround − the in-process model time of the same image; idle "
        "wait = last instance "
        f"received → ready (completion.idle_seconds = {idle_seconds:g}, not counted in turnaround)"
    )

    stages = Table(
        title="Where the time goes: stage medians (p95) per study, from the database's timestamps",
        header_style="bold",
    )
    stages.add_column("configuration")
    stages.add_column("phase")
    for stage in (*STAGES, *(f"({name})" for name in DELIVERIES)):
        stages.add_column(stage, justify="right")
    for result in results:
        for phase in (result.sequential, result.burst):
            cells = []
            for stage in (*STAGES, *DELIVERIES):
                values = [t.stages[stage] for t in phase.timings]
                cells.append(f"{fmt(percentile(values, 50))} ({fmt(percentile(values, 95))})")
            stages.add_row(result.label, phase.name, *cells)
    console.print(stages)
    for stage in STAGES:
        console.print(f"  [bold]{stage}[/bold]: {STAGE_HELP[stage]}")
    for name, meaning in DELIVERIES.items():
        console.print(f"  [bold]({name})[/bold]: {meaning} (part of deliver)")

    for result in results:
        if result.incidents:
            found = ", ".join(f"{n} {label}" for label, n in result.incidents.items())
            console.print(
                f"  [yellow]{result.label}: the logs show {found}[/yellow] (outliers "
                "come from these)"
            )

    by = {(r.mode, r.gpu_workers): r for r in results if r.as_shipped}
    accelerated = {(r.mode, r.gpu_workers): r for r in results if r.accelerator_ms is not None}
    console.print("\n[bold]Ratios[/bold]")
    for group, note in (
        (by, f"this machine has {os.cpu_count()} cores, the ceiling of the scaling"),
        (accelerated, "inference off the CPU: the pipeline's own scaling"),
    ):
        for mode in ("embedded", "cluster"):
            if (mode, 1) in group and (mode, 2) in group:
                one, two = group[(mode, 1)].burst.throughput(), group[(mode, 2)].burst.throughput()
                one95, two95 = (
                    group[(mode, 1)].burst.throughput_95(),
                    group[(mode, 2)].burst.throughput_95(),
                )
                console.print(
                    f"  {group[(mode, 2)].label}: throughput 2 gpu / 1 gpu = {two / one:.2f}x "
                    f"({two:.1f} vs {one:.1f} studies/min), first 95 %: "
                    f"{two95 / one95:.2f}x; {note}"
                )
    for workers in (1, 2):
        if ("embedded", workers) in by and ("embedded-polling", workers) in by:
            for phase in ("sequential", "burst"):
                woken = percentile(
                    [t.turnaround for t in getattr(by[("embedded", workers)], phase).timings], 95
                )
                polled = percentile(
                    [
                        t.turnaround
                        for t in getattr(by[("embedded-polling", workers)], phase).timings
                    ],
                    95,
                )
                console.print(f"  {workers} gpu, {phase}: turnaround p95 kombu's polling broker / "
                              f"radground+sqlite (woken on publish) = {polled / woken:.2f}x "
                              f"({fmt(polled)} vs {fmt(woken)})")
        if ("embedded", workers) in by and ("cluster", workers) in by:
            for phase in ("sequential", "burst"):
                emb = percentile(
                    [t.turnaround for t in getattr(by[("embedded", workers)], phase).timings], 95
                )
                clu = percentile(
                    [t.turnaround for t in getattr(by[("cluster", workers)], phase).timings], 95
                )
                console.print(
                    f"  {workers} gpu, {phase}: turnaround p95 cluster / embedded = "
                    f"{clu / emb:.2f}x ({fmt(clu)} vs {fmt(emb)})"
                )
    for result in results:
        shipped = by.get((result.mode, result.gpu_workers))
        if result.broker_poll is not None and shipped is not None:
            for phase in ("sequential", "burst"):
                new = percentile([t.turnaround for t in getattr(result, phase).timings], 95)
                old = percentile([t.turnaround for t in getattr(shipped, phase).timings], 95)
                console.print(
                    f"  {result.label} / as shipped, {phase}: turnaround p95 {new / old:.2f}x "
                    f"({fmt(new)} vs {fmt(old)})"
                )
            console.print(f"  {result.label} / as shipped: burst throughput "
                          f"{result.burst.throughput() / shipped.burst.throughput():.2f}x")
    for result in results:
        turn = percentile([t.turnaround for t in result.sequential.timings], 95)
        console.print(f"  {result.label}: sequential turnaround p95 / model p95 = "
                      f"{turn / percentile(model, 95):.1f}x")

    console.print(
        "\n[bold]Burst: the largest stage (median), i.e. where a study waits under load[/bold]"
    )
    for result in results:
        worst = max(
            STAGES, key=lambda s: percentile([t.stages[s] for t in result.burst.timings], 50)
        )
        console.print(
            f"  {result.label}: {worst} "
            f"{fmt(percentile([t.stages[worst] for t in result.burst.timings], 50))}"
            f" ({STAGE_HELP[worst]}); Orthanc sent the {len(result.burst.timings)} studies in "
            f"{fmt(result.burst.send_seconds)}"
        )

    console.print("\n[bold]Goal: pipeline overhead < "
                  f"{goal_seconds:g} s p95 per study (sequential phase, unloaded node)[/bold]")
    for result in results:
        if result.accelerator_ms is not None:
            continue  # its emulated accelerator time is not the pipeline's overhead
        seq_over = percentile(overheads(result.sequential, model_times), 95)
        verdict = "[green]met[/green]" if seq_over < goal_seconds else "[red]missed[/red]"
        worst = max(
            STAGES, key=lambda s: percentile([t.stages[s] for t in result.sequential.timings], 95)
        )
        worst_p95 = percentile([t.stages[worst] for t in result.sequential.timings], 95)
        console.print(
            f"  {result.label}: overhead p95 {fmt(seq_over)} {verdict}; largest stage at p95: "
            f"{worst} {fmt(worst_p95)} ({STAGE_HELP[worst]})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=100, help="studies per burst (default 100)")
    parser.add_argument(
        "--sequential",
        type=int,
        default=None,
        help="studies sent one at a time (default 10; 5 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="20 burst and 5 sequential studies per configuration"
    )
    parser.add_argument("--modes", default="embedded,cluster",
                        help="comma-separated: embedded, embedded-polling (kombu's stock SQLite "
                             "transport, no wake-ups), cluster")
    parser.add_argument("--workers", default="1,2", help="comma-separated GPU worker counts")
    parser.add_argument(
        "--idle-seconds", type=float, default=1.0, help="completion.idle_seconds (default 1)"
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=0.2, help="completion.poll_seconds (default 0.2)"
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds per phase before giving up"
    )
    parser.add_argument(
        "--goal", type=float, default=1.0, help="overhead goal, p95 seconds (default 1)"
    )
    parser.add_argument(
        "--images", type=int, default=25, help="distinct images (with findings) to cycle over"
    )
    parser.add_argument(
        "--redis-url",
        default=REDIS_URL,
        help=f"cluster broker (default {REDIS_URL}; its DB is flushed before and after)",
    )
    parser.add_argument(
        "--private-redis",
        action="store_true",
        help="start a redis-server of our own per cluster "
        "configuration instead (immune to others restarting the shared one)",
    )
    parser.add_argument(
        "--what-if-poll",
        type=float,
        default=None,
        metavar="SECONDS",
        help="also run embedded with the SQLite broker's polling interval patched to SECONDS "
        "(0.2 s as shipped; publishers also wake waiting workers) to show what that setting costs",
    )
    parser.add_argument(
        "--what-if-accelerator",
        type=float,
        default=None,
        metavar="MS",
        help="also run every mode and worker count with the gpu workers' model spending MS ms per "
        "image off the CPU (as on a GPU), to show throughput scaling when inference is "
        "the bottleneck",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (logs, databases)"
    )
    args = parser.parse_args(argv)
    burst = 20 if args.quick else args.studies
    sequential = args.sequential if args.sequential is not None else (5 if args.quick else 10)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    if (
        not set(modes) <= {*EMBEDDED_MODES, "cluster"}
        or not counts
        or min(counts) < 1
        or burst < 1
        or sequential < 1
    ):
        parser.error(
            "modes: embedded, embedded-polling, cluster; workers >= 1; studies and sequential >= 1"
        )

    from engine.default_model.config import ONNX_PATH
    from tests.integration.fhir_server import FhirTestServer
    from tests.integration.orthanc import OrthancPACS

    console = Console(width=int(os.environ.get("COLUMNS", "200")))
    candidates = sorted(IMAGES.glob("*.png"))
    if not candidates:
        console.print(f"[red]no images in {IMAGES}[/red]")
        return 1
    tmp = tempfile.mkdtemp(prefix="radground-turnaround-")
    workdir = Path(tmp)
    try:
        # A copy: the shipped file may be replaced (retrained) while the benchmark runs.
        model_path = workdir / ONNX_PATH.name
        shutil.copyfile(ONNX_PATH, model_path)
        with console.status("model alone, in this process"):
            model_times = measure_model(candidates, workdir, model_path=model_path,
                                        need=min(args.images, burst + sequential))
        images = [IMAGES / name for name in model_times]
        console.print(f"{len(images)} images with findings (studies cycle over them)")
        results = []
        with OrthancPACS(workdir / "orthanc") as pacs, FhirTestServer() as ehr:
            world = World(
                pacs=pacs,
                ehr=ehr,
                workdir=workdir,
                images=images,
                console=console,
                idle_seconds=args.idle_seconds,
                poll_seconds=args.poll_seconds,
                timeout=args.timeout,
                model_path=model_path,
                redis_url=None if args.private_redis else args.redis_url,
            )
            for mode in modes:
                for count in counts:
                    results.append(
                        run_config(
                            world, mode=mode, gpu_workers=count, burst=burst, sequential=sequential
                        )
                    )
                    console.print(
                        f"{results[-1].label}: done (start-up {results[-1].startup_seconds:.1f} s)"
                    )
            if args.what_if_poll is not None:
                for count in counts:
                    results.append(
                        run_config(
                            world,
                            mode="embedded",
                            gpu_workers=count,
                            burst=burst,
                            sequential=sequential,
                            broker_poll=args.what_if_poll,
                        )
                    )
                    console.print(
                        f"{results[-1].label}: done (start-up {results[-1].startup_seconds:.1f} s)"
                    )
            if args.what_if_accelerator is not None:
                for mode in modes:
                    for count in counts:
                        results.append(
                            run_config(
                                world,
                                mode=mode,
                                gpu_workers=count,
                                burst=burst,
                                sequential=sequential,
                                accelerator_ms=args.what_if_accelerator,
                            )
                        )
                        console.print(
                            f"{results[-1].label}: done (start-up "
                            f"{results[-1].startup_seconds:.1f} s)"
                        )
        report(
            console, results, model_times, idle_seconds=args.idle_seconds, goal_seconds=args.goal
        )
    finally:
        if args.keep:
            console.print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
