"""The Orthanc PACS harness against RadGround's real DICOM node, both directions.

Orthanc is Debian's (``/usr/sbin/Orthanc``), on loopback ports chosen at start;
RadGround's Storage SCP runs in-process on SQLite; RadGround's SCU is
``dicom_node.scu.StorageSCU``. These tests are also the harness's usage examples.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.uid import (
    JPEG2000,
    Comprehensive3DSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    generate_uid,
)
from sqlalchemy import select

from dicom_node.scu import Destination, StorageSCU
from exporters.pr import build_presentation_states
from exporters.sr import build_sr
from radground.node import Node
from radground.settings import (
    CompletionSettings,
    DatabaseSettings,
    NodeSettings,
    Settings,
    StorageSettings,
)
from tests.factories import make_ct, write_series
from tests.integration.orthanc import (
    OrthancNotInstalled,
    OrthancPACS,
    OrthancRestError,
    OrthancStartError,
    find_orthanc,
)
from tests.unit.exporters.conftest import IMAGE_SIZES, make_grounded_report, make_source_image
from worklist.db import create_db_engine, make_session_factory
from worklist.models import Instance


def _require_orthanc() -> None:
    try:
        find_orthanc()
    except OrthancNotInstalled as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """One Orthanc for the tests that only add their own studies to it."""
    _require_orthanc()
    with OrthancPACS(tmp_path_factory.mktemp("orthanc")) as running:
        yield running


@pytest.fixture
def radground(tmp_path):
    """RadGround's Storage SCP (one in-process listener) on a free port, indexing into SQLite."""
    settings = Settings(
        node=NodeSettings(port=0, listener_processes=1),
        storage=StorageSettings(root=tmp_path / "instances", reserve_mb=0),
        database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'radground.db'}"),
        completion=CompletionSettings(idle_seconds=30, poll_seconds=3600),
    )
    node = Node(settings)
    node.start()
    yield node
    node.stop()


def indexed(node: Node) -> dict[str, Instance]:
    engine = create_db_engine(node.settings.database.url)
    try:
        with make_session_factory(engine)() as session:
            return {i.sop_instance_uid: i for i in session.scalars(select(Instance))}
    finally:
        engine.dispose()


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def part10(ds) -> bytes:
    buffer = DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def send(datasets_or_paths, pacs: OrthancPACS):
    return StorageSCU("RADGROUND").send(
        datasets_or_paths, Destination(pacs.aet, "127.0.0.1", pacs.dicom_port)
    )


# -- life cycle ------------------------------------------------------------------


def test_starts_answers_and_stops_without_leaving_a_process_or_a_port(tmp_path):
    _require_orthanc()
    pacs = OrthancPACS(tmp_path / "pacs", aet="TESTPACS")
    with pacs:
        process = pacs.process
        assert process is not None and process.poll() is None
        system = pacs.get_json("/system")
        assert (system["DicomAet"], system["DicomPort"], system["HttpPort"]) == (
            "TESTPACS", pacs.dicom_port, pacs.http_port)
        assert pacs.study_ids() == []
        assert StorageSCU("ANYONE").echo(Destination("TESTPACS", "127.0.0.1", pacs.dicom_port)).ok
        ports = (pacs.dicom_port, pacs.http_port)
    assert process.returncode == 0, pacs.log_tail()  # a clean shutdown, reaped
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)
    assert pacs.process is None and not pacs.running
    assert all(port_is_free(port) for port in ports)
    pacs.stop()  # idempotent


def test_a_broken_config_fails_start_with_orthancs_own_words(tmp_path):
    _require_orthanc()
    pacs = OrthancPACS(tmp_path / "pacs", extra_config={"DicomScuTimeout": "soon"})
    with pytest.raises(
        OrthancStartError,
        match=r"exited with status .*\n(.*\n)*.*DicomScuTimeout.*must be an integer",
    ):
        pacs.start()
    assert pacs.process is None
    with pytest.raises(ValueError, match="DicomPort"):
        OrthancPACS(tmp_path / "pacs", extra_config={"DicomPort": 4242})


def test_a_missing_orthanc_says_how_to_install_it(tmp_path):
    with pytest.raises(OrthancNotInstalled, match=r"\.ci/bootstrap --test"):
        OrthancPACS(tmp_path, executable=tmp_path / "no-such-orthanc").start()


def test_only_loopback_peers(tmp_path):
    with pytest.raises(ValueError, match="loopback"):
        OrthancPACS(tmp_path, modalities={"FAR": ("FAR", "192.0.2.1", 104)})


# -- Orthanc -> RadGround --------------------------------------------------------


