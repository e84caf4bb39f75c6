"""A private rsyslog audit repository for tests (Debian's ``rsyslog`` and ``rsyslog-gnutls``).

:class:`PrivateRsyslog` runs ``rsyslogd -n`` with its own configuration, work directory and
pid file under a test folder, listening on free loopback ports: RFC 5425 syslog over TLS
(``imtcp`` with the ``gtls`` stream driver, presenting the given certificate) and/or RFC 5426
UDP (``imudp``). Every message it receives is written, as received (``%rawmsg%``), one per
line, to ``received.log``. It never touches the machine's own syslog: no ``imuxsock``, no
``imklog``, no system configuration. :meth:`stop` ends it (SIGTERM, then SIGKILL), and
:meth:`start` starts it again on the same ports.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

__all__ = ["PrivateRsyslog", "free_udp_port"]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int, table: str) -> bool:
    """Whether 127.0.0.1:``port`` is bound in /proc/net/``table`` (tcp: in LISTEN state)."""
    wanted = f"0100007F:{port:04X}"
    for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and (table != "tcp" or fields[3] == "0A"):
            return True
    return False


class PrivateRsyslog:
    """rsyslogd receiving audit messages over TLS (``tls``: certificate and key) and/or UDP."""

    def __init__(self, folder: Path, *, tls: tuple[Path, Path] | None = None,
                 udp: bool = False) -> None:
        if shutil.which("rsyslogd") is None:
            pytest.skip("rsyslogd is not installed (apt-get install rsyslog rsyslog-gnutls)")
        if tls is not None and not list(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so")):
            pytest.skip("rsyslog's gtls stream driver is not installed (rsyslog-gnutls)")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.received = folder / "received.log"
        self.tls_port = _free_tcp_port() if tls is not None else None
        self.udp_port = free_udp_port() if udp else None
        self._config = folder / "rsyslog.conf"
        self._config.write_text(self._configuration(tls), encoding="utf-8")
        self._process: subprocess.Popen[bytes] | None = None
        self.start()

    def _configuration(self, tls: tuple[Path, Path] | None) -> str:
        lines = [f'global(workDirectory="{self.folder}" maxMessageSize="64k"']
        if tls is not None:
            cert, key = tls
            lines[0] += (
                f' DefaultNetstreamDriverCAFile="{cert}" DefaultNetstreamDriverCertFile="{cert}"'
                f' DefaultNetstreamDriverKeyFile="{key}"'
            )
        lines[0] += ")"
        if self.tls_port is not None:
            lines += [
                ('module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"'
                 ' StreamDriver.AuthMode="anon")'),
                f'input(type="imtcp" port="{self.tls_port}" address="127.0.0.1")',
            ]
        if self.udp_port is not None:
            lines += [
                'module(load="imudp")',
                f'input(type="imudp" port="{self.udp_port}" address="127.0.0.1")',
            ]
        lines += [
            'template(name="raw" type="string" string="%rawmsg%\\n")',
            f'action(type="omfile" file="{self.received}" template="raw")',
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        log = (self.folder / "rsyslogd.out").open("ab")
        self._process = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(self._config), "-i", str(self.folder / "rsyslogd.pid")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {(self.folder / 'rsyslogd.out').read_text()}")
            if (self.tls_port is None or _listening(self.tls_port, "tcp")) and (
                self.udp_port is None or _listening(self.udp_port, "udp")
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("rsyslogd did not start listening")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def lines(self) -> list[bytes]:
        """The messages received so far, one per line (rsyslog writes them as they come)."""
        try:
            return [line for line in self.received.read_bytes().splitlines() if line]
        except FileNotFoundError:
            return []

    def wait_for(self, count: int, timeout: float = 20.0) -> list[bytes]:
        """At least ``count`` received messages (fails the test after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.1)
