"""Running Celery workers for RadGround's queues."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from radground.settings import Settings

__all__ = ["run_worker", "spawn_workers"]


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
    app.worker_main([
        "worker",
        "--queues", queue,
        "--pool", "threads",
        "--concurrency", str(concurrency),
        "--hostname", f"{queue}-{os.getpid()}@%h",
        "--loglevel", settings.logging.level,
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ])


def spawn_workers(settings: Settings, config: Path | None) -> list[subprocess.Popen]:
    """Start the embedded mode's worker processes (`radground serve`).

    The broker is opened once first, so that with the SQLite broker its tables
    exist before several workers race to create them.
    """
    from radground.runtime import configure_celery

    with configure_celery(settings).connection_for_write() as connection:
        connection.default_channel  # noqa: B018 - opening the channel declares the transport's tables
    base = [sys.executable, "-m", "radground"]
    if config is not None:
        base += ["--config", str(config)]
    processes = []
    for queue, count in (("gpu", settings.workers.gpu_processes), ("io", settings.workers.io_processes)):
        for _ in range(count):
            processes.append(subprocess.Popen([*base, "worker", "--queues", queue, "--parent-pid", str(os.getpid())]))
    return processes


def _exit_with_parent(parent_pid: int) -> None:
    """A worker started by `radground serve` stops when that process is gone (killed,
    out of memory), instead of living on as an orphan. Its unfinished task is
    picked up again (redelivery or the node's sweeper)."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)  # Celery's warm shutdown
