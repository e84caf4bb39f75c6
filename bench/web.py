"""Web surface benchmark: the REST API and console pages over 100 000 jobs against the same
queries straight through SQLAlchemy, and STOW-RS ingest against Orthanc's DICOMweb plugin.

Part ``latency`` (what a page costs on a node that has run for a month):

* a fresh PostgreSQL database (created on the server of ``RADGROUND_BENCH_POSTGRES_URL``,
  default ``postgresql://postgres@127.0.0.1:5432/postgres``, dropped at the end), migrated by
  ``worklist.migrate.upgrade_database`` so its indexes are a node's, then filled with ``COPY``:
  ``--jobs`` jobs over 30 days with their studies, revisions, series, instances, artifacts,
  deliveries and audit trail (``bench/_web_rows.py``);
* the web application served as in production: ``radground web`` (uvicorn) in its own process,
  HTTP over loopback from one keep-alive httpx client, an API token for the API and a console
  session cookie for the pages;
* per case, the same reads through the views layer (``worklist.views.list_jobs`` /
  ``get_job`` on a fresh session, as a request opens one; for a console page every read the
  page makes, ``live_state`` and ``job_pictures`` too) in this process: the HTTP layer's
  overhead is the ratio of the two. Cases: the jobs list (first page, a filtered page, a deep
  page), one job, and the console's jobs page and job page. Warm-up requests are not counted;
  HTTP and direct calls alternate so that load falls on both alike.

Part ``stow`` (instances/s a VNA can push): the same chest radiographs (DX made from
``../shared/data/nih-cxr-boxes/images``, 512 x 512, 8 bit) POSTed by the same STOW-RS client
(``worklist.destinations.dicomweb.store_instances``: streamed multipart, one keep-alive
httpx client), ``--per-request`` instances per request, to RadGround's
``POST /dicomweb/studies`` (the node's one ingest path: checks, fsync, index in the same
PostgreSQL database) and to Orthanc 1.10 with Debian's DICOMweb plugin, requests alternating
between the two. The same images (new UIDs) go by C-STORE too, one ``storescu`` association per
request (``TCP_NODELAY=1``), to ``radground node`` and to Orthanc's DICOM port (Orthanc started
with ``TCP_NODELAY=1`` as well: dcmtk inside it otherwise leaves Nagle on and each response
waits 40 ms for a delayed ACK).

Prints p50/p95 per case and the HTTP / direct ratio, then instances/s and MB/s per receiver and
the ratios. Usage::

    .venv/bin/python bench/web.py                # 100 000 jobs, 200 requests per case, 200
                                                 # instances per receiver (~6 min on 2 cores)
    .venv/bin/python bench/web.py --quick        # 5 000 jobs, 30 requests, 40 instances
    .venv/bin/python bench/web.py --part latency --jobs 20000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from bench._processes import (
    ProcessGroup,
    accepts,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    wait_until,
)
from bench._web_rows import FillReport, fill_database
from bench.ingest import wait_until_settled

#: Where the REST API and the console serve the jobs (relative to the base URL).
API_JOBS = "/api/v1/jobs"
CONSOLE_JOBS = "/jobs"
STOW_PATH = "/dicomweb"
PAGE_SIZE = 50
DEFAULT_DATA = REPO.parent / "shared" / "data"


# -- the node's database and the web application --------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """An API token (read, ingest) and a console session cookie of one operator account."""

    token: str
    session_cookie: str


def grant_access(sessions: sessionmaker[Session]) -> Credentials:
    """An operator account with an API token and a live console session."""
    from web.accounts import create_account, issue_token, start_session
    from worklist.accounts_models import Role

    with sessions.begin() as session:
        account = create_account(session, "bench", Role.OPERATOR, password=None, actor="bench")
        token = issue_token(session, "bench", "bench", ["read", "ingest"], actor="bench")
        cookie, _csrf = start_session(session, account, source="127.0.0.1")
    return Credentials(token, cookie)


def write_config(work: Path, database_url: str, *, web_port: int, dicom_port: int) -> Path:
    """A node configuration on ``database_url``: storage, broker and outputs under ``work``."""
    config = work / "radground.toml"
    config.write_text(
        f'[node]\nport = {dicom_port}\nlistener_processes = 1\n'
        f'[storage]\nroot = "{work / "instances"}"\nreserve_mb = 0\n'
        f'[database]\nurl = "{database_url}"\n'
        f'[workers]\nbroker_url = "radground+sqlite:///{work / "broker.sqlite"}"\n'
        f'outputs_root = "{work / "outputs"}"\n'
        f'[web]\nport = {web_port}\nstate_dir = "{work / "web"}"\n'
        '[logging]\nlevel = "WARNING"\n'
    )
    return config


def start_radground(group: ProcessGroup, name: str, config: Path, command: str, *,
                    port: int) -> None:
    """``radground --config CONFIG COMMAND`` in its own process group (logs in the group's
    directory), once it listens on ``port`` and its processes have finished starting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADGROUND_")}
    env["PYTHONPATH"] = str(REPO)
    process = group.start(
        name, [sys.executable, "-m", "radground", "--config", str(config), command],
        cwd=REPO, env=env,
    )
    wait_until(lambda: accepts(port), 60, f"radground {command}", group)
    wait_until_settled(process.pid)


