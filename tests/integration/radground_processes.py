"""RadGround as real processes for end-to-end tests: config, node, workers, job queries.

:class:`Deployment` bundles one configuration's processes with the Orthanc PACS
and FHIR EHR it talks to: start/kill/stop processes, upload studies to Orthanc
and have Orthanc send them, wait for jobs (read from RadGround's database).

:class:`RadGroundProcess` runs ``python -m radground --config CFG ...`` with the
RADGROUND_* environment stripped, its output in a log file, and is always
terminated (then killed) by :meth:`~RadGroundProcess.stop`. :func:`write_config`
writes a TOML settings file for one test world: a node on a free port, storage,
outputs and the audit file under a work directory, a fast completion timer, a chest
radiograph route delivering to a DICOM PACS and a FHIR EHR.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, generate_uid
from sqlalchemy import select

from tests.factories import make_chest_dx, write_dataset
from tests.integration.dcmtk import echoscu
from tests.integration.fhir_server import FhirTestServer
from tests.integration.orthanc import OrthancPACS
from worklist.db import create_db_engine, make_session_factory
from worklist.jobs_models import Artifact, Delivery, Job
from worklist.models import Study

__all__ = [
    "TURNAROUND",
    "ArtifactFile",
    "Deployment",
    "JobReader",
    "JobView",
    "RadGroundProcess",
    "child_processes",
    "clean_env",
    "free_port",
    "holds_for",
    "new_deployment",
    "wait_until",
    "write_config",
]

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")
#: Seconds a study may take from being sent to its outputs in Orthanc and the EHR
#: (completion 2 s, worker start-up, inference on a shared 2-core CPU).
TURNAROUND = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(
    path: Path,
    *,
    workdir: Path,
    port: int,
    database_url: str,
    broker_url: str,
    pacs_port: int | None,
    fhir_url: str | None,
    requeue_after_seconds: float | None = 5.0,
    task_time_limit_seconds: int | None = 10,
    idle_seconds: float = 2.0,
    gpu_processes: int = 1,
    io_processes: int = 1,
    route_destinations: Sequence[str] = ("PACS", "EHR"),
    extra_toml: str = "",
) -> Path:
    """A TOML config for one RadGround deployment under ``workdir``: the chest route delivers to
    ``route_destinations``; ``extra_toml`` adds sections (more destinations, ``[delivery]``).
    ``None`` leaves a setting at its default and, for ``pacs_port``/``fhir_url``, that
    destination out. Unless ``extra_toml`` has its own ``[web]`` section, the web surface takes
    a free port and keeps its state (metrics files) under ``workdir``: deployments running at the
    same time never share the default port 8080 or a metrics folder."""
    routed = ", ".join(f'"{name}"' for name in route_destinations)
    timing = "".join(
        f"{key} = {value}\n"
        for key, value in (
            ("task_time_limit_seconds", task_time_limit_seconds),
            ("requeue_after_seconds", requeue_after_seconds),
        )
        if value is not None
    )
    web = (
        "" if "[web]" in extra_toml
        else f'[web]\nport = 0\nstate_dir = "{workdir / "web"}"\n'
    )
    destinations = ""
    if pacs_port is not None:
        destinations += (
            f'[destinations.PACS]\nae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = {pacs_port}\n'
        )
    if fhir_url is not None:
        destinations += (
            f'[destinations.EHR]\ntype = "fhir"\nurl = "{fhir_url}"\n'
            'patient_identifier_system = "urn:oid:2.25.1234"\n'
        )
    path.write_text(
        f"""
