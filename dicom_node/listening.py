"""The node's listening socket: bound once, owned by the node, shared only with its own processes.

The node process binds its address and port without ``SO_REUSEPORT`` and
hands the listening socket to its listener processes, which accept on it
together (the kernel gives each connection to one of them). Any other
process on that address and port (another node, dcmtk's ``storescp``,
Orthanc) makes the bind fail, and the error names the other process where
Linux lets this user see it (``/proc/net/tcp*`` and ``/proc/<pid>/fd``).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from dicom_node.errors import PortInUseError

__all__ = ["bind_listening_socket", "describe_port_owner"]

_LISTEN = "0A"  # TCP state in /proc/net/tcp*


def bind_listening_socket(host: str, port: int, *, backlog: int = 128) -> socket.socket:
    """A listening TCP socket on ``(host, port)`` that no other process shares.

    ``SO_REUSEADDR`` is set (a restarted node may bind while old connections
    are in TIME_WAIT); ``SO_REUSEPORT`` is not, so the bind fails while any
    socket listens on the port.

    Raises
    ------
    PortInUseError
        Another process listens on the address and port; the message names it
        where it can be found.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
        listening.listen(backlog)
    except OSError as exc:
        listening.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(host, port, describe_port_owner(port)) from None
        raise
    return listening


def describe_port_owner(port: int) -> str | None:
    """"pid N: command line" of the process(es) listening on TCP ``port``, or ``None``.

    Reads ``/proc/net/tcp`` and ``/proc/net/tcp6`` for the listening sockets'
    inodes and ``/proc/*/fd`` for the processes holding them; processes of
    other users are not visible (then only "another process" can be said).
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    owners = []
    for pid, command in _processes_holding(inodes):
        owners.append(f"pid {pid}: {command}" if command else f"pid {pid}")
    return ", ".join(owners) or None


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port:
                inodes.add(fields[9])
    return inodes


def _processes_holding(inodes: set[str]) -> list[tuple[int, str]]:
    wanted = {f"socket:[{inode}]" for inode in inodes}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            holds = any(os.readlink(fd) in wanted for fd in (entry / "fd").iterdir())
        except OSError:
            continue  # another user's process, or gone meanwhile
        if holds:
            found.append((int(entry.name), _command_line(entry)))
    return sorted(found)


def _command_line(process: Path) -> str:
    try:
        raw = (process / "cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)[:200]
