"""What a user sees of each study's outcome: outputs that fail on their own, where
results land, and why a study was or was not processed (`studies`, `routes test`,
`jobs show`) — on real databases, a real DICOM peer and a real HTTP FHIR endpoint."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom import dcmread
from pydicom.uid import ComputedRadiographyImageStorage, generate_uid
from sqlalchemy import select

from dicom_node.scp import StorageSCP
from dicom_node.storage import InstanceStore
from exporters.fhir import local_patient_identifier_system
from radground.cli import cli
from radground.queries import list_studies
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
from tests.integration.test_pipeline import CXR, _world, drain, jobs
from worklist.jobs import retry_job
from worklist.jobs_models import Artifact, AuditEvent, Delivery, DeliveryState, JobState


@pytest.fixture
def pacs(tmp_path):
    """A Storage SCP standing in for the PACS."""
    received = []
    scp = StorageSCP(InstanceStore(tmp_path / "pacs"), ae_title="PACS", on_stored=received.append)
    scp.received, scp.port = received, scp.start("127.0.0.1", 0)[1]
    yield scp
    scp.stop()


@pytest.fixture
def ehr():
    with FhirTestServer() as server:
        yield server


def _settings(tmp_path: Path, database_url: str, **sections) -> Settings:
    """The embedded defaults (default route, no destinations) on private paths."""
    return Settings(
        node=NodeSettings(port=0, listener_processes=1),
        storage=StorageSettings(root=tmp_path / "instances", reserve_mb=0),
        database=DatabaseSettings(url=database_url),
        completion=CompletionSettings(idle_seconds=30, poll_seconds=3600),
        workers=WorkerSettings(outputs_root=tmp_path / "outputs", requeue_after_seconds=60),
        **sections,
    )


def _config_file(settings: Settings, tmp_path: Path) -> Path:
    """A TOML file for the CLI naming the same database and folders (relative outputs root:
    the CLI must print absolute paths)."""
    config = tmp_path / "radground.toml"
    outputs = Path(settings.workers.outputs_root)
    config.write_text(
        f"[database]\nurl = '{settings.database.url}'\n"
        f"[workers]\noutputs_root = '{outputs.relative_to(tmp_path)}'\n"
    )
    return config


def _cli(config: Path, *args: str, cwd: Path):
    """Run `radground --config CONFIG ARGS` in ``cwd`` (the folder relative settings are read
    from)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        return CliRunner().invoke(cli, ["--config", str(config), *args])


def cr_without_issuer(tmp_path: Path, shared_data: Path, *, study: str | None = None) -> Path:
    """A chest CR whose Patient ID has no Issuer of Patient ID (as many real PACS send them)."""
    ds = make_chest_dx(shared_data / "nih-cxr-boxes" / "images" / CXR, study_instance_uid=study)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    ds.Modality = "CR"
    del ds.PresentationIntentType
    assert "IssuerOfPatientID" not in ds and "IssuerOfPatientIDQualifiersSequence" not in ds
    return write_dataset(ds, tmp_path / "cr" / f"{ds.SOPInstanceUID}.dcm")


def _artifacts(ctx, job_id: int) -> list[Artifact]:
    with ctx.sessions() as session:
        return list(session.scalars(
            select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.id)
        ))


def _patient_system(bundle: dict) -> str:
    [patient] = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    ]
    return patient["identifier"][0]["system"]


