"""Health, readiness and Prometheus metrics: ``/healthz``, ``/readyz``, ``/metrics``.

``/healthz`` says the process answers (no authentication: the one route without).
``/readyz`` runs the readiness checks the application handed in
(:attr:`web.context.WebContext.readiness_checks`: database, broker, storage,
model) concurrently, each with a deadline, and answers 200 with every check's
result or 503 (problem details) naming the checks that failed. ``/metrics`` is
the Prometheus text exposition of every process of the node (the metric files
of :attr:`~web.context.WebContext.metrics_directory`, summed by
:mod:`prometheus_client`'s multi-process collector) and the queue depths read
from the database at scrape time (:class:`worklist.metrics.QueueDepthCollector`);
it needs the ``read`` scope (Prometheus sends an API token as a bearer token).
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from web.auth import Reader
from web.context import WebContext, web_context
from web.problems import problem_response
from worklist.metrics import QueueDepthCollector

__all__ = [
    "CHECK_TIMEOUT_SECONDS",
    "NotReadyError",
    "exposition",
    "router",
    "run_checks",
]

logger = logging.getLogger(__name__)

#: How long one readiness check may take before it counts as failed.
CHECK_TIMEOUT_SECONDS = 5.0

router = APIRouter(tags=["health"])
Context = Annotated[WebContext, Depends(web_context)]


class NotReadyError(Exception):
    """Raised by a readiness check that fails; its message says why, for the operator
    (no secrets, no patient data)."""


def _run_one(check: Callable[[], str]) -> tuple[bool, str]:
    try:
        return True, check()
    except NotReadyError as exc:
        return False, str(exc)
    except Exception as exc:  # noqa: BLE001 - any failure of a check means "not ready"
        # the type only: a driver's message may quote a URL or a host's answer
        return False, f"check failed ({type(exc).__name__})"


def run_checks(
    checks: Mapping[str, Callable[[], str]], *, timeout: float = CHECK_TIMEOUT_SECONDS
) -> dict[str, dict[str, Any]]:
    """Run ``checks`` concurrently; ``{name: {"ok": bool, "detail": str, "seconds": float}}``.

    A check that has not finished after ``timeout`` seconds fails (its thread is left to end
    on its own).
    """
    results: dict[str, dict[str, Any]] = {}
    if not checks:
        return results
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=len(checks), thread_name_prefix="readyz"
    )
    try:
        started = time.monotonic()
        futures = {name: pool.submit(_run_one, check) for name, check in checks.items()}
        for name, future in futures.items():
            remaining = max(0.0, started + timeout - time.monotonic())
            try:
                ok, detail = future.result(timeout=remaining)
            except concurrent.futures.TimeoutError:
                ok, detail = False, f"no answer within {timeout:g} s"
            results[name] = {
                "ok": ok,
                "detail": detail,
                "seconds": round(time.monotonic() - started, 3),
            }
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return results


def exposition(context: WebContext) -> bytes:
    """The Prometheus text exposition: the node's processes and the queue depths."""
    if context.metrics_directory is not None:
        processes = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(processes, path=str(Path(context.metrics_directory)))
    else:  # this process only (tests, a process started without the metrics directory)
        processes = REGISTRY
    queues = CollectorRegistry(auto_describe=False)
    queues.register(
        QueueDepthCollector(
            context.sessions,
            destinations=context.pipeline.destinations,
            routes=[route.name for route in context.pipeline.routes],
        )
    )
    return generate_latest(processes) + generate_latest(queues)


@router.get("/healthz", summary="The process is alive (no authentication)")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Database, broker, storage and model are usable",
    responses={503: {"description": "Not ready: problem details naming the failed checks"}},
)
def readyz(principal: Reader, context: Context) -> JSONResponse:
    results = run_checks(context.readiness_checks)
    failed = [name for name, result in results.items() if not result["ok"]]
    if failed:
        logger.warning("Not ready: %s", ", ".join(
            f"{name} ({results[name]['detail']})" for name in failed))
        return problem_response(
            503, f"not ready: {', '.join(failed)}", kind="not-ready", instance="/readyz",
            failed=failed, checks=results,
        )
    return JSONResponse({"status": "ready", "checks": results})


@router.get(
    "/metrics",
    summary="Prometheus metrics of every process of the node",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(principal: Reader, context: Context) -> Response:
    return Response(exposition(context), media_type=CONTENT_TYPE_LATEST)