[node]
port = {port}
listener_processes = 1
[storage]
root = "{workdir / 'instances'}"
reserve_mb = 0
fsync = "never"
[database]
url = "{database_url}"
[completion]
idle_seconds = {idle_seconds}
poll_seconds = 0.3
[workers]
broker_url = "{broker_url}"
gpu_processes = {gpu_processes}
io_processes = {io_processes}
{timing}outputs_root = "{workdir / 'outputs'}"
[audit]
file = "{workdir / 'audit' / 'audit.log'}"
spool_dir = "{workdir / 'audit' / 'spool'}"
[[routes]]
name = "chest-radiographs"
modalities = ["CR", "DX"]
body_parts = ["CHEST"]
view_positions = ["PA", "AP"]
destinations = [{routed}]
{web}{destinations}{extra_toml}
""",
        encoding="utf-8",
    )
    return path


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADGROUND_")}
    env.pop("TCP_NODELAY", None)
    return env


class RadGroundProcess:
    """One ``radground`` command running as a child process (own process group)."""

    def __init__(self, config: Path, args: Sequence[str], log: Path) -> None:
        self.args = [sys.executable, "-m", "radground", "--config", str(config), *args]
        self.log = log
        self.name = " ".join(args)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self._log_start = out.tell()
            out.write(f"\n--- test: starting {self.name}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.args,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=clean_env(),
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the process (and its group: `serve` spawns workers), as the OOM killer would."""
        if self.alive:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait, then SIGKILL whatever is left of its process group."""
        if self.alive:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            # children (serve's workers) and a stuck leader
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(10)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        """What this process wrote to its log (the file may hold earlier processes' lines)."""
        with self.log.open("rb") as log:
            log.seek(self._log_start)
            return log.read().decode("utf-8", errors="replace")


def wait_until(predicate: Callable[[], T], timeout: float, *, what: str, interval: float = 0.25,
               logs: Sequence[RadGroundProcess] = ()) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with the logs' tails otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            tails = "\n".join(f"=== {p.name} (running: {p.alive})\n{p.tail()}" for p in logs)
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{tails}")
        time.sleep(interval)


def holds_for(
    predicate: Callable[[], object], seconds: float, *, what: str, interval: float = 0.25
) -> None:
    """Check that ``predicate`` stays truthy for ``seconds`` (that something does NOT happen)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"{what}: no longer true"
        time.sleep(interval)


@dataclass(frozen=True)
class DeliveryView:
    destination: str
    state: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class ArtifactFile:
    """One object a job produced: kind, language, object UID (SOP Instance UID; MSH-10 for
    HL7), its series (DICOM objects) and its path relative to ``outputs_root``."""

    kind: str
    language: str
    object_uid: str
    series_instance_uid: str | None
    path: str


@dataclass(frozen=True)
class JobView:
    """A job as `radground jobs show` sees it (read from the database)."""

    id: int
    revision: int
    state: str
    inference_starts: int
    last_error: str | None
    deliveries: tuple[DeliveryView, ...]


class JobReader:
    """Reads jobs of a deployment's database (one engine, disposed by :meth:`close`)."""

    def __init__(self, database_url: str) -> None:
        self._engine = create_db_engine(database_url)
        self._sessions = make_session_factory(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    def jobs_of_study(self, study_instance_uid: str) -> list[JobView]:
        from sqlalchemy.exc import OperationalError, ProgrammingError

        try:
            with self._sessions() as session:
                jobs = session.scalars(select(Job).join(Study).where(
                    Study.study_instance_uid == study_instance_uid).order_by(Job.id)).all()
                return [
                    JobView(
                        job.id,
                        job.revision,
                        job.state.value,
                        job.inference_starts,
                        job.last_error,
                        tuple(
                            DeliveryView(
                                d.destination,
                                d.state.value,
                                d.attempts,
                                d.last_error,
                                d.next_attempt_at,
                            )
                            for d in session.scalars(
                                select(Delivery)
                                .where(Delivery.job_id == job.id)
                                .order_by(Delivery.id)
                            )
                        ),
                    )
                    for job in jobs
                ]
        except (OperationalError, ProgrammingError):
            return []  # the node has not created the schema yet

    def artifacts(self, job_id: int) -> list[tuple[str, str, str]]:
        """(kind, language, object UID) of every object a job produced."""
        with self._sessions() as session:
            return [
                (a.kind, a.language, a.object_uid)
                for a in session.scalars(
                    select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.id)
                )
            ]

    def artifact_files(self, job_id: int) -> list[ArtifactFile]:
        """Every object a job produced, with its series and its file under ``outputs_root``."""
        with self._sessions() as session:
            return [
                ArtifactFile(a.kind, a.language, a.object_uid, a.series_instance_uid, a.path)
                for a in session.scalars(
                    select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.id)
                )
            ]


