"""STOW-RS goes through the node's one ingest path, so its instances are counted as C-STORE's
are: received (labelled with the account, as its calling AE title) and refused by status."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY

from dicom_node.ingest import InstanceIngest
from dicom_node.storage import InstanceStore
from tests.factories import write_series
from web.app import create_app
from worklist.accounts_models import Role
from worklist.hooks import make_index_hook


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_stow_rs_instances_are_counted_received_and_refused(
    web_context, migrated_engine, token_for, tmp_path
):
    from fastapi.testclient import TestClient

    context = type(web_context)(
        sessions=web_context.sessions, pipeline=web_context.pipeline,
        ingest=InstanceIngest(
            InstanceStore(tmp_path / "storage"), on_stored=make_index_hook(migrated_engine)
        ),
    )
    token = token_for(Role.OPERATOR, "ingest")
    good, bad = write_series(tmp_path / "in", 2, rows=16, columns=16)
    boundary = uuid.uuid4().hex
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
        for part in (good.read_bytes(), bad.read_bytes()[:-100])  # the second one damaged
    ) + f"--{boundary}--\r\n".encode()
    received = _value("radground_instances_received_total", calling_ae="operator1")
    refused = _value("radground_instances_refused_total", reason="cannot_understand")

    with TestClient(create_app(context), base_url="https://testserver") as client:
        response = client.post("/dicomweb/studies", content=body, headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        })

    assert response.status_code == 202, response.text
    assert _value("radground_instances_received_total", calling_ae="operator1") == received + 1
    assert _value("radground_instances_refused_total", reason="cannot_understand") == refused + 1
