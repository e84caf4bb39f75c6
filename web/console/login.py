"""Signing in and out of the console, and sending people who are not signed in to the login
page.

A login checks the password (:func:`web.accounts.verify_login`: lock-out and the audit trail
are there), starts a console session and sets its cookie: ``HttpOnly``, ``SameSite=Strict``,
``Secure`` over HTTPS, ``Path`` the application's root path. A refused login says the same
thing whatever the reason, so the page tells nobody which account names exist.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from web.accounts import LoginRefusedError, end_session, start_session, verify_login
from web.auth import SESSION_COOKIE, Principal, client_address, current_principal, require
from web.console.pages import app_path, render
from web.context import WebContext
from web.problems import Problem
from worklist.context import audit

__all__ = ["REFUSED", "LoginRequiredError", "Viewer", "login_redirect", "router", "safe_next"]

router = APIRouter()

#: What a refused login says (never which of the reasons it was).
REFUSED = "Wrong name or password, or the account is locked."


class LoginRequiredError(Exception):
    """A page was asked for without a session: answered with a redirect to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a path of this application, never another site."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith(("//", "/\\", "/login"))
        or any(c in value for c in "\\\r\n\t")
    ):
        return "/"
    return value


async def _page_principal(request: Request) -> Principal:
    principal = await current_principal(request)
    if principal is None:
        path = request.url.path
        root = str(request.scope.get("root_path", ""))
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        if request.url.query:
            path += "?" + request.url.query
        raise LoginRequiredError(path)
    if "read" not in principal.scopes:
        raise Problem(403, f"{principal.name} may not read the console", kind="forbidden",
                      scope="read")
    return principal


#: A page's parameter: the signed-in principal (the login page for nobody).
Viewer = Annotated[Principal, Depends(_page_principal)]


def login_redirect(request: Request, next_path: str) -> RedirectResponse:
    """To the login page, then back to ``next_path``."""
    query = "" if next_path == "/" else "?" + urlencode({"next": next_path})
    return RedirectResponse(app_path(request, "/login") + query, status_code=303)


@router.get("/login", include_in_schema=False)
async def login_page(request: Request, next: str | None = None) -> Response:
    return render(request, "login.html", principal=None, next=safe_next(next), error=None,
                  username="")


def _sign_in(context: WebContext, name: str, password: str, source: str) -> tuple[str, str] | None:
    with context.sessions() as session:
        try:
            account = verify_login(
                session, name, password, policy=context.login_policy, source=source
            )
        except LoginRefusedError:
            session.commit()  # the failed attempt stays in the audit trail
            return None
        cookie = start_session(session, account, source=source)
        session.commit()
        return cookie


@router.post("/login", include_in_schema=False)
async def login(
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form(max_length=2048)] = "/",
) -> Response:
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise Problem(403, "a login form must be sent from this site", kind="cross-site-login")
    context: WebContext = request.app.state.context
    signed_in = await run_in_threadpool(
        _sign_in, context, username.strip(), password, client_address(request)
    )
    target = safe_next(next)
    if signed_in is None:
        return render(request, "login.html", principal=None, status_code=401, next=target,
                      error=REFUSED, username=username.strip())
    identifier, _ = signed_in
    response = RedirectResponse(app_path(request, target), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        identifier,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=str(request.scope.get("root_path", "")).rstrip("/") or "/",
    )
    return response


def _sign_out(context: WebContext, identifier: str, source: str) -> None:
    with context.sessions.begin() as session:
        account = end_session(session, identifier)
        if account is not None:
            audit(session, f"web:{account.name}", "logout", None, "", source=source)


@router.post("/logout", include_in_schema=False)
async def logout(request: Request, principal: Viewer) -> Response:
    await require("read")(request)  # a change: it checks the session's CSRF token
    identifier = request.cookies.get(SESSION_COOKIE)
    if identifier:
        context: WebContext = request.app.state.context
        await run_in_threadpool(_sign_out, context, identifier, client_address(request))
    response = RedirectResponse(app_path(request, "/login"), status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path=str(request.scope.get("root_path", "")).rstrip("/") or "/",
        httponly=True, samesite="strict", secure=request.url.scheme == "https",
    )
    return response