# -- part 1: latency ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One page: its HTTP request and the same read through the views layer."""

    name: str
    #: The request (path and query), given the iteration number.
    path: Callable[[int], str]
    #: Whether it is a console page (session cookie) rather than the API (token).
    console: bool
    #: The same read, given a fresh session and the iteration number.
    direct: Callable[[Session, int], object]


def make_cases(report: FillReport, total_jobs: int) -> list[Case]:
    """The pages measured; a console page's direct read is every read the page makes."""
    from web.console.queries import job_pictures, live_state
    from worklist.jobs_models import JobState
    from worklist.views import JobFilter, get_job, list_jobs

    week_ago = (report.last_created_at or datetime.now(UTC)) - timedelta(days=7)
    week_ago = week_ago.replace(microsecond=0)
    failed_dx = JobFilter(states=[JobState.FAILED], modality="DX", created_from=week_ago)
    failed_query = f"state=failed&modality=DX&created_from={week_ago.isoformat()}".replace(
        "+00:00", "Z")
    deep = (int(total_jobs * 0.9) // PAGE_SIZE) * PAGE_SIZE
    ids = report.job_ids

    def job_id(i: int) -> int:
        return ids[i % len(ids)]

    return [
        Case("API jobs, first page", lambda i: f"{API_JOBS}?limit={PAGE_SIZE}", False,
             lambda s, i: list_jobs(s, JobFilter(), limit=PAGE_SIZE)),
        Case("API jobs, failed DX last 7 days", lambda i: f"{API_JOBS}?{failed_query}"
             f"&limit={PAGE_SIZE}", False,
             lambda s, i: list_jobs(s, failed_dx, limit=PAGE_SIZE)),
        Case(f"API jobs, deep page (offset {deep})",
             lambda i: f"{API_JOBS}?offset={deep}&limit={PAGE_SIZE}", False,
             lambda s, i: list_jobs(s, JobFilter(), offset=deep, limit=PAGE_SIZE)),
        Case("API job", lambda i: f"{API_JOBS}/{job_id(i)}", False,
             lambda s, i: get_job(s, job_id(i))),
        Case("console jobs page", lambda i: f"{CONSOLE_JOBS}?limit={PAGE_SIZE}", True,
             lambda s, i: (list_jobs(s, JobFilter(), limit=PAGE_SIZE), live_state(s))),
        Case("console job page", lambda i: f"{CONSOLE_JOBS}/{job_id(i)}", True,
             lambda s, i: (get_job(s, job_id(i)), job_pictures(s, job_id(i)), live_state(s))),
    ]


def measure_latency(cases: list[Case], *, base: str, credentials: Credentials,
                    sessions: sessionmaker[Session], warmup: int, iterations: int,
                    console: Console) -> dict[str, tuple[list[float], list[float]]]:
    """Seconds per request and per direct call, for each case: (HTTP, direct)."""
    timings: dict[str, tuple[list[float], list[float]]] = {c.name: ([], []) for c in cases}
    headers = {"Authorization": f"Bearer {credentials.token}"}
    with httpx.Client(base_url=base, trust_env=False, timeout=60) as api, httpx.Client(
        base_url=base, trust_env=False, timeout=60,
        cookies={"radground_session": credentials.session_cookie},
    ) as browser, Progress(console=console, transient=True) as progress:
        task = progress.add_task("pages", total=len(cases) * (warmup + iterations))
        for case in cases:
            client = browser if case.console else api
            progress.update(task, description=case.name)
            for i in range(warmup + iterations):
                start = time.perf_counter()
                response = client.get(case.path(i), headers=None if case.console else headers)
                http = time.perf_counter() - start
                if response.status_code != 200:
                    raise RuntimeError(f"{case.name}: GET {case.path(i)} answered "
                                       f"{response.status_code}: {response.text[:300]}")
                start = time.perf_counter()
                with sessions() as session:
                    found = case.direct(session, i)
                direct = time.perf_counter() - start
                if found is None:
                    raise RuntimeError(f"{case.name}: the views layer found nothing")
                if i >= warmup:
                    timings[case.name][0].append(http)
                    timings[case.name][1].append(direct)
                progress.advance(task)
    return timings


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def latency_table(timings: dict[str, tuple[list[float], list[float]]], *, jobs: int,
                  iterations: int) -> Table:
    table = Table(title=f"Web pages over {jobs:,} jobs (PostgreSQL), ms; {iterations} requests "
                  "per case after warm-up; HTTP = radground web (uvicorn) over loopback, "
                  "direct = worklist.views on a fresh session")
    for column in ("page", "HTTP p50", "HTTP p95", "direct p50", "direct p95", "HTTP / direct",
                   "HTTP - direct"):
        table.add_column(column, justify="left" if column == "page" else "right")
    for name, (http, direct) in timings.items():
        h50, d50 = statistics.median(http), statistics.median(direct)
        table.add_row(name, f"{h50 * 1000:.1f}", f"{p95(http) * 1000:.1f}", f"{d50 * 1000:.1f}",
                      f"{p95(direct) * 1000:.1f}", f"{h50 / d50:.2f}x",
                      f"{(h50 - d50) * 1000:.1f}")
    return table


# -- part 2: STOW-RS and C-STORE ingest ----------------------------------------------------


@dataclass(frozen=True)
class Load:
    """The files to send: one list of paths per request."""

    requests: list[list[Path]]

    @property
    def instances(self) -> int:
        return sum(len(r) for r in self.requests)

    @property
    def bytes(self) -> int:
        return sum(p.stat().st_size for r in self.requests for p in r)


def make_loads(work: Path, data: Path, *, instances: int, per_request: int) -> tuple[Load, Load]:
    """The chest radiographs as DX files, one study (one series) per request: a set for STOW-RS
    and the same images with other UIDs for C-STORE (each receiver stores every instance
    once)."""
    from pydicom.uid import generate_uid

    from tests.factories import make_chest_dx, write_dataset

    pngs = sorted((data / "nih-cxr-boxes" / "images").glob("*.png"))
    if not pngs:
        sys.exit(f"no chest radiographs in {data / 'nih-cxr-boxes' / 'images'} (--data)")
    loads = []
    for kind in ("stow", "cstore"):
        requests = []
        for r in range(0, instances, per_request):
            study, series = generate_uid(), generate_uid()
            folder = work / f"{kind}-{r // per_request:04d}"
            folder.mkdir(parents=True)
            files = []
            for n in range(r, min(r + per_request, instances)):
                ds = make_chest_dx(pngs[n % len(pngs)], study_instance_uid=study,
                                   patient_id=f"BENCH-{r // per_request}")
                ds.SeriesInstanceUID, ds.InstanceNumber = series, n - r + 1
                files.append(write_dataset(ds, folder / f"{n}.dcm"))
            requests.append(files)
        loads.append(Load(requests))
    return loads[0], loads[1]


def stow_sender(base: str, token: str | None) -> tuple[Callable[[list[Path]], None],
                                                        Callable[[], None]]:
    """A STOW-RS sender to ``base`` (one keep-alive client) and its close."""
    from worklist.destinations import dicomweb
    from worklist.destinations.security import HttpAuth

    client = dicomweb.make_client(timeout=300)
    auth = HttpAuth.bearer(token) if token else None

    def send(files: list[Path]) -> None:
        result = dicomweb.store_instances(base, files, client=client, auth=auth, timeout=300)
        if not result.complete:
            raise RuntimeError(f"STOW-RS to {base}: {result.peer_answer}")

    return send, client.close


def storescu_sender(port: int, ae_title: str) -> Callable[[list[Path]], None]:
    """One ``storescu`` association per request (Nagle off, as a well-set-up sender)."""
    env = {**os.environ, "TCP_NODELAY": "1"}

    def send(files: list[Path]) -> None:
        subprocess.run(["storescu", "-aet", "BENCH", "-aec", ae_title, "127.0.0.1", str(port),
                        *map(str, files)], check=True, capture_output=True, timeout=300, env=env)

    return send


def measure_ingest(senders: dict[str, tuple[Callable[[list[Path]], None], Load]], *,
                   console: Console) -> dict[str, list[float]]:
    """Seconds per request for each receiver, requests alternating between receivers (the
    order rotating each round)."""
    names = list(senders)
    rounds = max(len(load.requests) for _, load in senders.values())
    timings: dict[str, list[float]] = {name: [] for name in names}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("ingest", total=sum(len(l.requests) for _, l in senders.values()))
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                send, load = senders[name]
                if r < len(load.requests):
                    start = time.perf_counter()
                    send(load.requests[r])
                    timings[name].append(time.perf_counter() - start)
                    progress.advance(task)
    return timings


def ingest_table(timings: dict[str, list[float]], loads: dict[str, Load],
                 per_request: int) -> Table:
    table = Table(title=f"Ingest of chest DX (512 x 512, 8 bit), {per_request} instances per "
                  "request, requests alternating between receivers")
    for column in ("receiver", "instances", "request p50 ms", "request p95 ms", "instances/s",
                   "MB/s", "RadGround / Orthanc"):
        table.add_column(column, justify="left" if column == "receiver" else "right")
    rates = {name: loads[name].instances / sum(values) for name, values in timings.items()}
    for name, values in timings.items():
        peer = ORTHANC_PEER.get(name)
        ratio = f"{rates[name] / rates[peer]:.2f}x" if peer in rates else ""
        table.add_row(name, str(loads[name].instances), f"{statistics.median(values) * 1000:.0f}",
                      f"{p95(values) * 1000:.0f}" if len(values) > 1 else "",
                      f"{rates[name]:.1f}", f"{loads[name].bytes / sum(values) / 1e6:.1f}", ratio)
    return table


RG_STOW, ORTHANC_STOW = "RadGround STOW-RS", "Orthanc DICOMweb STOW-RS"
RG_CSTORE, ORTHANC_CSTORE = "RadGround C-STORE (storescu)", "Orthanc C-STORE (storescu)"
#: Each RadGround row's peer.
ORTHANC_PEER = {RG_STOW: ORTHANC_STOW, RG_CSTORE: ORTHANC_CSTORE}


# -- the run -------------------------------------------------------------------------------


@contextmanager
def node_database(console: Console, jobs: int) -> Iterator[tuple[str, FillReport]]:
    """A fresh, migrated and filled PostgreSQL database (dropped afterwards): its URL."""
    from worklist.db import create_db_engine
    from worklist.migrate import upgrade_database

    url, name = create_postgres_database()
    try:
        engine = create_db_engine(url)
        try:
            upgrade_database(engine)
        finally:
            engine.dispose()
        start = time.perf_counter()
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("filling the database", total=9)

            def advance(table: str, rows: int) -> None:
                progress.update(task, advance=1, description=f"{table}: {rows:,} rows")

            report = fill_database(url, jobs, progress=advance)
        console.print(f"database: {', '.join(f'{t} {n:,}' for t, n in report.rows.items())} "
                      f"rows in {time.perf_counter() - start:.0f} s")
        yield url, report
    finally:
        drop_postgres_database(name)


def run(args: argparse.Namespace, console: Console, work: Path) -> dict[str, Any]:
    from worklist.db import create_db_engine, make_session_factory

    results: dict[str, Any] = {"jobs": args.jobs, "cores": os.cpu_count(),
                               "load_average_at_start": os.getloadavg()[0]}
    group = ProcessGroup(work / "logs")
    with node_database(console, args.jobs) as (url, report):
        engine = create_db_engine(url)
        sessions = make_session_factory(engine)
        try:
            credentials = grant_access(sessions)
            web_port, dicom_port = free_port(), free_port()
            config = write_config(work, url, web_port=web_port, dicom_port=dicom_port)
            base = f"http://127.0.0.1:{web_port}"
            start_radground(group, "radground-web", config, "web", port=web_port)
            if args.part in ("latency", "both"):
                cases = make_cases(report, args.jobs)
                timings = measure_latency(cases, base=base, credentials=credentials,
                                          sessions=sessions, warmup=args.warmup,
                                          iterations=args.iterations, console=console)
                console.print(latency_table(timings, jobs=args.jobs, iterations=args.iterations))
                results["latency_ms"] = {
                    name: {"http_p50": statistics.median(h) * 1000, "http_p95": p95(h) * 1000,
                           "direct_p50": statistics.median(d) * 1000,
                           "direct_p95": p95(d) * 1000}
                    for name, (h, d) in timings.items()
                }
            if args.part in ("stow", "both"):
                start_radground(group, "radground-node", config, "node", port=dicom_port)
                results["ingest"] = run_ingest(args, console, work, base=base,
                                               token=credentials.token, dicom_port=dicom_port)
        except BaseException:
            for name in ("radground-web", "radground-node"):
                tail = group.log_tail(name)
                if tail:
                    console.print(f"[bold]{name} log:[/bold]\n{tail}")
            raise
        finally:
            group.stop()
            engine.dispose()
    results["load_average_at_end"] = os.getloadavg()[0]
    console.print(f"{os.cpu_count()} cores; 1-minute load average "
                  f"{results['load_average_at_start']:.1f} at the start, "
                  f"{results['load_average_at_end']:.1f} at the end (other processes on the "
                  "machine slow both sides of every ratio)")
    return results


@contextmanager
def nagle_off_for_children() -> Iterator[None]:
    """``TCP_NODELAY=1`` in the environment of processes started meanwhile: Orthanc's DICOM
    server (dcmtk) leaves Nagle on without it and then answers each C-STORE ~40 ms late."""
    before = os.environ.get("TCP_NODELAY")
    os.environ["TCP_NODELAY"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TCP_NODELAY"]
        else:
            os.environ["TCP_NODELAY"] = before


def run_ingest(args: argparse.Namespace, console: Console, work: Path, *, base: str,
               token: str, dicom_port: int) -> dict[str, Any]:
    from tests.integration.dicomweb import dicomweb_base, orthanc_dicomweb

    stow_load, cstore_load = make_loads(work / "files", args.data, instances=args.instances,
                                        per_request=args.per_request)
    warm_stow, warm_cstore = make_loads(work / "warm", args.data, instances=2 * args.per_request,
                                        per_request=args.per_request)
    with nagle_off_for_children(), orthanc_dicomweb(work / "orthanc") as pacs:
        rg_stow, rg_close = stow_sender(base + STOW_PATH, token)
        orthanc_stow, orthanc_close = stow_sender(dicomweb_base(pacs), None)
        try:
            senders = {
                RG_STOW: (rg_stow, stow_load),
                ORTHANC_STOW: (orthanc_stow, stow_load),
                RG_CSTORE: (storescu_sender(dicom_port, "RADGROUND"), cstore_load),
                ORTHANC_CSTORE: (storescu_sender(pacs.dicom_port, pacs.aet), cstore_load),
            }
            # warm-up (first connections, imports, first writes): one request each, not counted
            for index, (send, _) in enumerate(senders.values()):
                send((warm_stow if index < 2 else warm_cstore).requests[index % 2])
            timings = measure_ingest(senders, console=console)
        finally:
            rg_close()
            orthanc_close()
    loads = {name: load for name, (_, load) in senders.items()}
    console.print(ingest_table(timings, loads, args.per_request))
    return {
        name: {"instances": loads[name].instances, "megabytes": loads[name].bytes / 1e6,
               "instances_per_s": loads[name].instances / sum(values),
               "mb_per_s": loads[name].bytes / sum(values) / 1e6,
               "request_p50_ms": statistics.median(values) * 1000}
        for name, values in timings.items()
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    summary, _, details = (__doc__ or "").partition("\n\n")
    parser = argparse.ArgumentParser(description=summary, epilog=details,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("latency", "stow", "both"), default="both",
                        help="page latency, STOW-RS/C-STORE ingest, or both (default both)")
    parser.add_argument("--quick", action="store_true",
                        help="5 000 jobs, 30 requests per case, 40 instances per receiver")
    parser.add_argument("--jobs", type=int, default=100_000,
                        help="jobs in the database (default 100 000)")
    parser.add_argument("--iterations", type=int, default=200,
                        help="measured requests per page (default 200)")
    parser.add_argument("--warmup", type=int, default=20,
                        help="requests per page before measuring (default 20)")
    parser.add_argument("--instances", type=int, default=200,
                        help="instances each receiver stores (default 200)")
    parser.add_argument("--per-request", type=int, default=10,
                        help="instances per STOW-RS request / C-STORE association (default 10)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"the shared data folder (default {DEFAULT_DATA})")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.iterations, args.warmup = 5_000, 30, 5
        args.instances, args.per_request = 40, 5
    if args.jobs < 1_000 or args.iterations < 2 or args.instances < args.per_request:
        parser.error("need --jobs >= 1000, --iterations >= 2, --instances >= --per-request")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.part in ("stow", "both") and shutil.which("storescu") is None:
        sys.exit("storescu not found: install dcmtk (.ci/bootstrap --test)")
    console = Console(width=max(Console().width, 150))
    with tempfile.TemporaryDirectory(prefix="radground-bench-web-") as tmp:
        results = run(args, console, Path(tmp))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
