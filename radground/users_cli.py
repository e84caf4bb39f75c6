"""Accounts of the web surface: `radground users …`.

Every change is written to the audit trail as ``cli:<operating system user>``.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import click

from radground.settings import Settings

if TYPE_CHECKING:  # imported where used, so that the CLI starts quickly
    from sqlalchemy.orm import Session

__all__ = ["cli_actor", "users"]

T = TypeVar("T")
_ROLES = ("viewer", "operator", "radiologist", "admin")
_TOKEN_SCOPES = ("read", "act", "ingest")


def _settings() -> Settings:
    return click.get_current_context().find_root().obj.settings


def cli_actor() -> str:
    """Who runs a ``radground`` command, as the audit trail names them: ``cli:<user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's numeric user)
        user = f"uid{os.getuid()}"
    return f"cli:{user}"


@contextmanager
def _session() -> Iterator[Session]:
    """A transaction on the node's database (migrated first); :class:`AccountError` becomes an
    error message and exit code 1."""
    from radground.audit import start_audit_trail, stop_audit_trail
    from radground.database import database_engine
    from web.accounts import AccountError
    from worklist.db import make_session_factory
    from worklist.migrate import upgrade_database

    engine = database_engine(_settings())
    start_audit_trail(_settings())  # account changes are IHE ATNA security alerts
    try:
        upgrade_database(engine)
        with make_session_factory(engine).begin() as session:
            yield session
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
        stop_audit_trail(timeout=2.0)


def _change(done: str, change: Callable[[Session], T]) -> T:
    with _session() as session:
        result = change(session)
    click.echo(done)
    return result


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _new_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.UsageError("--password-stdin: no password on standard input")
        return password
    value: str = click.prompt(
        "Password (10 characters or more)", hide_input=True, confirmation_prompt=True
    )
    return value


_password_stdin = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of asking twice.",
)


@click.group()
def users() -> None:
    """Accounts of the web console and REST API, and their API tokens.

    \b
    Roles and what they may do (scopes):
      viewer       read: see studies, jobs, deliveries, routes, node status
      operator     read, act, ingest: also retry deliveries, reprocess studies,
                   cancel queued jobs, push instances by STOW-RS
      radiologist  read, review: also sign reports
      admin        read, act, ingest, review, admin: everything, accounts too

    \b
    API tokens are for scripts, monitoring and STOW-RS clients, sent as
    "Authorization: Bearer <token>". A token carries some of the scopes read,
    act and ingest, never more than its account's role allows.

    Start with `radground users add NAME --role admin`. Every change is
    written to the audit trail as cli:<your user name>.
    """


@users.command()
@click.argument("name")
@click.option("--role", type=click.Choice(_ROLES), required=True, help="What the account may do.")
@click.option("--full-name", default="", help="The person's name (as on signed reports).")
@click.option("--organisation", default="", help="The person's organisation.")
@_password_stdin
@click.option(
    "--no-password",
    is_flag=True,
    help="No password: the account cannot sign in to the console, only hold API tokens "
    "(a service such as a VNA pushing by STOW-RS).",
)
def add(
    name: str, role: str, full_name: str, organisation: str, password_stdin: bool,
    no_password: bool,
) -> None:
    """Add an account NAME (asks for its password twice)."""
    from web.accounts import create_account
    from worklist.accounts_models import Role

    if no_password and password_stdin:
        raise click.UsageError("--no-password and --password-stdin exclude each other")
    password = None if no_password else _new_password(password_stdin)
    _change(
        f"account {name} added ({role})",
        lambda session: create_account(
            session, name, Role(role), password=password, full_name=full_name,
            organisation=organisation, actor=cli_actor(),
        ),
    )


@users.command("list")
def list_() -> None:
    """List the accounts: role, state (active, disabled, locked), last login, live tokens."""
    from rich.console import Console
    from rich.table import Table

    from web.accounts import list_accounts

    with _session() as session:
        accounts = list_accounts(session)
    table = Table(box=None, header_style="bold")
    for column in ("Name", "Role", "Full name", "State", "Last login (UTC)", "Tokens"):
        table.add_column(column)
    for account in accounts:
        state = "disabled" if account.disabled else "active"
        if account.locked_until is not None:
            state += f", locked until {_when(account.locked_until)}"
        table.add_row(
            account.name, account.role.value, account.full_name or "-", state,
            _when(account.last_login_at), str(account.live_tokens),
        )
    Console(width=200).print(table)
    if not accounts:
        click.echo("No accounts yet: radground users add NAME --role admin", err=True)


