"""Sign-off benchmark: the time from a radiologist's "sign" to the signed outputs delivered.

One run on this machine: ``radground serve`` on a fresh PostgreSQL database, a route with
``review = "before_ehr"`` to a real PACS (dcmtk's ``storescp``: SR, GSPS, KOS) and an EHR (the
FHIR stand-in :class:`tests.integration.fhir_server.FhirTestServer`). Fresh single-image chest
DX studies (made from the ``../shared/data/nih-cxr-boxes`` images with a cardiomegaly box, the
finding the default model reports) are sent one at a time with dcmtk's ``storescu``; each job
exports the model's set, delivers it to the PACS and waits for review.

Then, one job at a time, as a radiologist in the console would over the REST API (a console
session with its CSRF token): open the review, accept every finding, sign. Measured per job:

* **sign → delivered** (client clock): from sending ``POST …/review/sign`` until the job is
  ``done`` with every delivery of the signed set recorded (polled every 20 ms in the database);
* the same from the database's own timestamps: ``reviews.signed_at`` → the last
  ``deliveries.delivered_at`` of the signed set (no polling granularity).

The peer, in the same run and on the same jobs, is the node's own first pass: the model's
result recorded (audit ``inferred``) → its set delivered to the PACS (export, write, C-STORE).
The ratio says what the review adds on top of building and sending a set of outputs: the
signed set has one more destination (the EHR's FHIR transaction) and a reviewed report.

Usage::

    .venv/bin/python bench/signoff.py --quick        # 5 studies
    .venv/bin/python bench/signoff.py                # 20 studies
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bench._processes import (
    ProcessGroup,
    accepts,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    wait_until,
)
from bench.ingest import wait_until_settled
from bench.turnaround import make_study, percentile
from worklist.db import create_db_engine, make_session_factory

DEFAULT_DATA = REPO.parent / "shared" / "data"
PATIENT_SYSTEM = "urn:oid:1.2.826.0.1.3680043.10.1199.1"


@dataclass(frozen=True)
class JobTiming:
    """One job's times, in seconds."""

    job_id: int
    findings: int
    sign_to_delivered_client: float
    sign_to_delivered_db: float
    first_pass: float


def cardiomegaly_images(root: Path) -> list[Path]:
    """The NIH images with a cardiomegaly box (the finding the default model reports), so that
    every review has findings to decide."""
    with (root / "boxes.csv").open(newline="") as handle:
        names = sorted({row["image"] for row in csv.DictReader(handle)
                        if row["finding"] == "Cardiomegaly"})
    return [root / "images" / name for name in names]


def write_config(work: Path, *, database_url: str, dicom_port: int, web_port: int,
                 pacs_port: int, ehr_url: str) -> Path:
    """A node on ``database_url`` whose chest route holds the EHR for review."""
    model = REPO / "engine" / "default_model" / "radground-cxr-det.onnx"
    config = work / "radground.toml"
    config.write_text(f"""
[node]
port = {dicom_port}
listener_processes = 1
[storage]
root = "{work / 'instances'}"
reserve_mb = 0
[database]
url = "{database_url}"
[completion]
idle_seconds = 0.5
poll_seconds = 0.2
[workers]
broker_url = "radground+sqlite:///{work / 'broker.sqlite'}"
gpu_processes = 1
io_processes = 1
outputs_root = "{work / 'outputs'}"
[web]
port = {web_port}
state_dir = "{work / 'web'}"
[logging]
level = "WARNING"
[models.default]
backend = "onnx"
path = "{model}"
[[routes]]
name = "chest-radiographs"
modalities = ["CR", "DX"]
task = "detection"
languages = ["en", "zh-CN"]
review = "before_ehr"
destinations = ["PACS", "EHR"]
[destinations.PACS]
ae_title = "STORESCP"
host = "127.0.0.1"
port = {pacs_port}
outputs = ["sr", "gsps", "kos"]
[destinations.EHR]
type = "fhir"
url = "{ehr_url}"
patient_identifier_system = "{PATIENT_SYSTEM}"
""")
    return config


