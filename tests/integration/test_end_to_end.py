"""End to end with real processes and services: Orthanc sends studies to RadGround,
SR and GSPS come back into Orthanc and a FHIR transaction reaches an HTTP EHR.

Cluster mode runs ``radground node`` and ``radground worker --queues gpu|io`` as
separate processes on a private Redis server (its own port: the broker-restart
test restarts it) and a fresh PostgreSQL database; embedded mode runs ``radground serve`` on SQLite.
The fault tests kill, stop and restart the parts a deployment loses in practice (a GPU worker,
the PACS, the EHR, the broker) and check that every study still ends with
exactly one set of outputs.

One Orthanc and one FHIR server serve the module; every test uses its own
studies and looks only at those.
"""

from __future__ import annotations

import io
import json
import os
import signal
import uuid
from collections.abc import Iterator, Sequence

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.integration.fhir_server import FhirTestServer
from tests.integration.orthanc import OrthancPACS
from tests.integration.private_redis import PrivateRedis
from tests.integration.radground_processes import (
    Deployment,
    child_processes,
    holds_for,
    new_deployment,
)

pytestmark = pytest.mark.slow

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
GSPS_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"  # Grayscale Softcopy Presentation State
#: Radiographs the shipped model draws boxes on (so each study gets GSPS as well as SR); it
#: reports Cardiomegaly only, so these are images it finds cardiomegaly on.
CXRS = (
    "00000211_010.png",
    "00000211_016.png",
    "00000377_004.png",
    "00000398_003.png",
    "00000457_004.png",
    "00000661_000.png",
    "00000732_005.png",
    "00000740_000.png",
)


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


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> Iterator[PrivateRedis]:
    """The cluster's Redis: a private server, never the machine's shared one."""
    redis = PrivateRedis(tmp_path_factory.mktemp("redis"))
    redis.start()
    yield redis
    redis.stop()


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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pacs, ehr, postgres_url, broker) -> Iterator[Deployment]:
    """`radground node` + one gpu and one io worker on Redis and PostgreSQL, shared by the
    module."""
    deployment = new_deployment(
        tmp_path_factory.mktemp("cluster"),
        pacs,
        ehr,
        database_url=postgres_url,
        broker_url=broker.url,
        name="cluster",
    )
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


@pytest.fixture
def healthy_cluster(cluster) -> Iterator[Deployment]:
    """The shared cluster with every process running (a test that killed one restarts it)."""
    if not cluster.pacs.running:
        cluster.pacs.start()
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


def assert_outputs(
    deployment: Deployment, study: str, revisions: Sequence[Sequence[str]]
) -> dict[int, set[str]]:
    """Exactly one set of outputs per revision, every job done: in Orthanc 2 SR (en,
    zh-CN) and 2 GSPS per revision, referencing that revision's source images, new
    UIDs for each revision and nothing else of ours; in the EHR one DiagnosticReport
    per revision, every committed transaction valid. A failure carries the logs' tails.
    Returns the source images each revision's outputs reference."""
    try:
        return _assert_outputs(deployment, study, revisions)
    except AssertionError as exc:
        tails = "\n".join(
            f"=== {p.name} (running: {p.alive})\n{p.tail()}" for p in deployment.processes.values()
        )
        raise AssertionError(f"{exc}\n{tails}") from exc


