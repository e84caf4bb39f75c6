"""What the web application needs, built once per process by the application shell."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.ingest import InstanceIngest
from web.accounts import LoginPolicy
from web.runtime_info import ModelFile, NodeProbe
from worklist.context import PipelineContext

__all__ = ["WebContext", "web_context"]


@dataclass(frozen=True)
class WebContext:
    """Everything the routes use; ``web`` reads no settings (``radground.web_app`` builds this)."""

    #: The node's database (study index, jobs, accounts, audit trail).
    sessions: sessionmaker[Session]
    #: For operator actions (they enqueue the next step) and the configured routes, destinations
    #: and folders.
    pipeline: PipelineContext
    #: The configured models (the API shows their ONNX metadata).
    models: tuple[ModelFile, ...] = ()
    #: Free space ``storage.root`` keeps (the node refuses instances below it).
    storage_reserve_bytes: int = 0
    #: Listeners, associations and workers as the running node sees them; ``None`` in a process
    #: without the node (``radground web`` alone).
    node_probe: NodeProbe | None = None
    #: Lock-out and session expiry.
    login_policy: LoginPolicy = field(default_factory=LoginPolicy)
    #: The path prefix under a reverse proxy ("" or "/radground").
    base_path: str = ""
    #: STOW-RS requests above this size are refused with 413.
    stow_max_request_bytes: int = 4096 * 1024 * 1024
    #: ``/readyz``: name → check ("database", "broker", "storage", "model"); a check returns a
    #: short detail when ready and raises (``web.health.NotReadyError``, saying why) when not.
    readiness_checks: Mapping[str, Callable[[], str]] = field(default_factory=dict)
    #: ``/metrics``: the metric files of the node's processes (prometheus_client multi-process
    #: mode, ``radground.metrics``); ``None``: this process's metrics only.
    metrics_directory: Path | None = None
    #: The node's one ingest path (the Storage SCP's store and index hook) for STOW-RS; ``None``:
    #: this process does not ingest (STOW-RS answers 503).
    ingest: InstanceIngest | None = None


def web_context(request: Request) -> WebContext:
    """The application's :class:`WebContext` (a FastAPI dependency)."""
    context: WebContext = request.app.state.context
    return context
