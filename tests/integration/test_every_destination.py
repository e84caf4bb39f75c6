"""Every destination type at once, with real processes: Orthanc (the PACS) sends a chest
radiograph to ``radground serve`` (SQLite), whose job builds SR, GSPS, KOS, a FHIR Bundle and
an HL7 ORU^R01 and delivers them by C-STORE back to that Orthanc, by STOW-RS to a second
Orthanc with its DICOMweb plugin (read back with QIDO-RS and WADO-RS), by a FHIR transaction
to the EHR stand-in and over MLLP to hl7apy's listener. The fault test takes each peer down
or has it refuse at first (PACS stopped, EHR 503, MLLP AE with ERR-3 207) and checks that the
one retry policy brings every object there exactly once, with ``radground jobs show`` telling
the operator when the next attempt is.

One deployment and one set of peers serve the module; each test uses its own study. A partial
STOW-RS failure is tested against a stand-in in ``test_destinations.py``: Orthanc 1.10's
DICOMweb plugin answers an instance its Lua ``ReceivedInstanceFilter`` refused as stored, so
a real Orthanc cannot be made to refuse one instance of a request.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hl7apy.parser import parse_message

from tests.integration.dicomweb import (
    dicomweb_base,
    orthanc_dicomweb,
    qido_instances,
    wado_instance,
)
from tests.integration.fhir_server import FhirTestServer
from tests.integration.orthanc import OrthancNotInstalled, OrthancPACS
from tests.integration.radground_processes import Deployment, JobView, new_deployment
from tests.integration.test_mllp_listener import Receiver, ack, mllp_listener

pytestmark = pytest.mark.slow

#: Radiographs the shipped model draws a Cardiomegaly box on (so each job has GSPS and KOS).
CXRS = ("00000211_010.png", "00000211_016.png")
DICOM_KINDS = ("sr", "gsps", "kos")
#: ERR-3 207 Application internal error (HL7 table 0357): a receiver's AE that clears by itself.
APPLICATION_INTERNAL_ERROR = "207^Application internal error^HL70357"


def answer_aa(message: str) -> str:
    return ack("AA", parse_message(message).msh.msh_10.value)


# -- the peers and the deployment, shared by the module --------------------------------------


@pytest.fixture(scope="module")
def pacs(tmp_path_factory) -> Iterator[OrthancPACS]:
    orthanc = OrthancPACS(tmp_path_factory.mktemp("pacs"))
    try:
        orthanc.start()
    except OrthancNotInstalled as exc:
        pytest.skip(str(exc))
    yield orthanc
    orthanc.stop(kill=True)


@pytest.fixture(scope="module")
def vna(tmp_path_factory) -> Iterator[OrthancPACS]:
    """Orthanc with its DICOMweb plugin: the STOW-RS destination."""
    try:
        server = orthanc_dicomweb(tmp_path_factory.mktemp("vna")).start()
    except OrthancNotInstalled as exc:
        pytest.skip(str(exc))
    yield server
    server.stop(kill=True)


@pytest.fixture(scope="module")
def ehr() -> Iterator[FhirTestServer]:
    with FhirTestServer() as server:
        yield server


@pytest.fixture(scope="module")
def ris() -> Iterator[tuple[int, Receiver]]:
    """hl7apy's MLLP listener (answers AA unless a test changes ``receiver.answer``)."""
    with mllp_listener(answer_aa) as (port, receiver):
        yield port, receiver


@dataclass
class World:
    deployment: Deployment
    vna_server: OrthancPACS
    ris: Receiver

    @property
    def vna(self) -> str:
        """The VNA's DICOMweb base URL."""
        return dicomweb_base(self.vna_server)

    @property
    def pacs(self) -> OrthancPACS:
        return self.deployment.pacs

    @property
    def ehr(self) -> FhirTestServer:
        return self.deployment.ehr


