"""The node's metrics move when a real SCP receives, refuses and admits (pynetdicom SCU)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from dicom_node import metrics
from dicom_node.scp import AllowedPeer, StorageSCP
from dicom_node.scu import Destination, StorageSCU
from dicom_node.storage import InstanceStore
from tests.factories import write_series


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def node(tmp_path):
    scp = StorageSCP(
        InstanceStore(tmp_path / "store"),
        ae_title="RADGROUND",
        on_stored=lambda _: None,
        allowed_peers=[AllowedPeer("METRICS1"), AllowedPeer("METRICS2")],
    )
    host, port = scp.start("127.0.0.1", 0)
    yield scp, Destination("RADGROUND", host, port)
    scp.stop()


def test_received_instances_and_bytes_are_counted_by_calling_ae(node, tmp_path):
    _, destination = node
    files = write_series(tmp_path / "s", 3, rows=16, columns=16)
    before = _value("radground_instances_received_total", calling_ae="METRICS1")
    bytes_before = _value("radground_received_bytes_total", calling_ae="METRICS1")
    other_before = _value("radground_instances_received_total", calling_ae="METRICS2")
    accepted_before = _value("radground_associations_accepted_total")

    results = StorageSCU("METRICS1").send(files, destination)

    assert all(r.ok for r in results)
    assert _value("radground_instances_received_total", calling_ae="METRICS1") == before + 3
    stored = sum(p.stat().st_size for p in (tmp_path / "store").rglob("*.dcm"))
    assert _value("radground_received_bytes_total", calling_ae="METRICS1") - bytes_before == stored
    assert _value("radground_instances_received_total", calling_ae="METRICS2") == other_before
    assert _value("radground_associations_accepted_total") == accepted_before + 1
    assert _value("radground_associations_open") == 0  # closed again


def test_refused_instances_are_counted_by_status(tmp_path):
    """Storage below its free-space reserve refuses with Out of Resources (0xA700)."""
    full = StorageSCP(
        InstanceStore(tmp_path / "store", reserve_bytes=1 << 62),
        ae_title="RADGROUND",
        on_stored=lambda _: None,
    )
    host, port = full.start("127.0.0.1", 0)
    reason = {"reason": "out_of_resources"}
    before = _value("radground_instances_refused_total", **reason)
    received_before = _value("radground_instances_received_total", calling_ae="METRICS3")
    try:
        results = StorageSCU("METRICS3").send(
            write_series(tmp_path / "s", 2, rows=16, columns=16),
            Destination("RADGROUND", host, port),
        )
    finally:
        full.stop()

    assert [r.status for r in results] == [0xA700, 0xA700]
    assert _value("radground_instances_refused_total", **reason) == before + 2
    assert _value("radground_instances_received_total", calling_ae="METRICS3") == received_before


def test_refused_associations_are_counted_by_reason(node):
    _, destination = node
    reason = {"reason": "calling_ae_not_allowed"}
    before = _value("radground_associations_refused_total", **reason)
    called = _value("radground_associations_refused_total", reason="called_ae_mismatch")

    assert not StorageSCU("STRANGER").echo(destination).ok
    wrong_called = Destination("ELSEWHERE", destination.host, destination.port)
    assert not StorageSCU("METRICS1").echo(wrong_called).ok

    assert _value("radground_associations_refused_total", **reason) == before + 1
    assert _value("radground_associations_refused_total", reason="called_ae_mismatch") == (
        called + 1
    )


def test_every_reason_is_exposed_from_the_start():
    for reason in metrics.ASSOCIATION_REFUSAL_REASONS:
        assert REGISTRY.get_sample_value(
            "radground_associations_refused_total", {"reason": reason}
        ) is not None
    assert REGISTRY.get_sample_value(
        "radground_instances_refused_total", {"reason": "out_of_resources"}
    ) is not None
    assert metrics.refusal_reason(0xA701) == "status_0xa701"


def test_calling_ae_labels_are_bounded(monkeypatch):
    monkeypatch.setattr(metrics, "_by_calling_ae", {})
    for number in range(metrics.MAX_CALLING_AE_LABELS + 5):
        metrics.instance_stored(f"BOUND{number}", 10)
    labelled = {
        sample.labels["calling_ae"]
        for family in REGISTRY.collect() if family.name == "radground_instances_received"
        for sample in family.samples if sample.labels["calling_ae"].startswith("BOUND")
    }
    assert len(labelled) == metrics.MAX_CALLING_AE_LABELS
    assert _value("radground_instances_received_total", calling_ae=metrics.OTHER_CALLING_AE) >= 5
