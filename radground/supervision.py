"""One supervisor for every child process RadGround keeps running.

The node's listener processes (``multiprocessing``, spawned) and the Celery
worker processes of ``radground serve`` and ``radground worker`` (commands)
run under :class:`Supervisor`: a child that dies (the OOM killer, a crash,
Celery's "Unrecoverable error") is started again. A child that lived at least
``healthy_after_seconds`` is restarted at once; one that keeps dying right
after it started (a bad configuration, a port or broker that refuses it) is
restarted after a pause that doubles from one second up to
``max_pause_seconds``, so a broken setup shows in the log instead of spinning.
"""

from __future__ import annotations

import logging
import multiprocessing.process
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from radground.metrics import process_gone

__all__ = ["ChildProcess", "SpawnedProcess", "Supervisor"]

logger = logging.getLogger(__name__)


class ChildProcess(Protocol):
    """What the supervisor needs of a child: :class:`subprocess.Popen` has it all."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None:
        """The exit code, or ``None`` while the child runs."""

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit code; raises :class:`subprocess.TimeoutExpired` after ``timeout``."""


class SpawnedProcess:
    """A started :class:`multiprocessing.Process` seen as a :class:`ChildProcess`."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    def poll(self) -> int | None:
        return None if self.process.is_alive() else self.process.exitcode

    def terminate(self) -> None:
        self.process.terminate()

    def kill(self) -> None:
        self.process.kill()

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.is_alive():
            raise subprocess.TimeoutExpired(self.process.name, timeout or 0.0)
        return self.process.exitcode or 0


@dataclass
class _Child:
    name: str
    start: Callable[[], ChildProcess]
    process: ChildProcess | None = None
    started: float = 0.0
    pause: float = 0.0
    restart_at: float | None = None  # set while a dead child waits for its restart


class Supervisor:
    """Child processes kept running until :meth:`stop`.

    Parameters
    ----------
    children
        ``(name, start)`` per child: the name is for the log ("gpu", "listener-2"),
        ``start`` starts the child and returns it (called again for each restart).
    healthy_after_seconds
        A child that ran this long counts as started well: its restart is immediate.
    max_pause_seconds
        The longest pause before restarting a child that keeps dying at start.
    check_seconds
        How often the children are looked at.
    on_exit
        Called with ``(name, pid, exit code)`` when a child is found dead, before
        it is restarted (e.g. to give up the jobs the dead worker held at once).
    """

    def __init__(self, children: Sequence[tuple[str, Callable[[], ChildProcess]]], *,
                 healthy_after_seconds: float = 30.0, max_pause_seconds: float = 60.0,
                 check_seconds: float = 0.5,
                 on_exit: Callable[[str, int, int | None], None] | None = None) -> None:
        self._children = [_Child(name, start) for name, start in children]
        self._on_exit = on_exit
        self._healthy_after = healthy_after_seconds
        self._max_pause = max_pause_seconds
        self._check = check_seconds
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        #: How many restarts the supervisor made.
        self.restarts = 0

    def start(self) -> None:
        """Start every child, then watch them from a thread."""
        for child in self._children:
            self._spawn(child)
        self._thread = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        self._thread.start()

    def pids(self) -> list[int]:
        """Process ids of the children running now."""
        return [
            c.process.pid
            for c in self._children
            if c.process is not None and c.process.poll() is None
        ]

    def _spawn(self, child: _Child) -> None:
        child.process = child.start()
        child.started = time.monotonic()

    def _supervise(self) -> None:
        while not self._stopping.wait(self._check):
            now = time.monotonic()
            for child in self._children:
                process = child.process
                if process is None or process.poll() is None:
                    continue
                if child.restart_at is None:  # just found dead
                    lived = now - child.started
                    child.pause = (
                        0.0
                        if lived >= self._healthy_after
                        else min(self._max_pause, max(1.0, child.pause * 2))
                    )
                    child.restart_at = now + child.pause
                    logger.error(
                        "%s (pid %d) exited with code %s after %.0f s; restarting it%s",
                        child.name,
                        process.pid,
                        process.poll(),
                        lived,
                        f" in {child.pause:.0f} s" if child.pause else "",
                    )
                    process_gone(process.pid)
                    self._report_exit(child.name, process)
                if now >= child.restart_at and not self._stopping.is_set():
                    child.restart_at = None
                    self.restarts += 1
                    try:
                        self._spawn(child)
                    except OSError as exc:  # e.g. out of processes: try again after the next pause
                        logger.error(
                            "Could not start %s again (%s)", child.name, type(exc).__name__
                        )
                        child.started = now

    def _report_exit(self, name: str, process: ChildProcess) -> None:
        if self._on_exit is None:
            return
        try:
            self._on_exit(name, process.pid, process.poll())
        except Exception as exc:  # noqa: BLE001 - a failing callback must not stop the supervision
            logger.error("Handling the exit of %s failed (%s)", name, type(exc).__name__)

    def wait_for_signal(self) -> None:
        """Block until SIGTERM or SIGINT (main thread only), then :meth:`stop`."""
        # Ctrl-C reaches the children too (one process group): stop restarting at once.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stopping.set())
        while not self._stopping.wait(1.0):
            pass
        self.stop()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop restarting, SIGTERM every child (Celery's warm shutdown lets running tasks
        finish), wait up to ``timeout`` seconds in all, then kill what is left."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5.0)
        running = [
            c.process for c in self._children if c.process is not None and c.process.poll() is None
        ]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5.0)
            process_gone(process.pid)