@pytest.fixture(scope="module")
def world(tmp_path_factory, pacs, vna, ehr, ris) -> Iterator[World]:
    """`radground serve` routing chest radiographs to PACS (C-STORE), VNA (STOW-RS), EHR
    (FHIR) and RIS (HL7 MLLP), retrying after 0.5-2 s."""
    ris_port, receiver = ris
    tmp_path = tmp_path_factory.mktemp("every")
    deployment = new_deployment(
        tmp_path, pacs, ehr, database_url=f"sqlite:///{tmp_path / 'radground.db'}",
        broker_url=f"radground+sqlite:///{tmp_path / 'broker.sqlite'}", name="every",
        route_destinations=("PACS", "VNA", "EHR", "RIS"),
        extra_toml=f"""
[destinations.VNA]
type = "dicomweb"
url = "{dicomweb_base(vna)}"
[destinations.RIS]
type = "hl7"
host = "127.0.0.1"
port = {ris_port}
receiving_application = "RIS"
ack_timeout_seconds = 10.0
[delivery]
backoff_base_seconds = 1.0
backoff_cap_seconds = 2.0
""")
    try:
        serve = deployment.start("serve", "serve")
        deployment.wait_node_ready()
        deployment.wait(
            lambda: serve.log_text().count(" ready.") == 2, 60, what="both spawned workers ready"
        )
        yield World(deployment, vna, receiver)
    finally:
        deployment.stop_all()


# -- what every job ends with ------------------------------------------------------------


def assert_delivered_once(world: World, study: str, job: JobView, acks: AckScript) -> None:
    """Each destination holds each of the job's objects exactly once."""
    d = world.deployment
    artifacts = d.reader.artifact_files(job.id)
    dicom = [a for a in artifacts if a.kind in DICOM_KINDS]
    assert {a.kind for a in dicom} == set(DICOM_KINDS), artifacts
    uids = sorted(a.object_uid for a in dicom)
    assert len(set(uids)) == len(uids)

    # the PACS: the job's objects, received from RadGround, nothing else of ours
    ours = sorted(
        i["SOPInstanceUID"]
        for i in world.pacs.instances_of_study(study)
        if i["RemoteAET"] == "RADGROUND"
    )
    assert ours == uids

    # the VNA: QIDO-RS finds exactly the job's objects, WADO-RS returns them as sent
    assert sorted(i["00080018"]["Value"][0] for i in qido_instances(world.vna, study)) == uids
    outputs = d.workdir / "outputs"
    for artifact in dicom:
        assert artifact.series_instance_uid
        sent = (outputs / artifact.path).read_bytes()
        assert (
            wado_instance(world.vna, study, artifact.series_instance_uid, artifact.object_uid)
            == sent
        )

    # the EHR: one DiagnosticReport for the study, from one successful transaction
    [imaging_study] = [
        r
        for r in world.ehr.resources("ImagingStudy")
        if any(i.get("value") == f"urn:oid:{study}" for i in r.get("identifier", []))
    ]
    reports = [
        r
        for r in world.ehr.resources("DiagnosticReport")
        if {"reference": f"ImagingStudy/{imaging_study['id']}"} in r.get("imagingStudy", [])
    ]
    assert len(reports) == 1 and reports[0]["status"] == "preliminary", reports
    assert [
        r.status
        for r in world.ehr.received
        if r.method == "POST" and study in r.body.decode("utf-8", "replace")
    ].count(200) == 1

    # the RIS: the exported ORU^R01 accepted once, its OBX carrying the finding and the SR
    [oru] = [a for a in artifacts if a.kind == "hl7"]
    accepted = acks.accepted(oru.object_uid)
    assert len(accepted) == 1
    assert accepted[0].rstrip("\r") == (outputs / oru.path).read_bytes().decode("utf-8").rstrip(
        "\r"
    )
    message = parse_message(accepted[0], find_groups=False)
    assert message.msh.msh_9.value == "ORU^R01^ORU_R01" and message.msh.msh_5.value == "RIS"
    obx = [segment.value for segment in message.children if segment.name == "OBX"]
    assert any(re.search("cardiomegaly", segment, re.IGNORECASE) for segment in obx), obx
    for sr in (a for a in dicom if a.kind == "sr"):
        assert any(sr.object_uid in segment for segment in obx), (sr.object_uid, obx)

    # the operator's view
    shown = d.radground("jobs", "show", str(job.id))
    for line in (
        "delivery to PACS (dicom): done",
        "delivery to VNA (dicomweb): done",
        "delivery to EHR (fhir): done",
        "delivery to RIS (hl7): done",
    ):
        assert line in shown, shown


