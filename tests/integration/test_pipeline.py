"""The job pipeline on real databases, a real DICOM peer and a real HTTP FHIR endpoint.

Messages go to an in-test queue that the test drains, so every redelivery,
duplicate and lost message can be staged deliberately; the Celery wiring is
covered by the end-to-end tests.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, generate_uid
from sqlalchemy import func, select

from dicom_node.scp import StorageSCP
from dicom_node.scu import Destination, StorageSCU
from dicom_node.storage import InstanceStore
from engine.report import FindingKind, GroundedReport, Presence
from exporters import regions as regions_module
from exporters.hl7 import message_control_id
from exporters.protocol import OutputKind
from radground.node import Node
from radground.runtime import build_context
from radground.settings import (
    CompletionSettings,
    DatabaseSettings,
    DicomDestination,
    FhirEndpointSettings,
    NodeSettings,
    RouteSettings,
    Settings,
    StorageSettings,
    WorkerSettings,
)
from tests.factories import make_chest_dx, make_ct, write_dataset
from tests.integration.fhir_server import FhirTestServer
from worklist.completion import CompletionMonitor
from worklist.context import Hl7Target
from worklist.db import utcnow
from worklist.delivery import run_delivery
from worklist.jobs import retry_job
from worklist.jobs_models import Artifact, Delivery, DeliveryState, Job, JobState
from worklist.pipeline import make_study_ready_hook, requeue_stale, run_export, run_inference

#: A radiograph the shipped model draws a box on (Cardiomegaly), so a study gets GSPS as well as SR.
CXR = "00000211_010.png"


@dataclass
class QueueRecorder:
    """An Enqueuer that keeps messages for the test to run (or lose)."""

    messages: list[tuple] = field(default_factory=list)
    #: Retries scheduled for later (countdown > 0): the test decides when time has passed.
    delayed: list[tuple] = field(default_factory=list)

    def inference(self, job_id: int) -> None:
        self.messages.append(("infer", job_id))

    def export(self, job_id: int) -> None:
        self.messages.append(("export", job_id))

    def delivery(self, delivery_id: int, attempt: int, countdown: float = 0.0) -> None:
        (self.delayed if countdown > 0 else self.messages).append(("deliver", delivery_id, attempt))


def drain(
    ctx, queue: QueueRecorder, *, limit: int = 100, wait_for_retries: bool = False
) -> list[tuple]:
    """Run queued messages; with ``wait_for_retries`` also the retries, as if their time had
    come."""
    done = []
    while (queue.messages or (wait_for_retries and queue.delayed)) and len(done) < limit:
        if not queue.messages:
            queue.messages, queue.delayed = queue.delayed, []
        message = queue.messages.pop(0)
        done.append(message)
        if message[0] == "infer":
            run_inference(ctx, message[1])
        elif message[0] == "export":
            run_export(ctx, message[1])
        else:
            run_delivery(ctx, message[1], message[2])
    return done


@pytest.fixture
def pacs(tmp_path):
    """A Storage SCP standing in for the PACS (Orthanc is used end to end elsewhere)."""
    received = []
    scp = StorageSCP(InstanceStore(tmp_path / "pacs"), ae_title="PACS", on_stored=received.append)
    _host, port = scp.start("127.0.0.1", 0)
    scp.received, scp.port = received, port
    yield scp
    scp.stop()


@pytest.fixture
def ehr():
    with FhirTestServer() as server:
        yield server


@pytest.fixture
def world(tmp_path, database_url, pacs, ehr):
    """RadGround's node (in-process), its pipeline context and the message queue."""
    settings = Settings(
        node=NodeSettings(port=0, listener_processes=1),
        storage=StorageSettings(root=tmp_path / "instances", reserve_mb=0),
        database=DatabaseSettings(url=database_url),
        completion=CompletionSettings(idle_seconds=30, poll_seconds=3600),
        workers=WorkerSettings(outputs_root=tmp_path / "outputs", requeue_after_seconds=60),
        routes=(
            RouteSettings(
                name="cxr",
                modalities=("DX", "CR"),
                body_parts=("CHEST",),
                view_positions=("PA", "AP"),
                destinations=("PACS", "EHR"),
            ),
        ),
        destinations={
            "PACS": DicomDestination(ae_title="PACS", host="127.0.0.1", port=pacs.port),
            "EHR": FhirEndpointSettings(
                url=ehr.base_url, patient_identifier_system="urn:oid:2.25.1234"
            ),
        },
    )
    yield from _world(settings, tmp_path)


