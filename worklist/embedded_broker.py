"""The embedded broker: kombu's SQLite transport, whose waiting consumers are woken by publishers.

kombu's SQLAlchemy transport polls: a worker with nothing to do sleeps
``polling_interval`` between queries, so every hop of a study through the
embedded pipeline (node → gpu worker → io worker → delivery) waited for the
next poll: 0.1 s on average, 0.2 s at worst, per hop. Here each consuming
transport also listens on a Unix datagram socket in a directory named after
the broker's database, and a publisher, once its message is committed, sends
one byte to every socket there; an ack or reject wakes its own transport (a
freed prefetch slot). A woken consumer queries at once and finds the message.

The database stays the only place messages live: a lost, late or spurious
wake-up costs at most the poll the transport would have done anyway. Sockets
of processes that died are removed by the first publisher that finds them
refusing.

The transport has its own name: broker URLs ``radground+sqlite:///PATH`` use
it once :func:`register` added the alias ``radground`` to kombu's documented
alias table (``kombu.transport.TRANSPORT_ALIASES``); kombu's own ``sqla``
alias is never touched, so ``sqla+sqlite:///PATH`` is kombu's stock polling
transport on the same tables (the fallback). It subclasses kombu's SQLAlchemy
channel and transport and overrides the methods :data:`OVERRIDDEN` lists;
:func:`kombu_internals_problems` says when the installed kombu no longer has
them (kombu is pinned; see ``docs/third-party-patches.md``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import inspect
import itertools
import os
import select
import socket
import tempfile
import time
from pathlib import Path
from queue import Empty
from typing import Any

from kombu import transport as kombu_transports
from kombu.transport import sqlalchemy as sqla

from worklist.errors import IncompatibleKombuError

__all__ = [
    "ALIAS",
    "OVERRIDDEN",
    "POLLING_INTERVAL_SECONDS",
    "SQLITE_SCHEMES",
    "Transport",
    "kombu_internals_problems",
    "register",
    "sqlite_broker_path",
    "wake_consumers",
    "wake_directory",
]

#: The transport alias: broker URLs ``radground+sqlite:///PATH`` use this transport.
ALIAS = "radground"
#: Broker URL prefixes of a SQLite-file broker: this transport, and kombu's stock one (polling
#: only).
SQLITE_SCHEMES = (f"{ALIAS}+sqlite:///", "sqla+sqlite:///")
#: The longest a consumer waits between queries when no wake-up comes (kombu's stock
#: transport: 1 s, ``virtual.Transport.polling_interval``).
POLLING_INTERVAL_SECONDS = 0.2
#: kombu's methods and attributes this transport overrides or calls: (class, name, parameters
#: expected, or None for an attribute set in ``__init__``).
OVERRIDDEN: tuple[tuple[type, str, tuple[str, ...] | None], ...] = (
    (sqla.Channel, "_put", ("self", "queue", "payload", "kwargs")),
    (sqla.Channel, "basic_ack", ("self", "delivery_tag", "multiple")),
    (sqla.Channel, "basic_reject", ("self", "delivery_tag", "requeue")),
    (sqla.Transport, "__init__", ("self", "client", "kwargs")),
    (sqla.Transport, "drain_events", ("self", "connection", "timeout")),
    (sqla.Transport, "close_connection", ("self", "connection")),
    (sqla.Transport, "_deliver", ("self", "message", "queue")),
    (sqla.Transport.Cycle, "get", ("self", "callback", "kwargs")),
)

_socket_numbers = itertools.count()


def wake_directory(database_url: str) -> Path:
    """Where the consumers of the broker at ``database_url`` listen (a short path:
    Unix socket paths are limited to 107 bytes)."""
    digest = hashlib.sha256(database_url.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"radground-broker-{digest}"


def wake_consumers(directory: Path) -> None:
    """Send one byte to every consumer listening in ``directory``; never raises."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return  # nobody listens yet
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for entry in entries:
            try:
                sender.sendto(b"!", entry.path)
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOTSOCK):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)  # its process is gone
                # EAGAIN: that consumer has wake-ups pending already


class Channel(sqla.Channel):
    """kombu's SQLAlchemy channel that wakes consumers after each committed message."""

    # (kombu's own channels disagree on the argument's name: message in AbstractChannel,
    # payload in the SQLAlchemy channel this one extends)
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super()._put(queue, payload, **kwargs)
        wake_consumers(self.connection.wake_directory)

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)
        self.connection.wake_self()

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue)
        self.connection.wake_self()


