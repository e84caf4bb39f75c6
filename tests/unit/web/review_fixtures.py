"""Helpers of the review tests: a console session of an account (review changes need a
session: API tokens never carry the "review" scope) and a job's source image in storage."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.factories import make_ct, write_dataset
from tests.unit.worklist.review.conftest import Reviewed
from web.accounts import create_account
from worklist.accounts_models import Role
from worklist.models import Instance

PASSWORD = "correct horse battery"
#: The stored source image's size (columns x rows).
COLUMNS, ROWS = 160, 128


@dataclass
class SignedIn:
    """A signed-in browser: its client and the session's CSRF token."""

    client: TestClient
    csrf: str

    def call(self, method: str, path: str, body: dict | None = None, *, csrf: bool = True):
        headers = {"X-CSRF-Token": self.csrf} if csrf else {}
        return self.client.request(method, path, json=body, headers=headers)


def sign_in(app, web_context, name: str, role: Role) -> SignedIn:
    """A new client signed in as a new account ``name`` with ``role``."""
    with web_context.sessions.begin() as session:
        create_account(session, name, role, password=PASSWORD, actor="test",
                       full_name=name.title() + " Example")
    client = TestClient(app, base_url="https://testserver")
    answer = client.post("/login", data={"username": name, "password": PASSWORD, "next": "/"},
                         follow_redirects=False)
    assert answer.status_code == 303, answer.text
    page = client.get("/jobs").text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return SignedIn(client, found.group(1))


def store_image(web_context, job: Reviewed) -> None:
    """Write the job's source image where the index says it is."""
    with web_context.sessions() as session:
        path = session.scalar(
            select(Instance.path).where(Instance.sop_instance_uid == job.image_uid))
    ds = make_ct(study_instance_uid=job.study_uid, series_instance_uid="1.2.3.4",
                 sop_instance_uid=job.image_uid, rows=ROWS, columns=COLUMNS)
    write_dataset(ds, web_context.pipeline.storage_root / path)