def _world(settings: Settings, tmp_path: Path):
    node = Node(settings)
    node.start()
    queue = QueueRecorder()
    ctx = build_context(settings, enqueue=queue)
    monitor = CompletionMonitor(ctx.sessions, make_study_ready_hook(ctx), idle_seconds=30)

    class World:
        pass

    w = World()
    w.settings, w.node, w.ctx, w.queue, w.monitor, w.tmp = (
        settings,
        node,
        ctx,
        queue,
        monitor,
        tmp_path,
    )
    w.send = lambda paths: StorageSCU("MODALITY").send(
        paths, Destination("RADGROUND", "127.0.0.1", node.address[1])
    )
    w.ready = lambda: monitor.run_once(utcnow() + timedelta(seconds=31))
    yield w
    node.stop()


def cxr_file(
    tmp_path: Path, shared_data: Path, *, study: str | None = None, name: str = CXR
) -> Path:
    ds = make_chest_dx(shared_data / "nih-cxr-boxes" / "images" / name, study_instance_uid=study)
    return write_dataset(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")


def jobs(ctx) -> list[Job]:
    with ctx.sessions() as session:
        return list(session.scalars(select(Job).order_by(Job.id)))


def count(ctx, model, *where) -> int:
    with ctx.sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def test_study_to_sr_gsps_in_pacs_and_fhir_in_ehr_exactly_once(world, shared_data, pacs, ehr):
    source = cxr_file(world.tmp, shared_data)
    assert all(r.ok for r in world.send([source]))
    assert len(world.ready()) == 1
    drain(world.ctx, world.queue)
    [job] = jobs(world.ctx)
    assert job.state is JobState.DONE, job.last_error
    source_uid = str(dcmread(source).SOPInstanceUID)

    # the PACS got SR + GSPS in both languages and one KOS (the default outputs), referencing the
    # source image
    received = {i.sop_instance_uid: i for i in pacs.received}
    classes = sorted(i.sop_class_uid for i in received.values())
    assert classes.count("1.2.840.10008.5.1.4.1.1.88.34") == 2  # Comprehensive 3D SR, en + zh-CN
    assert classes.count("1.2.840.10008.5.1.4.1.1.11.1") == 2  # GSPS, en + zh-CN
    # Key Object Selection, one per study
    assert classes.count("1.2.840.10008.5.1.4.1.1.88.59") == 1
    for instance in received.values():
        assert instance.study_instance_uid == str(dcmread(source).StudyInstanceUID)
        stored = dcmread(pacs.store.root / instance.relative_path)
        if instance.sop_class_uid.endswith(".11.1"):
            refs = [r.ReferencedSOPInstanceUID for s in stored.ReferencedSeriesSequence
                    for r in s.ReferencedImageSequence]
            assert refs == [source_uid]

    # the EHR got one valid transaction
    [transaction] = ehr.transactions
    assert ehr.validate_with_npm(json.dumps(transaction.json)) == []
    assert len(ehr.resources("DiagnosticReport")) == 1
    assert ehr.resources("DiagnosticReport")[0]["status"] == "preliminary"

    # export and deliveries run again (redelivered messages after a crash before
    # the results were recorded): nothing new anywhere
    artifacts_before = count(world.ctx, Artifact)
    observations_before = len(ehr.resources("Observation"))
    with world.ctx.sessions.begin() as session:
        session.get(Job, job.id).state = JobState.EXPORTING
        for delivery in session.scalars(select(Delivery)):
            delivery.state, delivery.attempts = DeliveryState.PENDING, 0
    run_export(world.ctx, job.id)
    assert len(drain(world.ctx, world.queue)) == 2  # both deliveries ran again
    assert count(world.ctx, Artifact) == artifacts_before
    assert len({i.sop_instance_uid for i in pacs.received}) == 5
    assert len(ehr.transactions) == 2
    assert len(ehr.resources("DiagnosticReport")) == 1
    assert len(ehr.resources("Observation")) == observations_before
    assert jobs(world.ctx)[0].state is JobState.DONE


def test_other_studies_and_our_own_outputs_are_not_processed(world, shared_data, pacs, tmp_path):
    ct = write_dataset(
        make_ct(study_instance_uid=generate_uid(), series_instance_uid=generate_uid()),
        tmp_path / "ct.dcm",
    )
    world.send([ct])
    source = cxr_file(world.tmp, shared_data)
    world.send([source])
    world.ready()
    drain(world.ctx, world.queue)
    assert [j.state for j in jobs(world.ctx)] == [JobState.DONE]  # the CT matched no route

    # the PACS routes our SR and GSPS back: stored, never processed, no new revision
    ours = [pacs.store.root / i.relative_path for i in pacs.received]
    assert all(r.ok for r in world.send(ours))
    assert world.ready() == []
    drain(world.ctx, world.queue)
    assert len(jobs(world.ctx)) == 1


def test_bad_study_fails_readably_and_the_next_one_is_processed(world, shared_data):
    # Whole in its structure (the node checks that before Success), but its one JPEG 2000
    # fragment is a start-of-codestream marker and nothing else: cannot be decoded.
    bad = make_chest_dx(shared_data / "nih-cxr-boxes" / "images" / CXR)
    bad.file_meta.TransferSyntaxUID = JPEG2000Lossless
    bad.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(996)])
    bad["PixelData"].VR = "OB"
    world.send([write_dataset(bad, world.tmp / "bad.dcm")])
    world.ready()
    drain(world.ctx, world.queue)
    world.send([cxr_file(world.tmp, shared_data)])
    world.ready()
    drain(world.ctx, world.queue)
    first, second = jobs(world.ctx)
    assert first.state is JobState.FAILED and "inference" in first.last_error
    assert "pixel" in first.last_error.lower() or "decode" in first.last_error.lower(), (
        first.last_error
    )
    assert second.state is JobState.DONE


