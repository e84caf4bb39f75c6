"""Rendering the console's pages: the Jinja2 environment, its filters, and the page frame
(who is signed in, their CSRF token, the application's root path)."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from web.auth import Principal

__all__ = ["CONTENT_SECURITY_POLICY", "LOCAL_TIME", "app_path", "render", "templates"]

#: Times are shown in the node's local time zone.
LOCAL_TIME: tzinfo = datetime.now().astimezone().tzinfo or UTC

#: The pages load only the application's own stylesheet, script and images; no inline script,
#: no framing, forms post only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def app_path(request: Request, path: str) -> str:
    """``path`` of this application as the browser must ask for it (under the proxy's prefix)."""
    return str(request.scope.get("root_path", "")).rstrip("/") + path


def _when(value: datetime | None, *, seconds: bool = True) -> str:
    if value is None:
        return "–"
    local = value.astimezone(LOCAL_TIME)
    return local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 120:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat() if value is not None else ""


templates.env.filters["when"] = _when
templates.env.filters["duration"] = _duration
templates.env.filters["iso"] = _iso
templates.env.globals["time_zone"] = datetime.now(LOCAL_TIME).strftime("%Z")


def render(
    request: Request, name: str, *, principal: Principal | None, status_code: int = 200,
    **context: Any,
) -> Response:
    """The page ``name`` for ``principal``; ``url(path)`` in templates gives app paths."""
    response = templates.TemplateResponse(
        request,
        name,
        {
            "principal": principal,
            "can_act": principal is not None and "act" in principal.scopes,
            "can_review": principal is not None and "review" in principal.scopes,
            "csrf_token": principal.csrf_token if principal is not None else None,
            "url": lambda path: app_path(request, path),
            "now": datetime.now(LOCAL_TIME).strftime("%H:%M:%S"),
            **context,
        },
        status_code=status_code,
    )
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response