@users.command()
@click.argument("name")
@_password_stdin
def passwd(name: str, password_stdin: bool) -> None:
    """Set the password of account NAME (its console sessions end)."""
    from web.accounts import set_password

    password = _new_password(password_stdin)
    _change(f"password of {name} set",
            lambda session: set_password(session, name, password, actor=cli_actor()))


@users.command()
@click.argument("name")
def unlock(name: str) -> None:
    """Lift the lock-out of account NAME after failed logins."""
    from web.accounts import unlock_account

    _change(f"account {name} unlocked",
            lambda session: unlock_account(session, name, actor=cli_actor()))


@users.command()
@click.argument("name")
def disable(name: str) -> None:
    """Disable account NAME: its sessions end and its API tokens stop working."""
    from web.accounts import set_account_disabled

    _change(f"account {name} disabled",
            lambda session: set_account_disabled(session, name, True, actor=cli_actor()))


@users.command()
@click.argument("name")
def enable(name: str) -> None:
    """Enable account NAME again (its unrevoked, unexpired tokens work again)."""
    from web.accounts import set_account_disabled

    _change(f"account {name} enabled",
            lambda session: set_account_disabled(session, name, False, actor=cli_actor()))


@users.command()
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    type=click.Choice(_TOKEN_SCOPES),
    multiple=True,
    required=True,
    help="What the token may do (repeat: --scope read --scope ingest); within NAME's role.",
)
@click.option("--label", default="cli", show_default=True, help="What the token is for.")
@click.option(
    "--expires-days",
    type=click.IntRange(1, 3650),
    default=None,
    help="The token stops working after this many days (default: never; revoke it).",
)
def token(name: str, scopes: tuple[str, ...], label: str, expires_days: int | None) -> None:
    """Issue an API token for account NAME and print it (once: it cannot be shown again)."""
    from sqlalchemy import func, select

    from web.accounts import issue_token
    from worklist.accounts_models import Account, ApiToken
    from worklist.db import utcnow

    expires_at = utcnow() + timedelta(days=expires_days) if expires_days else None
    with _session() as session:
        secret = issue_token(session, name, label, scopes, expires_at=expires_at, actor=cli_actor())
        token_id = session.scalar(
            select(func.max(ApiToken.id)).join(Account).where(Account.name == name)
        )
    click.echo(secret)
    until = f", expires {_when(expires_at)} UTC" if expires_at else ""
    click.echo(
        f"API token {token_id} for {name} ({' '.join(sorted(set(scopes)))}{until}). "
        "It is shown this once and cannot be shown again; send it as "
        "'Authorization: Bearer <token>'. Revoke it with `radground users revoke "
        f"{token_id}`.",
        err=True,
    )


@users.command()
@click.argument("name")
def tokens(name: str) -> None:
    """List the API tokens of account NAME (never the tokens themselves)."""
    from rich.console import Console
    from rich.table import Table

    from web.accounts import list_tokens

    with _session() as session:
        rows = [
            (str(t.id), t.label, t.scopes, _when(t.created_at), _when(t.last_used_at),
             _when(t.expires_at), _when(t.revoked_at))
            for t in list_tokens(session, name)
        ]
    table = Table(box=None, header_style="bold")
    for column in ("ID", "Label", "Scopes", "Created", "Last used", "Expires", "Revoked"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=200).print(table)
    if not rows:
        click.echo(f"{name} has no API tokens: radground users token {name} --scope read",
                   err=True)


@users.command()
@click.argument("token_id", type=click.IntRange(1))
def revoke(token_id: int) -> None:
    """Revoke the API token TOKEN_ID (`radground users tokens NAME` lists them) at once."""
    from web.accounts import revoke_token

    _change(f"API token {token_id} revoked",
            lambda session: revoke_token(session, token_id, actor=cli_actor()))