def test_pacs_down_then_back_is_retried_and_delivered_once(world, shared_data, pacs):
    pacs.stop()
    world.send([cxr_file(world.tmp, shared_data)])
    world.ready()
    drain(world.ctx, world.queue)
    with world.ctx.sessions() as session:
        delivery = session.scalars(select(Delivery).where(Delivery.destination == "PACS")).one()
        assert delivery.state is DeliveryState.PENDING and delivery.attempts == 1
        assert "could not connect" in delivery.last_error
    assert jobs(world.ctx)[0].state is JobState.DELIVERING
    assert len(world.queue.delayed) == 1  # the retry, scheduled with backoff
    pacs.start("127.0.0.1", pacs.port)  # back on the same port
    drain(world.ctx, world.queue, wait_for_retries=True)
    assert jobs(world.ctx)[0].state is JobState.DONE
    assert len(pacs.received) == 5  # SR, GSPS (en, zh-CN), KOS


def test_fhir_503_several_times_then_ok(world, shared_data, ehr):
    ehr.fail_next(3, status=503)
    world.send([cxr_file(world.tmp, shared_data)])
    world.ready()
    drain(world.ctx, world.queue, wait_for_retries=True)
    with world.ctx.sessions() as session:
        delivery = session.scalars(select(Delivery).where(Delivery.destination == "EHR")).one()
    assert (delivery.state, delivery.attempts) == (DeliveryState.DONE, 4)
    assert len(ehr.resources("DiagnosticReport")) == 1
    assert jobs(world.ctx)[0].state is JobState.DONE


def test_fhir_4xx_fails_the_job_with_the_operation_outcome_kept(world, shared_data, ehr):
    from tests.integration.fhir_server import make_outcome

    ehr.reject_next(422, make_outcome("invalid", "Observation.code: unknown code system"))
    world.send([cxr_file(world.tmp, shared_data)])
    world.ready()
    drain(world.ctx, world.queue)
    [job] = jobs(world.ctx)
    assert job.state is JobState.FAILED and "EHR" in job.last_error
    with world.ctx.sessions() as session:
        delivery = session.scalars(select(Delivery).where(Delivery.destination == "EHR")).one()
    assert delivery.attempts == 1 and "unknown code system" in delivery.operation_outcome
    # the operator fixes the EHR and retries: only the failed delivery runs again
    message = retry_job(world.ctx, job.id, actor="operator:test")
    assert "deliveries start over" in message
    drain(world.ctx, world.queue)
    assert jobs(world.ctx)[0].state is JobState.DONE


