"""Child processes for benchmarks: started in their own session, stopped as a group.

Each process is started with ``start_new_session=True``, so it leads a new
process group and everything it starts (``radground serve`` spawns its
listener and worker processes) belongs to that group. :meth:`ProcessGroup.stop`
sends SIGTERM to every group, waits, then SIGKILLs what is left: nothing
outlives the benchmark, even when a child itself would leave orphans.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ProcessGroup"]


class ProcessGroup:
    """Processes started by a benchmark; :meth:`stop` ends all of them and their children."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: Sequence[str], *, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` with stdout and stderr in ``log_dir/<name>.log``."""
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed by the child's exit
        try:
            process = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        self._processes.append((name, process))
        return process

    def check_alive(self) -> None:
        """Raise ``RuntimeError`` with the log tail if a started process has exited."""
        for name, process in self._processes:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with status {process.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.is_file():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every process group, wait up to ``timeout`` s, SIGKILL the rest."""
        groups = [process.pid for _, process in self._processes]
        for pgid in groups:
            _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for pgid in groups:
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
        for pgid in groups:
            if _group_alive(pgid):
                _signal_group(pgid, signal.SIGKILL)
        for _, process in self._processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self._processes.clear()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    # Reap our direct child if it exited (a zombie leader would keep the group "alive").
    try:
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
