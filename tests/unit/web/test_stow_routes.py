"""STOW-RS routes against the ASGI app: what is stored and indexed, and every refusal."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_node.conformance import StoreStatus
from dicom_node.ingest import InstanceIngest
from dicom_node.storage import InstanceStore
from tests.factories import write_series
from web.app import create_app
from worklist.accounts_models import Role
from worklist.hooks import make_index_hook
from worklist.models import Instance

DICOM_JSON = "application/dicom+json"


@pytest.fixture
def web_context(web_context, migrated_engine, tmp_path):
    """The web context with the node's ingest path: storage under tmp_path, the real index."""
    ingest = InstanceIngest(
        InstanceStore(tmp_path / "storage"), on_stored=make_index_hook(migrated_engine)
    )
    return type(web_context)(
        sessions=web_context.sessions, pipeline=web_context.pipeline, ingest=ingest,
        stow_max_request_bytes=2 * 1024 * 1024,
    )


@pytest.fixture
def app(web_context):
    return create_app(web_context)


@pytest.fixture
def auth(token_for):
    return {"Authorization": f"Bearer {token_for(Role.OPERATOR, 'ingest')}"}


def multipart(*parts: bytes, part_type: str = "application/dicom") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n"
        for part in parts
    ) + f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def stored(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "storage").rglob("*.dcm"))


def indexed(web_context) -> dict[str, Instance]:
    with web_context.sessions() as session:
        return {i.sop_instance_uid: i for i in session.scalars(select(Instance))}


def post(client, body: bytes, content_type: str, headers, path="/dicomweb/studies"):
    return client.post(path, content=body, headers={**headers, "Content-Type": content_type})


def test_instances_are_stored_indexed_and_listed_in_the_response(
    client, auth, web_context, tmp_path
):
    files = write_series(tmp_path / "in", 3, rows=16, columns=16)
    headers = [dcmread(f, stop_before_pixels=True) for f in files]
    body, content_type = multipart(*(f.read_bytes() for f in files))

    response = post(client, body, content_type, auth)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == DICOM_JSON
    result = Dataset.from_json(response.json())
    study = headers[0].StudyInstanceUID
    assert result.RetrieveURL == f"https://testserver/dicomweb/studies/{study}"
    assert [i.ReferencedSOPInstanceUID for i in result.ReferencedSOPSequence] == [
        h.SOPInstanceUID for h in headers
    ]
    assert "FailedSOPSequence" not in result
    assert len(stored(tmp_path)) == 3
    index = indexed(web_context)
    assert set(index) == {h.SOPInstanceUID for h in headers}
    assert {i.calling_ae_title for i in index.values()} == {"operator1"}
    sent = {dcmread(f).SOPInstanceUID: f for f in files}
    for path in stored(tmp_path):  # the data set as sent, behind the node's own file meta
        assert dcmread(path).PixelData == dcmread(sent[path.stem]).PixelData
        assert dcmread(path).file_meta.SourceApplicationEntityTitle == "operator1"


def test_a_damaged_instance_fails_alone_with_the_c_store_status(client, auth, tmp_path):
    good, bad = write_series(tmp_path / "in", 2, rows=16, columns=16)
    damaged = bad.read_bytes()[:-100]  # Pixel Data shorter than its length says
    body, content_type = multipart(good.read_bytes(), damaged)

    response = post(client, body, content_type, auth)

    assert response.status_code == 202, response.text
    result = Dataset.from_json(response.json())
    assert [i.ReferencedSOPInstanceUID for i in result.ReferencedSOPSequence] == [
        dcmread(good).SOPInstanceUID
    ]
    (failed,) = result.FailedSOPSequence
    assert failed.ReferencedSOPInstanceUID == dcmread(bad, stop_before_pixels=True).SOPInstanceUID
    assert failed.FailureReason == StoreStatus.CANNOT_UNDERSTAND
    assert [p.stem for p in stored(tmp_path)] == [dcmread(good).SOPInstanceUID]


