"""STOW-RS into a running node: dicomweb-client and Orthanc's DICOMweb plugin pushing real files.

The web application ingests through the node's one ingest path over the
node's storage and index (as ``radground serve`` wires it); what STOW-RS
stores is compared with what the same files sent by C-STORE leave behind.
"""

from __future__ import annotations

import json
import tracemalloc
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, _config

from dicom_node.ingest import InstanceIngest
from dicom_node.storage import InstanceStore
from radground.node import Node
from tests.damaged import DAMAGE_KINDS, write_damaged
from tests.factories import write_series
from tests.integration.dicomweb import DICOMWEB_PLUGIN
from tests.integration.ingest_node import indexed, running_node, staged_files, stored_files
from tests.integration.orthanc import OrthancNotInstalled, OrthancPACS
from tests.integration.web_server import serving
from web.accounts import create_account, issue_token
from web.app import create_app
from web.context import WebContext
from worklist.accounts_models import Role
from worklist.context import PipelineContext, StepError
from worklist.db import create_db_engine, make_session_factory
from worklist.hooks import make_index_hook

#: Real files of several modalities and transfer syntaxes (shared/data/README.md).
REAL_FILES = (
    "RG1_J2KI.dcm", "MR2_J2KI.dcm", "US1_J2KI.dcm", "OBXXXX1A_rle.dcm", "JPEG-LL.dcm",
    "emri_small_big_endian.dcm", "SC_rgb.dcm", "liver_deflate.dcm", "explicit_VR-UN.dcm",
)
#: The account STOW-RS clients push as; also the C-STORE sender's calling AE title, so that
#: both leave byte-identical files.
SENDER = "VNA1"


@dataclass
class StowNode:
    node: Node
    url: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _no_model(name: str):
    raise StepError("the web process runs no model")


@contextmanager
def stow_node(database_url: str, root: Path, *, max_request_bytes: int = 1 << 30) -> Iterator[
    StowNode
]:
    """A node (C-STORE) and the web app ingesting into its storage and index (STOW-RS)."""
    with running_node(database_url, root) as node:
        engine = create_db_engine(database_url)
        sessions = make_session_factory(engine)
        with sessions.begin() as session:
            create_account(session, SENDER, Role.OPERATOR, password="pushing since 1993",
                           actor="test")
            token = issue_token(session, SENDER, "stow", ("ingest",), actor="test")
        pipeline = PipelineContext(
            sessions=sessions, storage_root=root, outputs_root=root.parent / "outputs",
            routes=(), models=_no_model, enqueue=None, actor="web",  # type: ignore[arg-type]
        )
        ingest = InstanceIngest(InstanceStore(root), on_stored=make_index_hook(engine))
        context = WebContext(sessions=sessions, pipeline=pipeline, ingest=ingest,
                             stow_max_request_bytes=max_request_bytes)
        try:
            with serving(create_app(context)) as url:
                yield StowNode(node, url, token)
        finally:
            engine.dispose()


@pytest.fixture
def stow(database_url, tmp_path):
    with stow_node(database_url, tmp_path / "stow-storage") as started:
        yield started


def index_rows(node: Node) -> dict[str, tuple]:
    """What the index says of each instance, without the arrival time."""
    return {
        uid: (
            i.sop_class_uid, i.transfer_syntax_uid, i.instance_number, i.size, i.path,
            i.calling_ae_title, i.series.series_instance_uid, i.series.study.study_instance_uid,
            i.series.modality, i.revision,
        )
        for uid, i in indexed_with_series(node).items()
    }


def indexed_with_series(node: Node):
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from worklist.models import Instance, Series

    engine = create_db_engine(node.settings.database.url)
    try:
        with make_session_factory(engine)() as session:
            rows = session.scalars(select(Instance).options(
                selectinload(Instance.series).selectinload(Series.study)
            ))
            return {i.sop_instance_uid: i for i in rows}
    finally:
        engine.dispose()


