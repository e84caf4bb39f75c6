"""Running Celery workers for RadGround's queues, each under a supervisor.

``radground worker --queues Q`` and ``radground serve`` never run Celery in the
process an operator (or systemd, or Docker) started: they supervise child
processes that do, and start a child again when it dies: killed by the OOM
killer, crashed, or stopped by Celery itself with "Unrecoverable error" (Celery
5.7.0's worker does that when its Redis broker restarts while a task is in
flight). The dead worker's unfinished tasks come back through redelivery or
the node's sweeper; tasks are idempotent. A child that keeps dying right after
it started (a bad config, a broker that refuses it) is restarted with a pause
that doubles up to a minute, so a broken setup shows in the log instead of
spinning.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from radground.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["SupervisedProcesses", "run_worker", "start_embedded_workers", "worker_arguments", "worker_command"]

#: A child alive this long counts as started well: its next restart is immediate.
_HEALTHY_AFTER_SECONDS = 30.0
_MAX_PAUSE_SECONDS = 60.0


def run_worker(settings: Settings, *, queue: str, concurrency: int | None = None, parent_pid: int | None = None) -> None:
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
        concurrency = max(m.max_batch_size for m in settings.models.values()) if queue == "gpu" else 4
    app.worker_main(worker_arguments(queue=queue, concurrency=concurrency, loglevel=settings.logging.level))


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


@dataclass
class _Child:
    name: str
    command: list[str]
    process: subprocess.Popen | None = None
    started: float = 0.0
    pause: float = 0.0
    restart_at: float | None = None  # set while a dead child waits for its restart


class SupervisedProcesses:
    """Child processes kept running until :meth:`stop`.

    Parameters
    ----------
    commands
        ``(name, argv)`` per child; the name is for the log ("gpu", "io").
    """

    def __init__(self, commands: Sequence[tuple[str, list[str]]]) -> None:
        self._children = [_Child(name, list(command)) for name, command in commands]
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts = 0

    def start(self) -> None:
        for child in self._children:
            self._spawn(child)
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)
        self._thread.start()

    def pids(self) -> list[int]:
        return [c.process.pid for c in self._children if c.process is not None and c.process.poll() is None]

    def _spawn(self, child: _Child) -> None:
        child.process = subprocess.Popen(child.command)
        child.started = time.monotonic()

    def _supervise(self) -> None:
        while not self._stopping.wait(0.5):
            now = time.monotonic()
            for child in self._children:
                process = child.process
                if process is None or process.poll() is None:
                    continue
                if child.restart_at is None:  # just found dead
                    lived = now - child.started
                    child.pause = 0.0 if lived >= _HEALTHY_AFTER_SECONDS else min(
                        _MAX_PAUSE_SECONDS, max(1.0, child.pause * 2))
                    child.restart_at = now + child.pause
                    logger.error("Worker %s (pid %d) exited with code %s after %.0f s; restarting it%s", child.name,
                                 process.pid, process.returncode, lived,
                                 f" in {child.pause:.0f} s" if child.pause else "")
                if now >= child.restart_at and not self._stopping.is_set():
                    child.restart_at = None
                    self.restarts += 1
                    self._spawn(child)

    def wait_for_signal(self) -> None:
        """Block until SIGTERM or SIGINT (main thread only), then :meth:`stop`."""
        # Ctrl-C reaches the children too (one process group): stop restarting at once.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stopping.set())
        while not self._stopping.wait(1.0):
            pass
        self.stop()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every child (Celery's warm shutdown: running tasks finish), then kill what is left."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5.0)
        running = [c.process for c in self._children if c.process is not None and c.process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()


def start_embedded_workers(settings: Settings, config: Path | None) -> SupervisedProcesses:
    """The worker processes of `radground serve` (``workers.gpu_processes`` + ``workers.io_processes``).

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
    supervised = SupervisedProcesses(commands)
    supervised.start()
    return supervised


def _exit_with_parent(parent_pid: int) -> None:
    """A supervised worker stops when its supervisor is gone (killed, out of
    memory), instead of living on as an orphan. Its unfinished task is picked
    up again (redelivery or the node's sweeper)."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)  # Celery's warm shutdown