def test_lost_messages_are_requeued_and_a_looping_job_ends_dead(world, shared_data):
    world.send([cxr_file(world.tmp, shared_data)])
    world.ready()
    world.queue.messages.clear()  # the broker lost the inference message (e.g. Redis restarted)
    assert requeue_stale(world.ctx, utcnow() + timedelta(seconds=61)) == 1
    drain(world.ctx, world.queue)
    assert jobs(world.ctx)[0].state is JobState.DONE

    world.send([cxr_file(world.tmp, shared_data)])
    world.ready()
    [message] = world.queue.messages
    world.queue.messages.clear()
    for _ in range(world.ctx.max_task_starts):  # the worker dies mid-inference every time (OOM)
        with world.ctx.sessions.begin() as session:
            job = session.get(Job, message[1])
            job.state, job.inference_starts = JobState.INFERRING, job.inference_starts + 1
            job.inference_started_at = utcnow() - timedelta(hours=1)  # its lease ran out
    run_inference(world.ctx, message[1])
    job = jobs(world.ctx)[-1]
    assert job.state is JobState.DEAD and "started 3 times" in job.last_error


def test_duplicate_message_while_inference_runs_is_not_a_new_start(world, shared_data):
    """Several messages for one job (re-enqueued while no gpu worker ran) reach
    concurrent worker threads: only one runs it, none counts as a crash."""
    world.send([cxr_file(world.tmp, shared_data)])
    world.ready()
    [message] = world.queue.messages
    world.queue.messages.clear()
    with world.ctx.sessions.begin() as session:
        job = session.get(Job, message[1])
        job.state, job.inference_starts, job.inference_started_at = JobState.INFERRING, 1, utcnow()
    for _ in range(world.ctx.max_task_starts + 2):
        # duplicates: dropped while the first run holds its lease
        run_inference(world.ctx, message[1])
    [job] = jobs(world.ctx)
    assert (job.state, job.inference_starts) == (JobState.INFERRING, 1)


def test_new_revision_gets_new_output_uids(world, shared_data, pacs):
    study = generate_uid()
    world.send([cxr_file(world.tmp, shared_data, study=study)])
    world.ready()
    drain(world.ctx, world.queue)
    world.send([cxr_file(world.tmp, shared_data, study=study, name="00000211_016.png")])
    world.ready()
    drain(world.ctx, world.queue)
    first, second = jobs(world.ctx)
    assert (first.revision, second.revision) == (1, 2)
    assert first.state is JobState.DONE and second.state is JobState.DONE, second.last_error
    with world.ctx.sessions() as session:
        uids = {
            job_id: {
                a.object_uid
                for a in session.scalars(select(Artifact).where(Artifact.job_id == job_id))
            }
            for job_id in (first.id, second.id)
        }
    assert uids[first.id] and uids[second.id] and not uids[first.id] & uids[second.id]


def test_unexpected_error_in_a_task_fails_the_job_instead_of_looping(
    world, shared_data, monkeypatch
):
    from worklist import tasks

    monkeypatch.setattr(tasks, "_context", world.ctx)
    world.send([cxr_file(world.tmp, shared_data)])
    world.ready()
    [message] = world.queue.messages
    world.queue.messages.clear()
    tasks.infer.run(message[1])
    world.ctx.outputs_root.parent.mkdir(parents=True, exist_ok=True)
    world.ctx.outputs_root.write_text("not a directory")  # the export cannot write its files
    with pytest.raises(OSError):
        tasks.export.run(message[1])
    [job] = jobs(world.ctx)
    assert job.state is JobState.FAILED
    assert job.last_error.startswith("export: internal error (") and "jobs retry" in job.last_error
    assert requeue_stale(world.ctx, utcnow() + timedelta(hours=1)) == 0  # nothing left to re-run


# -- which outputs a job builds, and from what -----------------------------------

KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"


