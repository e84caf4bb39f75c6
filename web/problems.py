"""RFC 9457 problem details: every error the HTTP API answers.

Raise :class:`Problem` anywhere in a request; :func:`install_problem_handlers` turns it, FastAPI's
validation errors (400 naming the parameter) and Starlette's HTTP errors into
``application/problem+json`` responses.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["PROBLEM_MEDIA_TYPE", "Problem", "install_problem_handlers", "problem_response"]

PROBLEM_MEDIA_TYPE = "application/problem+json"
#: Where our problem types are described (a relative URI reference, RFC 9457 3.1.1).
_TYPE_BASE = "/api/v1/problems/"


class Problem(Exception):
    """An HTTP error with an RFC 9457 body.

    ``kind`` names the problem type (``"not-found"`` → ``type: /api/v1/problems/not-found``);
    ``extensions`` are extra members (``{"parameter": "state"}``).
    """

    def __init__(
        self, status: int, detail: str, *, kind: str | None = None,
        headers: dict[str, str] | None = None, **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.headers = headers or {}
        self.extensions = extensions


def problem_response(
    status: int, detail: str, *, kind: str | None = None, instance: str | None = None,
    headers: dict[str, str] | None = None, **extensions: Any,
) -> JSONResponse:
    """An ``application/problem+json`` response."""
    body: dict[str, Any] = {
        "type": _TYPE_BASE + kind if kind else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _parameter_name(location: tuple[Any, ...]) -> str:
    # ("query", "state") → "state"; ("body", "items", 0, "name") → "items[0].name"
    name = ""
    for part in location[1:]:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or str(location[0])


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as problem details."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status, exc.detail, kind=exc.kind, instance=request.url.path,
            headers=exc.headers, **exc.extensions,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("request",), "msg": "invalid request"}
        parameter = _parameter_name(tuple(first.get("loc", ("request",))))
        return problem_response(
            400, f"{parameter}: {first.get('msg', 'invalid value')}", kind="invalid-parameter",
            instance=request.url.path, parameter=parameter,
            errors=[
                {"parameter": _parameter_name(tuple(e.get("loc", ()))), "message": e.get("msg")}
                for e in errors
            ],
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(
            exc.status_code, str(exc.detail), instance=request.url.path,
            headers=dict(exc.headers or {}),
        )