@dataclass
class Deployment:
    """RadGround's processes for one configuration, and what a test needs to drive them."""

    config: Path
    workdir: Path
    port: int
    database_url: str
    pacs: OrthancPACS
    ehr: FhirTestServer
    processes: dict[str, RadGroundProcess] = field(default_factory=dict)
    retired: list[RadGroundProcess] = field(default_factory=list)
    modality: str = ""
    orthanc_ids: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reader = JobReader(self.database_url)

    def start(self, role: str, *args: str) -> RadGroundProcess:
        assert role not in self.processes or not self.processes[role].alive
        if role in self.processes:
            self.retired.append(self.processes.pop(role))
        process = RadGroundProcess(self.config, args, self.workdir / "logs" / f"{role}.log")
        self.processes[role] = process
        return process

    def all_processes(self) -> list[RadGroundProcess]:
        return [*self.processes.values(), *self.retired]

    def wait(self, predicate, timeout: float = TURNAROUND, *, what: str, interval: float = 0.25):
        return wait_until(
            predicate, timeout, what=what, interval=interval, logs=list(self.processes.values())
        )

    def wait_node_ready(self) -> None:
        self.wait(lambda: echoscu(self.port).returncode == 0, 60, what="the node answering C-ECHO")

    def wait_worker_ready(self, role: str) -> None:
        self.wait(
            lambda: " ready." in self.processes[role].log_text(), 60, what=f"worker {role} ready"
        )

    def stop_all(self) -> None:
        for process in self.all_processes():
            process.stop()
        self.reader.close()
        leftovers = [p.name for p in self.all_processes() if p.alive]
        assert not leftovers, f"processes still running: {leftovers}"

    # studies

    def upload_study(self, images: Sequence[str], shared_data: Path, *, study: str | None = None,
                     series: str | None = None, broken: bool = False) -> tuple[str, list[str]]:
        """Store a DX chest study in Orthanc: one series, one instance per PNG; (study UID, SOP
        Instance UIDs)."""
        study, series = study or generate_uid(), series or generate_uid()
        uids = []
        for number, name in enumerate(images, start=1):
            ds = make_chest_dx(
                shared_data / "nih-cxr-boxes" / "images" / name, study_instance_uid=study
            )
            ds.SeriesInstanceUID, ds.InstanceNumber = series, number
            # whole in its structure (the node checks that), its one fragment undecodable
            if broken:
                ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
                ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(996)])
                ds["PixelData"].VR = "OB"
            path = write_dataset(ds, self.workdir / "sources" / f"{ds.SOPInstanceUID}.dcm")
            self.orthanc_ids[str(ds.SOPInstanceUID)] = self.pacs.upload(path)
            uids.append(str(ds.SOPInstanceUID))
        return study, uids

    def send_instances(self, sop_instance_uids: Sequence[str]) -> None:
        """Orthanc C-STOREs only these instances to RadGround."""
        self.pacs.request("POST", f"/modalities/{self.modality}/store", json={
            "Resources": [self.orthanc_ids[uid] for uid in sop_instance_uids], "Synchronous": True})

    def send(self, study: str) -> None:
        """Orthanc C-STOREs the study to RadGround (synchronously)."""
        self.pacs.send_study(study, to=self.modality)

    def jobs(self, study: str) -> list[JobView]:
        return self.reader.jobs_of_study(study)

    def wait_jobs(self, study: str, states: Sequence[str], timeout: float = TURNAROUND, *,
                  what: str = "") -> list[JobView]:
        """Wait until the study's jobs are in exactly these states (in job order)."""
        return self.wait(
            lambda: (jobs := self.jobs(study)) and [j.state for j in jobs] == list(states) and jobs,
            timeout,
            what=what or f"jobs of the study in states {list(states)}",
        )

    def radground(self, *args: str) -> str:
        """Run a `radground` CLI command on this deployment's config; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "radground", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
            cwd=self.workdir,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


def new_deployment(tmp_path: Path, pacs: OrthancPACS, ehr: FhirTestServer, *, database_url: str,
                   broker_url: str, name: str, **config) -> Deployment:
    port = free_port()
    workdir = tmp_path / name
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = write_config(
        workdir / "radground.toml",
        workdir=workdir,
        port=port,
        database_url=database_url,
        broker_url=broker_url,
        pacs_port=pacs.dicom_port,
        fhir_url=ehr.base_url,
        **config,
    )
    deployment = Deployment(cfg, workdir, port, database_url, pacs, ehr, modality=name.upper()[:16])
    pacs.set_modality(deployment.modality, "RADGROUND", "127.0.0.1", port)
    return deployment


def child_processes(pid: int) -> dict[int, str]:
    """The direct children of ``pid``: pid -> command line."""
    children = {}
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid
            ):
                children[int(entry.name)] = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                )
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return children
