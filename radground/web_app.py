"""The web process: the HTTP surface (:mod:`web`) built from the settings, served by uvicorn.

The command that starts it (``radground serve`` or ``radground web``) claims ``web.host:web.port``
itself, before anything else starts, with the node's own :func:`bind_listening_socket` (no
``SO_REUSEPORT``: a port another process listens on stops start-up, naming that process). The
application runs in a child process under the one supervisor (:mod:`radground.supervision`),
which hands it the listening socket; a child that dies is started again on the same socket,
so no connection is refused for a port that changed hands.

The web process loads no model: operator actions enqueue Celery messages for the workers, and
the pipeline context it holds refuses to load one. Its access log names the method, the path
with every UID replaced by :func:`dicom_node.uids.short_uid` and no query string, and the status.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from dicom_node.errors import PortInUseError
from dicom_node.listening import bind_listening_socket
from dicom_node.uids import short_uid
from radground.secret_files import check_private_file
from radground.settings import NodeSettings, Settings, SettingsError, WebSettings
from radground.worker import SupervisedProcesses

if TYPE_CHECKING:
    from types import FrameType

    from sqlalchemy import Engine

    from web.context import WebContext
    from web.runtime_info import NodeRuntime

__all__ = [
    "WebPortInUseError",
    "accounts_hint",
    "build_web_context",
    "check_destinations",
    "check_tls_files",
    "claim_web_port",
    "console_url",
    "run_web_child",
    "start_web_process",
    "web_command",
]

logger = logging.getLogger(__name__)

FIRST_ACCOUNT_HINT = "no accounts yet: create one with  radground users add NAME --role admin"
_UID_SEGMENT = re.compile(r"^[0-9]+(\.[0-9]+)+$")


class WebPortInUseError(OSError):
    """``web.host:web.port`` is held by another process."""

    def __init__(self, cause: PortInUseError) -> None:
        held_by = (
            f"by {cause.owner}" if cause.owner else "by another process (not visible to this user)"
        )
        super().__init__(
            98,
            f"port {cause.port} on {cause.host or '*'} is already in use {held_by}; "
            "stop it or choose another web.port (RADGROUND_WEB__PORT)",
        )

    def __str__(self) -> str:
        return str(self.strerror)


def claim_web_port(settings: WebSettings) -> socket.socket:
    """Bind and listen on ``web.host:web.port`` (port 0: a free one).

    Raises
    ------
    WebPortInUseError
        Another process listens there (the message names it where it can be found).
    """
    try:
        return bind_listening_socket(settings.host, settings.port)
    except PortInUseError as exc:
        raise WebPortInUseError(exc) from None


def check_tls_files(settings: WebSettings) -> None:
    """Refuse, before anything starts, a TLS certificate and key that cannot be loaded, or a
    key file its group or others may read (:func:`radground.secret_files.check_private_file`).

    Raises
    ------
    SettingsError
        Naming the files and what is wrong with them.
    """
    if settings.tls_certificate is None or settings.tls_key is None:
        return
    check_private_file(settings.tls_key, setting="web.tls_key", what="the TLS key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(settings.tls_certificate), str(settings.tls_key))
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise SettingsError(
            f"web.tls_certificate / web.tls_key ({settings.tls_certificate}, "
            f"{settings.tls_key}) cannot be loaded: {reason}"
        ) from None


def check_destinations(settings: Settings) -> None:
    """Refuse, before anything starts, a destination the web process could not build (a secret
    missing from the environment or its file): operator actions hand jobs to them.

    Raises
    ------
    SettingsError
        Naming the destination and what is missing.
    """
    from radground.runtime import build_destination

    for name, section in settings.destinations.items():
        build_destination(name, section, calling_ae_title=settings.node.ae_title,
                          pynetdicom_patches=settings.node.pynetdicom_patches)


def console_url(settings: WebSettings, address: tuple[str, int]) -> str:
    """The console's URL on this machine, for the start-up message."""
    host, port = address[0], address[1]
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.tls_certificate is not None else "http"
    return f"{scheme}://{host}:{port}{settings.base_path}/"


def accounts_hint(engine: Engine) -> str | None:
    """How to create the first account, when the (migrated) database has none."""
    from sqlalchemy import func, select

    from worklist.accounts_models import Account

    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(Account)).scalar_one()
    return FIRST_ACCOUNT_HINT if count == 0 else None


def web_command(config: Path | None, listen_fd: int) -> list[str]:
    """The command of the supervised web child of this process."""
    command = [sys.executable, "-m", "radground"] + (["--config", str(config)] if config else [])
    return command + ["web", "--listen-fd", str(listen_fd), "--parent-pid", str(os.getpid())]


def start_web_process(config: Path | None, listening: socket.socket) -> SupervisedProcesses:
    """Start the web child, supervised, serving on ``listening`` (kept open by this process)."""
    supervised = SupervisedProcesses(
        [("web", web_command(config, listening.fileno()))], pass_fds=(listening.fileno(),)
    )
    supervised.start()
    return supervised


