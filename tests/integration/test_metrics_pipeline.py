"""The worklist's and engine's metrics move as a real pipeline runs (real databases, the
shipped model, a real DICOM peer, a destination that is down), and the queue depths read
from the database at scrape time say what is left."""

from __future__ import annotations

import socket

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from radground.settings import (
    CompletionSettings,
    DatabaseSettings,
    DicomDestination,
    NodeSettings,
    RouteSettings,
    Settings,
    StorageSettings,
    WorkerSettings,
)
from tests.factories import make_ct, write_dataset
from tests.integration.test_pipeline import _world, cxr_file, drain, jobs, pacs  # noqa: F401
from worklist.jobs_models import JobState
from worklist.metrics import QueueDepthCollector


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def world(tmp_path, database_url, pacs):  # noqa: F811
    settings = Settings(
        node=NodeSettings(port=0, listener_processes=1),
        storage=StorageSettings(root=tmp_path / "instances", reserve_mb=0),
        database=DatabaseSettings(url=database_url),
        completion=CompletionSettings(idle_seconds=30, poll_seconds=3600),
        workers=WorkerSettings(outputs_root=tmp_path / "outputs", requeue_after_seconds=60),
        routes=(
            RouteSettings(
                name="cxr", modalities=("DX", "CR"), body_parts=("CHEST",),
                view_positions=("PA", "AP"), destinations=("PACS", "DOWN"),
            ),
        ),
        destinations={
            "PACS": DicomDestination(ae_title="PACS", host="127.0.0.1", port=pacs.port),
            "DOWN": DicomDestination(ae_title="DOWN", host="127.0.0.1", port=_closed_port()),
        },
    )
    yield from _world(settings, tmp_path)


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _snapshot() -> dict[str, float]:
    """Every sample of our metrics in this process, by name and labels."""
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in REGISTRY.collect() if family.name.startswith("radground_")
        for sample in family.samples
    }


def _moved(before: dict[str, float], name: str, **labels: str) -> float:
    key = f"{name}{sorted(labels.items())}"
    return _value(name, **labels) - before.get(key, 0.0)


def test_a_study_through_the_pipeline_moves_the_counters_and_histograms(world, shared_data):
    before = _snapshot()
    model_batches_before = sum(
        value for key, value in before.items()
        if key.startswith("radground_model_inference_seconds_count")
    )
    cxr = cxr_file(world.tmp, shared_data)
    ct = write_dataset(
        make_ct(study_instance_uid="1.2.826.0.1.3680043.9.7.1", series_instance_uid="1.2.3.9",
                rows=16, columns=16),
        world.tmp / "ct.dcm",
    )
    assert all(r.ok for r in world.send([cxr, ct]))
    assert len(world.ready()) == 2
    drain(world.ctx, world.queue)

    [job] = jobs(world.ctx)
    assert job.state is JobState.DELIVERING  # DOWN waits for its retry
    assert _moved(before, "radground_study_revisions_total", outcome="job") == 1
    assert _moved(before, "radground_study_revisions_total", outcome="no-route") == 1
    for stage, count in (("queue_wait", 1), ("inference", 1), ("export", 1), ("delivery", 2)):
        assert _moved(before, "radground_job_stage_duration_seconds_count", stage=stage) == count
    assert _moved(before, "radground_job_stage_duration_seconds_sum", stage="inference") > 0
    assert _moved(
        before, "radground_delivery_attempts_total", destination="PACS", result="delivered"
    ) == 1
    assert _moved(
        before, "radground_deliveries_total", destination="PACS", result="delivered"
    ) == 1
    assert _moved(
        before, "radground_delivery_attempts_total", destination="DOWN", result="retryable"
    ) == 1
    assert _moved(before, "radground_delivery_retries_total", destination="DOWN") == 1
    assert _moved(before, "radground_deliveries_total", destination="DOWN", result="failed") == 0
    model_batches = sum(
        sample.value
        for family in REGISTRY.collect() if family.name == "radground_model_inference_seconds"
        for sample in family.samples if sample.name.endswith("_count")
    )
    assert model_batches > model_batches_before

    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(QueueDepthCollector(world.ctx.sessions))
    assert scraped.get_sample_value("radground_queue_depth_up") == 1
    assert scraped.get_sample_value("radground_jobs", {"state": "delivering"}) == 1
    assert scraped.get_sample_value("radground_jobs", {"state": "done"}) == 0
    assert scraped.get_sample_value("radground_deliveries_pending", {"destination": "DOWN"}) == 1
    assert scraped.get_sample_value("radground_deliveries_pending", {"destination": "PACS"}) is None
    assert scraped.get_sample_value("radground_study_revisions_receiving") == 0


def test_queue_depths_report_an_unreachable_database_instead_of_failing_the_scrape(tmp_path):
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    missing = create_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'db.sqlite'}")
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(QueueDepthCollector(sessionmaker(missing)))
    assert scraped.get_sample_value("radground_queue_depth_up") == 0
    assert scraped.get_sample_value("radground_jobs", {"state": "queued"}) is None
