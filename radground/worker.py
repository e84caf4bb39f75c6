"""Running Celery workers for RadGround's queues."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from radground.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["EmbeddedWorkers", "run_worker", "worker_arguments"]


def run_worker(settings: Settings, *, queue: str, concurrency: int | None = None, parent_pid: int | None = None) -> None:
    """Run a Celery worker for ``queue`` in this process (blocks).

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


class EmbeddedWorkers:
    """The worker processes of `radground serve`, restarted when one dies
    (killed by the OOM killer, crashed): its unfinished task is picked up again
    by redelivery or the node's sweeper.

    The broker is opened once before the first start, so that with the SQLite
    broker its tables exist before several workers race to create them.
    """

    def __init__(self, settings: Settings, config: Path | None) -> None:
        self.settings = settings
        self._command = [sys.executable, "-m", "radground"] + (["--config", str(config)] if config else [])
        self._processes: list[tuple[str, subprocess.Popen]] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from radground.runtime import configure_celery

        with configure_celery(self.settings).connection_for_write() as connection:
            connection.default_channel  # noqa: B018 - opening the channel declares the transport's tables
        workers = self.settings.workers
        for queue, count in (("gpu", workers.gpu_processes), ("io", workers.io_processes)):
            self._processes.extend((queue, self._spawn(queue)) for _ in range(count))
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)
        self._thread.start()

    def _spawn(self, queue: str) -> subprocess.Popen:
        return subprocess.Popen([*self._command, "worker", "--queues", queue, "--parent-pid", str(os.getpid())])

    def _supervise(self) -> None:
        while not self._stopping.wait(1.0):
            for index, (queue, process) in enumerate(self._processes):
                if process.poll() is not None and not self._stopping.is_set():
                    logger.error("Worker for queue %s exited with code %s; restarting it", queue, process.returncode)
                    self._processes[index] = (queue, self._spawn(queue))

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5.0)
        for _, process in self._processes:
            process.terminate()
        deadline = time.monotonic() + timeout
        for _, process in self._processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()


def _exit_with_parent(parent_pid: int) -> None:
    """A worker started by `radground serve` stops when that process is gone (killed,
    out of memory), instead of living on as an orphan. Its unfinished task is
    picked up again (redelivery or the node's sweeper)."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)  # Celery's warm shutdown