def _assert_outputs(
    deployment: Deployment, study: str, revisions: Sequence[Sequence[str]]
) -> dict[int, set[str]]:
    pacs, ehr = deployment.pacs, deployment.ehr
    referenced: dict[int, set[str]] = {}
    jobs = deployment.jobs(study)
    assert [(j.revision, j.state) for j in jobs] == [
        (r, "done") for r in range(1, len(revisions) + 1)
    ], jobs
    in_orthanc = {i["SOPInstanceUID"]: i for i in pacs.instances_of_study(study)
                  if i["SOPClassUID"] in (SR_CLASS, GSPS_CLASS)}
    produced: set[str] = set()
    for job, sources in zip(jobs, revisions, strict=True):
        artifacts = deployment.reader.artifacts(job.id)
        dicom = [
            (kind, language, uid) for kind, language, uid in artifacts if kind in ("sr", "gsps")
        ]
        assert sorted((kind, language) for kind, language, _ in dicom) == [
            ("gsps", "en"), ("gsps", "zh-CN"), ("sr", "en"), ("sr", "zh-CN")], artifacts
        assert [kind for kind, _, _ in artifacts].count("fhir") == 1
        for kind, language, uid in dicom:
            instance = in_orthanc.get(uid)
            assert instance is not None, (
                f"revision {job.revision}: {kind} {language} not in Orthanc"
            )
            assert instance["SOPClassUID"] == (SR_CLASS if kind == "sr" else GSPS_CLASS)
            assert instance["RemoteAET"] == "RADGROUND"
            ds = dcmread(io.BytesIO(pacs.instance_file(instance["ID"])))
            refs = references_of(ds)
            assert refs and refs <= set(sources), (job.revision, kind, refs, sources)
            referenced.setdefault(job.revision, set()).update(refs)
            if kind == "sr":
                [stated] = [
                    str(item.ConceptCodeSequence[0].CodeValue)
                    for item in ds.ContentSequence
                    # TID 1204 language
                    if item.ConceptNameCodeSequence[0].CodeValue == "121049"
                ]
                assert stated == language
        produced |= {uid for _, _, uid in dicom}
    assert len(produced) == 4 * len(revisions)  # new UIDs for every revision
    assert set(in_orthanc) == produced  # nothing else of ours in the PACS
    # the EHR: one DiagnosticReport per revision of this study, every transaction valid
    [imaging_study] = [
        r
        for r in ehr.resources("ImagingStudy")
        if any(i.get("value") == f"urn:oid:{study}" for i in r.get("identifier", []))
    ]
    reports = [r for r in ehr.resources("DiagnosticReport")
               if any(ref.get("reference") == f"ImagingStudy/{imaging_study['id']}"
                      for ref in r.get("imagingStudy", []))]
    assert len(reports) == len(revisions), reports
    assert all(r["status"] == "preliminary" for r in reports)
    transactions = [t for t in ehr.transactions if study in json.dumps(t.json)]
    assert len(transactions) == len(revisions)
    for transaction in transactions:
        assert ehr.validate_with_npm(json.dumps(transaction.json)) == []
    return referenced


# -- the tests (embedded first: the module's cluster starts with its first test) -----


@pytest.fixture(scope="class")
def embedded(tmp_path_factory, pacs, ehr) -> Iterator[Deployment]:
    """`radground serve`: SQLite index, SQLite-file broker, workers it spawns itself."""
    tmp_path = tmp_path_factory.mktemp("embedded")
    deployment = new_deployment(
        tmp_path,
        pacs,
        ehr,
        database_url=f"sqlite:///{tmp_path / 'radground.db'}",
        broker_url=f"radground+sqlite:///{tmp_path / 'broker.sqlite'}",
        name="embedded",
    )
    try:
        serve = deployment.start("serve", "serve")
        deployment.wait_node_ready()
        deployment.wait(
            lambda: serve.log_text().count(" ready.") == 2, 60, what="both spawned workers ready"
        )
        yield deployment
    finally:
        deployment.stop_all()


class TestEmbedded:
    """Runs before the module's cluster starts (it starts with the first cluster test)."""

    def test_serve_study_from_orthanc_to_sr_gsps_and_fhir(self, embedded, shared_data):
        study, sources = embedded.upload_study(CXRS[:1], shared_data)
        embedded.send(study)
        [job] = embedded.wait_jobs(study, ["done"])
        assert_outputs(embedded, study, [sources])
        assert "delivery to EHR (fhir): done, 1 attempts" in embedded.radground(
            "jobs", "show", str(job.id)
        )

    def test_serve_restarts_a_killed_gpu_worker(self, embedded, shared_data):
        """A worker the OOM killer took is started again; the next study is processed."""
        serve = embedded.processes["serve"]

        def gpu_workers() -> list[int]:
            return [
                pid
                for pid, args in child_processes(serve.popen.pid).items()
                if "--queues gpu" in args
            ]

        [killed] = gpu_workers()
        os.kill(killed, signal.SIGKILL)
        embedded.wait(
            lambda: (pids := gpu_workers()) and killed not in pids, 30, what="a new gpu worker"
        )
        study, sources = embedded.upload_study(CXRS[1:2], shared_data)
        embedded.send(study)
        embedded.wait_jobs(study, ["done"])
        assert_outputs(embedded, study, [sources])


def test_cluster_study_from_orthanc_to_sr_gsps_and_fhir(healthy_cluster, shared_data):
    study, [source] = healthy_cluster.upload_study(CXRS[:1], shared_data)
    healthy_cluster.send(study)
    [job] = healthy_cluster.wait_jobs(study, ["done"])
    assert all(d.state == "done" and d.attempts == 1 for d in job.deliveries), job
    assert_outputs(healthy_cluster, study, [[source]])
    shown = healthy_cluster.radground("jobs", "show", str(job.id))
    assert f"Job {job.id}: done" in shown and "delivery to PACS (dicom): done" in shown


