"""The embedded broker wakes waiting consumers; the database stays the only store of messages.

With the poll pushed out to a minute, a message must still arrive at once: then
delivery rests on the wake-up alone.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from kombu import Connection

from worklist import embedded_broker
from worklist.errors import IncompatibleKombuError


@pytest.fixture
def broker_url(tmp_path):
    embedded_broker.register()
    url = f"radground+sqlite:///{tmp_path / 'broker.sqlite'}"
    yield url
    shutil.rmtree(
        embedded_broker.wake_directory(url.removeprefix("radground+")), ignore_errors=True
    )


def _consume_one(url: str, received: dict) -> threading.Thread:
    def run() -> None:
        with Connection(url) as connection:
            received["transport"] = type(connection.transport)
            queue = connection.SimpleQueue("gpu")
            received["listening"].set()
            started = time.monotonic()
            message = queue.get(block=True, timeout=30)
            received["after"] = time.monotonic() - started
            received["payload"] = message.payload
            message.ack()
            queue.close()

    received["listening"] = threading.Event()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert received["listening"].wait(10)
    time.sleep(0.5)  # the consumer is in its wait
    return thread


def _publish(url: str, payload: dict) -> None:
    with Connection(url) as connection:
        queue = connection.SimpleQueue("gpu")
        queue.put(payload)
        queue.close()


def test_a_published_message_wakes_the_waiting_consumer(broker_url, monkeypatch):
    monkeypatch.setattr(embedded_broker.Transport, "polling_interval", 60.0)
    received: dict = {}
    consumer = _consume_one(broker_url, received)

    _publish(broker_url, {"job": 7})
    consumer.join(20)

    assert received["transport"] is embedded_broker.Transport
    assert received["payload"] == {"job": 7}
    assert received["after"] < 10  # woken, not polled (the poll is 60 s here)


def test_a_lost_wakeup_still_delivers_by_polling(broker_url, monkeypatch):
    monkeypatch.setattr(embedded_broker, "wake_consumers", lambda directory: None)
    received: dict = {}
    consumer = _consume_one(broker_url, received)

    _publish(broker_url, {"job": 8})
    consumer.join(20)

    assert received["payload"] == {"job": 8}


def test_sockets_of_dead_consumers_are_removed(tmp_path):
    directory = tmp_path / "wake"
    directory.mkdir()
    alive = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    alive.bind(str(directory / "1.0"))
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(directory / "2.0"))
    dead.close()  # its file stays, as after a crash

    embedded_broker.wake_consumers(directory)

    assert sorted(p.name for p in directory.iterdir()) == ["1.0"]
    assert alive.recv(8) == b"!"
    alive.close()


def test_wake_self_ends_the_transport_wait(broker_url):
    with Connection(broker_url) as connection:
        connection.connect()
        transport = connection.transport
        listener = transport._listen()
        transport.wake_self()
        started = time.monotonic()
        embedded_broker._wait_for_wakeup(listener, 30)
        assert time.monotonic() - started < 5
    # closed: gone
    assert not any(embedded_broker.wake_directory(broker_url.removeprefix("radground+")).iterdir())


def test_installed_kombu_has_everything_the_transport_overrides():
    """Fails loudly when an upgraded kombu renamed or re-signed what the transport subclasses."""
    assert embedded_broker.kombu_internals_problems() == []


def test_a_kombu_without_an_overridden_method_is_reported_and_refused(monkeypatch):
    monkeypatch.delattr("kombu.transport.virtual.base.Transport._deliver")
    assert any("_deliver" in problem for problem in embedded_broker.kombu_internals_problems())
    with pytest.raises(IncompatibleKombuError, match="sqla\\+sqlite"):
        embedded_broker.register()


def test_registering_adds_an_alias_and_leaves_kombus_sqla_alone(tmp_path):
    from kombu.transport import TRANSPORT_ALIASES
    from kombu.transport.sqlalchemy import Transport as KombuTransport

    embedded_broker.register()

    assert TRANSPORT_ALIASES["sqla"] == "kombu.transport.sqlalchemy:Transport"
    with Connection(f"sqla+sqlite:///{tmp_path / 'b.sqlite'}") as stock:
        assert type(stock.transport) is KombuTransport
    with Connection(f"radground+sqlite:///{tmp_path / 'b.sqlite'}") as woken:
        assert type(woken.transport) is embedded_broker.Transport


def test_both_sqlite_schemes_name_the_broker_file():
    assert embedded_broker.sqlite_broker_path("radground+sqlite:///var/b.sqlite") == Path(
        "var/b.sqlite"
    )
    assert embedded_broker.sqlite_broker_path("sqla+sqlite:////abs/b.sqlite") == Path(
        "/abs/b.sqlite"
    )
    assert embedded_broker.sqlite_broker_path("redis://localhost:6379/0") is None


@pytest.mark.parametrize("package", ["kombu", "celery"])
def test_kombu_and_celery_have_upper_bounds_that_the_installed_versions_meet(package):
    """The transport was checked against the pinned versions only: pyproject must bound them."""
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement

    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    requirements = [
        Requirement(r) for r in tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    ]
    (requirement,) = [r for r in requirements if r.name == package]
    assert any(spec.operator == "<" for spec in requirement.specifier)
    assert version(package) in requirement.specifier