def radiologist_session(sessions: sessionmaker[Session]) -> tuple[str, str]:
    """A radiologist account with a live console session: (cookie, CSRF token)."""
    from web.accounts import create_account, start_session
    from worklist.accounts_models import Role

    with sessions.begin() as session:
        account = create_account(session, "bench-radiologist", Role.RADIOLOGIST, password=None,
                                 actor="bench")
        account.full_name, account.organisation = "Bench Radiologist", "RadGround bench"
        return start_session(session, account, source="127.0.0.1")


def awaiting_jobs(sessions: sessionmaker[Session]) -> list[int]:
    """Jobs waiting for review whose model set reached the PACS."""
    from worklist.jobs_models import Delivery, DeliveryState, Job, JobState

    with sessions() as session:
        waiting = session.scalars(
            select(Job.id).where(Job.state == JobState.AWAITING_REVIEW).order_by(Job.id)
        ).all()
        pending = set(session.scalars(
            select(Delivery.job_id).where(Delivery.state != DeliveryState.DONE)
        ).all())
    return [job_id for job_id in waiting if job_id not in pending]


def signed_and_delivered(sessions: sessionmaker[Session], job_id: int) -> bool:
    from worklist.jobs_models import Job, JobState

    with sessions() as session:
        state = session.scalar(select(Job.state).where(Job.id == job_id))
    if state is JobState.FAILED:
        raise RuntimeError(f"job {job_id} failed after sign-off; see the node's logs")
    return state is JobState.DONE


def database_times(sessions: sessionmaker[Session], job_id: int) -> tuple[float, float]:
    """(signed_at → last signed delivery, inferred → last model-set delivery) in seconds."""
    from worklist.jobs_models import AuditEvent, Delivery
    from worklist.review_models import Review

    with sessions() as session:
        signed_at: datetime = session.scalar(
            select(Review.signed_at).where(Review.job_id == job_id)
        )
        last = {
            artifact_set: delivered
            for artifact_set, delivered in session.execute(
                select(Delivery.artifact_set, func.max(Delivery.delivered_at))
                .where(Delivery.job_id == job_id).group_by(Delivery.artifact_set)
            )
        }
        inferred: datetime = session.scalar(
            select(func.min(AuditEvent.at)).where(
                AuditEvent.job_id == job_id, AuditEvent.action == "inferred"
            )
        )
    return (last[1] - signed_at).total_seconds(), (last[0] - inferred).total_seconds()


def review_and_sign(client: httpx.Client, sessions: sessionmaker[Session],
                    job_id: int) -> JobTiming:
    """Open the job's review, accept every finding, sign, and wait for the signed set."""
    review = client.post(f"/api/v1/jobs/{job_id}/review")
    review.raise_for_status()
    body = review.json()
    version = body["version"]
    for finding in body["findings"]:
        answer = client.patch(
            f"/api/v1/jobs/{job_id}/review/findings/{finding['tracking_uid']}",
            json={"version": version, "decision": "accepted"},
        )
        answer.raise_for_status()
        version = answer.json()["version"]
    started = time.perf_counter()
    client.post(f"/api/v1/jobs/{job_id}/review/sign",
                json={"version": version, "languages": body["languages"]}).raise_for_status()
    while not signed_and_delivered(sessions, job_id):
        time.sleep(0.02)
    client_seconds = time.perf_counter() - started
    db_seconds, first_pass = database_times(sessions, job_id)
    return JobTiming(job_id, len(body["findings"]), client_seconds, db_seconds, first_pass)


