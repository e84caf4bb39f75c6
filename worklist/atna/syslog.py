"""Sending audit messages: syslog (RFC 5424) over TLS (RFC 5425) or UDP (RFC 5426), or a
local rotating file.

The syslog message is what IHE ITI-20 (Record Audit Event) asks for: facility 10
(security/authorization), severity 5 (notice), MSGID ``IHE+RFC-3881``, the XML of the audit
message as MSG with a UTF-8 byte order mark. Over TLS each message is framed by its length
(RFC 5425 §4.3, octet counting); over UDP it is one datagram.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from worklist.errors import WorklistError

__all__ = [
    "AuditFile",
    "AuditTransport",
    "AuditTransportError",
    "SyslogTlsTransport",
    "SyslogUdpTransport",
    "TlsClientOptions",
    "syslog_message",
]

_PRI = 10 * 8 + 5  # facility 10 (authpriv), severity 5 (notice)
_MSGID = "IHE+RFC-3881"
_BOM = b"\xef\xbb\xbf"


class AuditTransportError(WorklistError, OSError):
    """An audit message could not be handed to the audit repository (to be tried again)."""


def syslog_message(
    xml: bytes, *, hostname: str, app_name: str = "radground", proc_id: str = "",
    at: datetime | None = None,
) -> bytes:
    """An RFC 5424 syslog message carrying ``xml`` (the audit message) as its MSG."""
    timestamp = (at or datetime.now(UTC)).isoformat(timespec="milliseconds")

    def field(value: str, limit: int) -> str:  # PRINTUSASCII, no spaces; "-" when empty
        value = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
        return value or "-"

    header = (
        f"<{_PRI}>1 {timestamp} {field(hostname, 255)} {field(app_name, 48)} "
        f"{field(proc_id, 128)} {_MSGID} - "
    )
    return header.encode("ascii") + _BOM + xml


class AuditTransport(Protocol):
    """Where audit messages go; ``send`` raises :class:`AuditTransportError` when it could not."""

    def send(self, message: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class TlsClientOptions:
    """TLS towards the audit repository: the CA bundle that signs its certificate, this
    node's client certificate (optional), the name its certificate must carry."""

    ca_file: Path
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    server_name: str = ""

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.client_cert_file is not None:
            context.load_cert_chain(
                str(self.client_cert_file),
                str(self.client_key_file) if self.client_key_file is not None else None,
            )
        return context


class SyslogTlsTransport:
    """RFC 5425: syslog over TLS, one connection kept open, reconnected after a failure.

    A message is handed over when ``sendall`` returned; the repository gives no
    acknowledgement (RFC 5425 has none), so a message written just before the connection
    breaks can be lost in the peer's buffers — the same guarantee every RFC 5425 sender has.
    """

    def __init__(self, host: str, port: int, tls: TlsClientOptions, *,
                 timeout: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._context = tls.context()
        self._server_name = tls.server_name or host
        self._socket: ssl.SSLSocket | None = None
        self._lock = threading.Lock()

    def _connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            return self._context.wrap_socket(raw, server_hostname=self._server_name)
        except BaseException:
            raw.close()
            raise

    def _peer_closed(self, sock: ssl.SSLSocket) -> bool:
        """Whether the repository closed the connection (it never sends anything else)."""
        sock.setblocking(False)
        try:
            return sock.recv(1) == b""
        except (ssl.SSLWantReadError, BlockingIOError):
            return False
        except OSError:
            return True
        finally:
            sock.setblocking(True)
            sock.settimeout(self.timeout)

    def send(self, message: bytes) -> None:
        frame = str(len(message)).encode("ascii") + b" " + message
        with self._lock:
            try:
                if self._socket is not None and self._peer_closed(self._socket):
                    self._close_socket()
                if self._socket is None:
                    self._socket = self._connect()
                self._socket.sendall(frame)
            except (OSError, ssl.SSLError) as exc:
                self._close_socket()
                raise AuditTransportError(
                    f"audit repository {self.host}:{self.port}: {exc}"
                ) from exc

    def _close_socket(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._socket = None

    def close(self) -> None:
        with self._lock:
            self._close_socket()


class SyslogUdpTransport:
    """RFC 5426: one datagram per message. UDP has no delivery guarantee: only a local error
    (no route, a refusal the kernel reports) is seen as a failure."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
        self._socket = socket.socket(family, socket.SOCK_DGRAM)

    def send(self, message: bytes) -> None:
        try:
            self._socket.sendto(message, (self.host, self.port))
        except OSError as exc:
            raise AuditTransportError(f"audit repository {self.host}:{self.port}: {exc}") from exc

    def close(self) -> None:
        self._socket.close()


class AuditFile:
    """A local audit file, one syslog message per line, rotated at ``max_bytes`` keeping
    ``backups`` old files (``audit.log.1`` newest); created ``0600`` in a ``0700`` folder.

    Processes share it safely: each write and rotation holds an exclusive ``flock`` on
    ``<file>.lock``.
    """

    def __init__(self, path: Path, *, max_bytes: int = 50 * 1024 * 1024, backups: int = 10) -> None:
        if max_bytes < 1 or backups < 0:
            raise ValueError("max_bytes must be >= 1 and backups >= 0")
        self.path, self.max_bytes, self.backups = Path(path), max_bytes, backups
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    def send(self, message: bytes) -> None:
        line = message.replace(b"\n", b" ") + b"\n"
        try:
            lock = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._rotate_if_full(len(line))
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
            finally:
                os.close(lock)
        except OSError as exc:
            raise AuditTransportError(f"audit file {self.path}: {exc}") from exc

    def _rotate_if_full(self, adding: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0 or size + adding <= self.max_bytes:
            return
        if self.backups == 0:
            self.path.unlink()
            return
        for number in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{number}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{number + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def close(self) -> None:
        pass
