"""The node driven by real DICOM peers (dcmtk's echoscu/storescu, pynetdicom), on SQLite and
PostgreSQL."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from sqlalchemy import select

from radground.node import Node
from radground.settings import (
    AllowedPeerSettings,
    CompletionSettings,
    DatabaseSettings,
    NodeSettings,
    Settings,
    StorageSettings,
)
from tests.factories import write_dataset, write_series
from tests.integration.dcmtk import echoscu, propose_flag, storescu
from worklist.completion import CompletionMonitor
from worklist.db import create_db_engine, make_session_factory, utcnow
from worklist.models import Instance


@pytest.fixture
def make_node(database_url, tmp_path):
    nodes = []

    def start(*, node: dict | None = None, storage: dict | None = None) -> Node:
        settings = Settings(
            node=NodeSettings(port=0, listener_processes=1, **(node or {})),
            storage=StorageSettings(
                **{"root": tmp_path / "instances", "reserve_mb": 0, **(storage or {})}
            ),
            database=DatabaseSettings(url=database_url),
            completion=CompletionSettings(idle_seconds=30, poll_seconds=3600),
        )
        started = Node(settings)
        started.start()
        nodes.append(started)
        return started

    yield start
    for node in nodes:
        node.stop()


def indexed(node: Node) -> dict[str, Instance]:
    engine = create_db_engine(node.settings.database.url)
    try:
        with make_session_factory(engine)() as session:
            return {i.sop_instance_uid: i for i in session.scalars(select(Instance))}
    finally:
        engine.dispose()


def stored_files(node: Node) -> list[Path]:
    return sorted(p for p in Path(node.settings.storage.root).rglob("*.dcm"))


def dataset_bytes(path: Path) -> bytes:
    """The bytes after the file meta information (PS3.10 §7.1: group length at offset 132)."""
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM" and raw[132:136] == b"\x02\x00\x00\x00"
    group_length = int.from_bytes(raw[140:144], "little")
    return raw[144 + group_length:]


def test_echoscu(make_node):
    node = make_node()
    done = echoscu(node.address[1])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Received Echo Response (Success)" in done.stdout + done.stderr


def test_storescu_sends_every_real_file_and_each_is_stored_as_received(make_node, shared_data):
    node = make_node()
    sendable = [p for p in sorted((shared_data / "dicom").glob("*.dcm"))
                if p.name not in ("bad_sequence.dcm", "explicit_VR-UN.dcm", "liver_deflate.dcm")]
    by_flag = defaultdict(list)
    for path in sendable:
        by_flag[propose_flag(path)].append(path)
    for flag, files in by_flag.items():
        run = storescu(node.address[1], files, extra=[flag] if flag else [])
        assert run.responses == ["Success"] * len(files), run.output
    stored = indexed(node)
    originals = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in sendable}
    assert set(stored) == set(originals)
    for uid, original in originals.items():
        row = stored[uid]
        source = dcmread(original)
        received = dcmread(Path(node.settings.storage.root) / row.path)
        # stored in the transfer syntax it was sent in, pixel data byte-identical (never decoded)
        assert row.transfer_syntax_uid == str(source.file_meta.TransferSyntaxUID) or (
            # storescu converts big endian
            source.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.2"
        )
        if row.transfer_syntax_uid == str(source.file_meta.TransferSyntaxUID):
            assert received.PixelData == source.PixelData, original.name


def test_bytes_on_the_wire_are_the_bytes_on_disk(make_node, shared_data):
    """pynetdicom sending raw file bytes (no decode): the stored data set is identical byte for
    byte."""
    node = make_node()
    files = [
        shared_data / "dicom" / name
        for name in ("liver_deflate.dcm", "RG1_J2KI.dcm", "emri_small_RLE.dcm")
    ]
    ae = AE(ae_title="RAWSCU")
    for path in files:
        meta = dcmread(path, stop_before_pixels=True).file_meta
        ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", node.address[1], ae_title="RADGROUND")
        assert assoc.is_established
        statuses = [assoc.send_c_store(path).Status for path in files]
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    assert statuses == [0, 0, 0]
    stored = indexed(node)
    for path in files:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert dataset_bytes(Path(node.settings.storage.root) / stored[uid].path) == dataset_bytes(
            path
        )


def test_bad_instances_get_specific_statuses_and_cost_no_neighbour(make_node, tmp_path):
    node = make_node()
    good = write_series(tmp_path / "good", 3)
    traversal = dcmread(good[0])
    traversal.StudyInstanceUID = "../../../etc"
    traversal.SOPInstanceUID = traversal.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    missing = dcmread(good[0])
    del missing.SeriesInstanceUID
    missing.SOPInstanceUID = missing.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    too_long = dcmread(good[0])
    too_long.StudyInstanceUID = "1." + "2" * 70
    too_long.SOPInstanceUID = too_long.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    bad = [
        write_dataset(ds, tmp_path / f"bad{i}.dcm")
        for i, ds in enumerate((traversal, missing, too_long))
    ]

    run = storescu(node.address[1], [good[0], bad[0], good[1], bad[1], bad[2], good[2]])
    assert run.responses == [
        "Success", "Error: DataSetDoesNotMatchSOPClass", "Success",
        "Error: DataSetDoesNotMatchSOPClass", "Error: DataSetDoesNotMatchSOPClass", "Success",
    ], run.output
    stored = indexed(node)
    assert set(stored) == {str(dcmread(p).SOPInstanceUID) for p in good}
    assert not any("etc" in str(p) for p in Path(tmp_path).rglob("*") if "instances" in str(p))
    assert len(stored_files(node)) == 3


def test_unparsable_data_set_is_answered_cannot_understand(make_node, tmp_path):
    node = make_node()
    good = write_series(tmp_path, 2)
    garbage = tmp_path / "garbage.dcm"
    raw = good[0].read_bytes()
    meta_end = raw.index(b"\x08\x00")  # first element after the file meta group
    garbage.write_bytes(raw[:meta_end] + b"\x08\x00\x16\x00UI\xff\xff" + b"\x01" * 40)
    ae = AE(ae_title="RAWSCU")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", node.address[1], ae_title="RADGROUND")
        statuses = [assoc.send_c_store(p).Status for p in (good[0], garbage, good[1])]
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    assert statuses[0] == 0 and statuses[2] == 0
    assert statuses[1] in (0xC000, 0xA900), hex(statuses[1])
    assert len(indexed(node)) == 2


def test_unknown_sop_class_context_is_rejected_and_the_rest_accepted(make_node, tmp_path):
    node = make_node()
    good = write_series(tmp_path, 1)[0]
    ae = AE(ae_title="SCU")
    ae.add_requested_context("1.2.3.4.5.6.7.8", [ExplicitVRLittleEndian])
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", node.address[1], ae_title="RADGROUND")
    assert [str(cx.abstract_syntax) for cx in assoc.rejected_contexts] == ["1.2.3.4.5.6.7.8"]
    unknown = dcmread(good)
    unknown.SOPClassUID = "1.2.3.4.5.6.7.8"
    with pytest.raises(ValueError, match="No presentation context"):
        assoc.send_c_store(unknown)
    assert assoc.send_c_store(dcmread(good)).Status == 0
    assoc.release()
    assert len(indexed(node)) == 1


def test_calling_ae_allow_list_with_host(make_node, tmp_path):
    node = make_node(
        node={
            "allowed_peers": (
                AllowedPeerSettings(ae_title="PACS"),
                AllowedPeerSettings(ae_title="CT1", host="127.0.0.2"),
            )
        }
    )
    port = node.address[1]
    assert echoscu(port, calling="PACS").returncode == 0
    refused = echoscu(port, calling="INTRUDER")
    assert refused.returncode != 0 and "Association Rejected" in refused.stdout + refused.stderr
    assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
    from_wrong_host = echoscu(port, calling="CT1")
    assert from_wrong_host.returncode != 0
    run = storescu(port, write_series(tmp_path, 1), calling="INTRUDER")
    assert run.responses == [] and indexed(node) == {}


def test_called_ae_title_must_match(make_node):
    node = make_node()
    refused = echoscu(node.address[1], called="SOMEONEELSE")
    assert (
        refused.returncode != 0
        and "Called AE Title Not Recognized" in refused.stdout + refused.stderr
    )


def test_association_limit(make_node):
    node = make_node(node={"max_associations": 1})
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context("1.2.840.10008.1.1")
    holder = ae.associate("127.0.0.1", node.address[1], ae_title="RADGROUND")
    assert holder.is_established
    refused = echoscu(node.address[1])
    assert refused.returncode != 0 and "Local Limit Exceeded" in refused.stdout + refused.stderr
    holder.release()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and echoscu(node.address[1]).returncode != 0:
        time.sleep(0.2)
    assert echoscu(node.address[1]).returncode == 0


def test_disk_below_reserve_is_refused_out_of_resources(make_node, tmp_path):
    node = make_node(storage={"reserve_mb": 10**12})
    run = storescu(node.address[1], write_series(tmp_path, 2))
    assert run.responses == ["Refused: OutOfResources"] * 2, run.output
    assert indexed(node) == {} and stored_files(node) == []


def test_aborted_association_keeps_what_arrived_and_the_study_completes(make_node, tmp_path):
    node = make_node()
    study = generate_uid()
    files = write_series(tmp_path, 4, study_instance_uid=study)
    ae = AE(ae_title="ABORTER")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", node.address[1], ae_title="RADGROUND")
    for path in files[:2]:
        assert assoc.send_c_store(path).Status == 0
    assoc.abort()
    assert echoscu(node.address[1]).returncode == 0  # the node carries on
    engine = create_db_engine(node.settings.database.url)
    ready = []
    monitor = CompletionMonitor(make_session_factory(engine), ready.append, idle_seconds=30)
    events = monitor.run_once(utcnow() + timedelta(seconds=31))
    engine.dispose()
    assert [(e.study_instance_uid, e.instances_received) for e in events] == [(study, 2)]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_index_outage_refuses_instead_of_acknowledging(
    make_node, tmp_path, database_url, postgres_server_url
):
    """The outage: the PostgreSQL database disappears under the running node."""
    import psycopg
    from sqlalchemy.engine import make_url

    node = make_node()
    files = write_series(tmp_path, 2)
    assert storescu(node.address[1], files[:1]).responses == ["Success"]
    name = make_url(database_url).database
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    run = storescu(node.address[1], files[1:])
    assert run.responses == ["Refused: OutOfResources"], run.output
    assert len(stored_files(node)) == 1  # the refused instance was not left on disk unindexed
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # for the fixture's teardown