def test_dicomweb_client_stores_real_files_and_they_are_indexed(stow, shared_data):
    files = [shared_data / "dicom" / name for name in REAL_FILES]
    client = DICOMwebClient(f"{stow.url}/dicomweb", headers=stow.auth)

    response = client.store_instances([dcmread(f) for f in files])

    originals = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in files}
    assert [str(i.ReferencedSOPInstanceUID) for i in response.ReferencedSOPSequence] == list(
        originals
    )
    assert "FailedSOPSequence" not in response
    assert set(indexed(stow.node)) == set(originals)
    assert staged_files(stow.node) == []
    for path in stored_files(stow.node):
        stored, original = dcmread(path), dcmread(originals[path.stem])
        assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert stored.PixelData == original.PixelData


def test_the_same_bytes_by_stow_rs_and_by_c_store_leave_the_same_files_and_index(
    stow, shared_data, tmp_path
):
    files = [shared_data / "dicom" / name for name in REAL_FILES]
    body, content_type = multipart([f.read_bytes() for f in files])

    response = httpx.post(f"{stow.url}/dicomweb/studies", content=body,
                          headers={**stow.auth, "Content-Type": content_type}, timeout=60)

    assert response.status_code == 200, response.text
    with running_node(f"sqlite:///{tmp_path / 'c-store.db'}", tmp_path / "c-store") as reference:
        assert c_store_statuses(reference.address[1], files, calling=SENDER) == [0] * len(files)
        assert index_rows(stow.node) == index_rows(reference)
        by_c_store = {p.relative_to(reference.settings.storage.root): p.read_bytes()
                      for p in stored_files(reference)}
    by_stow = {p.relative_to(stow.node.settings.storage.root): p.read_bytes()
               for p in stored_files(stow.node)}
    assert len(by_stow) == len(files) and by_stow == by_c_store


def multipart(parts: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
        for p in parts
    ) + f"--{boundary}--".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def c_store_statuses(port: int, files: list[Path], *, calling: str = "RAWSCU") -> list[int]:
    """C-STORE each file's bytes as they are (pynetdicom streams them, never decodes), each in
    its own SOP Class and Transfer Syntax."""
    ae = AE(ae_title=calling)
    for path in files:
        meta = dcmread(path, stop_before_pixels=True, force=True).file_meta
        ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="RADGROUND")
        assert assoc.is_established
        statuses = [int(assoc.send_c_store(path).Status) for path in files]
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    return statuses


def test_damaged_instances_fail_with_the_c_store_status_and_their_neighbours_are_stored(
    stow, tmp_path
):
    study, series = generate_uid(), generate_uid()
    good = write_series(tmp_path / "good", len(DAMAGE_KINDS) + 1, study_instance_uid=study,
                        rows=32, columns=32)
    damaged = [
        write_damaged(kind, tmp_path / f"{kind}.dcm", study_instance_uid=study,
                      series_instance_uid=series)
        for kind in DAMAGE_KINDS
    ]
    interleaved = [good[0]]
    for bad, neighbour in zip(damaged, good[1:], strict=True):
        interleaved += [bad, neighbour]
    body, content_type = multipart([p.read_bytes() for p in interleaved])

    response = httpx.post(f"{stow.url}/dicomweb/studies/{study}", content=body,
                          headers={**stow.auth, "Content-Type": content_type}, timeout=60)

    assert response.status_code == 202, response.text
    result = Dataset.from_json(json.loads(response.text))
    good_uids = [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in good]
    assert [i.ReferencedSOPInstanceUID for i in result.ReferencedSOPSequence] == good_uids
    assert result.RetrieveURL == f"{stow.url}/dicomweb/studies/{study}"
    failed = {i.ReferencedSOPInstanceUID: i.FailureReason for i in result.FailedSOPSequence}
    # the same damaged bytes by C-STORE, to a node of their own
    with running_node(f"sqlite:///{tmp_path / 'c-store.db'}", tmp_path / "c-store") as reference:
        expected = c_store_statuses(reference.address[1], damaged)
    assert all(status != 0 for status in expected)
    assert [failed[str(dcmread(p, stop_before_pixels=True, force=True).SOPInstanceUID)]
            for p in damaged] == expected
    assert set(indexed(stow.node)) == set(good_uids)
    assert sorted(p.stem for p in stored_files(stow.node)) == sorted(good_uids)
    assert staged_files(stow.node) == []


