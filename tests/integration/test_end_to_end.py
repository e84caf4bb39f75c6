"""End to end with real processes and services: Orthanc sends studies to RadGround,
SR and GSPS come back into Orthanc and a FHIR transaction reaches an HTTP EHR.

Cluster mode runs ``radground node`` and ``radground worker --queues gpu|io`` as
separate processes on Redis (a DB number of its own) and a fresh PostgreSQL
database; embedded mode runs ``radground serve`` on SQLite. The fault tests
kill, stop and restart the parts a deployment loses in practice (a GPU worker,
the PACS, the EHR, the broker) and check that every study still ends with
exactly one set of outputs.

One Orthanc and one FHIR server serve the module; every test uses its own
studies and looks only at those.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.factories import make_chest_dx, write_dataset
from tests.integration.dcmtk import echoscu
from tests.integration.fhir_server import FhirTestServer
from tests.integration.orthanc import OrthancPACS
from tests.integration.radground_processes import (
    JobReader,
    JobView,
    RadGroundProcess,
    clean_env,
    free_port,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.slow

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
GSPS_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"  # Grayscale Softcopy Presentation State
REDIS_DB = 7
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
CXRS = ("00000072_000.png", "00000147_001.png", "00000149_006.png", "00000181_061.png", "00000193_019.png")
#: Seconds a study may take from being sent to its outputs in Orthanc and the EHR
#: (completion 2 s, worker start-up, inference on a shared 2-core CPU).
TURNAROUND = 90


# -- services shared by the module ------------------------------------------------


@pytest.fixture(scope="module")
def pacs(tmp_path_factory) -> Iterator[OrthancPACS]:
    orthanc = OrthancPACS(tmp_path_factory.mktemp("orthanc"))
    orthanc.start()
    yield orthanc
    orthanc.stop()


@pytest.fixture(scope="module")
def ehr() -> Iterator[FhirTestServer]:
    with FhirTestServer() as server:
        yield server


def redis_cli(*args: str) -> str:
    done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", *args], capture_output=True, text=True,
                          timeout=30)
    return done.stdout.strip()


def flush_our_redis_db() -> None:
    assert redis_cli("-n", str(REDIS_DB), "FLUSHDB") == "OK"


@pytest.fixture(scope="module")
def postgres_url(postgres_server_url) -> Iterator[str]:
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"radground_e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- a RadGround deployment -------------------------------------------------------


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

    def wait(self, predicate, timeout: float = TURNAROUND, *, what: str):
        return wait_until(predicate, timeout, what=what, logs=list(self.processes.values()))

    def wait_node_ready(self) -> None:
        self.wait(lambda: echoscu(self.port).returncode == 0, 60, what="the node answering C-ECHO")

    def wait_worker_ready(self, role: str) -> None:
        self.wait(lambda: " ready." in self.processes[role].log_text(), 60, what=f"worker {role} ready")

    def stop_all(self) -> None:
        for process in self.all_processes():
            process.stop()
        self.reader.close()
        leftovers = [p.name for p in self.all_processes() if p.alive]
        assert not leftovers, f"processes still running: {leftovers}"

    # studies

    def upload_study(self, images: Sequence[str], shared_data: Path, *, study: str | None = None,
                     broken: bool = False) -> tuple[str, list[str]]:
        """Store a DX chest study in Orthanc (one instance per PNG); (study UID, SOP Instance UIDs)."""
        study = study or generate_uid()
        uids = []
        for name in images:
            ds = make_chest_dx(shared_data / "nih-cxr-boxes" / "images" / name, study_instance_uid=study)
            if broken:
                ds.PixelData = ds.PixelData[:1000]  # truncated: cannot be decoded
            path = write_dataset(ds, self.workdir / "sources" / f"{ds.SOPInstanceUID}.dcm")
            self.pacs.upload(path)
            uids.append(str(ds.SOPInstanceUID))
        return study, uids

    def send(self, study: str) -> None:
        """Orthanc C-STOREs the study to RadGround (synchronously)."""
        self.pacs.send_study(study, to=self.modality)

    def jobs(self, study: str) -> list[JobView]:
        return self.reader.jobs_of_study(study)

    def wait_jobs(self, study: str, states: Sequence[str], timeout: float = TURNAROUND, *,
                  what: str = "") -> list[JobView]:
        """Wait until the study's jobs are in exactly these states (in job order)."""
        return self.wait(lambda: (jobs := self.jobs(study)) and [j.state for j in jobs] == list(states) and jobs,
                         timeout, what=what or f"jobs of the study in states {list(states)}")

    def radground(self, *args: str) -> str:
        """Run a `radground` CLI command on this deployment's config; its stdout."""
        done = subprocess.run([sys.executable, "-m", "radground", "--config", str(self.config), *args],
                              capture_output=True, text=True, timeout=60, env=clean_env(), cwd=self.workdir)
        assert done.returncode == 0, done.stderr
        return done.stdout


