"""A private redis-server on a free loopback port, for tests that stop or restart their broker.

The machine's shared Redis (127.0.0.1:6379) belongs to everything else running
there: no test stops, restarts or reconfigures it (``tests/conftest.py`` checks
its ``run_id`` before and after the session).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.radground_processes import free_port, wait_until

__all__ = ["PrivateRedis"]


class PrivateRedis:
    """redis-server on ``127.0.0.1:<free port>`` with its files under ``workdir``, no persistence.

    :meth:`stop` then :meth:`start` is a broker restart: every message is lost. With ``tls``
    (the server's certificate and key, and the CA that signed it) it speaks TLS only
    (``--port 0 --tls-port``, no client certificates asked) and :attr:`url` is ``rediss://``.
    """

    def __init__(self, workdir: Path, *, tls: tuple[Path, Path, Path] | None = None) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail(
                "redis-server is not installed (apt-get install redis-server; .ci/bootstrap does)"
            )
        self.workdir, self.port, self.tls = workdir, free_port(), tls
        scheme = "rediss" if tls else "redis"
        self.url = f"{scheme}://127.0.0.1:{self.port}/0"

    def _listen_arguments(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        cert, key, ca = self.tls
        return ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
                "--tls-auth-clients", "no"]

    def cli(self, *args: str) -> str:
        """``redis-cli`` against this server; its stdout."""
        tls = ["--tls", "--cacert", str(self.tls[2])] if self.tls else []
        result = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *tls, *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return result.stdout.strip()

    def start(self) -> None:
        subprocess.run(
            [
                "redis-server",
                *self._listen_arguments(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--daemonize",
                "yes",
                "--pidfile",
                str(self.workdir / "redis.pid"),
                "--logfile",
                str(self.workdir / "redis.log"),
            ],
            check=True,
            timeout=30,
        )
        wait_until(lambda: self.cli("ping") == "PONG", 30, what="private Redis answering PING")

    def stop(self) -> None:
        self.cli("shutdown", "nosave")
        wait_until(lambda: self.cli("ping") != "PONG", 30, what="private Redis down")

    def restart(self) -> None:
        """Stop and start again on the same port: every queued message is lost."""
        self.stop()
        self.start()