def report(console: Console, timings: list[JobTiming]) -> None:
    def row(name: str, values: list[float]) -> list[str]:
        return [name, f"{percentile(values, 50):.3f}", f"{percentile(values, 95):.3f}",
                f"{max(values):.3f}"]

    table = Table(title=f"Sign → delivered, {len(timings)} jobs (seconds)")
    for column in ("", "p50", "p95", "max"):
        table.add_column(column, justify="right" if column else "left")
    signed_client = [t.sign_to_delivered_client for t in timings]
    signed_db = [t.sign_to_delivered_db for t in timings]
    first = [t.first_pass for t in timings]
    table.add_row(*row("sign → signed set delivered to PACS + EHR (client)", signed_client))
    table.add_row(*row("sign → signed set delivered to PACS + EHR (database)", signed_db))
    table.add_row(*row("peer: model result → model set delivered to PACS (database)", first))
    console.print(table)
    p50 = percentile(signed_db, 50) / percentile(first, 50)
    p95 = percentile(signed_db, 95) / percentile(first, 95)
    findings = [t.findings for t in timings]
    console.print(f"ratio sign-off / first pass: p50 {p50:.2f}x, p95 {p95:.2f}x; "
                  f"findings per job: {min(findings)}–{max(findings)}")


def run(args: argparse.Namespace, console: Console, work: Path) -> list[JobTiming]:
    from tests.integration.fhir_server import FhirTestServer

    pngs = cardiomegaly_images(args.data / "nih-cxr-boxes")[: args.studies]
    if len(pngs) < args.studies:
        raise SystemExit(f"only {len(pngs)} cardiomegaly images under {args.data}/nih-cxr-boxes")
    studies = work / "studies"
    studies.mkdir()
    files = [make_study(png, studies)[1] for png in pngs]
    database_url, database_name = create_postgres_database()
    group = ProcessGroup(work / "logs")
    pacs_port, dicom_port, web_port = free_port(), free_port(), free_port()
    (work / "pacs").mkdir()
    try:
        with FhirTestServer() as ehr:
            group.start("storescp", ["storescp", "-aet", "STORESCP", "-od", str(work / "pacs"),
                                     str(pacs_port)])
            wait_until(lambda: accepts(pacs_port), 30, "storescp", group)
            config = write_config(work, database_url=database_url, dicom_port=dicom_port,
                                  web_port=web_port, pacs_port=pacs_port, ehr_url=ehr.base_url)
            env = {k: v for k, v in os.environ.items() if not k.startswith("RADGROUND_")}
            env["PYTHONPATH"] = str(REPO)
            node = group.start("radground", [sys.executable, "-m", "radground", "--config",
                                             str(config), "serve"], cwd=REPO, env=env)
            wait_until(lambda: accepts(web_port), 120, "radground serve", group)
            wait_until_settled(node.pid)
            sessions = make_session_factory(create_db_engine(database_url))
            cookie, csrf = radiologist_session(sessions)
            with Progress(console=console) as progress:
                task = progress.add_task("send, infer, deliver to the PACS", total=len(files))
                for number, file in enumerate(files, start=1):
                    # one at a time: the first pass (the peer) is timed on an unloaded node
                    subprocess.run(["storescu", "-aet", "BENCH", "-aec", "RADGROUND",
                                    "127.0.0.1", str(dicom_port), str(file)], check=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    wait_until(lambda n=number: len(awaiting_jobs(sessions)) >= n, 300,
                               "the job awaiting review with its model set at the PACS", group)
                    progress.advance(task)
            timings = []
            with httpx.Client(base_url=f"http://127.0.0.1:{web_port}",
                              cookies={"radground_session": cookie},
                              headers={"X-CSRF-Token": csrf}, timeout=60) as client, \
                    Progress(console=console) as progress:
                task = progress.add_task("review and sign", total=args.studies)
                for job_id in awaiting_jobs(sessions):
                    timings.append(review_and_sign(client, sessions, job_id))
                    progress.advance(task)
            group.check_alive()
            return timings
    finally:
        group.stop()
        drop_postgres_database(database_name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20, help="jobs to sign (default 20)")
    parser.add_argument("--quick", action="store_true", help="5 studies")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="the shared data folder (nih-cxr-boxes/images)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.studies = 5
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console()
    work = Path(tempfile.mkdtemp(prefix="radground-bench-signoff-"))
    try:
        report(console, run(args, console, work))
    finally:
        if args.keep:
            console.print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
