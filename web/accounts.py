"""Accounts, passwords, API tokens and console sessions (no HTTP here: :mod:`web.auth` is that).

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second recommended
profile); API tokens and session identifiers are 256-bit random values stored as SHA-256 hashes.
Every login, failed or not, is written to the audit trail with the account and the client's
address; an account locks for a while after repeated failures.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from worklist.accounts_models import Account, ApiToken, Role, WebSession
from worklist.context import audit
from worklist.db import utcnow

__all__ = [
    "ROLE_SCOPES",
    "TOKEN_SCOPES",
    "AccountError",
    "AccountSummary",
    "LoginPolicy",
    "LoginRefusedError",
    "Scope",
    "create_account",
    "end_session",
    "issue_token",
    "list_accounts",
    "list_tokens",
    "resolve_session",
    "resolve_token",
    "revoke_token",
    "set_account_disabled",
    "set_password",
    "start_session",
    "unlock_account",
    "verify_login",
]

Scope = str
#: What each role may do. read: see everything; act: operator actions (retry, reprocess,
#: cancel); ingest: STOW-RS; review: sign reports; admin: accounts.
ROLE_SCOPES: dict[Role, frozenset[Scope]] = {
    Role.VIEWER: frozenset({"read"}),
    Role.OPERATOR: frozenset({"read", "act", "ingest"}),
    Role.RADIOLOGIST: frozenset({"read", "review"}),
    Role.ADMIN: frozenset({"read", "act", "ingest", "review", "admin"}),
}
#: The scopes an API token can carry (a subset of its account's role's).
TOKEN_SCOPES: frozenset[Scope] = frozenset({"read", "act", "ingest"})
_TOKEN_PREFIX = "rg_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_hasher = PasswordHasher()
# Verified against when the account does not exist, so that the answer takes as long.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class AccountError(ValueError):
    """A request about accounts that cannot be done (unknown account, bad name, bad scope)."""


class LoginRefusedError(Exception):
    """A login refused; ``reason`` is for the audit trail, never shown to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class LoginPolicy:
    """How many failed logins in a row lock an account, for how long; when sessions end."""

    max_failed_logins: int = 5
    lockout: timedelta = timedelta(minutes=15)
    session_idle: timedelta = timedelta(minutes=30)


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def create_account(
    session: Session, name: str, role: Role, *, password: str | None,
    full_name: str = "", organisation: str = "", actor: str,
) -> Account:
    """Add an account; raises :class:`AccountError` for a bad or taken name or a short password."""
    if not _NAME.fullmatch(name):
        raise AccountError(
            f"account name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-'"
        )
    if session.scalar(select(Account.id).where(Account.name == name)) is not None:
        raise AccountError(f"an account named {name!r} exists already")
    account = Account(
        name=name, role=role, password_hash=_hash_password(password) if password else None,
        full_name=full_name, organisation=organisation, disabled=False, failed_logins=0,
        created_at=utcnow(),
    )
    session.add(account)
    session.flush()
    audit(session, actor, "account-created", None, f"account {name} role {role.value}")
    return account


def _hash_password(password: str) -> str:
    if len(password) < 10:
        raise AccountError("passwords need at least 10 characters")
    return _hasher.hash(password)


def _account(session: Session, name: str) -> Account:
    account = session.scalar(select(Account).where(Account.name == name).with_for_update())
    if account is None:
        raise AccountError(f"no account named {name!r}")
    return account


def set_password(session: Session, name: str, password: str, *, actor: str) -> None:
    """Set an account's password; its console sessions end."""
    account = _account(session, name)
    account.password_hash = _hash_password(password)
    session.execute(delete(WebSession).where(WebSession.account_id == account.id))
    audit(session, actor, "password-set", None, f"account {name}")


def unlock_account(session: Session, name: str, *, actor: str) -> None:
    """Lift a lock-out after failed logins."""
    account = _account(session, name)
    account.failed_logins, account.locked_until = 0, None
    audit(session, actor, "account-unlocked", None, f"account {name}")


def verify_login(
    session: Session, name: str, password: str, *, policy: LoginPolicy, source: str,
) -> Account:
    """The account ``name`` if ``password`` is its password and it may sign in now.

    Raises :class:`LoginRefusedError`; the attempt, either way, is in the audit trail (the
    caller commits ``session`` in both cases).
    """
    now = utcnow()
    account = session.scalar(select(Account).where(Account.name == name).with_for_update())
    actor = f"web:{name[:64]}"
    if account is None or account.password_hash is None:
        _verify(_DUMMY_HASH, password)
        reason = "unknown account" if account is None else "account has no password"
        audit(session, actor, "login-failed", None, reason, source=source)
        raise LoginRefusedError(reason)
    if account.disabled:
        audit(session, actor, "login-failed", None, "account disabled", source=source)
        raise LoginRefusedError("account disabled")
    if account.locked_until is not None and account.locked_until > now:
        audit(session, actor, "login-failed", None, "account locked", source=source)
        raise LoginRefusedError("account locked")
    if not _verify(account.password_hash, password):
        account.failed_logins += 1
        detail = f"wrong password ({account.failed_logins} in a row)"
        if account.failed_logins >= policy.max_failed_logins:
            account.locked_until = now + policy.lockout
            detail += f"; locked until {account.locked_until:%Y-%m-%d %H:%M:%S} UTC"
        audit(session, actor, "login-failed", None, detail, source=source)
        raise LoginRefusedError("wrong password")
    if _hasher.check_needs_rehash(account.password_hash):
        account.password_hash = _hasher.hash(password)
    account.failed_logins, account.locked_until, account.last_login_at = 0, None, now
    audit(session, actor, "login", None, "", source=source)
    return account


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def issue_token(
    session: Session, account_name: str, label: str, scopes: Iterable[Scope], *,
    expires_at: datetime | None = None, actor: str,
) -> str:
    """A new API token for ``account_name`` (shown once: only its hash is kept)."""
    account = _account(session, account_name)
    wanted = frozenset(scopes)
    if not wanted or not wanted <= TOKEN_SCOPES:
        raise AccountError(f"token scopes must be some of {', '.join(sorted(TOKEN_SCOPES))}")
    beyond = wanted - ROLE_SCOPES[account.role]
    if beyond:
        raise AccountError(
            f"a {account.role.value} account cannot hold a token with {', '.join(sorted(beyond))}"
        )
    token = _TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(
        account_id=account.id, label=label[:64], token_hash=_sha256(token),
        scopes=" ".join(sorted(wanted)), created_at=utcnow(), expires_at=expires_at,
    ))
    audit(session, actor, "token-issued", None,
          f"account {account_name} token {label[:64]} scopes {' '.join(sorted(wanted))}")
    return token