def test_an_oversized_request_is_413_and_stores_nothing(database_url, tmp_path):
    with stow_node(database_url, tmp_path / "storage", max_request_bytes=256 * 1024) as small:
        files = write_series(tmp_path / "in", 4, rows=256, columns=256)  # 4 x 128 KiB
        body, content_type = multipart([f.read_bytes() for f in files])
        response = httpx.post(f"{small.url}/dicomweb/studies", content=body,
                              headers={**small.auth, "Content-Type": content_type})
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        assert stored_files(small.node) == [] and indexed(small.node) == {}


def test_without_a_token_nothing_is_stored(stow, tmp_path):
    files = write_series(tmp_path / "in", 1, rows=16, columns=16)
    body, content_type = multipart([files[0].read_bytes()])
    response = httpx.post(f"{stow.url}/dicomweb/studies", content=body,
                          headers={"Content-Type": content_type})
    assert response.status_code == 401
    assert stored_files(stow.node) == []


@pytest.fixture
def orthanc_pushing_to(stow, tmp_path):
    """Orthanc with its DICOMweb plugin, the node configured as its DICOMweb server "radground"."""
    if not DICOMWEB_PLUGIN.is_file():
        pytest.skip(f"no Orthanc DICOMweb plugin at {DICOMWEB_PLUGIN}")
    extra = {
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {
            "Enable": True, "Root": "/dicom-web/",
            "Servers": {"radground": {"Url": f"{stow.url}/dicomweb/",
                                      "HttpHeaders": stow.auth}},
        },
    }
    try:
        pacs = OrthancPACS(tmp_path / "orthanc", extra_config=extra).start()
    except OrthancNotInstalled as exc:
        pytest.skip(str(exc))
    yield pacs
    pacs.stop(kill=True)


def test_orthanc_pushes_a_study_by_stow_rs_and_it_is_indexed_as_by_c_store(
    stow, orthanc_pushing_to, shared_data, tmp_path
):
    study = generate_uid()
    files = write_series(tmp_path / "study", 3, study_instance_uid=study, rows=64, columns=64)
    pacs = orthanc_pushing_to
    for path in files:
        pacs.upload(path)
    orthanc_study = pacs.find_study(study)
    assert orthanc_study is not None

    answer = pacs.request("POST", "/dicom-web/servers/radground/stow",
                          json={"Resources": [orthanc_study], "Synchronous": True})

    assert answer.status_code == 200, answer.text
    uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    assert set(indexed(stow.node)) == uids
    assert {i.calling_ae_title for i in indexed(stow.node).values()} == {SENDER}
    rows = index_rows(stow.node)
    assert {row[7] for row in rows.values()} == {study}
    for path in stored_files(stow.node):  # the data set as Orthanc holds it, unchanged
        sent = next(p for p in files if dcmread(p, stop_before_pixels=True).SOPInstanceUID
                    == path.stem)
        assert dcmread(path).PixelData == dcmread(sent).PixelData


def test_a_large_request_is_streamed_to_disk_never_held_in_memory(database_url, tmp_path):
    study = generate_uid()
    parts, part_bytes = 48, 1024 * 1024
    boundary = uuid.uuid4().hex

    def body() -> Iterator[bytes]:  # each instance made when it is sent, then dropped
        for number in range(1, parts + 1):
            (path,) = write_series(tmp_path / "gen", 1, study_instance_uid=study,
                                   rows=512, columns=1024)
            yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            data = path.read_bytes()
            path.unlink()
            for start in range(0, len(data), 65536):
                yield data[start : start + 65536]
            yield b"\r\n"
        yield f"--{boundary}--".encode()

    with stow_node(database_url, tmp_path / "storage") as node:
        tracemalloc.start()
        try:
            response = httpx.post(
                f"{node.url}/dicomweb/studies/{study}", content=body(), timeout=120,
                headers={**node.auth, "Content-Type":
                         f'multipart/related; type="application/dicom"; boundary={boundary}'},
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert response.status_code == 200, response.text
        assert len(indexed(node.node)) == parts
    # client and server in this process: far less than the body (48 MiB) was ever allocated
    assert peak < parts * part_bytes / 4, f"peak {peak / 2**20:.1f} MiB"
