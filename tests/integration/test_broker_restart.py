"""A worker whose broker restarts while a task is in flight goes on working.

Celery 5.7.0's worker process does not survive this by itself: on the
connection loss its consumer closes the broken connection after ``collect()``
has already detached it, kombu's Redis channel then tries to restore the
unacknowledged message through a pool it can no longer build
(``AttributeError: 'NoneType' object has no attribute 'hostname'``) and the
worker exits with "Unrecoverable error". RadGround runs every worker under a
supervisor (:mod:`radground.worker`) that starts it again; this test holds a
late-acked task in a real worker process (the app and command line of
``radground worker``), restarts a private redis-server (the same binary the
machine runs; the shared one is left alone) and requires a task sent
afterwards to run, with no operator.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from celery import Celery

from radground.worker import SupervisedProcesses
from tests.integration.radground_processes import free_port, wait_until

pytestmark = pytest.mark.redis


class PrivateRedis:
    def __init__(self, workdir: Path) -> None:
        self.workdir, self.port = workdir, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _cli(self, *args: str) -> str:
        result = subprocess.run(["redis-cli", "-p", str(self.port), *args], check=False, capture_output=True,
                                text=True, timeout=10)
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


def test_a_supervised_worker_runs_tasks_again_after_its_broker_restarted(private_redis, tmp_path):
    worker = SupervisedProcesses([("io", [sys.executable, "-m", "tests.integration.celery_probe", private_redis.url])])
    sender = Celery("probe-sender", broker=private_redis.url)
    sender.conf.broker_connection_retry_on_startup = True

    def hold(name: str, seconds: float) -> None:
        sender.send_task("probe.hold", args=[str(tmp_path), name, seconds], queue="io")

    worker.start()
    try:
        hold("first", 4)
        wait_until(lambda: (tmp_path / "first.started").exists(), 60, what="the first task running")
        private_redis.stop()
        private_redis.start()
        hold("second", 0)
        wait_until(lambda: (tmp_path / "second.done").exists(), 90,
                   what=f"a task sent after the restart to run (worker restarts: {worker.restarts})")
    finally:
        worker.stop()
