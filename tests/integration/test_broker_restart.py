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

import sys

import pytest
from celery import Celery

from radground.worker import SupervisedProcesses
from tests.integration.private_redis import PrivateRedis
from tests.integration.radground_processes import wait_until

pytestmark = pytest.mark.redis


@pytest.fixture
def private_redis(tmp_path):
    redis = PrivateRedis(tmp_path)
    redis.start()
    yield redis
    redis.stop()


def test_a_supervised_worker_runs_tasks_again_after_its_broker_restarted(private_redis, tmp_path):
    worker = SupervisedProcesses(
        [("io", [sys.executable, "-m", "tests.integration.celery_probe", private_redis.url])]
    )
    sender = Celery("probe-sender", broker=private_redis.url)
    sender.conf.broker_connection_retry_on_startup = True

    def hold(name: str, seconds: float) -> None:
        sender.send_task("probe.hold", args=[str(tmp_path), name, seconds], queue="io")

    worker.start()
    try:
        hold("first", 4)
        wait_until(lambda: (tmp_path / "first.started").exists(), 60, what="the first task running")
        private_redis.restart()
        hold("second", 0)
        wait_until(
            lambda: (tmp_path / "second.done").exists(),
            90,
            what=f"a task sent after the restart to run (worker restarts: {worker.restarts})",
        )
    finally:
        worker.stop()


def test_the_session_guard_sees_a_redis_restart(private_redis):
    """tests/conftest.py fails the session when the shared Redis's run_id changed:
    the run_id it reads is new after a restart and unchanged otherwise."""
    from tests.conftest import redis_run_id

    before = redis_run_id(private_redis.url)
    assert before is not None and redis_run_id(private_redis.url) == before
    private_redis.restart()
    after = redis_run_id(private_redis.url)
    assert after is not None and after != before
    private_redis.stop()
    assert redis_run_id(private_redis.url) is None
    private_redis.start()  # for the fixture's teardown