def _artifacts(ctx, job_id: int) -> list[Artifact]:
    with ctx.sessions() as session:
        return list(
            session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.id))
        )


def _report(ctx, job_id: int) -> GroundedReport:
    with ctx.sessions() as session:
        return GroundedReport.from_json(session.get(Job, job_id).report_json)


def _export_again(ctx, job_id: int) -> None:
    with ctx.sessions.begin() as session:
        session.get(Job, job_id).state = JobState.EXPORTING
    run_export(ctx, job_id)


def _infer_and_export(ctx, queue) -> int:
    """Run the queued inference and the export it enqueues; leave the deliveries queued."""
    [(step, job_id)] = queue.messages
    assert step == "infer"
    queue.messages.clear()
    run_inference(ctx, job_id)
    assert queue.messages == [("export", job_id)]
    queue.messages.clear()
    run_export(ctx, job_id)
    return job_id


def test_a_job_with_sr_gsps_kos_sends_a_kos_referencing_the_images_with_findings(
    world, shared_data, pacs
):
    target = world.ctx.dicom_targets["PACS"]
    assert target.outputs == (OutputKind.SR, OutputKind.GSPS, OutputKind.KOS)  # the default
    world.send([cxr_file(world.tmp, shared_data)])
    world.ready()
    drain(world.ctx, world.queue)
    [job] = jobs(world.ctx)
    assert job.state is JobState.DONE, job.last_error

    report = _report(world.ctx, job.id)
    with_findings = {region.image.sop_instance_uid for f in report.findings
                     if f.kind is FindingKind.ABNORMALITY and f.presence is not Presence.ABSENT
                     for region in f.regions}
    assert with_findings  # the sample radiograph has located abnormalities
    [kos] = [i for i in pacs.received if i.sop_class_uid == KOS_CLASS]
    document = dcmread(pacs.store.root / kos.relative_path)
    # what a PACS shows as key images
    assert document.ConceptNameCodeSequence[0].CodeMeaning == "Of Interest"
    items = document.ContentSequence
    images = {
        str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        for i in items
        if i.ValueType == "IMAGE"
    }
    assert images == with_findings
    # it also points at the job's SR documents, which went to the same PACS
    artifacts = _artifacts(world.ctx, job.id)
    srs = {a.object_uid for a in artifacts if a.kind == OutputKind.SR}
    composites = {str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for i in items
                  if i.ValueType == "COMPOSITE"}
    assert composites == srs and srs <= {
        i.sop_instance_uid for i in pacs.received if i.sop_class_uid == SR_CLASS
    }
    [kos_artifact] = [a for a in artifacts if a.kind == OutputKind.KOS]
    assert (
        kos_artifact.object_uid == kos.sop_instance_uid and kos_artifact.sop_class_uid == KOS_CLASS
    )


def test_regions_are_planned_once_per_job_for_every_output(world, shared_data, monkeypatch):
    """SR, presentation states, Secondary Capture, KOS, FHIR and HL7 share one region plan:
    the report's regions are checked against their images and clipped once per job."""
    pacs_target = dataclasses.replace(world.ctx.dicom_targets["PACS"], outputs=(
        OutputKind.SR, OutputKind.GSPS, OutputKind.SC, OutputKind.KOS))
    [route] = world.ctx.routes
    ctx = dataclasses.replace(
        world.ctx,
        destinations={
            **world.ctx.destinations,
            "PACS": pacs_target,
            "LIS": Hl7Target(host="127.0.0.1", port=2575, name="LIS"),
        },
        routes=(dataclasses.replace(route, destinations=(*route.destinations, "LIS")),),
    )
    world.send([cxr_file(world.tmp, shared_data)])
    world.ready()
    job_id = _infer_and_export(ctx, world.queue)
    built = sorted({a.kind for a in _artifacts(ctx, job_id)})
    assert built == sorted(
        k.value
        for k in (
            OutputKind.SR,
            OutputKind.GSPS,
            OutputKind.SC,
            OutputKind.KOS,
            OutputKind.FHIR_BUNDLE,
            OutputKind.HL7_ORU,
        )
    )

    plans = []
    original = regions_module.plan_findings

    # every plan_regions call, whoever makes it, goes through here
    def counting_plan(report, sources):
        plans.append(report.study_instance_uid)
        return original(report, sources)

    monkeypatch.setattr(regions_module, "plan_findings", counting_plan)
    _export_again(ctx, job_id)
    assert len(plans) == 1  # not once per output kind and language
    assert len(route.languages) == 2 and any(f.regions for f in _report(ctx, job_id).findings)
    # and everything was built from it
    assert sorted({a.kind for a in _artifacts(ctx, job_id)}) == built


