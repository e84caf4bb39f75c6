"""The ASGI application: every route of the HTTP surface, mounted in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from web import health
from web.api import api_router
from web.auth import Reader
from web.console import install_console
from web.context import WebContext
from web.problems import install_problem_handlers
from web.stow import router as stow_router

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
        # served by _add_openapi_routes, which need the "read" permission
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    # Under a reverse proxy: paths with the prefix and without it (a proxy that strips it) both
    # route, and URLs the application makes carry it (set here: FastAPI's constructor argument
    # is deprecated in favour of the server's, which would prefix every path a second time).
    app.root_path = context.base_path
    app.state.context = context
    install_problem_handlers(app)
    _add_openapi_routes(app)
    app.include_router(api_router, prefix=API_PREFIX)
    app.include_router(stow_router)
    install_console(app)
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


def _add_openapi_routes(app: FastAPI) -> None:
    """The OpenAPI document, for signed-in readers (only ``/healthz`` is served without
    authentication). No Swagger UI: FastAPI's loads its scripts from a CDN, which a hospital
    network does not reach; point any OpenAPI viewer at the document."""
    document_path = f"{API_PREFIX}/openapi.json"

    @app.get(document_path, include_in_schema=False)
    async def openapi_document(principal: Reader) -> JSONResponse:
        return JSONResponse(app.openapi())