@pytest.fixture(autouse=True)
def _no_radground_environment(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("RADGROUND_"):
            monkeypatch.delenv(key)


def test_default_config_builds_sr_gsps_and_a_fhir_bundle_for_a_cr_without_issuer(
    tmp_path, database_url, shared_data
):
    settings = _settings(tmp_path, database_url)
    assert settings.routes[0].destinations == ()  # the embedded default delivers nowhere
    for world in _world(settings, tmp_path):
        assert all(r.ok for r in world.send([cr_without_issuer(tmp_path, shared_data)]))
        world.ready()
        drain(world.ctx, world.queue)
        [job] = jobs(world.ctx)
        assert job.state is JobState.DONE, job.last_error
        artifacts = _artifacts(world.ctx, job.id)
        kinds = sorted(a.kind for a in artifacts)
        assert kinds == ["fhir", "gsps", "gsps", "sr", "sr"]
        [bundle] = [a for a in artifacts if a.kind == "fhir"]
        assert Path(bundle.path).name == "fhir.json"
        data = json.loads((world.ctx.outputs_root / bundle.path).read_text())
        assert data["resourceType"] == "Bundle" and data["type"] == "transaction"
        assert _patient_system(data) == local_patient_identifier_system("RADGROUND", "")
        with world.ctx.sessions() as session:
            exported = session.scalars(select(AuditEvent.detail).where(
                AuditEvent.job_id == job.id, AuditEvent.action == "exported")).one()
        assert "this node's own urn:oid:2.25." in exported


def test_jobs_and_jobs_show_print_absolute_paths(tmp_path, database_url, shared_data):
    """The outputs root is given relative (as in the default config): the CLI names where
    the files are, not a path relative to a folder it does not name."""
    settings = _settings(tmp_path, database_url)
    for world in _world(settings, tmp_path):
        world.send([cr_without_issuer(tmp_path, shared_data)])
        world.ready()
        drain(world.ctx, world.queue)
        [job] = jobs(world.ctx)
        artifacts = _artifacts(world.ctx, job.id)
        config = _config_file(settings, tmp_path)
        shown = _cli(config, "jobs", "show", str(job.id), cwd=tmp_path)
        assert shown.exit_code == 0, shown.output
        printed = [
            line.split()[-1]
            for line in shown.output.splitlines()
            if line.strip().startswith("artifact")
        ]
        assert len(printed) == len(artifacts) > 0
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in printed), printed
        assert sorted(printed) == sorted(str(tmp_path / "outputs" / a.path) for a in artifacts)
        listed = _cli(config, "jobs", cwd=tmp_path)
        assert f"{tmp_path / 'outputs'}/<Study Instance UID>/r<Rev>/" in listed.output


def test_cr_without_issuer_reaches_pacs_and_ehr_without_a_configured_system(tmp_path, database_url,
                                                                            shared_data, pacs, ehr):
    settings = _settings(
        tmp_path,
        database_url,
        routes=(RouteSettings(name="cxr", modalities=("CR",), destinations=("PACS", "EHR")),),
        destinations={
            "PACS": DicomDestination(ae_title="PACS", host="127.0.0.1", port=pacs.port),
            "EHR": FhirEndpointSettings(url=ehr.base_url),
        },  # no patient_identifier_system
    )
    for world in _world(settings, tmp_path):
        world.send([cr_without_issuer(tmp_path, shared_data)])
        world.ready()
        drain(world.ctx, world.queue)
        [job] = jobs(world.ctx)
        assert job.state is JobState.DONE, job.last_error
        assert len(pacs.received) == 5  # SR + GSPS, en + zh-CN, and the KOS
        [patient] = ehr.resources("Patient")
        expected_system = local_patient_identifier_system("RADGROUND", "")
        assert patient["identifier"][0]["system"] == expected_system
        assert len(ehr.resources("DiagnosticReport")) == 1


