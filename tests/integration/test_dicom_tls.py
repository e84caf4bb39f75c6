"""DICOM TLS with real peers (PS3.15 B.1/B.9): a node with ``node.tls.required`` and two
listener processes accepts dcmtk's ``echoscu``/``storescu`` with ``+tls``, refuses a plain peer,
an untrusted certificate and a certificate claiming another peer's AE title; Orthanc with
``DicomTlsEnabled`` sends a study to the node and receives its outputs over TLS."""

from __future__ import annotations

import io
import socket
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom import dcmread

from radground.node import Node
from radground.runtime import build_context, build_destination
from radground.settings import (
    CompletionSettings,
    DatabaseSettings,
    DicomDestination,
    NodeSettings,
    NodeTlsSettings,
    RouteSettings,
    Settings,
    SettingsError,
    StorageSettings,
    WorkerSettings,
)
from tests.factories import write_series
from tests.integration.dcmtk import require
from tests.integration.ingest_node import indexed
from tests.integration.orthanc import OrthancNotInstalled, OrthancPACS
from tests.integration.test_pipeline import QueueRecorder, cxr_file, drain, jobs
from tests.integration.tls_pki import Credential, certificate_authority, issue
from worklist.completion import CompletionMonitor
from worklist.db import utcnow
from worklist.destinations.dicom_store import DicomStoreDestination
from worklist.destinations.protocol import ArtifactFile, DeliveryStatus
from worklist.jobs_models import JobState
from worklist.pipeline import make_study_ready_hook

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Credential]:
    folder = tmp_path_factory.mktemp("pki")
    authority = certificate_authority(folder / "ca")
    stranger = certificate_authority(folder / "other", name="Untrusted CA")
    return {
        "ca": authority,
        "node": issue(authority, folder / "node", "radground"),
        "modality": issue(authority, folder / "modality", "modality1"),
        "orthanc": issue(authority, folder / "orthanc", "orthanc"),
        "stranger": issue(stranger, folder / "stranger", "modality1"),
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _settings(tmp_path: Path, database_url: str, pki, **more) -> Settings:
    return Settings(
        node=NodeSettings(
            port=_free_port(), listener_processes=more.pop("listener_processes", 2),
            tls=NodeTlsSettings(
                enabled=True, port=0, required=True,
                certificate=str(pki["node"].certificate), key=str(pki["node"].key),
                ca_bundle=str(pki["ca"].certificate), verify_client=True,
                allowed_subjects={"modality1": ("MOD1",), "orthanc": ("ORTHANC",)},
            ),
        ),
        storage=StorageSettings(root=tmp_path / "instances", reserve_mb=0),
        database=DatabaseSettings(url=database_url),
        completion=CompletionSettings(idle_seconds=30, poll_seconds=3600),
        **more,
    )


@pytest.fixture
def tls_node(tmp_path, pki):
    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'index.db'}", pki)
    node = Node(settings)
    node.start()
    try:
        yield node
    finally:
        node.stop()


def _dcmtk(tool: str, port: int, *options: str, calling: str = "MOD1") -> str:
    done = subprocess.run(
        [require(tool), "-v", "-aet", calling, "-aec", "RADGROUND", *options, "127.0.0.1",
         str(port)], capture_output=True, text=True, timeout=60, check=False)
    return f"rc={done.returncode}\n{done.stdout}{done.stderr}"


def _tls(pki, who: str = "modality") -> tuple[str, ...]:
    return ("+tls", str(pki[who].key), str(pki[who].certificate), "+cf", str(pki["ca"].certificate))


