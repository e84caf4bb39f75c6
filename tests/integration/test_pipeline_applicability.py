"""The job pipeline refuses images the model is not made for, with the rule the CLI uses."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydicom.uid import MRImageStorage, generate_uid

from radground.node import Node
from radground.runtime import build_context
from radground.settings import (
    CompletionSettings,
    DatabaseSettings,
    NodeSettings,
    RouteSettings,
    Settings,
    StorageSettings,
    WorkerSettings,
)
from tests.factories import make_chest_dx, make_ct, write_dataset
from tests.integration.test_pipeline import QueueRecorder, count, drain, jobs
from worklist.completion import CompletionMonitor
from worklist.db import utcnow
from worklist.jobs_models import Artifact, JobState
from worklist.pipeline import make_study_ready_hook

CXR = "00000072_000.png"


@pytest.fixture
def world(tmp_path, database_url):
    """A node whose one route sends MR and DX studies of any body part and view to the default model."""
    settings = Settings(
        node=NodeSettings(port=0, listener_processes=1),
        storage=StorageSettings(root=tmp_path / "instances", reserve_mb=0),
        database=DatabaseSettings(url=database_url),
        completion=CompletionSettings(idle_seconds=30, poll_seconds=3600),
        workers=WorkerSettings(outputs_root=tmp_path / "outputs", requeue_after_seconds=60),
        routes=(RouteSettings(name="anything", modalities=("MR", "DX"), body_parts=(), view_positions=(),
                              destinations=()),),
    )
    node = Node(settings)
    node.start()
    queue = QueueRecorder()
    ctx = build_context(settings, enqueue=queue)
    monitor = CompletionMonitor(ctx.sessions, make_study_ready_hook(ctx), idle_seconds=30)

    def send_and_process(datasets) -> None:
        from dicom_node.scu import Destination, StorageSCU

        paths = [write_dataset(ds, tmp_path / "send" / f"{ds.SOPInstanceUID}.dcm") for ds in datasets]
        assert all(r.ok for r in StorageSCU("MODALITY").send(paths, Destination("RADGROUND", "127.0.0.1",
                                                                                  node.address[1])))
        monitor.run_once(utcnow() + timedelta(seconds=31))
        drain(ctx, queue)

    yield ctx, send_and_process
    node.stop()


def head_mr(study: str):
    ds = make_ct(study_instance_uid=study, series_instance_uid=generate_uid())
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.Modality, ds.BodyPartExamined = "MR", "HEAD"
    return ds


def test_a_head_mr_study_ends_with_the_reason_and_no_report(world):
    ctx, send_and_process = world
    send_and_process([head_mr(generate_uid())])
    [job] = jobs(ctx)
    assert job.state is JobState.FAILED
    assert job.last_error.startswith("not analysed: no image the model is made for")
    assert "Modality (0008,0060) MR is not CR, DX or RG" in job.last_error
    assert job.report_json is None
    assert count(ctx, Artifact) == 0  # no SR saying 'no acute cardiopulmonary abnormality'


def test_a_lateral_view_is_skipped_with_its_reason_and_the_frontal_one_analysed(world, shared_data):
    from engine.report import GroundedReport

    ctx, send_and_process = world
    study = generate_uid()
    png = shared_data / "nih-cxr-boxes" / "images" / CXR
    frontal = make_chest_dx(png, study_instance_uid=study, view_position="PA")
    lateral = make_chest_dx(png, study_instance_uid=study, view_position="LL")
    lateral.SeriesInstanceUID = frontal.SeriesInstanceUID
    send_and_process([frontal, lateral])
    [job] = jobs(ctx)
    assert job.state is JobState.DONE, job.last_error
    report = GroundedReport.from_json(job.report_json)
    assert [image.sop_instance_uid for image in report.images] in ([], [str(frontal.SOPInstanceUID)])
    [skipped] = [p for p in report.problems if "skipped" in p]
    assert "the view (LL) is not AP or PA" in skipped
    assert "not reported by this model" in " ".join(report.model.parameters)