def test_a_fhir_only_failure_leaves_sr_and_gsps_delivered_and_the_job_says_so(
    tmp_path, database_url, shared_data, pacs, ehr
):
    settings = _settings(
        tmp_path,
        database_url,
        routes=(RouteSettings(name="cxr", modalities=("CR",), destinations=("PACS", "EHR")),),
        destinations={
            "PACS": DicomDestination(ae_title="PACS", host="127.0.0.1", port=pacs.port),
            # a FHIR-only mistake: the Bundle's language is not one the route reports in
            "EHR": FhirEndpointSettings(url=ehr.base_url, primary_language="fr"),
        },
    )
    for world in _world(settings, tmp_path):
        world.send([cr_without_issuer(tmp_path, shared_data)])
        world.ready()
        drain(world.ctx, world.queue)
        [job] = jobs(world.ctx)
        assert len(pacs.received) == 5  # the DICOM outputs went out (SR, GSPS, KOS)
        assert ehr.transactions == []
        assert job.state is JobState.FAILED
        assert "not built: fhir for EHR: primary_language 'fr'" in job.last_error
        assert job.last_error.endswith("; delivery to EHR: not sent; delivered to PACS"), (
            job.last_error
        )
        with world.ctx.sessions() as session:
            states = {
                d.destination: (d.state, d.attempts, d.last_error)
                for d in session.scalars(select(Delivery))
            }
        assert states["PACS"][0] is DeliveryState.DONE
        assert states["EHR"][:2] == (DeliveryState.FAILED, 0)
        assert states["EHR"][2].startswith("not sent: its FHIR Bundle was not built")
        shown = _cli(_config_file(settings, tmp_path), "jobs", "show", str(job.id), cwd=tmp_path)
        assert (
            "  not built: fhir for EHR: primary_language 'fr' is not a language of the report"
            in shown.output
        )
        assert "delivery to EHR (fhir): failed, 0 attempts; not sent" in shown.output

        # the operator fixes the setting and retries: the export runs again, the EHR gets its
        # Bundle, the PACS is not sent the same objects twice
        target = dataclasses.replace(world.ctx.fhir_targets["EHR"], primary_language="en")
        fixed = dataclasses.replace(
            world.ctx, destinations={**world.ctx.destinations, "EHR": target}
        )
        assert "export runs again" in retry_job(fixed, job.id, actor="operator:test")
        drain(fixed, world.queue)
        [job] = jobs(world.ctx)
        assert job.state is JobState.DONE, job.last_error
        assert len(ehr.resources("DiagnosticReport")) == 1
        assert len(pacs.received) == 5


def test_studies_show_each_revisions_outcome_and_routes_test_explains_it(
    tmp_path, database_url, shared_data
):
    settings = _settings(tmp_path, database_url)
    for world in _world(settings, tmp_path):
        ct_study = generate_uid()
        ct = write_dataset(
            make_ct(study_instance_uid=ct_study, series_instance_uid=generate_uid()),
            tmp_path / "ct.dcm",
        )
        cxr_study = generate_uid()
        world.send([ct, cr_without_issuer(tmp_path, shared_data, study=cxr_study)])
        world.ready()
        drain(world.ctx, world.queue)
        [job] = jobs(world.ctx)
        # one of our SRs, routed back by a PACS under a study of its own: only our output
        [sr] = [a for a in _artifacts(world.ctx, job.id) if a.kind == "sr" and a.language == "en"]
        echoed = dcmread(world.ctx.outputs_root / sr.path)
        own_study = generate_uid()
        echoed.StudyInstanceUID, echoed.SeriesInstanceUID = own_study, generate_uid()
        echoed.SOPInstanceUID = echoed.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        assert all(r.ok for r in world.send([write_dataset(echoed, tmp_path / "echo.dcm")]))
        world.ready()
        drain(world.ctx, world.queue)

        outcomes = {
            row.study_instance_uid: (row.state, row.outcome) for row in list_studies(settings)
        }
        assert outcomes == {
            ct_study: ("ready", "skipped: no route (modality, body part)"),
            cxr_study: ("ready", f"job {job.id} done"),
            own_study: ("ready", "skipped: own output"),
        }
        config = _config_file(settings, tmp_path)
        listed = _cli(config, "studies", cwd=tmp_path)
        assert listed.exit_code == 0, listed.output
        assert "Outcome" in listed.output
        for _, outcome in outcomes.values():
            assert outcome in listed.output

        explained = _cli(config, "routes", "test", ct_study, cwd=tmp_path)
        assert explained.exit_code == 1, explained.output
        assert "revision 1: skipped: no route (modality, body part)" in explained.output
        assert "route chest-radiographs: no match" in explained.output
        assert "modality is CT, wanted CR or DX" in explained.output
        assert "body part is (empty), wanted CHEST" in explained.output
        assert "Test^Synthetic" not in explained.output and "RG-TEST" not in explained.output

        explained = _cli(config, "routes", "test", cxr_study, cwd=tmp_path)
        assert explained.exit_code == 0, explained.output
        assert "route chest-radiographs: MATCHES 1 of 1 instance(s)" in explained.output
        assert "would be processed on route chest-radiographs" in explained.output
