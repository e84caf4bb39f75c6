"""Accounts of the web surface: people, their API tokens and console sessions.

Only hashes are stored: argon2 for passwords, SHA-256 for API tokens and
session identifiers (both are 256-bit random values, so a fast hash is enough).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, Enum, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from worklist.db import Base, UTCDateTime

__all__ = ["Account", "ApiToken", "Role", "WebSession"]


class Role(enum.StrEnum):
    """What an account may do (``web.auth.ROLE_SCOPES`` maps each role to its scopes)."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    RADIOLOGIST = "radiologist"
    ADMIN = "admin"


class Account(Base):
    """A person (or a service) who signs in to the console or owns API tokens."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(
        Enum(Role, name="account_role", values_callable=lambda e: [m.value for m in e],
             native_enum=False, length=16)
    )
    #: argon2id (PHC string); None: the account has no password (API tokens only).
    password_hash: Mapped[str | None] = mapped_column(String(256), default=None)
    #: The person's name as it appears on signed reports, and their organisation.
    full_name: Mapped[str] = mapped_column(String(128), default="")
    organisation: Mapped[str] = mapped_column(String(128), default="")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Failed logins since the last successful one; at the limit the account locks.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="account")


class ApiToken(Base):
    """A bearer token for scripts, monitoring and STOW-RS clients, with its scopes."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    #: What the token is for ("prometheus", "vna-stow").
    label: Mapped[str] = mapped_column(String(64))
    #: SHA-256 of the whole token (hex).
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: Space-separated scopes: read, act, ingest.
    scopes: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    account: Mapped[Account] = relationship(back_populates="tokens")


class WebSession(Base):
    """A console session: the cookie carries the identifier, the row its state."""

    __tablename__ = "web_sessions"

    #: SHA-256 of the session identifier in the cookie (hex).
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    #: The CSRF token forms and scripts must send back with every change.
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: The client's address when the session began.
    source: Mapped[str] = mapped_column(Text, default="")

    account: Mapped[Account] = relationship()