class Transport(sqla.Transport):
    """kombu's SQLAlchemy transport; :meth:`drain_events` waits for a wake-up, not a fixed sleep."""

    Channel = Channel
    polling_interval = POLLING_INTERVAL_SECONDS

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.wake_directory = wake_directory(str(client.hostname))
        self._listener: socket.socket | None = None
        self._listener_path: str | None = None

    # (kombu's base Transport declares drain_events(connection, **kwargs); the virtual transport
    # this one extends, and kombu's callers, pass timeout)
    def drain_events(  # type: ignore[override]
        self, connection: Any, timeout: float | None = None
    ) -> None:
        if self.cycle is None:
            raise RuntimeError("drain_events on a transport without a channel cycle")
        started = time.monotonic()
        listener = self._listen()
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                waited = time.monotonic() - started
                if timeout is not None and waited >= timeout:
                    raise TimeoutError from None  # socket.timeout: "no event", as kombu's own loop
                wait = (
                    self.polling_interval
                    if timeout is None
                    else min(self.polling_interval, timeout - waited)
                )
                _wait_for_wakeup(listener, wait)

    def wake_self(self) -> None:
        """End this transport's current wait (a prefetch slot was freed)."""
        if self._listener_path is not None:
            with (
                socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender,
                contextlib.suppress(OSError),
            ):
                sender.setblocking(False)
                sender.sendto(b"!", self._listener_path)

    def close_connection(self, connection: Any) -> None:
        self._stop_listening()
        super().close_connection(connection)

    def _listen(self) -> socket.socket:
        """The wake-up socket, bound before the first query so that no wake-up is missed."""
        if self._listener is None:
            self.wake_directory.mkdir(mode=0o700, exist_ok=True)
            path = str(self.wake_directory / f"{os.getpid()}.{next(_socket_numbers)}")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a dead process with our PID left it
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            listener.bind(path)
            listener.setblocking(False)
            self._listener, self._listener_path = listener, path
        return self._listener

    def _stop_listening(self) -> None:
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(OSError):
                os.unlink(self._listener_path)  # type: ignore[arg-type]
            self._listener = self._listener_path = None


def _wait_for_wakeup(listener: socket.socket, seconds: float) -> None:
    if seconds > 0:
        select.select([listener], [], [], seconds)
    with contextlib.suppress(OSError):  # BlockingIOError: all read
        while listener.recv(64):
            pass


def kombu_internals_problems() -> list[str]:
    """What the installed kombu lacks of what this transport overrides (empty: all there)."""
    problems = []
    for owner, name, parameters in OVERRIDDEN:
        member = getattr(owner, name, None)
        if member is None:
            problems.append(f"{owner.__module__}.{owner.__qualname__} has no {name}")
            continue
        if parameters is not None:
            found = tuple(inspect.signature(member).parameters)
            if found != parameters:
                problems.append(f"{owner.__qualname__}.{name}{found}: expected {parameters}")
    if not isinstance(getattr(sqla.Transport, "polling_interval", None), (int, float)):
        problems.append("kombu's virtual Transport has no numeric polling_interval")
    return problems


def register() -> None:
    """Add the alias ``radground`` (this transport) to kombu's alias table, in this process.

    Only adds a name; kombu's own aliases, ``sqla`` included, are left as they are.

    Raises
    ------
    IncompatibleKombuError
        The alias names another transport already, or the installed kombu no longer has
        what this transport overrides (use ``sqla+sqlite:///...``, kombu's polling transport).
    """
    target = f"{__name__}:Transport"
    existing = kombu_transports.TRANSPORT_ALIASES.setdefault(ALIAS, target)
    if existing != target:
        raise IncompatibleKombuError(f"kombu transport alias {ALIAS!r} already names {existing!r}")
    problems = kombu_internals_problems()
    if problems:
        raise IncompatibleKombuError(
            f"the {ALIAS}+sqlite broker subclasses kombu's SQLAlchemy transport, and the installed "
            f"kombu no longer matches it ({'; '.join(problems)}); use workers.broker_url "
            "'sqla+sqlite:///...' (kombu's polling transport) or the kombu version pinned in "
            "pyproject.toml"
        )


def sqlite_broker_path(broker_url: str) -> Path | None:
    """The database file of a SQLite-file broker URL (either scheme); None for other brokers."""
    for scheme in SQLITE_SCHEMES:
        if broker_url.startswith(scheme):
            return Path(broker_url.removeprefix(scheme))
    return None
