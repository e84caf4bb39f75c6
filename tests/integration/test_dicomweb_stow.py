"""STOW-RS client against a real DICOMweb server: Orthanc with Debian's DICOMweb plugin.

Objects stored by :func:`worklist.destinations.dicomweb.store_instances` are read
back with QIDO-RS and WADO-RS (plain HTTP, not the client under test) and
compared byte for byte with the files sent.
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from tests.factories import make_ct, write_dataset
from tests.integration.dicomweb import (
    dicomweb_base,
    orthanc_dicomweb,
    qido_instances,
    wado_instance,
)
from tests.integration.orthanc import OrthancNotInstalled
from tests.integration.tls import NoOpenSSL, self_signed_certificate, tls_proxy
from worklist.destinations import InstanceOutcome, TlsOptions, store_instances


@pytest.fixture(scope="module")
def dicomweb(tmp_path_factory):
    try:
        pacs = orthanc_dicomweb(tmp_path_factory.mktemp("orthanc-dicomweb")).start()
    except OrthancNotInstalled as exc:
        pytest.skip(str(exc))
    yield dicomweb_base(pacs)
    pacs.stop(kill=True)


def write_study(directory: Path) -> list[Path]:
    """A CT image, a Comprehensive 3D SR (TID 1500) and a GSPS referencing it, as PS3.10 files."""
    ct = make_ct(study_instance_uid=generate_uid(), series_instance_uid=generate_uid(), rows=16, columns=16)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name="RadGround"),
    )
    finding = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="finding 1"),
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(
            name=codes.DCM.Finding, value=hd.sr.CodedConcept("233604007", "SCT", "Pneumonia"))],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[finding],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[ct], content=report, series_instance_uid=generate_uid(), series_number=900,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="RadGround",
    )
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[ct], series_instance_uid=generate_uid(), series_number=901,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="RadGround",
        manufacturer_model_name="RadGround", software_versions="test", device_serial_number="1",
        content_label="AI",
    )
    return [write_dataset(ds, directory / f"{name}.dcm") for name, ds in (("ct", ct), ("sr", sr), ("pr", gsps))]


def test_stored_sr_and_gsps_are_found_by_qido_and_retrieved_identical_by_wado(dicomweb, tmp_path):
    files = write_study(tmp_path)
    headers = [dcmread(f, stop_before_pixels=True) for f in files]
    study = headers[0].StudyInstanceUID

    result = store_instances(dicomweb, files, request_id="delivery-1")

    assert result.status_code == 200
    assert result.complete and result.to_retry == ()
    assert [i.sop_instance_uid for i in result.instances] == [h.SOPInstanceUID for h in headers]
    assert [i.sop_class_uid for i in result.instances] == [h.SOPClassUID for h in headers]
    assert all(i.retrieve_url and i.retrieve_url.endswith(i.sop_instance_uid) for i in result.instances)
    found = {item["00080018"]["Value"][0]: item["00080016"]["Value"][0]
             for item in qido_instances(dicomweb, study)}
    assert found == {h.SOPInstanceUID: h.SOPClassUID for h in headers}
    for path, header in zip(files, headers):
        sent = path.read_bytes()
        got = wado_instance(dicomweb, study, header.SeriesInstanceUID, header.SOPInstanceUID)
        assert got == sent, f"{path.name} came back different from what was sent"


def test_a_second_delivery_of_the_same_instances_creates_no_second_object(dicomweb, tmp_path):
    files = write_study(tmp_path)
    study = dcmread(files[0], stop_before_pixels=True).StudyInstanceUID

    first = store_instances(dicomweb, files)
    again = store_instances(dicomweb, files)

    assert first.complete and again.complete
    assert len(qido_instances(dicomweb, study)) == len(files)


def test_partial_failure_keeps_the_stored_instance_and_fails_only_the_refused_one(dicomweb, tmp_path):
    (ours,) = write_study(tmp_path / "a")[:1]
    (stray,) = write_study(tmp_path / "b")[:1]
    study = dcmread(ours, stop_before_pixels=True).StudyInstanceUID

    result = store_instances(dicomweb, [ours, stray], study_instance_uid=study)

    assert result.status_code == 409  # Orthanc: some instances failed
    stored, refused = result.instances
    assert stored.outcome is InstanceOutcome.STORED
    assert refused.outcome is InstanceOutcome.FAILED_FINAL
    assert refused.failure_reason == 0x0110  # Orthanc's Processing failure
    assert "another study" in refused.reason
    assert "409" in result.peer_answer and "0x0110" in result.peer_answer
    assert stray.name not in result.peer_answer and study not in result.peer_answer
    assert [i["00080018"]["Value"][0] for i in qido_instances(dicomweb, study)] == [stored.sop_instance_uid]


def test_a_server_that_is_down_is_retryable_for_every_instance(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    files = write_study(tmp_path)

    result = store_instances(f"http://127.0.0.1:{port}/dicom-web", files, timeout=5)

    assert result.status_code is None
    assert [i.outcome for i in result.instances] == [InstanceOutcome.FAILED_RETRYABLE] * 3
    assert result.to_retry == tuple(dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files)
    assert "ConnectError" in result.peer_answer


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    try:
        return self_signed_certificate(tmp_path_factory.mktemp("tls"))
    except NoOpenSSL as exc:
        pytest.skip(str(exc))


def test_stow_over_tls_with_the_servers_ca_stores_and_an_untrusted_certificate_is_final(
        dicomweb, certificate, tmp_path):
    files = write_study(tmp_path)
    plain = urlsplit(dicomweb)
    with tls_proxy(certificate, plain.port) as port:
        base = f"https://127.0.0.1:{port}{plain.path}"
        refused = store_instances(base, files, tls=TlsOptions())  # system CAs only
        trusted = store_instances(base, files, tls=TlsOptions(ca_bundle=certificate[0]))

    assert refused.final == refused.instances and refused.status_code is None
    assert "TLS certificate" in refused.peer_answer
    assert trusted.complete
    assert all(i.retrieve_url for i in trusted.instances)