class AckScript:
    """The MLLP listener's answers: each message gets the next code of ``codes`` (AA, or AE with
    ERR-3 207); ``answers`` keeps (message, code) in arrival order."""

    def __init__(self, codes: Iterator[str]) -> None:
        self.codes = codes
        self.answers: list[tuple[str, str]] = []

    def __call__(self, message: str) -> str:
        code = next(self.codes)
        self.answers.append((message, code))
        control_id = parse_message(message).msh.msh_10.value
        if code == "AA":
            return ack("AA", control_id)
        return ack(code, control_id, text="interface engine busy", error=APPLICATION_INTERNAL_ERROR)

    def codes_for(self, control_id: str) -> list[str]:
        """How each arrival of the message with this MSH-10 was answered."""
        return [
            code
            for message, code in self.answers
            if parse_message(message).msh.msh_10.value == control_id
        ]

    def accepted(self, control_id: str) -> list[str]:
        """The arrivals of the message with this MSH-10 that were answered AA."""
        return [
            message
            for message, code in self.answers
            if code == "AA" and parse_message(message).msh.msh_10.value == control_id
        ]


# -- the tests ---------------------------------------------------------------------------


def test_a_study_from_orthanc_reaches_every_destination_type_exactly_once(world, shared_data):
    d = world.deployment
    world.ris.answer = acks = AckScript(itertools.repeat("AA"))
    study, _ = d.upload_study(CXRS[:1], shared_data)
    d.send(study)
    [job] = d.wait_jobs(study, ["done"])
    assert {v.destination: (v.state, v.attempts) for v in job.deliveries} == {
        "PACS": ("done", 1),
        "VNA": ("done", 1),
        "EHR": ("done", 1),
        "RIS": ("done", 1),
    }, job
    assert_delivered_once(world, study, job, acks)


def test_each_destination_failing_at_first_is_retried_and_gets_each_object_once(world, shared_data):
    """The PACS and the VNA are down (killed) when the job delivers, the EHR answers 503 once,
    the RIS answers AE (ERR-3 207) once; all end delivered exactly once, the PACS and the VNA
    after they are back, and `jobs show` says when each of those two is tried next."""
    d, pacs, vna = world.deployment, world.pacs, world.vna_server
    world.ris.answer = acks = AckScript(itertools.chain(["AE"], itertools.repeat("AA")))
    world.ehr.fail_next(1, status=503)
    study, _ = d.upload_study(CXRS[1:], shared_data)
    d.send(study)
    # down at once, before the study is ready (completion waits 2 s); a killed Orthanc restarts
    # on its storage, its ports and its modalities
    pacs.stop(kill=True)
    vna.stop(kill=True)
    try:

        def retried_while_down() -> JobView | None:
            jobs = d.jobs(study)
            failing = (
                [v for v in jobs[0].deliveries if v.state == "pending" and v.attempts >= 2]
                if jobs
                else []
            )
            return jobs[0] if {v.destination for v in failing} == {"PACS", "VNA"} else None

        job = d.wait(retried_while_down, what="the PACS and VNA deliveries failing twice")
        errors = {v.destination: v.last_error for v in job.deliveries}
        assert "connect" in errors["PACS"] and "ConnectError" in errors["VNA"], errors

        def shows_next_attempts() -> str | None:
            shown = d.radground("jobs", "show", str(job.id))
            return (
                shown
                if all(
                    re.search(
                        rf"delivery to {name} \({kind}\): pending, \d+ attempts; .*\n"
                        r"    next attempt at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, retried until ",
                        shown,
                    )
                    for name, kind in (("PACS", "dicom"), ("VNA", "dicomweb"))
                )
                else None
            )

        d.wait(
            shows_next_attempts,
            30,
            what="`jobs show` telling when PACS and VNA are tried next",
            interval=0.5,
        )
    finally:
        pacs.start()
        vna.start()
    [job] = d.wait_jobs(study, ["done"])
    ended = {
        v.destination: (v.state, v.attempts, v.last_error, v.next_attempt_at)
        for v in job.deliveries
    }
    for name in ("PACS", "VNA"):
        state, attempts, *rest = ended[name]
        assert state == "done" and attempts >= 3 and rest == [None, None], ended
    assert ended["EHR"] == ("done", 2, None, None)
    assert ended["RIS"] == ("done", 2, None, None)
    # the EHR refused the first transaction, stored the second
    assert [
        r.status
        for r in world.ehr.received
        if r.method == "POST" and study in r.body.decode("utf-8", "replace")
    ] == [503, 200]
    # the RIS saw one message twice, with the same MSH-10: AE, then AA
    [oru] = [a for a in d.reader.artifact_files(job.id) if a.kind == "hl7"]
    assert acks.codes_for(oru.object_uid) == ["AE", "AA"]
    assert_delivered_once(world, study, job, acks)
