"""Who is asking: API tokens (``Authorization: Bearer``) and console sessions (a cookie).

Routes declare what they need with ``Depends(require("act"))``, which returns the
:class:`Principal` or answers 401 (nobody signed in) / 403 (not allowed). A change made with a
session cookie must carry the session's CSRF token (header ``X-CSRF-Token`` or form field
``csrf_token``); bearer tokens are not sent by browsers on their own, so they need none.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from web.accounts import ROLE_SCOPES, Scope, resolve_session, resolve_token
from web.context import WebContext
from web.problems import Problem

__all__ = [
    "SESSION_COOKIE",
    "Actor",
    "Admin",
    "Ingester",
    "Principal",
    "Radiologist",
    "Reader",
    "client_address",
    "current_principal",
    "require",
]

SESSION_COOKIE = "radground_session"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    """The account behind a request and what it may do through this credential."""

    account_id: int
    name: str
    role: str
    full_name: str
    scopes: frozenset[Scope]
    #: "token" or "session".
    via: str
    #: The session's CSRF token (console sessions only).
    csrf_token: str | None = None

    @property
    def actor(self) -> str:
        """How the audit trail names this principal."""
        return f"web:{self.name}"


def client_address(request: Request) -> str:
    """The client's address (the proxy's, unless it is a trusted proxy: ``web.trusted_proxies``)."""
    return request.client.host if request.client else ""


def _lookup(context: WebContext, bearer: str | None, cookie: str | None) -> Principal | None:
    with context.sessions.begin() as session:
        if bearer is not None:
            found = resolve_token(session, bearer)
            if found is None:
                return None
            account, scopes = found
            return Principal(account.id, account.name, account.role.value, account.full_name,
                             scopes, "token")
        if cookie is not None:
            live = resolve_session(session, cookie, policy=context.login_policy)
            if live is None:
                return None
            account, web_session = live
            return Principal(account.id, account.name, account.role.value, account.full_name,
                             ROLE_SCOPES[account.role], "session", web_session.csrf_token)
    return None


async def current_principal(request: Request) -> Principal | None:
    """The principal of the request, or ``None`` (looked up once per request)."""
    if hasattr(request.state, "principal"):
        cached: Principal | None = request.state.principal
        return cached
    authorization = request.headers.get("authorization")
    bearer: str | None = None
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Problem(401, "the Authorization header must be 'Bearer <API token>'",
                          kind="unauthenticated", headers={"WWW-Authenticate": "Bearer"})
        bearer = credentials.strip()
    context: WebContext = request.app.state.context
    principal = await run_in_threadpool(
        _lookup, context, bearer, None if bearer else request.cookies.get(SESSION_COOKIE)
    )
    if principal is None and bearer is not None:
        raise Problem(401, "the API token is unknown, revoked or expired", kind="unauthenticated",
                      headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    request.state.principal = principal
    return principal


async def _check_csrf(request: Request, principal: Principal) -> None:
    if principal.via != "session" or request.method in _SAFE_METHODS:
        return
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, principal.csrf_token or ""):
        raise Problem(403, "this change needs the session's CSRF token (reload the page)",
                      kind="csrf")


def require(scope: Scope) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the request's principal, who must hold ``scope``."""

    async def dependency(request: Request) -> Principal:
        principal = await current_principal(request)
        if principal is None:
            raise Problem(401, "sign in, or send an API token as 'Authorization: Bearer <token>'",
                          kind="unauthenticated", headers={"WWW-Authenticate": "Bearer"})
        if scope not in principal.scopes:
            raise Problem(
                403, f"{principal.name} ({principal.role}, by {principal.via}) may not do this: "
                f"it needs the {scope!r} permission", kind="forbidden", scope=scope,
            )
        await _check_csrf(request, principal)
        return principal

    dependency.__name__ = f"require_{scope}"
    return dependency


#: Route parameters: ``def route(principal: Reader)`` needs "read", and so on.
Reader = Annotated[Principal, Depends(require("read"))]
Actor = Annotated[Principal, Depends(require("act"))]
Ingester = Annotated[Principal, Depends(require("ingest"))]
Admin = Annotated[Principal, Depends(require("admin"))]
#: Review changes (accept, reject, correct, sign): the radiologist's "review" permission.
Radiologist = Annotated[Principal, Depends(require("review"))]