def test_an_hl7_receiver_of_the_route_gets_an_oru_with_a_control_id_from_the_revision(
    world, shared_data
):
    [route] = world.ctx.routes
    lis = Hl7Target(host="127.0.0.1", port=2575, name="LIS", receiving_application="LIS")
    ctx = dataclasses.replace(
        world.ctx,
        destinations={**world.ctx.destinations, "LIS": lis},
        routes=(dataclasses.replace(route, destinations=(*route.destinations, "LIS")),),
    )
    world.send([cxr_file(world.tmp, shared_data)])
    world.ready()
    job_id = _infer_and_export(ctx, world.queue)
    with ctx.sessions() as session:
        job = session.get(Job, job_id)
        revision = job.revision
        protocols = {d.destination: d.protocol for d in session.scalars(select(Delivery))}
    assert protocols == {"PACS": "dicom", "EHR": "fhir", "LIS": "hl7"}
    artifacts = _artifacts(ctx, job_id)
    [oru] = [a for a in artifacts if a.kind == OutputKind.HL7_ORU]
    report = _report(ctx, job_id)
    assert oru.object_uid == message_control_id(report, revision=revision, part="LIS")
    segments = (ctx.outputs_root / oru.path).read_bytes().decode("utf-8").split("\r")
    msh = segments[0].split("|")
    assert (msh[4], msh[8], msh[9], msh[17]) == (
        "LIS",
        "ORU^R01^ORU_R01",
        oru.object_uid,
        "UNICODE UTF-8",
    )
    srs = {a.object_uid for a in artifacts if a.kind == OutputKind.SR}
    pointed = {
        s.split("|")[5].split("^")[0]
        for s in segments
        if s.startswith("OBX|") and s.split("|")[2] == "RP"
    }
    assert pointed == srs and len(srs) == 2

    # a redelivered export builds the same message: the receiver can deduplicate on MSH-10
    _export_again(ctx, job_id)
    assert [a.object_uid for a in _artifacts(ctx, job_id) if a.kind == OutputKind.HL7_ORU] == [
        oru.object_uid
    ]
    assert (ctx.outputs_root / oru.path).read_bytes().decode("utf-8").split("\r")[0] == segments[0]


def test_regions_that_do_not_fit_their_images_fail_the_dicom_outputs_only(
    world, shared_data, pacs, ehr, monkeypatch
):
    """A report whose regions cannot be placed (here: the planner refuses them) builds no SR,
    GSPS or KOS; the PACS is told so without being contacted, the EHR still gets its Bundle."""
    from exporters.errors import SourceError

    def refuse(report, sources):
        raise SourceError("finding 0 region 0: its image is not among the source headers given")

    monkeypatch.setattr(regions_module, "plan_findings", refuse)
    world.send([cxr_file(world.tmp, shared_data)])
    world.ready()
    drain(world.ctx, world.queue)
    [job] = jobs(world.ctx)
    assert job.state is JobState.FAILED
    with world.ctx.sessions() as session:
        states = {
            d.destination: (d.state, d.attempts, d.last_error)
            for d in session.scalars(select(Delivery))
        }
    assert states["PACS"][:2] == (DeliveryState.FAILED, 0) and pacs.received == []
    assert states["PACS"][2].startswith(
        "not sent: none of its outputs was built (sr: the regions could not be placed "
        "on their images: finding 0 region 0"
    ), states["PACS"][2]
    assert "; gsps: " in states["PACS"][2] and "; kos: " in states["PACS"][2]
    assert states["EHR"][0] is DeliveryState.DONE and len(ehr.resources("DiagnosticReport")) == 1
    assert job.last_error.startswith("not built: sr: the regions could not be placed"), (
        job.last_error
    )
