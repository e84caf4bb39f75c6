"""The ASGI application: every route of the HTTP surface, mounted in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from web import health
from web.context import WebContext
from web.problems import install_problem_handlers

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/api/v1"

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def create_app(context: WebContext) -> FastAPI:
    """The web application over ``context`` (served by uvicorn: ``radground web`` / ``serve``)."""
    app = FastAPI(
        title="RadGround",
        summary="Studies, jobs, deliveries and actions of a RadGround node; DICOMweb STOW-RS.",
        version="1",
        root_path=context.base_path,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.context = context
    install_problem_handlers(app)
    app.include_router(health.router)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return app
