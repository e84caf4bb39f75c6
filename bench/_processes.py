"""Child processes and services for benchmarks: processes started in their own session and
stopped as a group; ports; a fresh PostgreSQL database; Redis.

Each process is started with ``start_new_session=True``, so it leads a new
process group and everything it starts (``radground serve`` spawns its
listener and worker processes) belongs to that group. :meth:`ProcessGroup.stop`
sends SIGTERM to every group, waits, then SIGKILLs what is left: nothing
outlives the benchmark, even when a child itself would leave orphans.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "POSTGRES_ADMIN_URL",
    "REDIS_URL",
    "ProcessGroup",
    "accepts",
    "create_postgres_database",
    "drop_postgres_database",
    "free_port",
    "redis_call",
    "redis_run_id",
    "start_private_redis",
    "wait_until",
]

POSTGRES_ADMIN_URL = os.environ.get("RADGROUND_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("RADGROUND_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")


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
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        self._processes.append((name, process))
        return process

    def check_alive(self) -> None:
        """Raise ``RuntimeError`` with the log tail if a started process has exited."""
        for name, process in self._processes:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with status {process.returncode}:\n{self.log_tail(name)}"
                )

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


def free_port() -> int:
    """A TCP port free on loopback now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_postgres_database() -> tuple[str, str]:
    """A fresh ``radground_bench_<random>`` database on the PostgreSQL server: (URL, name)."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"radground_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(
        hide_password=False
    ), name


def drop_postgres_database(name: str) -> None:
    """Drop a database made by :func:`create_postgres_database` (its connections closed by
    force)."""
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_call(url: str, method: str) -> object:
    """Call one Redis command (``flushdb``, ``info``) on a fresh connection."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return getattr(client, method)()
    finally:
        client.close()


def redis_run_id(url: str) -> str:
    """The server's run_id: it changes when Redis restarts (and forgets every queued message)."""
    return str(redis_call(url, "info")["run_id"])


def start_private_redis(group: ProcessGroup, workdir: Path) -> str:
    """A redis-server of our own on a free loopback port, no persistence; its URL."""
    port = free_port()
    group.start("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                          "--appendonly", "no", "--dir", str(workdir)])
    wait_until(lambda: accepts(port), 30, "private redis-server", group)
    return f"redis://127.0.0.1:{port}/0"


def wait_until(predicate: Callable[[], object], timeout: float, what: str, group: ProcessGroup, *,
               interval: float = 0.2) -> None:
    """Poll ``predicate`` until truthy; ``TimeoutError`` naming ``what`` after ``timeout`` seconds,
    ``RuntimeError`` (with its log tail) as soon as a process of ``group`` has exited."""
    deadline = time.monotonic() + timeout
    while not predicate():
        group.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:g} s")
        time.sleep(interval)


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