def test_orthanc_sends_studies_to_radground_as_stored(pacs, radground, tmp_path, shared_data):
    port = radground.address[1]
    pacs.set_modality("RADGROUND", "RADGROUND", "127.0.0.1", port)
    real = shared_data / "dicom" / "RG1_J2KI.dcm"
    cr_study = str(dcmread(real, stop_before_pixels=True).StudyInstanceUID)
    ct_files = write_series(tmp_path / "ct", 3)
    ct_study = str(dcmread(ct_files[0], stop_before_pixels=True).StudyInstanceUID)
    for path in [real, *ct_files]:
        pacs.upload(path)

    in_orthanc = pacs.instances_of_study(cr_study) + pacs.instances_of_study(ct_study)
    assert len(in_orthanc) == 4
    for study in (cr_study, ct_study):
        answer = pacs.send_study(study, to="RADGROUND")
        assert answer["FailedInstancesCount"] == 0 and answer["RemoteAet"] == "RADGROUND"

    stored = indexed(radground)
    assert set(stored) == {i["SOPInstanceUID"] for i in in_orthanc}
    for instance in in_orthanc:
        row = stored[instance["SOPInstanceUID"]]
        assert row.transfer_syntax_uid == instance["TransferSyntaxUID"]  # not transcoded on the way
        assert row.sop_class_uid == instance["SOPClassUID"]
        assert row.calling_ae_title == pacs.aet
    assert (
        stored[str(dcmread(real, stop_before_pixels=True).SOPInstanceUID)].transfer_syntax_uid
        == JPEG2000
    )
    for instance in in_orthanc:  # pixel data byte-identical to what Orthanc holds
        received = dcmread(
            Path(radground.settings.storage.root) / stored[instance["SOPInstanceUID"]].path
        )
        assert (
            received.PixelData
            == dcmread(DicomBytesIO(pacs.instance_file(instance["ID"]))).PixelData
        )


def test_send_study_to_a_peer_that_is_down_raises_orthancs_reason(pacs, tmp_path):
    ct = write_series(tmp_path, 1)[0]
    pacs.upload(ct)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    pacs.set_modality("NOBODY", "NOBODY", "127.0.0.1", closed_port)
    with pytest.raises(OrthancRestError, match="NOBODY.*(refused|Connection)") as raised:
        pacs.send_study(str(dcmread(ct).StudyInstanceUID), to="NOBODY")
    assert raised.value.status_code == 500


# -- RadGround -> Orthanc --------------------------------------------------------


def test_radground_sr_and_gsps_arrive_under_the_study(pacs, tmp_path):
    report = make_grounded_report()
    sources = [make_source_image(i, pixels=np.zeros((rows, columns), np.uint16))
               for i, (columns, rows) in enumerate(IMAGE_SIZES)]
    for source in sources:
        pacs.upload(part10(source))
    sr = build_sr(report, sources, language="en", revision=1)
    states = build_presentation_states(report, sources, language="en", revision=1)
    assert len(states) == 2  # one per source series

    results = send([sr, *states], pacs)
    assert [r.status for r in results] == [0, 0, 0], [r.reason for r in results]

    stored = {i["SOPInstanceUID"]: i for i in pacs.instances_of_study(report.study_instance_uid)}
    assert set(stored) == {s.SOPInstanceUID for s in sources} | {sr.SOPInstanceUID} | {
        s.SOPInstanceUID for s in states
    }
    assert stored[sr.SOPInstanceUID]["SOPClassUID"] == Comprehensive3DSRStorage
    assert stored[sr.SOPInstanceUID]["Modality"] == "SR"
    assert stored[sr.SOPInstanceUID]["RemoteAET"] == "RADGROUND"
    source_uids = {s.SOPInstanceUID for s in sources}
    for state in states:
        entry = stored[state.SOPInstanceUID]
        assert (entry["SOPClassUID"], entry["Modality"]) == (
            GrayscaleSoftcopyPresentationStateStorage,
            "PR",
        )
        received = dcmread(DicomBytesIO(pacs.instance_file(entry["ID"])))
        referenced = {
            image.ReferencedSOPInstanceUID
            for series in received.ReferencedSeriesSequence
            for image in series.ReferencedImageSequence
        }
        assert referenced and referenced <= source_uids
    received_sr = dcmread(DicomBytesIO(pacs.instance_file(stored[sr.SOPInstanceUID]["ID"])))
    evidence = {
        image.ReferencedSOPInstanceUID
        for study in received_sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for image in series.ReferencedSOPSequence
    }
    assert evidence == source_uids
    # the content tree arrived intact: every text and tracking UID, in order
    assert _content_values(received_sr) == _content_values(sr) and len(_content_values(sr)) > 40