def new_deployment(tmp_path: Path, pacs: OrthancPACS, ehr: FhirTestServer, *, database_url: str,
                   broker_url: str, name: str, **config) -> Deployment:
    port = free_port()
    workdir = tmp_path / name
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = write_config(workdir / "radground.toml", workdir=workdir, port=port, database_url=database_url,
                       broker_url=broker_url, pacs_port=pacs.dicom_port, fhir_url=ehr.base_url, **config)
    deployment = Deployment(cfg, workdir, port, database_url, pacs, ehr, modality=name.upper()[:16])
    pacs.set_modality(deployment.modality, "RADGROUND", "127.0.0.1", port)
    return deployment


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pacs, ehr, postgres_url) -> Iterator[Deployment]:
    """`radground node` + one gpu and one io worker on Redis and PostgreSQL, shared by the module."""
    flush_our_redis_db()
    deployment = new_deployment(tmp_path_factory.mktemp("cluster"), pacs, ehr, database_url=postgres_url,
                                broker_url=REDIS_URL, name="cluster")
    try:
        deployment.start("node", "node")
        deployment.start("gpu", "worker", "--queues", "gpu")
        deployment.start("io", "worker", "--queues", "io")
        deployment.wait_node_ready()
        deployment.wait_worker_ready("gpu")
        deployment.wait_worker_ready("io")
        yield deployment
    finally:
        deployment.stop_all()
        flush_our_redis_db()


@pytest.fixture
def healthy_cluster(cluster) -> Iterator[Deployment]:
    """The shared cluster with every process running (a test that killed one restarts it)."""
    for role, args in (("node", ("node",)), ("gpu", ("worker", "--queues", "gpu")),
                       ("io", ("worker", "--queues", "io"))):
        if not cluster.processes[role].alive:
            cluster.start(role, *args)
            if role == "node":
                cluster.wait_node_ready()
            else:
                cluster.wait_worker_ready(role)
    yield cluster


# -- what every scenario ends with ------------------------------------------------


def references_of(ds) -> set[str]:
    """SOP Instance UIDs a GSPS or SR references (GSPS: Referenced Series; SR: evidence)."""
    refs = set()
    for series in getattr(ds, "ReferencedSeriesSequence", []):
        refs |= {str(item.ReferencedSOPInstanceUID) for item in series.ReferencedImageSequence}
    for study in getattr(ds, "CurrentRequestedProcedureEvidenceSequence", []):
        for series in study.ReferencedSeriesSequence:
            refs |= {str(item.ReferencedSOPInstanceUID) for item in series.ReferencedSOPSequence}
    return refs


def assert_outputs(deployment: Deployment, study: str, revisions: Sequence[Sequence[str]]) -> None:
    """Exactly one set of outputs per revision: in Orthanc 2 SR (en, zh-CN) and 2 GSPS per
    revision, referencing that revision's source images, with distinct UIDs across
    revisions; in the EHR one DiagnosticReport per revision, and every transaction valid."""
    pacs, ehr = deployment.pacs, deployment.ehr
    instances = pacs.instances_of_study(study)
    ours = [i for i in instances if i["SOPClassUID"] in (SR_CLASS, GSPS_CLASS)]
    sr = [i for i in ours if i["SOPClassUID"] == SR_CLASS]
    gsps = [i for i in ours if i["SOPClassUID"] == GSPS_CLASS]
    assert (len(sr), len(gsps)) == (2 * len(revisions), 2 * len(revisions)), ours
    assert all(i["RemoteAET"] == "RADGROUND" for i in ours)
    by_series: dict[str, list] = {}
    all_sources = {uid for revision in revisions for uid in revision}
    for instance in ours:
        ds = dcmread(io.BytesIO(pacs.instance_file(instance["ID"])))
        refs = references_of(ds)
        assert refs and refs <= all_sources, (instance["Modality"], refs, all_sources)
        by_series.setdefault(instance["SeriesInstanceUID"], []).append((instance, refs))
        if instance["SOPClassUID"] == SR_CLASS:
            languages = {str(item.LanguageCodeSequence[0].CodeValue) if "LanguageCodeSequence" in item else ""
                         for item in ds.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "121049"}
            assert languages, "the SR declares its language (TID 1204)"
    # each revision's outputs reference its own images: the latest revision (all images)
    # and, before it, the images the earlier revision had
    for revision, sources in enumerate(revisions, start=1):
        covering = [refs for group in by_series.values() for _, refs in group if refs <= set(sources)]
        assert covering, f"revision {revision}: no output references only its images {sources}"
    # the EHR: one DiagnosticReport per revision of this study, every transaction valid
    [imaging_study] = [r for r in ehr.resources("ImagingStudy")
                       if any(i.get("value") == f"urn:oid:{study}" for i in r.get("identifier", []))]
    reports = [r for r in ehr.resources("DiagnosticReport")
               if any(ref.get("reference") == f"ImagingStudy/{imaging_study['id']}"
                      for ref in r.get("imagingStudy", []))]
    assert len(reports) == len(revisions), reports
    assert all(r["status"] == "preliminary" for r in reports)
    transactions = [t for t in ehr.transactions if study in json.dumps(t.json)]
    assert transactions
    for transaction in transactions:
        assert ehr.validate_with_npm(json.dumps(transaction.json)) == []


# -- the tests --------------------------------------------------------------------


def test_cluster_study_from_orthanc_to_sr_gsps_and_fhir(healthy_cluster, shared_data):
    study, [source] = healthy_cluster.upload_study(CXRS[:1], shared_data)
    healthy_cluster.send(study)
    [job] = healthy_cluster.wait_jobs(study, ["done"])
    assert all(d.state == "done" and d.attempts == 1 for d in job.deliveries), job
    assert_outputs(healthy_cluster, study, [[source]])
    shown = healthy_cluster.radground("jobs", "show", str(job.id))
    assert f"Job {job.id}: done" in shown and "delivery to PACS (dicom): done" in shown
