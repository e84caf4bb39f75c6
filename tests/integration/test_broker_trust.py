"""The Celery broker: TLS with the server's certificate checked, and no remote control.

A private redis-server speaking TLS only (signed by a test CA) carries tasks for a real
worker process configured as ``radground worker`` configures it, and is refused with a CA
that did not sign it or with the system's CAs; a worker ignores ``shutdown`` and
``pool_restart`` broadcast by anyone who can write to the broker.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery import Celery
from kombu import Connection
from kombu.exceptions import OperationalError as KombuOperationalError

from radground.runtime import broker_tls_options
from radground.settings import WorkerSettings
from tests.integration.pki import issue, make_ca
from tests.integration.private_redis import PrivateRedis
from tests.integration.radground_processes import REPO, clean_env, wait_until

pytestmark = pytest.mark.redis


def _sender(url: str, ca_bundle: str = "") -> Celery:
    sender = Celery("probe-sender", broker=url)
    sender.conf.broker_use_ssl = broker_tls_options(
        WorkerSettings(broker_url=url, broker_ca_bundle=ca_bundle)
    )
    sender.conf.broker_connection_retry_on_startup = True
    return sender


def _worker(log: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.integration.celery_probe", *args],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**clean_env(), **(env or {})},
        )


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)


def _runs(sender: Celery, marker_dir: Path, name: str, timeout: float = 60) -> None:
    sender.send_task("probe.hold", args=[str(marker_dir), name, 0], queue="io")
    wait_until(lambda: (marker_dir / f"{name}.done").exists(), timeout, what=f"task {name} run")


def _refused(url: str, ssl_options: dict | None) -> bool:
    with Connection(url, ssl=ssl_options, connect_timeout=5) as connection:
        try:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=10)
        except KombuOperationalError as exc:  # kombu's wrapping of redis-py's connection error
            return "CERTIFICATE_VERIFY_FAILED" in str(exc)
        return False


@pytest.fixture
def tls_redis(tmp_path):
    ca = make_ca(tmp_path / "pki", "broker-ca")
    server = issue(ca, tmp_path / "pki", "redis")
    redis = PrivateRedis(tmp_path, tls=(server.cert, server.key, ca.cert))
    redis.start()
    yield redis, ca
    redis.stop()


def test_a_worker_uses_a_tls_redis_broker_checked_against_its_ca_bundle(tls_redis, tmp_path):
    redis, ca = tls_redis
    worker = _worker(tmp_path / "worker.log", redis.url, str(ca.cert))
    try:
        _runs(_sender(redis.url, str(ca.cert)), tmp_path, "over-tls")
    finally:
        _stop(worker)

    # a CA that did not sign the broker's certificate, and the system's CAs: refused
    stranger = make_ca(tmp_path / "other", "other-ca")
    for ca_bundle in (str(stranger.cert), ""):
        options = broker_tls_options(WorkerSettings(broker_url=redis.url,
                                                    broker_ca_bundle=ca_bundle))
        assert _refused(redis.url, options), ca_bundle or "the system's CAs"
    # ... which kombu, left alone, would not have checked
    assert not _refused(redis.url, None)


@pytest.mark.parametrize("remote_control", [False, True], ids=["radground", "celery-default"])
def test_a_broadcast_shutdown_or_pool_restart_does_not_steer_a_worker(tmp_path, remote_control):
    redis = PrivateRedis(tmp_path)
    redis.start()
    env = {"RG_PROBE_REMOTE_CONTROL": "1"} if remote_control else {}
    worker = _worker(tmp_path / "worker.log", redis.url, env=env)
    try:
        sender = _sender(redis.url)
        _runs(sender, tmp_path, "before")
        sender.control.broadcast("pool_restart", arguments={"reload": True})
        sender.control.broadcast("shutdown")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.2)
        if remote_control:  # the control case: Celery's default obeys anyone on the broker
            assert worker.poll() is not None, "a worker with remote control ignored shutdown"
            return
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
        _runs(sender, tmp_path, "after")
    finally:
        _stop(worker)
        redis.stop()

