"""Running Celery workers for RadGround's queues, each under a supervisor.

``radground worker --queues Q`` and ``radground serve`` never run Celery in the
process an operator (or systemd, or Docker) started: they supervise child
processes that do, and start a child again when it dies: killed by the OOM
killer, crashed, or stopped by Celery itself with "Unrecoverable error" (Celery
5.7.0's worker does that when its Redis broker restarts while a task is in
flight). The dead worker's unfinished tasks come back through redelivery or
the node's sweeper; tasks are idempotent. A child that keeps dying right after
it started (a bad config, a broker that refuses it) is restarted with a pause
that doubles up to a minute (:mod:`radground.supervision`, the same
supervisor as the node's listener processes).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from radground.settings import Settings
from radground.supervision import Supervisor

if TYPE_CHECKING:
    from sqlalchemy import Engine

logger = logging.getLogger(__name__)

__all__ = [
    "SupervisedProcesses",
    "run_worker",
    "start_embedded_workers",
    "supervised_worker",
    "worker_arguments",
    "worker_command",
]

def run_worker(
    settings: Settings, *, queue: str, concurrency: int | None = None, parent_pid: int | None = None
) -> None:
    """Run a Celery worker for ``queue`` in this process (blocks); the supervised child.

    Queue "gpu" uses a thread pool: the process loads each model once and its
    concurrent tasks share it through the engine's micro-batcher. Queue "io"
    uses threads too (network-bound work).
    """
    from radground.logs import configure_logging
    from radground.runtime import configure_celery

    configure_logging(settings.logging.level)
    if parent_pid is not None:
        threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    app = configure_celery(settings)
    if concurrency is None:
        concurrency = (
            max(m.max_batch_size for m in settings.models.values()) if queue == "gpu" else 4
        )
    app.worker_main(
        worker_arguments(queue=queue, concurrency=concurrency, loglevel=settings.logging.level)
    )


def worker_arguments(*, queue: str, concurrency: int, loglevel: str) -> list[str]:
    """The Celery worker command line of a RadGround worker process."""
    return [
        "worker",
        "--queues", queue,
        "--pool", "threads",
        "--concurrency", str(concurrency),
        "--hostname", f"{queue}-{os.getpid()}@%h",
        "--loglevel", loglevel,
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]


def worker_command(config: Path | None, queue: str, concurrency: int | None = None) -> list[str]:
    """The command of one supervised worker child of this process."""
    command = [sys.executable, "-m", "radground"] + (["--config", str(config)] if config else [])
    command += ["worker", "--queues", queue, "--parent-pid", str(os.getpid())]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    return command


class SupervisedProcesses(Supervisor):
    """Command-line child processes under the one supervisor (:mod:`radground.supervision`).

    Parameters
    ----------
    commands
        ``(name, argv)`` per child; the name is for the log ("gpu", "io").
    pass_fds
        File descriptors every child inherits (the web child's listening socket).
    """

    def __init__(self, commands: Sequence[tuple[str, list[str]]], *,
                 on_exit: Callable[[str, int, int | None], None] | None = None,
                 pass_fds: Sequence[int] = ()) -> None:
        super().__init__(
            [
                (name, functools.partial(subprocess.Popen, list(command), pass_fds=tuple(pass_fds)))
                for name, command in commands
            ],
            on_exit=on_exit,
        )


class _JobsOfDeadWorkers:
    """When a supervised worker dies, the leases it held on jobs end at once (the next
    sweep of the node re-queues them), instead of after ``workers.lease_seconds``."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._engine: Engine | None = None

    def __call__(self, name: str, pid: int, returncode: int | None) -> None:
        from radground.database import database_engine
        from worklist.db import make_session_factory, utcnow
        from worklist.leases import lapse_leases_of, worker_id

        if self._engine is None:
            self._engine = database_engine(self._settings)
        with make_session_factory(self._engine).begin() as session:
            jobs = lapse_leases_of(session, worker_id(pid), now=utcnow())
        if jobs:
            logger.warning("Worker %s (pid %d) held jobs %s; they are queued again", name, pid,
                           ", ".join(map(str, jobs)))


def supervised_worker(settings: Settings, config: Path | None, queue: str,
                      concurrency: int | None = None) -> SupervisedProcesses:
    """The supervised child of ``radground worker --queues QUEUE`` (not started yet)."""
    return SupervisedProcesses([(queue, worker_command(config, queue, concurrency))],
                               on_exit=_JobsOfDeadWorkers(settings))


def start_embedded_workers(settings: Settings, config: Path | None) -> SupervisedProcesses:
    """The worker processes of `radground serve` (``workers.gpu_processes`` +
    ``workers.io_processes``).

    The broker is opened once before the first start, so that with the SQLite
    broker its tables exist before several workers race to create them.
    """
    from radground.runtime import configure_celery

    with configure_celery(settings).connection_for_write() as connection:
        connection.default_channel  # noqa: B018 - opening the channel declares the transport's tables
    workers = settings.workers
    commands = [(queue, worker_command(config, queue))
                for queue, count in (("gpu", workers.gpu_processes), ("io", workers.io_processes))
                for _ in range(count)]
    supervised = SupervisedProcesses(commands, on_exit=_JobsOfDeadWorkers(settings))
    supervised.start()
    return supervised


def _exit_with_parent(parent_pid: int) -> None:
    """A supervised worker stops when its supervisor is gone (killed, out of
    memory), instead of living on as an orphan. Its unfinished task is picked
    up again (redelivery or the node's sweeper)."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)  # Celery's warm shutdown