def test_instances_of_another_study_than_the_path_names_fail_with_0xa900(client, auth, tmp_path):
    files = write_series(tmp_path / "in", 2, rows=16, columns=16)
    body, content_type = multipart(*(f.read_bytes() for f in files))
    other = generate_uid()

    response = post(client, body, content_type, auth, path=f"/dicomweb/studies/{other}")

    assert response.status_code == 409, response.text
    result = Dataset.from_json(response.json())
    assert [i.FailureReason for i in result.FailedSOPSequence] == [0xA900, 0xA900]
    assert stored(tmp_path) == []


def test_a_part_that_is_not_part_10_fails_without_uids(client, auth, tmp_path):
    body, content_type = multipart(b"not a dicom file" * 20)
    response = post(client, body, content_type, auth)
    assert response.status_code == 409
    (failed,) = Dataset.from_json(response.json()).FailedSOPSequence
    assert failed.FailureReason == StoreStatus.CANNOT_UNDERSTAND
    assert "ReferencedSOPInstanceUID" not in failed


@pytest.mark.parametrize(
    ("content_type", "part_type", "status"),
    [
        ("application/dicom", "application/dicom", 415),
        ('multipart/related; type="application/dicom+json"; boundary=x', "application/dicom", 415),
        (None, "image/jpeg", 415),
        ("multipart/related; type=\"application/dicom\"", "application/dicom", 400),
    ],
)
def test_wrong_media_types_and_a_missing_boundary_store_nothing(
    client, auth, tmp_path, content_type, part_type, status
):
    (file,) = write_series(tmp_path / "in", 1, rows=16, columns=16)
    body, default_type = multipart(file.read_bytes(), part_type=part_type)

    response = post(client, body, content_type or default_type, auth)

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert stored(tmp_path) == []


def test_a_broken_multipart_body_is_a_400_problem_and_stores_nothing(client, auth, tmp_path):
    files = write_series(tmp_path / "in", 2, rows=16, columns=16)
    body, content_type = multipart(*(f.read_bytes() for f in files))

    response = post(client, body[: len(body) // 2 + 100], content_type, auth)  # no close delimiter

    assert response.status_code == 400
    assert "before the closing boundary" in response.json()["detail"]
    assert stored(tmp_path) == []


def test_oversized_requests_are_413_by_content_length_and_by_the_bytes_streamed(
    client, auth, web_context, tmp_path
):
    files = write_series(tmp_path / "in", 5, rows=256, columns=256)  # 5 x 128 KiB ...
    body, content_type = multipart(*(f.read_bytes() for f in files * 4))  # ... x 4 > 2 MiB
    assert len(body) > web_context.stow_max_request_bytes

    declared = post(client, body, content_type, auth)

    def chunks():  # no Content-Length: the count of bytes streamed decides
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    streamed = client.post("/dicomweb/studies", content=chunks(),
                           headers={**auth, "Content-Type": content_type})

    assert declared.status_code == 413 and streamed.status_code == 413
    assert declared.json()["status"] == 413
    assert stored(tmp_path) == [] and indexed(web_context) == {}


def test_without_a_token_401_and_without_the_ingest_scope_403(client, token_for, tmp_path):
    (file,) = write_series(tmp_path / "in", 1, rows=16, columns=16)
    body, content_type = multipart(file.read_bytes())

    anonymous = post(client, body, content_type, {})
    reader = post(client, body, content_type,
                  {"Authorization": f"Bearer {token_for(Role.OPERATOR, 'read')}"})

    assert anonymous.status_code == 401 and reader.status_code == 403
    assert stored(tmp_path) == []


def test_the_response_is_valid_dicom_json_with_the_failure_reason_as_us(client, auth, tmp_path):
    body, content_type = multipart(b"x" * 200)
    response = post(client, body, content_type, auth)
    item = json.loads(response.text)["00081198"]["Value"][0]
    assert item["00081197"] == {"vr": "US", "Value": [0xC000]}