def test_gpu_worker_killed_mid_inference_the_job_still_ends_done_once(healthy_cluster, shared_data):
    c = healthy_cluster
    images = sorted(p.name for p in (shared_data / "nih-cxr-boxes" / "images").glob("*.png"))[:12]
    study, sources = c.upload_study(images, shared_data)  # 12 images: inference takes a while
    c.send(study)
    c.wait(
        lambda: [j.state for j in c.jobs(study)] == ["inferring"],
        what="the job inferring",
        interval=0.02,
    )
    c.processes["gpu"].kill()  # SIGKILL, as the OOM killer would
    [job] = c.jobs(study)
    assert (job.state, job.inference_starts) == ("inferring", 1), (
        "the worker finished before it was killed"
    )
    c.start("gpu", "worker", "--queues", "gpu")
    # the message is unacknowledged in Redis (redelivered only after the visibility
    # timeout); the node's sweeper re-queues the job once the killed worker's lease lapsed
    [job] = c.wait_jobs(study, ["done"])
    assert job.inference_starts == 2
    assert_outputs(c, study, [sources])


def test_pacs_down_for_a_while_then_back_delivered_once(healthy_cluster, shared_data):
    c, pacs = healthy_cluster, healthy_cluster.pacs
    study, sources = c.upload_study(CXRS[1:2], shared_data)
    c.send(study)
    # Down at once, before the study is ready (completion waits 2 s): a clean stop takes Orthanc
    # ~3.5 s, during which it may still accept our delivery. A killed Orthanc restarts on its
    # storage.
    pacs.stop(kill=True)
    try:
        def pacs_delivery_failed():
            jobs = c.jobs(study)
            return jobs and [
                d
                for d in jobs[0].deliveries
                if d.destination == "PACS"
                and d.attempts >= 1
                and d.state == "pending"
                and d.last_error
            ]

        [delivery] = c.wait(pacs_delivery_failed, what="a failed delivery attempt to the PACS")
        assert "not stored" in delivery.last_error or "connect" in delivery.last_error, (
            delivery.last_error
        )
    finally:
        pacs.start()
    [job] = c.wait_jobs(study, ["done"])
    [pacs_delivery] = [d for d in job.deliveries if d.destination == "PACS"]
    assert pacs_delivery.attempts >= 2 and pacs_delivery.last_error is None
    assert_outputs(c, study, [sources])


def test_fhir_endpoint_503_several_times_delivered_once(healthy_cluster, shared_data):
    c = healthy_cluster
    c.ehr.fail_next(3, status=503)
    study, sources = c.upload_study(CXRS[2:3], shared_data)
    c.send(study)
    [job] = c.wait_jobs(study, ["done"])
    [ehr_delivery] = [d for d in job.deliveries if d.destination == "EHR"]
    assert (ehr_delivery.state, ehr_delivery.attempts) == ("done", 4)
    assert [r.status for r in c.ehr.received if study in r.body.decode("utf-8", "replace")] == [
        503,
        503,
        503,
        200,
    ]
    assert_outputs(c, study, [sources])


def test_redis_restarted_while_jobs_are_queued_the_sweeper_enqueues_them_again(
    healthy_cluster, broker, shared_data
):
    c = healthy_cluster
    c.processes["gpu"].stop()  # nobody takes the inference messages
    studies = [c.upload_study(CXRS[i:i + 1], shared_data) for i in (5, 6)]
    for study, _ in studies:
        c.send(study)
    for study, _ in studies:
        c.wait_jobs(study, ["queued"])
    c.wait(
        lambda: int(broker.cli("llen", "gpu") or 0) >= 2,
        10,
        what="both inference messages in Redis",
    )
    broker.restart()  # without persistence
    assert int(broker.cli("llen", "gpu")) == 0  # the messages are gone
    c.start("gpu", "worker", "--queues", "gpu")
    for study, sources in studies:
        c.wait_jobs(study, ["done"])
        assert_outputs(c, study, [sources])


def test_same_study_sent_twice_one_job_one_set_of_outputs(healthy_cluster, shared_data):
    c = healthy_cluster
    study, sources = c.upload_study(CXRS[4:6], shared_data)
    c.send(study)
    c.send(study)  # identical instances again, before the study is ready
    c.wait_jobs(study, ["done"])
    # and once more after it was processed, now with our SR and GSPS in it (the PACS routes
    # them back): identical instances open no new revision, our own outputs are not processed
    c.send(study)
    # nothing may happen: no job for longer than the completion timer (2 s) and a sweep (5 s)
    holds_for(lambda: [j.state for j in c.jobs(study)] == ["done"], 6, what="one job, done")
    assert_outputs(c, study, [sources])