def test_dcmtk_echoes_and_stores_over_tls(tls_node, pki, tmp_path):
    port = tls_node.tls_address[1]
    assert tls_node.address == tls_node.tls_address  # required: TLS only
    assert _dcmtk("echoscu", port, *_tls(pki)).startswith("rc=0")
    files = write_series(tmp_path / "series", 5, rows=64, columns=64)
    done = subprocess.run(
        [require("storescu"), "-v", "-R", "-aet", "MOD1", "-aec", "RADGROUND", *_tls(pki),
         "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (done.stdout + done.stderr).count("Received Store Response (Success)") == 5
    assert set(indexed(tls_node)) == {str(dcmread(f).SOPInstanceUID) for f in files}


def test_the_plain_port_is_off_and_a_plain_peer_on_the_tls_port_is_refused(tls_node):
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", tls_node.settings.node.port), timeout=5).close()
    answer = _dcmtk("echoscu", tls_node.tls_address[1])
    assert not answer.startswith("rc=0")
    assert "Echo Response" not in answer


def test_an_untrusted_client_certificate_is_refused(tls_node, pki):
    answer = _dcmtk("echoscu", tls_node.tls_address[1], *_tls(pki, "stranger"))
    assert not answer.startswith("rc=0"), answer
    assert "Echo Response" not in answer
    assert _dcmtk("echoscu", tls_node.tls_address[1], *_tls(pki)).startswith("rc=0")


def test_a_certificate_cannot_claim_another_peers_ae_title(tls_node, pki):
    answer = _dcmtk("echoscu", tls_node.tls_address[1], *_tls(pki), calling="ORTHANC")
    assert not answer.startswith("rc=0")
    assert "Association Rejected" in answer and "Calling AE Title Not Recognized" in answer


def test_a_tls_key_open_to_others_stops_the_node_at_start(tmp_path, pki):
    loose = tmp_path / "loose.key"
    loose.write_bytes(pki["node"].key.read_bytes())
    loose.chmod(0o644)
    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'index.db'}", pki)
    tls = settings.node.tls.model_copy(update={"key": str(loose)})
    settings = settings.model_copy(update={"node": settings.node.model_copy(update={"tls": tls})})
    with pytest.raises(SettingsError, match="chmod 600"):
        Node(settings).start()


@pytest.fixture
def tls_orthanc(tmp_path, pki):
    config = {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(pki["orthanc"].certificate),
        "DicomTlsPrivateKey": str(pki["orthanc"].key),
        "DicomTlsTrustedCertificates": str(pki["ca"].certificate),
        "DicomTlsRemoteCertificateRequired": True,
    }
    try:
        with OrthancPACS(tmp_path / "orthanc", extra_config=config) as orthanc:
            yield orthanc
    except OrthancNotInstalled as exc:
        pytest.fail(str(exc))


def test_orthanc_sends_over_tls_and_receives_the_outputs_over_tls(
    tmp_path, pki, shared_data, tls_orthanc
):
    """Orthanc (DicomTlsEnabled) → node (tls.required) → pipeline → Orthanc, TLS both ways."""
    settings = _settings(
        tmp_path, f"sqlite:///{tmp_path / 'index.db'}", pki, listener_processes=1,
        workers=WorkerSettings(outputs_root=tmp_path / "outputs", requeue_after_seconds=60),
        routes=(RouteSettings(name="cxr", modalities=("DX", "CR"), body_parts=("CHEST",),
                              view_positions=("PA", "AP"), destinations=("PACS",)),),
        destinations={"PACS": DicomDestination(
            ae_title="ORTHANC", host="127.0.0.1", port=tls_orthanc.dicom_port, tls=True,
            ca_bundle=str(pki["ca"].certificate), client_cert=str(pki["node"].certificate),
            client_key=str(pki["node"].key), server_name="localhost",
        )},
    )
    node = Node(settings)
    node.start()
    try:
        tls_orthanc.request("PUT", "/modalities/RADGROUND", json={
            "AET": "RADGROUND", "Host": "127.0.0.1", "Port": node.tls_address[1],
            "UseDicomTls": True,
        })
        source = cxr_file(tmp_path, shared_data)
        study = str(dcmread(source).StudyInstanceUID)
        tls_orthanc.upload(source)
        answer = tls_orthanc.send_study(study, to="RADGROUND")
        assert answer["InstancesCount"] == 1 and not answer.get("FailedInstancesCount")
        assert str(dcmread(source).SOPInstanceUID) in indexed(node)

        queue = QueueRecorder()
        ctx = build_context(settings, enqueue=queue)
        monitor = CompletionMonitor(ctx.sessions, make_study_ready_hook(ctx), idle_seconds=30)
        assert len(monitor.run_once(utcnow() + timedelta(seconds=31))) == 1
        drain(ctx, queue)
        [job] = jobs(ctx)
        assert job.state is JobState.DONE, job.last_error
    finally:
        node.stop()
    received = tls_orthanc.instances_of_study(study)
    assert sum(1 for i in received if i.get("Modality") == "SR") == 2  # en + zh-CN, over TLS
    sr = [dcmread(io.BytesIO(tls_orthanc.instance_file(i["ID"])))
          for i in received if i.get("Modality") == "SR"]
    assert {str(s.SOPClassUID) for s in sr} == {COMPREHENSIVE_3D_SR}


def test_a_tls_destination_refuses_a_server_with_the_wrong_name(tmp_path, pki, tls_orthanc):
    section = DicomDestination(
        ae_title="ORTHANC", host="127.0.0.1", port=tls_orthanc.dicom_port, tls=True,
        ca_bundle=str(pki["ca"].certificate), client_cert=str(pki["node"].certificate),
        client_key=str(pki["node"].key), server_name="pacs.example.org",
    )
    target = build_destination("PACS", section, calling_ae_title="RADGROUND")
    [file] = write_series(tmp_path / "one", 1, rows=32, columns=32)
    artifact = ArtifactFile(kind="sr", language="en",
                            object_uid=str(dcmread(file).SOPInstanceUID), path=file)
    outcome = DicomStoreDestination().deliver([artifact], target)
    assert outcome.status is DeliveryStatus.RETRYABLE and "handshake" in outcome.answer
    good = build_destination("PACS", section.model_copy(update={"server_name": "localhost"}),
                             calling_ae_title="RADGROUND")
    assert DicomStoreDestination().deliver([artifact], good).status is DeliveryStatus.DELIVERED


def test_radground_echo_and_send_use_a_tls_destinations_settings(tmp_path, pki, tls_node):
    from click.testing import CliRunner

    from radground.cli import cli

    config = tmp_path / "cli.toml"
    config.write_text(
        f'[destinations.NODE]\ntype = "dicom"\nae_title = "RADGROUND"\nhost = "127.0.0.1"\n'
        f"port = {tls_node.tls_address[1]}\ntls = true\n"
        f'ca_bundle = "{pki["ca"].certificate}"\nclient_cert = "{pki["modality"].certificate}"\n'
        f'client_key = "{pki["modality"].key}"\n'
        '[node]\nae_title = "MOD1"\n'
    )
    runner = CliRunner()
    echoed = runner.invoke(cli, ["--config", str(config), "echo", "NODE"])
    assert echoed.exit_code == 0, echoed.output
    [file] = write_series(tmp_path / "one", 1, rows=32, columns=32)
    sent = runner.invoke(cli, ["--config", str(config), "send", str(file), "--to", "NODE"])
    assert sent.exit_code == 0, sent.output
    assert str(dcmread(file).SOPInstanceUID) in indexed(tls_node)
    plain = runner.invoke(cli, ["echo", f"RADGROUND@127.0.0.1:{tls_node.tls_address[1]}"])
    assert plain.exit_code == 1  # the same port without the destination's TLS settings