def probe_node(node: NodeSettings) -> NodeRuntime:
    """The node's DICOM listener as this process sees it: alive when its port accepts a
    connection within a fifth of a second (the web process may run apart from the node)."""
    from web.runtime_info import Listener, NodeRuntime

    host = "127.0.0.1" if node.host in ("", "0.0.0.0") else node.host
    port = node.tls.port if node.tls.required else node.port  # TLS only: its port is the one
    try:
        with socket.create_connection((host, port), timeout=0.2):
            alive = True
    except OSError:
        alive = False
    return NodeRuntime(listeners=(Listener(node.ae_title, node.host, port, alive),))


def build_web_context(settings: Settings) -> WebContext:
    """The web application's context: the database, a pipeline context whose actions enqueue
    Celery messages (``workers.broker_url``), the login policy, the base path, the STOW-RS size
    limit, the readiness checks and the metrics directory. Reports are inferred by the gpu
    workers; the web process loads a route's model only when a radiologist asks it a region
    task on the review page (:mod:`worklist.review.assist`), once, on first use."""
    from dicom_node.ingest import InstanceIngest
    from engine.default_model.config import ONNX_PATH as DEFAULT_ONNX_PATH
    from radground.database import database_engine
    from radground.metrics import active_metrics_directory
    from radground.node import instance_store
    from radground.readiness import readiness_checks
    from radground.runtime import build_context, configure_celery
    from web.accounts import LoginPolicy
    from web.context import WebContext
    from web.runtime_info import ModelFile
    from worklist import tasks
    from worklist.hooks import make_index_hook

    configure_celery(settings)
    engine = database_engine(settings)
    pipeline = replace(
        build_context(settings, enqueue=tasks.CeleryEnqueuer(), engine=engine),
        actor=f"web-{os.getpid()}",
    )
    web = settings.web
    return WebContext(
        sessions=pipeline.sessions,
        pipeline=pipeline,
        models=tuple(
            ModelFile(name, model.backend, Path(model.path) if model.path else DEFAULT_ONNX_PATH)
            for name, model in settings.models.items()
        ),
        storage_reserve_bytes=settings.storage.reserve_mb * 1024 * 1024,
        node_probe=functools.partial(probe_node, settings.node),
        # STOW-RS: the same store and index hook as the Storage SCP (one ingest path)
        ingest=InstanceIngest(
            instance_store(settings), on_stored=make_index_hook(engine)
        ),
        login_policy=LoginPolicy(
            max_failed_logins=web.max_failed_logins,
            lockout=timedelta(minutes=web.lockout_minutes),
            session_idle=timedelta(minutes=web.session_idle_minutes),
        ),
        base_path=web.base_path,
        stow_max_request_bytes=web.stow_max_request_mb * 1024 * 1024,
        readiness_checks=readiness_checks(settings, engine),
        metrics_directory=active_metrics_directory(),
    )


class RedactedAccessLog(logging.Filter):
    """uvicorn's access log without query strings, UIDs in paths replaced by their hash."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, path, version, status = args
            record.args = (client, method, redact_path(str(path)), version, status)
        return True


def redact_path(path: str) -> str:
    """``/api/v1/studies/1.2.840.1?x=y`` → ``/api/v1/studies/<short_uid>`` (no query string)."""
    path = path.partition("?")[0]
    return "/".join(
        short_uid(part) if _UID_SEGMENT.fullmatch(part) else part for part in path.split("/")
    )


def _exit_with_parent(parent_pid: int, server: object) -> None:
    """Stop serving when the supervisor is gone (killed, out of memory): no orphan keeps
    answering for a node that is not there."""
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    logger.error("Supervisor %d is gone; web process exiting", parent_pid)
    server.should_exit = True  # type: ignore[attr-defined]


def _supervised_server_class() -> type:
    import uvicorn

    class SupervisedServer(uvicorn.Server):
        """uvicorn under a supervisor: Ctrl-C reaches the whole process group, and the
        supervisor, not the child, decides to stop (it sends SIGTERM)."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if sig != signal.SIGINT:
                super().handle_exit(sig, frame)

    return SupervisedServer


def run_web_child(settings: Settings, *, listen_fd: int, parent_pid: int | None) -> None:
    """Serve the web application on the inherited listening socket ``listen_fd`` (blocks until
    SIGTERM/SIGINT, or the parent is gone)."""
    import uvicorn

    from radground.logs import configure_logging
    from web.app import create_app

    configure_logging(settings.logging.level)
    logging.getLogger("uvicorn.access").addFilter(RedactedAccessLog())
    web = settings.web
    listening = socket.socket(fileno=listen_fd)
    app = create_app(build_web_context(settings))
    trusted = ",".join(web.trusted_proxies)
    # web.base_path is the application's root path (create_app): paths with and without the
    # prefix both route, so uvicorn adds none (it would prefix every path a second time).
    config = uvicorn.Config(
        app,
        host=web.host,
        port=listening.getsockname()[1],
        ssl_certfile=str(web.tls_certificate) if web.tls_certificate else None,
        ssl_keyfile=str(web.tls_key) if web.tls_key else None,
        # X-Forwarded-For/-Proto are believed from the configured proxies only
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or "127.0.0.1",  # unused without proxy_headers
        log_config=None,
        access_log=True,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    server = (_supervised_server_class() if parent_pid is not None else uvicorn.Server)(config)
    if parent_pid is not None:
        threading.Thread(
            target=_exit_with_parent, args=(parent_pid, server), name="parent-watch", daemon=True
        ).start()
    server.run(sockets=[listening])
