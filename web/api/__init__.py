"""The REST API (``/api/v1``): studies, jobs, actions, routes, models, node status.

One module per resource, each an ``APIRouter``; :data:`api_router` gathers them and
``web.app.create_app`` mounts it. Reads need the "read" scope, actions "act"; errors are RFC 9457
problem details (:mod:`web.problems`). Everything is read through :mod:`worklist.views` and done
through :mod:`worklist.jobs`; reviews through :mod:`worklist.review`.
"""

from fastapi import APIRouter

from web.api import jobs, model, node, review, routes, studies

__all__ = ["api_router"]

api_router = APIRouter()
for _module in (studies, jobs, review, routes, model, node):
    api_router.include_router(_module.router)