def resolve_token(session: Session, token: str) -> tuple[Account, frozenset[Scope]] | None:
    """The account and scopes of a valid API token; ``None`` for an unknown, revoked or expired
    one, or one whose account is disabled."""
    if not token.startswith(_TOKEN_PREFIX):
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _sha256(token)))
    now = utcnow()
    if row is None or row.revoked_at is not None or row.account.disabled:
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    row.last_used_at = now
    scopes = frozenset(row.scopes.split()) & ROLE_SCOPES[row.account.role]
    return row.account, scopes


def start_session(session: Session, account: Account, *, source: str) -> tuple[str, str]:
    """A new console session for ``account``: (the cookie's identifier, the CSRF token)."""
    identifier, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = utcnow()
    session.add(WebSession(
        id_hash=_sha256(identifier), account_id=account.id, csrf_token=csrf,
        created_at=now, last_seen_at=now, source=source[:128],
    ))
    return identifier, csrf


def resolve_session(
    session: Session, identifier: str, *, policy: LoginPolicy
) -> tuple[Account, WebSession] | None:
    """The account of a live console session (its idle clock restarts); ``None`` when it ended."""
    row = session.get(WebSession, _sha256(identifier))
    if row is None:
        return None
    now = utcnow()
    if row.last_seen_at + policy.session_idle <= now or row.account.disabled:
        session.delete(row)
        return None
    row.last_seen_at = now
    return row.account, row


def end_session(session: Session, identifier: str) -> Account | None:
    """End a console session (log out); its account, if it was live."""
    row = session.get(WebSession, _sha256(identifier))
    if row is None:
        return None
    account = row.account
    session.delete(row)
    return account


@dataclass(frozen=True)
class AccountSummary:
    """An account as the ``radground users list`` table and the console show it."""

    name: str
    role: Role
    full_name: str
    organisation: str
    disabled: bool
    #: Set while the account is locked after failed logins (UTC).
    locked_until: datetime | None
    created_at: datetime
    last_login_at: datetime | None
    #: API tokens neither revoked nor expired.
    live_tokens: int


def list_accounts(session: Session) -> list[AccountSummary]:
    """Every account, by name."""
    now = utcnow()
    live = (
        select(ApiToken.account_id, func.count().label("n"))
        .where(
            ApiToken.revoked_at.is_(None),
            (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > now),
        )
        .group_by(ApiToken.account_id)
        .subquery()
    )
    rows = session.execute(
        select(Account, func.coalesce(live.c.n, 0))
        .outerjoin(live, live.c.account_id == Account.id)
        .order_by(Account.name)
    ).all()
    return [
        AccountSummary(
            name=a.name, role=a.role, full_name=a.full_name, organisation=a.organisation,
            disabled=a.disabled,
            locked_until=a.locked_until if a.locked_until and a.locked_until > now else None,
            created_at=a.created_at, last_login_at=a.last_login_at, live_tokens=int(tokens),
        )
        for a, tokens in rows
    ]


def set_account_disabled(session: Session, name: str, disabled: bool, *, actor: str) -> None:
    """Disable an account (its sessions end; its tokens stop working) or enable it again."""
    account = _account(session, name)
    account.disabled = disabled
    if disabled:
        session.execute(delete(WebSession).where(WebSession.account_id == account.id))
    audit(session, actor, "account-disabled" if disabled else "account-enabled", None,
          f"account {name}")


def list_tokens(session: Session, account_name: str) -> list[ApiToken]:
    """The API tokens of an account, oldest first (revoked and expired ones too)."""
    account = _account(session, account_name)
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.account_id == account.id).order_by(ApiToken.id)
        )
    )


def revoke_token(session: Session, token_id: int, *, actor: str) -> ApiToken:
    """Revoke an API token at once; raises :class:`AccountError` for an unknown or revoked one."""
    token = session.get(ApiToken, token_id, with_for_update=True)
    if token is None:
        raise AccountError(f"no API token with ID {token_id}")
    if token.revoked_at is not None:
        raise AccountError(
            f"API token {token_id} was revoked already ({token.revoked_at:%Y-%m-%d})"
        )
    token.revoked_at = utcnow()
    audit(session, actor, "token-revoked", None,
          f"account {token.account.name} token {token_id} {token.label}")
    return token
