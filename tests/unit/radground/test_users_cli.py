"""``radground users``: accounts and API tokens made from the command line, on SQLite and on the
real PostgreSQL server, checked through the same functions the web surface signs people in with."""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from radground.cli import cli
from web.accounts import (
    ROLE_SCOPES,
    LoginPolicy,
    LoginRefusedError,
    resolve_token,
    verify_login,
)
from worklist.accounts_models import Role
from worklist.db import create_db_engine, make_session_factory
from worklist.jobs_models import AuditEvent

PASSWORD = "correct horse battery"
Invoke = Callable[..., Result]


@pytest.fixture
def config(database_url: str, tmp_path: Path) -> Path:
    path = tmp_path / "radground.toml"
    path.write_text(f"[database]\nurl = '{database_url}'\n", encoding="utf-8")
    return path


@pytest.fixture
def users(config: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """``users("add", "ann", input=...)``: run `radground --config CFG users ...`."""
    for key in list(os.environ):
        if key.startswith("RADGROUND_"):
            monkeypatch.delenv(key)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(cli, ["--config", str(config), "users", *args], input=input)

    return invoke


@pytest.fixture
def sessions(database_url: str, users: Invoke):
    users("list")  # creates the schema
    engine = create_db_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _login(sessions, name: str, password: str = PASSWORD, policy: LoginPolicy | None = None):
    with sessions.begin() as session:
        try:
            return verify_login(session, name, password, policy=policy or LoginPolicy(),
                                source="127.0.0.1").role
        except LoginRefusedError as exc:
            return exc.reason


def _token_works(sessions, token: str) -> frozenset[str] | None:
    with sessions.begin() as session:
        found = resolve_token(session, token)
        return None if found is None else found[1]


def _rows(output: str) -> dict[str, list[str]]:
    return {
        cells[0]: cells[1:]
        for line in output.splitlines()[1:]
        if (cells := re.split(r"\s{2,}", line.strip())) and cells[0]
    }


def test_add_with_the_password_asked_twice_then_sign_in(users, sessions):
    added = users("add", "ann", "--role", "admin", "--full-name", "Ann Example",
                  input=f"{PASSWORD}\n{PASSWORD}\n")
    assert added.exit_code == 0, added.output
    assert "account ann added (admin)" in added.output
    assert PASSWORD not in added.output  # hidden input
    assert _login(sessions, "ann") == Role.ADMIN
    assert _login(sessions, "ann", "wrong password!") == "wrong password"
    listed = users("list")
    assert listed.exit_code == 0
    row = _rows(listed.output)["ann"]
    assert row[:3] == ["admin", "Ann Example", "active"] and row[-1] == "0"
    assert row[3] != "-"  # the last login


def test_passwords_that_differ_are_asked_again(users, sessions):
    result = users("add", "bob", "--role", "viewer",
                   input=f"{PASSWORD}\nsomething else\n{PASSWORD}x\n{PASSWORD}x\n")
    assert result.exit_code == 0, result.output
    assert "do not match" in result.output
    assert _login(sessions, "bob", PASSWORD + "x") == Role.VIEWER


def test_password_from_standard_input_for_scripts(users, sessions):
    result = users("add", "svc", "--role", "operator", "--password-stdin", input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert _login(sessions, "svc") == Role.OPERATOR


def test_every_change_is_audited_as_the_operating_system_user(users, sessions):
    users("add", "ann", "--role", "admin", "--password-stdin", input=PASSWORD + "\n")
    users("passwd", "ann", "--password-stdin", input=PASSWORD + "2\n")
    users("disable", "ann")
    users("enable", "ann")
    users("unlock", "ann")
    users("token", "ann", "--scope", "read", "--label", "grafana")
    users("revoke", "1")
    with sessions() as session:
        events = session.execute(select(AuditEvent.actor, AuditEvent.action)).all()
    assert [action for _, action in events] == [
        "account-created", "password-set", "account-disabled", "account-enabled",
        "account-unlocked", "token-issued", "token-revoked",
    ]
    assert {actor for actor, _ in events} == {f"cli:{getpass.getuser()}"}


def test_bad_input_is_a_clear_error(users, sessions):
    users("add", "ann", "--role", "admin", "--password-stdin", input=PASSWORD + "\n")
    taken = users("add", "ann", "--role", "viewer", "--password-stdin", input=PASSWORD + "\n")
    assert taken.exit_code == 1 and "an account named 'ann' exists already" in taken.output
    short = users("add", "cat", "--role", "viewer", "--password-stdin", input="short\n")
    assert short.exit_code == 1 and "at least 10 characters" in short.output
    bad_name = users("add", "a b", "--role", "viewer", "--password-stdin", input=PASSWORD + "\n")
    assert bad_name.exit_code == 1 and "account name 'a b'" in bad_name.output
    bad_role = users("add", "dan", "--role", "superuser")
    assert bad_role.exit_code == 2 and "viewer" in bad_role.output
    empty = users("add", "eve", "--role", "viewer", "--password-stdin", input="")
    assert empty.exit_code == 2 and "no password" in empty.output
    for command in (("passwd", "nobody", "--password-stdin"), ("unlock", "nobody"),
                    ("disable", "nobody"), ("tokens", "nobody"),
                    ("token", "nobody", "--scope", "read")):
        result = users(*command, input=PASSWORD + "\n")
        assert result.exit_code == 1, command
        assert "no account named 'nobody'" in result.output
    assert _rows(users("list").output).keys() == {"ann"}  # nothing half-made


def test_tokens_are_shown_once_listed_and_revoked(users, sessions):
    users("add", "vna", "--role", "operator", "--no-password")
    issued = users("token", "vna", "--scope", "ingest", "--scope", "read", "--label", "vna-stow",
                   "--expires-days", "30")
    assert issued.exit_code == 0, issued.output
    token = issued.output.splitlines()[0]
    assert token.startswith("rg_") and len(token) > 40
    assert "cannot be shown again" in issued.output
    assert _token_works(sessions, token) == frozenset({"ingest", "read"})
    assert _login(sessions, "vna") == "account has no password"

    listed = users("tokens", "vna")
    assert listed.exit_code == 0 and token not in listed.output
    row = _rows(listed.output)["1"]
    assert row[:2] == ["vna-stow", "ingest read"]
    assert row[-1] == "-"  # not revoked
    assert _rows(users("list").output)["vna"][-1] == "1"

    assert users("revoke", "1").exit_code == 0
    assert _token_works(sessions, token) is None
    assert _rows(users("tokens", "vna").output)["1"][-1] != "-"
    assert _rows(users("list").output)["vna"][-1] == "0"
    again = users("revoke", "1")
    assert again.exit_code == 1 and "revoked already" in again.output
    unknown = users("revoke", "99")
    assert unknown.exit_code == 1 and "no API token with ID 99" in unknown.output


def test_a_token_cannot_exceed_its_accounts_role(users, sessions):
    users("add", "val", "--role", "viewer", "--password-stdin", input=PASSWORD + "\n")
    result = users("token", "val", "--scope", "act")
    assert result.exit_code == 1
    assert "a viewer account cannot hold a token with act" in result.output
    assert users("token", "val", "--scope", "admin").exit_code == 2
    assert "val has no API tokens" in users("tokens", "val").output


def test_disable_stops_sign_in_and_tokens_until_enabled(users, sessions):
    users("add", "op", "--role", "operator", "--password-stdin", input=PASSWORD + "\n")
    token = users("token", "op", "--scope", "act").output.splitlines()[0]
    assert users("disable", "op").exit_code == 0
    assert _rows(users("list").output)["op"][2] == "disabled"
    assert _login(sessions, "op") == "account disabled"
    assert _token_works(sessions, token) is None
    assert users("enable", "op").exit_code == 0
    assert _login(sessions, "op") == Role.OPERATOR
    assert _token_works(sessions, token) == frozenset({"act"})


def test_lock_out_is_shown_and_lifted(users, sessions):
    users("add", "ann", "--role", "viewer", "--password-stdin", input=PASSWORD + "\n")
    policy = LoginPolicy(max_failed_logins=2)
    for _ in range(2):
        assert _login(sessions, "ann", "wrong password!", policy) == "wrong password"
    assert _login(sessions, "ann", PASSWORD, policy) == "account locked"
    assert "locked until" in _rows(users("list").output)["ann"][2]
    assert users("unlock", "ann").exit_code == 0
    assert _rows(users("list").output)["ann"][2] == "active"
    assert _login(sessions, "ann", PASSWORD, policy) == Role.VIEWER


def test_passwd_replaces_the_password(users, sessions):
    users("add", "ann", "--role", "viewer", "--password-stdin", input=PASSWORD + "\n")
    result = users("passwd", "ann", input="a new long password\na new long password\n")
    assert result.exit_code == 0, result.output
    assert _login(sessions, "ann") == "wrong password"
    assert _login(sessions, "ann", "a new long password") == Role.VIEWER


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_help_explains_every_role_with_its_scopes(users):
    result = users("--help")
    assert result.exit_code == 0
    for role, scopes in ROLE_SCOPES.items():
        line = next(line for line in result.output.splitlines()
                    if line.strip().startswith(role.value + " "))
        named = set(line.split(None, 1)[1].split(":")[0].replace(",", " ").split())
        assert named == scopes, role
    assert "Authorization: Bearer" in result.output
