"""A worker survives its broker restarting while a task is in flight.

Celery 5.7.0 does not: on the connection loss its consumer closes the broken
connection after ``collect()`` has already detached it, kombu's Redis channel
then tries to restore the unacknowledged message through a pool it can no
longer build (``AttributeError: 'NoneType' object has no attribute 'hostname'``)
and the worker exits with "Unrecoverable error" — every job behind it waits
for an operator. pyproject.toml keeps Celery below 5.7 for this reason; this
test is what says when the pin may go.

A private redis-server (the same binary the machine runs) is restarted, so the
shared one is left alone.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery import Celery

from tests.integration.radground_processes import wait_until

pytestmark = pytest.mark.redis

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    def __init__(self, workdir: Path) -> None:
        self.workdir, self.port = workdir, _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _cli(self, *args: str) -> str:
        result = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10)
        return result.stdout.strip()

    def start(self) -> None:
        subprocess.run(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "yes",
                        "--logfile", str(self.workdir / "redis.log")], check=True, timeout=30)
        wait_until(lambda: self._cli("ping") == "PONG", 30, what="private Redis answering PING")

    def stop(self) -> None:
        self._cli("shutdown", "nosave")
        wait_until(lambda: self._cli("ping") != "PONG", 30, what="private Redis down")


@pytest.fixture
def private_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/bootstrap does)")
    redis = PrivateRedis(tmp_path)
    redis.start()
    yield redis
    redis.stop()


def test_a_worker_with_a_task_in_flight_survives_a_broker_restart(private_redis, tmp_path):
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "tests.integration.celery_probe", private_redis.url],
                              cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
    sender = Celery("probe-sender", broker=private_redis.url)
    sender.conf.broker_connection_retry_on_startup = True

    def hold(name: str, seconds: float) -> None:
        sender.send_task("probe.hold", args=[str(tmp_path), name, seconds], queue="io")

    def worker_log() -> str:
        return (tmp_path / "worker.log").read_text(errors="replace")[-4000:]

    try:
        hold("first", 4)
        wait_until(lambda: (tmp_path / "first.started").exists(), 60, what="the first task running")
        private_redis.stop()
        private_redis.start()
        wait_until(lambda: (tmp_path / "first.done").exists(), 30, what="the first task finishing")
        time.sleep(2)  # the consumer reconnects (or, on the broken Celery, has died)
        assert worker.poll() is None, f"the worker exited after the broker restart:\n{worker_log()}"
        hold("second", 0)
        wait_until(lambda: (tmp_path / "second.done").exists(), 60,
                   what=f"a task sent after the restart to run\n{worker_log()}")
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
