"""Destinations through the one protocol and the one retry policy, against real peers:
a Storage SCP, Orthanc with its DICOMweb plugin (STOW-RS, read back with QIDO-RS and
WADO-RS), a STOW-RS stand-in that refuses one instance for a while, the FHIR stand-in,
and hl7apy's MLLP listener. Faults per destination (down, 5xx, AE, partial STOW-RS
failure) are retried on the schedule kept in the database and end with each object
delivered exactly once.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import threading
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import pytest
from hl7apy.parser import parse_message
from pydicom import dcmread
from sqlalchemy import select, update

from radground.runtime import build_context
from radground.settings import (
    CompletionSettings,
    DatabaseSettings,
    DicomDestination,
    DicomWebDestination,
    FhirEndpointSettings,
    Hl7Destination,
    NodeSettings,
    RouteSettings,
    Settings,
    StorageSettings,
    WorkerSettings,
)
from tests.integration import test_pipeline
from tests.integration.dicomweb import (
    dicomweb_base,
    orthanc_dicomweb,
    qido_instances,
    wado_instance,
)
from tests.integration.orthanc import OrthancNotInstalled
from tests.integration.test_mllp_listener import ack, mllp_listener
from tests.integration.test_pipeline import _world, cxr_file, drain, jobs
from worklist.db import utcnow
from worklist.delivery import run_delivery
from worklist.destinations.hl7_mllp import message_filename
from worklist.jobs_models import Artifact, Delivery, DeliveryState, Job, JobState
from worklist.pipeline import requeue_stale

DICOM_KINDS = ("sr", "gsps", "csps", "kos")

#: The Storage SCP standing in for the PACS, and the FHIR stand-in, of the pipeline tests.
pacs = test_pipeline.pacs
ehr = test_pipeline.ehr


def settings_for(tmp_path: Path, database_url: str, destinations: dict, **delivery) -> Settings:
    return Settings(
        node=NodeSettings(port=0, listener_processes=1),
        storage=StorageSettings(root=tmp_path / "instances", reserve_mb=0),
        database=DatabaseSettings(url=database_url),
        completion=CompletionSettings(idle_seconds=30, poll_seconds=3600),
        workers=WorkerSettings(outputs_root=tmp_path / "outputs", requeue_after_seconds=60),
        routes=(RouteSettings(name="cxr", modalities=("DX", "CR"), body_parts=("CHEST",),
                              view_positions=("PA", "AP"), destinations=tuple(destinations)),),
        destinations=destinations,
        **delivery,
    )


def deliveries(ctx) -> dict[str, Delivery]:
    with ctx.sessions() as session:
        return {d.destination: d for d in session.scalars(select(Delivery))}


def dicom_artifacts(ctx) -> list[Artifact]:
    with ctx.sessions() as session:
        return [a for a in session.scalars(select(Artifact)) if a.kind in DICOM_KINDS]


def start_study(world, shared_data) -> None:
    world.send([cxr_file(world.tmp, shared_data)])
    assert len(world.ready()) == 1


# -- the durable schedule ----------------------------------------------------------------


def test_a_retry_survives_a_restart_and_the_sweeper_sends_it_once(
    tmp_path, database_url, shared_data, pacs
):
    settings = settings_for(
        tmp_path,
        database_url,
        {"PACS": DicomDestination(ae_title="PACS", host="127.0.0.1", port=pacs.port)},
    )
    pacs.stop()
    for world in _world(settings, tmp_path):
        start_study(world, shared_data)
        before = utcnow()
        drain(world.ctx, world.queue)
        after = utcnow()
        delivery = deliveries(world.ctx)["PACS"]
        assert (delivery.state, delivery.attempts) == (DeliveryState.PENDING, 1)
        assert "could not connect" in delivery.last_error
        # the schedule is in the database: the next attempt 5-10 s after the failure, and the
        # retries bounded by the working day from the first failure
        assert (
            before + timedelta(seconds=5)
            <= delivery.next_attempt_at
            <= after + timedelta(seconds=10)
        )
        assert before + timedelta(hours=8) <= delivery.retry_until <= after + timedelta(hours=8)
        [(_, delivery_id, attempt)] = world.queue.delayed  # the retry's broker message ...

        # ... is lost with the process (a restart): a new process's sweeper finds the due retry
        world.queue.delayed.clear()
        restarted = build_context(settings, enqueue=world.queue)
        pacs.start("127.0.0.1", pacs.port)
        assert (
            requeue_stale(restarted, delivery.next_attempt_at - timedelta(seconds=1)) == 0
        )  # not due yet
        assert requeue_stale(restarted, delivery.next_attempt_at + timedelta(seconds=61)) == 1
        assert world.queue.messages == [("deliver", delivery_id, attempt)]
        drain(restarted, world.queue)
        run_delivery(
            restarted, delivery_id, attempt
        )  # a duplicate of the lost message arrives late: nothing
        assert jobs(restarted)[0].state is JobState.DONE
        assert Counter(i.sop_instance_uid for i in pacs.received) == Counter(
            a.object_uid for a in dicom_artifacts(restarted)
        )  # each object once
        done = deliveries(restarted)["PACS"]
        assert (done.attempts, done.next_attempt_at, done.last_error) == (2, None, None)


def test_a_delivery_still_failing_when_its_period_ends_fails_saying_so(
    tmp_path, database_url, shared_data, pacs
):
    settings = settings_for(
        tmp_path,
        database_url,
        {
            "PACS": DicomDestination(
                ae_title="PACS", host="127.0.0.1", port=pacs.port, retry_for_hours=2
            )
        },
    )
    pacs.stop()
    for world in _world(settings, tmp_path):
        start_study(world, shared_data)
        before = utcnow()
        drain(world.ctx, world.queue)
        delivery = deliveries(world.ctx)["PACS"]
        assert before + timedelta(hours=2) <= delivery.retry_until <= utcnow() + timedelta(hours=2)
        with world.ctx.sessions.begin() as session:  # the two hours have passed
            session.execute(update(Delivery).values(retry_until=utcnow() - timedelta(seconds=1)))
        drain(world.ctx, world.queue, wait_for_retries=True)
        [job] = jobs(world.ctx)
        assert job.state is JobState.FAILED
        failed = deliveries(world.ctx)["PACS"]
        assert (failed.state, failed.attempts) == (DeliveryState.FAILED, 2)
        assert failed.last_error.startswith("gave up after 2 attempts over 2 h (retry_for): ")
        assert "could not connect" in failed.last_error and world.queue.delayed == []


def test_a_pacs_out_of_resources_is_retried_and_stores_each_object_once(
    tmp_path, database_url, shared_data, pacs
):
    settings = settings_for(
        tmp_path,
        database_url,
        {"PACS": DicomDestination(ae_title="PACS", host="127.0.0.1", port=pacs.port)},
    )
    pacs.store.reserve_bytes = (
        2**62
    )  # its disk is "full": every C-STORE answered 0xA700 Out of Resources
    for world in _world(settings, tmp_path):
        start_study(world, shared_data)
        drain(world.ctx, world.queue)
        pending = deliveries(world.ctx)["PACS"]
        assert pending.state is DeliveryState.PENDING and "status 0xA700" in pending.last_error
        assert pacs.received == []
        pacs.store.reserve_bytes = 0  # space freed
        drain(world.ctx, world.queue, wait_for_retries=True)
        assert jobs(world.ctx)[0].state is JobState.DONE
        assert sorted(i.sop_instance_uid for i in pacs.received) == sorted(
            a.object_uid for a in dicom_artifacts(world.ctx)
        )


# -- DICOMweb STOW-RS ------------------------------------------------------------------


@pytest.fixture(scope="module")
def vna(tmp_path_factory):
    try:
        server = orthanc_dicomweb(tmp_path_factory.mktemp("vna")).start()
    except OrthancNotInstalled as exc:
        pytest.skip(str(exc))
    yield dicomweb_base(server)
    server.stop(kill=True)


def test_stow_rs_delivers_to_orthanc_readable_by_qido_and_wado_and_a_redelivery_adds_nothing(
    tmp_path, database_url, shared_data, pacs, vna
):
    settings = settings_for(
        tmp_path,
        database_url,
        {
            "PACS": DicomDestination(ae_title="PACS", host="127.0.0.1", port=pacs.port),
            "VNA": DicomWebDestination(url=vna),
        },
    )
    for world in _world(settings, tmp_path):
        start_study(world, shared_data)
        drain(world.ctx, world.queue)
        [job] = jobs(world.ctx)
        assert job.state is JobState.DONE, job.last_error
        artifacts = dicom_artifacts(world.ctx)
        # SR and GSPS (en + zh-CN) and what else the default outputs are, to both destinations
        assert len(artifacts) >= 4 and sorted(i.sop_instance_uid for i in pacs.received) == sorted(
            a.object_uid for a in artifacts
        )
        study = str(
            dcmread(
                tmp_path / "outputs" / artifacts[0].path, stop_before_pixels=True
            ).StudyInstanceUID
        )
        found = {i["00080018"]["Value"][0] for i in qido_instances(vna, study)}
        assert found == {a.object_uid for a in artifacts}
        for artifact in artifacts:
            sent = (tmp_path / "outputs" / artifact.path).read_bytes()
            assert (
                wado_instance(vna, study, artifact.series_instance_uid, artifact.object_uid) == sent
            )

        # the operator sends again (e.g. after restoring the VNA): same UIDs, no second object
        with world.ctx.sessions.begin() as session:
            vna_delivery = session.scalars(
                select(Delivery).where(Delivery.destination == "VNA")
            ).one()
            vna_delivery.state, attempts = DeliveryState.PENDING, vna_delivery.attempts
            session.get(Job, job.id).state = JobState.DELIVERING
            delivery_id = vna_delivery.id
        run_delivery(world.ctx, delivery_id, attempts)
        assert deliveries(world.ctx)["VNA"].state is DeliveryState.DONE
        assert len(qido_instances(vna, study)) == len(artifacts)


def test_a_dicomweb_destination_gets_the_output_kinds_it_names(
    tmp_path, database_url, shared_data, vna
):
    settings = settings_for(
        tmp_path, database_url, {"VNA": DicomWebDestination(url=vna, outputs=("sr", "sc"))}
    )
    for world in _world(settings, tmp_path):
        start_study(world, shared_data)
        drain(world.ctx, world.queue)
        [job] = jobs(world.ctx)
        assert job.state is JobState.DONE, job.last_error
        with world.ctx.sessions() as session:
            by_kind = {
                kind: {
                    a.object_uid
                    for a in session.scalars(select(Artifact).where(Artifact.kind == kind))
                }
                for kind in ("sr", "sc", "gsps")
            }
        assert by_kind["sc"]  # built because the VNA asks for it
        study = str(
            dcmread(
                next((tmp_path / "instances").rglob("*.dcm")), stop_before_pixels=True
            ).StudyInstanceUID
        )
        found = {i["00080018"]["Value"][0] for i in qido_instances(vna, study)}
        assert by_kind["sr"] | by_kind["sc"] <= found and not by_kind["gsps"] & found


class StowStandIn:
    """A STOW-RS origin server on a loopback port that stores instances by SOP Instance UID;
    ``refuse`` instances are answered with a retryable Failure Reason (0xA700 Out of Resources)
    in a 409 Failed SOP Sequence while ``refusals`` lasts, ``fail_next`` requests with 503."""

    def __init__(self, port: int = 0) -> None:
        self.stored: dict[str, bytes] = {}
        self.requests: list[list[str]] = []
        self.refuse: set[str] = set()
        self.refusals = 0
        self.fail_next = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
                parts = [p.get_payload(decode=True) for p in message.iter_parts()]
                uids = [
                    str(dcmread(io.BytesIO(p), stop_before_pixels=True).SOPInstanceUID)
                    for p in parts
                ]
                stand_in.requests.append(uids)
                if stand_in.fail_next:
                    stand_in.fail_next -= 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                referenced, failed = [], []
                for uid, part in zip(uids, parts):
                    ds = dcmread(io.BytesIO(part), stop_before_pixels=True)
                    item = {
                        "00081150": {"vr": "UI", "Value": [str(ds.SOPClassUID)]},
                        "00081155": {"vr": "UI", "Value": [uid]},
                    }
                    if uid in stand_in.refuse and stand_in.refusals:
                        item["00081197"] = {"vr": "US", "Value": [0xA700]}
                        failed.append(item)
                    else:
                        stand_in.stored.setdefault(uid, part)
                        referenced.append(item)
                if failed:
                    stand_in.refusals -= 1
                answer = {"00081199": {"vr": "SQ", "Value": referenced}}
                if failed:
                    answer["00081198"] = {"vr": "SQ", "Value": failed}
                data = json.dumps(answer).encode()
                self.send_response(409 if failed else 200)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_partial_stow_failure_retries_only_the_refused_instance_and_stores_each_once(
    tmp_path, database_url, shared_data
):
    with StowStandIn() as stow:
        settings = settings_for(
            tmp_path, database_url, {"VNA": DicomWebDestination(url=stow.base_url)}
        )
        for world in _world(settings, tmp_path):
            start_study(world, shared_data)
            stow.fail_next = 1  # first a 503 for the whole request ...
            drain(world.ctx, world.queue, limit=2)  # inference, export
            artifacts = dicom_artifacts(world.ctx)
            stow.refuse, stow.refusals = (
                {artifacts[1].object_uid},
                2,
            )  # ... then one instance refused twice
            drain(world.ctx, world.queue, wait_for_retries=True)
            [job] = jobs(world.ctx)
            assert job.state is JobState.DONE, job.last_error
            everything = sorted(a.object_uid for a in artifacts)
            assert [sorted(r) for r in stow.requests] == [
                everything,
                everything,
                [artifacts[1].object_uid],
                [artifacts[1].object_uid],
            ]
            assert sorted(stow.stored) == everything
            for artifact in artifacts:
                assert (
                    stow.stored[artifact.object_uid]
                    == (tmp_path / "outputs" / artifact.path).read_bytes()
                )
            done = deliveries(world.ctx)["VNA"]
            assert (done.attempts, done.remaining_objects) == (4, None)


def test_a_dicomweb_server_that_is_down_is_retried_and_stores_each_instance_once(
    tmp_path, database_url, shared_data
):
    with StowStandIn() as down:
        port = down.server.server_address[1]
    settings = settings_for(
        tmp_path,
        database_url,
        {"VNA": DicomWebDestination(url=f"http://127.0.0.1:{port}/dicom-web")},
    )
    for world in _world(settings, tmp_path):
        start_study(world, shared_data)
        drain(world.ctx, world.queue)  # nobody listens: ConnectError
        pending = deliveries(world.ctx)["VNA"]
        assert pending.state is DeliveryState.PENDING and "ConnectError" in pending.last_error
        with StowStandIn(port) as stow:  # back where it was
            drain(world.ctx, world.queue, wait_for_retries=True)
        assert jobs(world.ctx)[0].state is JobState.DONE
        everything = sorted(a.object_uid for a in dicom_artifacts(world.ctx))
        assert [sorted(r) for r in stow.requests] == [everything] and sorted(
            stow.stored
        ) == everything


def test_a_partial_stow_failure_shows_what_is_left_while_it_is_retried(
    tmp_path, database_url, shared_data
):
    from click.testing import CliRunner

    from radground.cli import cli

    with StowStandIn() as stow:
        settings = settings_for(
            tmp_path, database_url, {"VNA": DicomWebDestination(url=stow.base_url)}
        )
        for world in _world(settings, tmp_path):
            start_study(world, shared_data)
            drain(world.ctx, world.queue, limit=2)
            artifacts = dicom_artifacts(world.ctx)
            stow.refuse, stow.refusals = {artifacts[0].object_uid}, 1
            drain(world.ctx, world.queue)
            pending = deliveries(world.ctx)["VNA"]
            assert pending.state is DeliveryState.PENDING
            assert pending.remaining_objects == artifacts[0].object_uid
            stored = f"{len(artifacts) - 1} stored, 1 to retry"
            assert stored in pending.last_error and "0xA700" in pending.last_error
            config = tmp_path / "radground.toml"
            config.write_text(f"[database]\nurl = '{database_url}'\n")
            shown = CliRunner().invoke(
                cli, ["--config", str(config), "jobs", "show", str(pending.job_id)]
            )
            assert shown.exit_code == 0, shown.output
            assert (
                f"delivery to VNA (dicomweb): pending, 1 attempts; STOW-RS VNA: {stored}"
                in shown.output
            )
            assert (
                f"next attempt at {pending.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC, retried until"
                in shown.output
            )
            assert "1 objects left to send" in shown.output
            listed = CliRunner().invoke(cli, ["--config", str(config), "jobs"])
            assert f"{pending.next_attempt_at:%H:%M:%S}" in listed.output


# -- FHIR --------------------------------------------------------------------------------


def test_fhir_5xx_is_retried_on_the_schedule_and_the_report_arrives_once(
    tmp_path, database_url, shared_data, ehr
):
    settings = settings_for(
        tmp_path,
        database_url,
        {
            "EHR": FhirEndpointSettings(
                url=ehr.base_url, patient_identifier_system="urn:oid:2.25.1234"
            )
        },
    )
    for world in _world(settings, tmp_path):
        ehr.fail_next(2, status=503)
        start_study(world, shared_data)
        drain(world.ctx, world.queue)
        pending = deliveries(world.ctx)["EHR"]
        assert pending.state is DeliveryState.PENDING and pending.next_attempt_at is not None
        assert "HTTP 503" in pending.last_error
        drain(world.ctx, world.queue, wait_for_retries=True)
        assert (deliveries(world.ctx)["EHR"].state, deliveries(world.ctx)["EHR"].attempts) == (
            DeliveryState.DONE,
            3,
        )
        assert len(ehr.resources("DiagnosticReport")) == 1


# -- HL7 v2 over MLLP --------------------------------------------------------------------


def built_oru(world) -> str:
    """The control ID (MSH-10) of the ORU^R01 the job's export built for the RIS
    (``hl7-RIS.hl7``)."""
    with world.ctx.sessions() as session:
        [oru] = session.scalars(select(Artifact).where(Artifact.kind == "hl7")).all()
        assert oru.path.endswith(message_filename("RIS"))
        return oru.object_uid


def test_hl7_no_ack_then_ae_then_aa_delivers_once_with_the_same_control_id(
    tmp_path, database_url, shared_data
):
    answers = iter([None, "AE", "AA"])

    def answer(message: str) -> str | None:
        code = next(answers)
        control_id = parse_message(message).msh.msh_10.value
        return (
            None
            if code is None
            else ack(
                code,
                control_id,
                text="busy" if code == "AE" else "",
                error="207^Application internal error^HL70357" if code == "AE" else None,
            )
        )

    with mllp_listener(answer) as (port, receiver):
        settings = settings_for(
            tmp_path,
            database_url,
            {
                "RIS": Hl7Destination(
                    host="127.0.0.1",
                    port=port,
                    receiving_application="RIS",
                    ack_timeout_seconds=0.5,
                )
            },
        )
        for world in _world(settings, tmp_path):
            start_study(world, shared_data)
            drain(world.ctx, world.queue, limit=2)  # inference, export
            control_id = built_oru(world)
            drain(world.ctx, world.queue)  # first attempt: no ACK in time
            pending = deliveries(world.ctx)["RIS"]
            assert pending.state is DeliveryState.PENDING and "no ACK" in pending.last_error
            receiver.release.set()
            drain(world.ctx, world.queue, wait_for_retries=True)
            [job] = jobs(world.ctx)
            assert job.state is JobState.DONE, job.last_error
            done = deliveries(world.ctx)["RIS"]
            assert (done.state, done.attempts) == (DeliveryState.DONE, 3)
    # three arrivals of one message: the same MSH-10, so the receiver keeps one
    assert [parse_message(m).msh.msh_10.value for m in receiver.received] == [control_id] * 3
    exported = (
        next((tmp_path / "outputs").rglob(message_filename("RIS"))).read_bytes().decode("utf-8")
    )
    assert receiver.received[-1].rstrip("\r") == exported.rstrip("\r")  # as exported, byte for byte
    got = parse_message(receiver.received[-1], find_groups=False)
    assert got.msh.msh_5.value == "RIS" and got.msh.msh_18.value == "UNICODE UTF-8"
    assert got.msh.msh_9.value == "ORU^R01^ORU_R01"


def test_hl7_application_reject_fails_at_once_with_the_ack_kept(
    tmp_path, database_url, shared_data
):
    def answer(message: str) -> str:
        return ack(
            "AR",
            parse_message(message).msh.msh_10.value,
            text="version not supported",
            error="203^Unsupported version id^HL70357",
        )

    with mllp_listener(answer) as (port, receiver):
        settings = settings_for(
            tmp_path,
            database_url,
            {"RIS": Hl7Destination(host="127.0.0.1", port=port, ack_timeout_seconds=5)},
        )
        for world in _world(settings, tmp_path):
            start_study(world, shared_data)
            drain(world.ctx, world.queue, limit=2)
            built_oru(world)
            drain(world.ctx, world.queue, wait_for_retries=True)
            failed = deliveries(world.ctx)["RIS"]
            assert (failed.state, failed.attempts) == (DeliveryState.FAILED, 1)
            assert "MSA-1 AR" in failed.last_error and "version not supported" in failed.last_error
            assert "ERR|||203^Unsupported version id^HL70357" in failed.operation_outcome
            assert jobs(world.ctx)[0].state is JobState.FAILED
    assert len(receiver.received) == 1


# -- every type at once --------------------------------------------------------------------


def test_one_study_reaches_every_destination_type_exactly_once(
    tmp_path, database_url, shared_data, pacs, ehr, vna
):
    """SR, GSPS and KOS by C-STORE to the PACS and by STOW-RS to the VNA (read back by QIDO-RS),
    the FHIR Bundle to the EHR and the ORU^R01 to the RIS, from one job."""
    with mllp_listener(lambda m: ack("AA", parse_message(m).msh.msh_10.value)) as (port, receiver):
        settings = settings_for(
            tmp_path,
            database_url,
            {
                "PACS": DicomDestination(ae_title="PACS", host="127.0.0.1", port=pacs.port),
                "VNA": DicomWebDestination(url=vna),
                "EHR": FhirEndpointSettings(
                    url=ehr.base_url, patient_identifier_system="urn:oid:2.25.1234"
                ),
                "RIS": Hl7Destination(host="127.0.0.1", port=port, receiving_application="RIS"),
            },
        )
        for world in _world(settings, tmp_path):
            start_study(world, shared_data)
            drain(world.ctx, world.queue)
            [job] = jobs(world.ctx)
            assert job.state is JobState.DONE, job.last_error
            assert {
                name: (d.protocol, d.state, d.attempts) for name, d in deliveries(world.ctx).items()
            } == {
                "PACS": ("dicom", DeliveryState.DONE, 1),
                "VNA": ("dicomweb", DeliveryState.DONE, 1),
                "EHR": ("fhir", DeliveryState.DONE, 1),
                "RIS": ("hl7", DeliveryState.DONE, 1),
            }
            artifacts = dicom_artifacts(world.ctx)
            assert {a.kind for a in artifacts} >= {"sr", "gsps", "kos"}
            uids = sorted(a.object_uid for a in artifacts)
            assert sorted(i.sop_instance_uid for i in pacs.received) == uids
            study = str(
                dcmread(
                    tmp_path / "outputs" / artifacts[0].path, stop_before_pixels=True
                ).StudyInstanceUID
            )
            assert sorted(i["00080018"]["Value"][0] for i in qido_instances(vna, study)) == uids
            assert len(ehr.resources("DiagnosticReport")) == 1
            assert [parse_message(m).msh.msh_10.value for m in receiver.received] == [
                built_oru(world)
            ]
