"""A web application over a fresh database (SQLite and PostgreSQL), and accounts to call it as."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.unit.web.review_fixtures import SignedIn, sign_in, store_image
from tests.unit.worklist.review.conftest import Reviewed, add_reviewed_job
from web.accounts import create_account, issue_token
from web.app import create_app
from web.context import WebContext
from worklist.accounts_models import Role
from worklist.context import PipelineContext, StepError
from worklist.db import make_session_factory


@dataclass
class RecordingEnqueuer:
    """The queue interface, recording what would have been sent to Celery."""

    sent: list[tuple[str, int]] = field(default_factory=list)

    def inference(self, job_id: int) -> None:
        self.sent.append(("inference", job_id))

    def export(self, job_id: int) -> None:
        self.sent.append(("export", job_id))

    def delivery(self, delivery_id: int, attempt: int, countdown: float = 0.0) -> None:
        self.sent.append(("delivery", delivery_id))


def _no_model(name: str):  # the web process never runs a model
    raise StepError(f"model {name} is not loaded in the web process")


@pytest.fixture
def web_context(migrated_engine, tmp_path: Path) -> WebContext:
    sessions = make_session_factory(migrated_engine)
    pipeline = PipelineContext(
        sessions=sessions, storage_root=tmp_path / "storage", outputs_root=tmp_path / "outputs",
        routes=(), models=_no_model, enqueue=RecordingEnqueuer(), actor="web",
    )
    return WebContext(sessions=sessions, pipeline=pipeline)


@pytest.fixture
def app(web_context: WebContext) -> FastAPI:
    return create_app(web_context)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="https://testserver") as test_client:
        yield test_client


@pytest.fixture
def token_for(web_context: WebContext) -> Callable[..., str]:
    """``token_for(Role.OPERATOR, "read", "act")``: an API token of a new account with that role."""
    made = 0

    def make(role: Role, *scopes: str) -> str:
        nonlocal made
        made += 1
        with web_context.sessions.begin() as session:
            name = f"{role.value}{made}"
            create_account(session, name, role, password="correct horse battery", actor="test")
            return issue_token(session, name, "test", scopes or ("read",), actor="test")

    return make


@pytest.fixture
def reviewed(web_context: WebContext) -> Reviewed:
    """A job awaiting review: three model findings in English and Chinese on one stored image."""
    job = add_reviewed_job(web_context.pipeline)
    store_image(web_context, job)
    return job


@pytest.fixture
def ann(app: FastAPI, web_context: WebContext) -> SignedIn:
    return sign_in(app, web_context, "ann", Role.RADIOLOGIST)


@pytest.fixture
def bob(app: FastAPI, web_context: WebContext) -> SignedIn:
    return sign_in(app, web_context, "bob", Role.RADIOLOGIST)


@pytest.fixture
def vera(app: FastAPI, web_context: WebContext) -> SignedIn:
    return sign_in(app, web_context, "vera", Role.VIEWER)
