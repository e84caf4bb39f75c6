"""Accounts, API tokens, console sessions, CSRF and lock-out, through a real application."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from web.accounts import (
    AccountError,
    LoginPolicy,
    LoginRefusedError,
    create_account,
    end_session,
    issue_token,
    start_session,
    verify_login,
)
from web.auth import SESSION_COOKIE, Actor, Reader
from worklist.accounts_models import Account, Role
from worklist.jobs_models import AuditEvent

PASSWORD = "correct horse battery"


@pytest.fixture
def guarded(app: FastAPI) -> FastAPI:
    @app.get("/probe")
    async def read(principal: Reader) -> dict[str, str]:
        return {"name": principal.name, "via": principal.via}

    @app.post("/probe")
    async def act(principal: Actor) -> dict[str, str]:
        return {"name": principal.name}

    return app


def test_no_credentials_is_401_problem(guarded, client):
    response = client.get("/probe")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["status"] == 401 and body["type"].endswith("/unauthenticated")


def test_token_scopes_decide(guarded, client, token_for):
    reader = token_for(Role.OPERATOR, "read")
    assert client.get("/probe", headers={"Authorization": f"Bearer {reader}"}).json() == {
        "name": "operator1", "via": "token"}
    refused = client.post("/probe", headers={"Authorization": f"Bearer {reader}"})
    assert refused.status_code == 403 and refused.json()["scope"] == "act"
    actor = token_for(Role.OPERATOR, "read", "act")
    assert client.post("/probe", headers={"Authorization": f"Bearer {actor}"}).status_code == 200


@pytest.mark.parametrize("header", ["Bearer rg_not-a-token", "Bearer nonsense", "Basic dXNlcjpw"])
def test_bad_tokens_are_401(guarded, client, header):
    response = client.get("/probe", headers={"Authorization": header})
    assert response.status_code == 401


def test_a_viewer_cannot_hold_an_act_token(web_context):
    with web_context.sessions.begin() as session:
        create_account(session, "v", Role.VIEWER, password=PASSWORD, actor="test")
        with pytest.raises(AccountError, match="viewer account cannot hold a token with act"):
            issue_token(session, "v", "x", ["read", "act"], actor="test")


def test_expired_and_revoked_tokens_are_refused(guarded, client, web_context, token_for):
    from worklist.accounts_models import ApiToken
    from worklist.db import utcnow

    token = token_for(Role.ADMIN, "read")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/probe", headers=headers).status_code == 200
    with web_context.sessions.begin() as session:
        row = session.scalars(select(ApiToken)).one()
        row.expires_at = utcnow() - timedelta(seconds=1)
    assert client.get("/probe", headers=headers).status_code == 401
    with web_context.sessions.begin() as session:
        row = session.scalars(select(ApiToken)).one()
        row.expires_at, row.revoked_at = None, utcnow()
    assert client.get("/probe", headers=headers).status_code == 401


def _session_cookie(web_context, role: Role) -> tuple[str, str]:
    with web_context.sessions.begin() as session:
        account = create_account(session, "alice", role, password=PASSWORD, actor="test")
        return start_session(session, account, source="127.0.0.1")


def test_session_changes_need_the_csrf_token(guarded, client, web_context):
    identifier, csrf = _session_cookie(web_context, Role.OPERATOR)
    client.cookies.set(SESSION_COOKIE, identifier)
    assert client.get("/probe").json()["via"] == "session"
    missing = client.post("/probe")
    assert missing.status_code == 403 and missing.json()["type"].endswith("/csrf")
    assert client.post("/probe", headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert client.post("/probe", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert client.post("/probe", data={"csrf_token": csrf}).status_code == 200


def test_logged_out_and_idle_sessions_end(guarded, client, web_context):
    identifier, _ = _session_cookie(web_context, Role.VIEWER)
    client.cookies.set(SESSION_COOKIE, identifier)
    assert client.get("/probe").status_code == 200
    with web_context.sessions.begin() as session:
        assert end_session(session, identifier) is not None
    assert client.get("/probe").status_code == 401


def test_idle_session_expires(web_context):
    from web.accounts import resolve_session

    identifier, _ = _session_cookie(web_context, Role.VIEWER)
    with web_context.sessions.begin() as session:
        assert resolve_session(session, identifier, policy=LoginPolicy()) is not None
    with web_context.sessions.begin() as session:
        expired = LoginPolicy(session_idle=timedelta(0))
        assert resolve_session(session, identifier, policy=expired) is None


def test_failed_logins_lock_the_account_and_are_audited(web_context):
    policy = LoginPolicy(max_failed_logins=3, lockout=timedelta(minutes=15))
    with web_context.sessions.begin() as session:
        create_account(session, "bob", Role.OPERATOR, password=PASSWORD, actor="test")
    for _ in range(3):
        with web_context.sessions.begin() as session, pytest.raises(LoginRefusedError):
            verify_login(session, "bob", "wrong password!", policy=policy, source="10.0.0.9")
    with web_context.sessions.begin() as session, pytest.raises(LoginRefusedError) as refused:
        verify_login(session, "bob", PASSWORD, policy=policy, source="10.0.0.9")
    assert refused.value.reason == "account locked"
    with web_context.sessions.begin() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.actor == "web:bob")).all()
        assert [e.action for e in events] == ["login-failed"] * 4
        assert all(e.source == "10.0.0.9" for e in events)
        assert "locked until" in events[2].detail
        # an administrator lifts the lock; the right password then works
        from web.accounts import unlock_account

        unlock_account(session, "bob", actor="test")
    with web_context.sessions.begin() as session:
        account = verify_login(session, "bob", PASSWORD, policy=policy, source="10.0.0.9")
        assert account.failed_logins == 0


def test_unknown_accounts_are_refused_and_audited(web_context):
    with web_context.sessions.begin() as session, pytest.raises(LoginRefusedError):
        verify_login(session, "nobody", PASSWORD, policy=LoginPolicy(), source="10.0.0.8")
    with web_context.sessions.begin() as session:
        event = session.scalars(select(AuditEvent)).one()
        assert (event.actor, event.action, event.detail) == (
            "web:nobody", "login-failed", "unknown account")


def test_passwords_are_stored_as_argon2id(web_context):
    with web_context.sessions.begin() as session:
        create_account(session, "carol", Role.RADIOLOGIST, password=PASSWORD, actor="test")
        stored = session.scalars(select(Account.password_hash)).one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    with web_context.sessions.begin() as session, pytest.raises(AccountError, match="10"):
        create_account(session, "dave", Role.VIEWER, password="short", actor="test")


def test_client_fixture_is_usable(client: TestClient):
    assert client.get("/api/v1/openapi.json").status_code == 401  # only /healthz is public
