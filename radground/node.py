"""Wiring of the DICOM node: listener processes, study index, completion monitor.

The node owns its port: the node process binds it (without SO_REUSEPORT, so
start-up fails, naming the other process, while anything else listens there)
before anything else starts. With ``node.listener_processes`` > 1 the Storage
SCP runs in that many processes that accept on that one listening socket,
handed to them at spawn (the kernel gives each connection to one of them, so
ingest is not bound to one GIL); the concurrent association limit and the
per-peer connection counts are shared by all of them. Each listener
process builds its own database engine after it starts (no pooled connection
crosses a process boundary). The parent supervises the listeners (restarting
one that dies, with the backoff of :mod:`radground.supervision`) and runs the
completion monitor.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from dicom_node.listening import bind_listening_socket
from dicom_node.scp import PeerConnectionLimiter, StorageSCP, ThreadAssociationLimiter
from dicom_node.storage import InstanceStore
from radground.audit import (
    application_started,
    application_stopping,
    start_audit_trail,
    stop_audit_trail,
)
from radground.database import database_engine
from radground.logs import configure_logging
from radground.settings import Settings
from radground.supervision import SpawnedProcess, Supervisor
from worklist import atna
from worklist.atna.hooks import scp_hooks
from worklist.completion import CompletionMonitor, StudyReady
from worklist.db import make_session_factory
from worklist.hooks import make_index_hook
from worklist.migrate import upgrade_database

__all__ = ["Node", "build_scp", "instance_store"]

logger = logging.getLogger(__name__)


class _ProcessLimiter:
    """An association limiter shared by listener processes."""

    def __init__(self, semaphore: Any) -> None:
        self._semaphore = semaphore

    def try_acquire(self) -> bool:
        return self._semaphore.acquire(False)

    def release(self) -> None:
        self._semaphore.release()


def instance_store(settings: Settings) -> InstanceStore:
    """Where received instances go (``[storage]``): the Storage SCP's and STOW-RS's one store."""
    return InstanceStore(
        settings.storage.root,
        fsync=settings.storage.fsync,
        duplicates=settings.storage.duplicates,
        reserve_bytes=settings.storage.reserve_mb * 1024 * 1024,
    )


def build_scp(settings: Settings, *, limiter: Any = None, peer_counts: Any = None) -> StorageSCP:
    """A Storage SCP configured from ``settings``, indexing into its database.

    ``limiter`` and ``peer_counts`` are shared with the node's other listener
    processes (default: this process's own).
    """
    engine = database_engine(settings)
    node = settings.node
    trail = atna.installed()
    on_refused, on_ended = scp_hooks(trail) if trail is not None else (None, None)
    return StorageSCP(
        instance_store(settings),
        ae_title=node.ae_title,
        on_stored=make_index_hook(engine),
        allowed_peers=[p.to_peer() for p in node.allowed_peers],
        require_called_ae_title=node.require_called_ae_title,
        limiter=limiter or ThreadAssociationLimiter(node.max_associations),
        network_timeout=node.network_timeout_seconds,
        acse_timeout=node.acse_timeout_seconds,
        dimse_timeout=node.dimse_timeout_seconds,
        maximum_pdu_size=node.max_pdu_size,
        peer_limiter=PeerConnectionLimiter(node.max_connections_per_peer, counts=peer_counts),
        pynetdicom_patches=node.pynetdicom_patches,
        on_association_refused=on_refused,
        on_association_ended=on_ended,
    )


def _listener_main(
    settings_data: dict[str, Any],
    semaphore: Any,
    peer_counts: Any,
    listening: socket.socket,
    parent_pid: int,
) -> None:
    """Entry point of one listener process (spawned: only the listening socket and shared counters
    are inherited)."""
    settings = Settings.model_validate(settings_data)
    configure_logging(settings.logging.level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    start_audit_trail(settings)
    scp = build_scp(settings, limiter=_ProcessLimiter(semaphore), peer_counts=peer_counts)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=scp.stop).start())
    threading.Thread(target=_exit_with_parent, args=(parent_pid, scp), daemon=True).start()
    scp.serve_forever(settings.node.host, settings.node.port, listening_socket=listening)
    stop_audit_trail()


def _exit_with_parent(parent_pid: int, scp: StorageSCP) -> None:
    """Stop this listener when the node process is gone (killed, OOM), so no
    orphan keeps the port and accepts instances nobody completes."""
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    logger.error("Node process %d is gone; listener exiting", parent_pid)
    scp.stop()


class Node:
    """The running DICOM node.

    Parameters
    ----------
    settings
        The node's settings.
    on_study_ready
        Called once per ready study revision (idempotent on study UID +
        revision). Defaults to logging it.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        on_study_ready: Callable[[StudyReady], None] | None = None,
        process_studies: bool = False,
    ) -> None:
        self.settings = settings
        self._on_study_ready = on_study_ready or (lambda ready: None)
        self._process_studies = process_studies
        self._engine = database_engine(settings)
        self._monitor: CompletionMonitor | None = None
        self._threads: list[threading.Thread] = []
        self._listeners: Supervisor | None = None
        self._scp: StorageSCP | None = None
        self._stopping = threading.Event()
        self._context = multiprocessing.get_context("spawn")
        self._semaphore: Any = None
        self._peer_counts: Any = None
        self._listening: socket.socket | None = None
        #: (host, port) the node listens on (the bound port when node.port is 0).
        self.address: tuple[str, int] = (settings.node.host, settings.node.port)

    @property
    def listener_processes(self) -> int:
        return self.settings.node.resolved_listener_processes()

    def claim_port(self) -> tuple[str, int]:
        """Bind and listen on node.host:node.port (once); returns the bound address.

        Called by :meth:`start`; call it earlier to fail before anything else
        starts (workers) when the port is taken.

        Raises
        ------
        dicom_node.errors.PortInUseError
            Another process listens on the port (the message names it where it can be found).
        """
        if self._listening is None:
            node = self.settings.node
            self._listening = bind_listening_socket(node.host, node.port)
            bound = self._listening.getsockname()
            self.address = (str(bound[0]), int(bound[1]))
        return self.address

    def start(self) -> None:
        """Claim the port, migrate the database, start the listener(s) and the completion
        monitor."""
        self.claim_port()
        assert self._listening is not None
        start_audit_trail(self.settings)
        application_started()
        upgrade_database(self._engine)
        if self._process_studies:
            # first: a bad processing setting fails before anything listens
            self._start_processing()
        node = self.settings.node
        if self.listener_processes == 1:
            self._scp = build_scp(self.settings)
            self.address = self._scp.start(node.host, node.port, listening_socket=self._listening)
        else:
            self._semaphore = self._context.BoundedSemaphore(node.max_associations)
            self._peer_counts = PeerConnectionLimiter.shared_counts(self._context)
            self._listeners = Supervisor([
                (f"Listener {number}", functools.partial(self._spawn_listener, number))
                for number in range(1, self.listener_processes + 1)
            ])
            self._listeners.start()
        completion = self.settings.completion
        self._monitor = CompletionMonitor(
            make_session_factory(self._engine),
            self._on_study_ready,
            idle_seconds=completion.idle_seconds,
            force_after_seconds=completion.force_after_seconds,
            poll_seconds=completion.poll_seconds,
        )
        self._start_thread(self._monitor.run_forever, "completion-monitor")

    def _start_processing(self) -> None:
        """Ready studies become jobs on the Celery queues; a sweeper re-enqueues lost work."""
        from radground.runtime import configure_celery
        from worklist import tasks
        from worklist.pipeline import make_study_ready_hook

        configure_celery(self.settings)
        self._on_study_ready = make_study_ready_hook(tasks.context())
        self._start_thread(self._sweep_forever, "requeue-sweeper")

    def _sweep_forever(self) -> None:
        from worklist import tasks

        while not self._stopping.wait(5.0):
            try:
                tasks.sweep()
            except Exception as exc:  # noqa: BLE001 - the sweeper must survive a database or broker outage
                logger.error("Requeue sweep failed (%s); retrying", type(exc).__name__)

    def _spawn_listener(self, number: int) -> SpawnedProcess:
        process = self._context.Process(
            target=_listener_main,
            args=(
                self.settings.model_dump(mode="json"),
                self._semaphore,
                self._peer_counts,
                self._listening,
                os.getpid(),
            ),
            name=f"listener-{number}",
            daemon=True,
        )
        process.start()
        return SpawnedProcess(process)

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, stop the monitor, wait for listener processes."""
        if not self._stopping.is_set():
            application_stopping()
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.stop()
        if self._scp is not None:
            self._scp.stop()
        deadline = time.monotonic() + timeout
        if self._listeners is not None:
            self._listeners.stop(timeout)
        if self._listening is not None:
            self._listening.close()
            self._listening = None
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._engine.dispose()
        stop_audit_trail(max(1.0, deadline - time.monotonic()))

    def run_until_signal(self) -> None:
        """Start, then block until SIGINT or SIGTERM, then stop cleanly."""
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        self.start()
        stop.wait()
        logger.info("Stopping")
        self.stop()