def test_new_revision_while_the_first_is_inferring_two_sets_of_outputs(
    healthy_cluster, shared_data
):
    c = healthy_cluster
    images = sorted(p.name for p in (shared_data / "nih-cxr-boxes" / "images").glob("*.png"))[12:21]
    study, series = generate_uid(), generate_uid()
    _, first = c.upload_study(images, shared_data, study=study, series=series)
    _, [late] = c.upload_study(CXRS[3:4], shared_data, study=study, series=series)
    c.send_instances(first)
    c.wait(
        lambda: [j.state for j in c.jobs(study)] == ["inferring"],
        what="revision 1 inferring",
        interval=0.02,
    )
    c.send_instances([late])
    c.wait_jobs(study, ["done", "done"])
    referenced = assert_outputs(c, study, [first, [*first, late]])
    assert late not in referenced[1] and late in referenced[2]  # revision 2 saw the late image


def test_bad_study_fails_readably_and_the_next_study_is_processed(healthy_cluster, shared_data):
    c = healthy_cluster
    bad, _ = c.upload_study(CXRS[:1], shared_data, broken=True)
    c.send(bad)
    [job] = c.wait_jobs(bad, ["failed"])
    shown = c.radground("jobs", "show", str(job.id))
    assert f"Job {job.id}: failed" in shown
    assert "last error: inference:" in shown and job.last_error in shown
    assert any(word in job.last_error.lower() for word in ("pixel", "decode")), job.last_error
    assert [i["Modality"] for i in c.pacs.instances_of_study(bad)] == ["DX"]  # no outputs
    good, sources = c.upload_study(CXRS[7:8], shared_data)
    c.send(good)
    c.wait_jobs(good, ["done"])
    assert_outputs(c, good, [sources])


def test_gpu_workers_down_for_several_sweeps_the_job_still_ends_done(
    healthy_cluster, broker, shared_data
):
    """While no gpu worker runs the sweeper enqueues the waiting job again every sweep;
    the duplicates a returning worker runs concurrently are dropped, not counted as
    crashed starts (max_task_starts would mark the job dead)."""
    c = healthy_cluster
    c.processes["gpu"].stop()
    study, sources = c.upload_study(CXRS[2:3], shared_data)
    c.send(study)
    # 4 messages (max_task_starts + 1) after ~20 s
    c.wait(lambda: int(broker.cli("llen", "gpu") or 0) >= 4, 45,
           what="four inference messages for the job queued")
    c.start("gpu", "worker", "--queues", "gpu")
    [job] = c.wait(
        lambda: (jobs := c.jobs(study)) and jobs[0].state in ("done", "failed", "dead") and jobs,
        what="the job finished",
    )
    assert (job.state, job.inference_starts) == ("done", 1), job
    assert_outputs(c, study, [sources])


def test_io_worker_killed_with_a_delivery_retry_pending_the_delivery_is_made_once(
    healthy_cluster, shared_data
):
    """The io worker holds a scheduled delivery retry (PACS down) when it is killed:
    the node's sweeper enqueues the pending delivery again for the new io worker. The kill
    waits for the EHR's delivery to be recorded: a worker killed while a transaction is in
    flight sends it again (at least once; the Bundle's conditional interactions keep the EHR
    free of duplicates), which is not what this test is about."""
    c, pacs = healthy_cluster, healthy_cluster.pacs
    study, sources = c.upload_study(CXRS[3:4], shared_data)
    c.send(study)
    pacs.stop()
    try:
        c.wait(
            lambda: (
                (jobs := c.jobs(study))
                and any(
                    d.destination == "PACS" and d.attempts >= 1 and d.last_error
                    for d in jobs[0].deliveries
                )
                and any(
                    d.destination == "EHR" and d.state == "done" for d in jobs[0].deliveries
                )
            ),
            what="a failed delivery attempt to the PACS and the EHR's delivery done",
        )
        c.processes["io"].kill()
    finally:
        pacs.start()
    c.start("io", "worker", "--queues", "io")
    [job] = c.wait_jobs(study, ["done"])
    assert [d.attempts >= 2 for d in job.deliveries if d.destination == "PACS"] == [True]
    assert_outputs(c, study, [sources])