def _content_values(ds) -> list[str]:
    return [
        str(e.value)
        for item in ds.ContentSequence
        for e in item.iterall()
        if e.keyword in ("TextValue", "UID")
    ]


def test_radground_echo_command_reaches_orthanc(pacs, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADGROUND_")}
    done = subprocess.run(
        [sys.executable, "-m", "radground", "echo", f"{pacs.aet}@127.0.0.1:{pacs.dicom_port}"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"C-ECHO {pacs.aet}@127.0.0.1:{pacs.dicom_port}: Success" in done.stdout


# -- PACS down, then back ----------------------------------------------------------


def test_restart_keeps_ports_storage_and_modalities(tmp_path):
    _require_orthanc()
    files = write_series(tmp_path / "ct", 3)
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with OrthancPACS(tmp_path / "pacs") as pacs:
        pacs.set_modality("LATER", "LATER", "127.0.0.1", 11112)
        assert all(r.ok for r in send(files[:2], pacs))
        ports = (pacs.dicom_port, pacs.http_port)

        pacs.stop()
        down = send(files[2:], pacs)
        assert [r.ok for r in down] == [False]
        assert "could not connect" in down[0].reason

        # someone took the port meanwhile: a clear error, no new port
        with socket.socket() as squatter:
            squatter.bind(("", ports[0]))
            squatter.listen()
            with pytest.raises(
                OrthancStartError, match=f"port = {ports[0]}.*already in use"
            ) as raised:
                pacs.start()
            assert raised.value.port_in_use and not pacs.running
        pacs.start()
        assert (pacs.dicom_port, pacs.http_port) == ports
        assert len(pacs.instances_of_study(study)) == 2  # what arrived before is still there
        assert all(r.ok for r in send(files[2:], pacs))
        assert {i["SOPInstanceUID"] for i in pacs.instances_of_study(study)} == {
            str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
        assert pacs.get_json("/modalities/LATER/configuration")["Port"] == 11112


# -- a repeated SOP Instance UID ------------------------------------------------------


def _two_versions(sop_instance_uid: str) -> tuple:
    study, series = generate_uid(), generate_uid()
    first = make_ct(
        study_instance_uid=study, series_instance_uid=series, sop_instance_uid=sop_instance_uid
    )
    second = make_ct(
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop_instance_uid,
        instance_number=2,
    )
    first.ImageComments, second.ImageComments = "first version", "second version"
    assert first.PixelData != second.PixelData
    return first, second


def test_orthanc_keeps_the_first_instance_when_a_sop_instance_uid_repeats(pacs):
    """Why RadGround gives every new output revision new UIDs: re-sending an SR
    under the same UID is acknowledged with Success and silently dropped."""
    first, second = _two_versions(generate_uid())
    assert [r.status for r in send([first], pacs)] == [0]
    assert [r.status for r in send([second], pacs)] == [0]  # Success, yet...
    (stored,) = pacs.instances_of_study(first.StudyInstanceUID)
    kept = dcmread(DicomBytesIO(pacs.instance_file(stored["ID"])))
    assert kept.ImageComments == "first version" and kept.PixelData == first.PixelData
    assert stored["InstanceNumber"] == 1


def test_overwrite_instances_option_keeps_the_last_instead(tmp_path):
    """The same exchange with ``OverwriteInstances`` on (not the default): the
    second version replaces the first."""
    _require_orthanc()
    first, second = _two_versions(generate_uid())
    with OrthancPACS(tmp_path / "pacs", extra_config={"OverwriteInstances": True}) as pacs:
        assert [r.status for r in send([first, second], pacs)] == [0, 0]
        (stored,) = pacs.instances_of_study(first.StudyInstanceUID)
        assert (
            dcmread(DicomBytesIO(pacs.instance_file(stored["ID"]))).ImageComments
            == "second version"
        )
        pacs.stop(kill=True)  # throw-away storage: no need for the 3.5 s clean shutdown


def test_first_start_picks_other_ports_when_one_was_taken_meanwhile(tmp_path, monkeypatch):
    """The race between probing a free port and Orthanc binding it."""
    _require_orthanc()
    import tests.integration.orthanc as harness

    real_free_ports = harness._free_ports
    with socket.socket() as squatter:
        squatter.bind(("", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        offered = iter([[taken, real_free_ports(1)[0]]])
        monkeypatch.setattr(
            harness, "_free_ports", lambda count: next(offered, None) or real_free_ports(count)
        )
        pacs = OrthancPACS(tmp_path / "pacs").start()
        try:
            assert pacs.running and pacs.dicom_port != taken
            # the first try did hit the taken port
            assert "already in use" in pacs.log_path.read_text()
        finally:
            pacs.stop(kill=True)
