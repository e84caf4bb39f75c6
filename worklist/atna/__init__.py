"""IHE ATNA audit trail: DICOM audit messages (PS3.15 A.5) sent over syslog (RFC 5424) with TLS
(RFC 5425) or UDP (RFC 5426), or kept in a local rotating file.

The application (``radground``) builds one :class:`AuditTrail` per process from its settings
and :func:`install`\\ s it; the parts that see auditable events report them here —
:func:`record` for code that has no trail handed to it (the web surface's logins, the
delivery step), the SCP through the hooks of :mod:`worklist.atna.hooks`. Without an installed
trail nothing is recorded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from worklist.atna.events import DicomPeer, NodeIdentity, StudyObjects
from worklist.atna.messages import AuditMessage
from worklist.atna.spool import Spool
from worklist.atna.syslog import (
    AuditFile,
    AuditTransportError,
    SyslogTlsTransport,
    SyslogUdpTransport,
    TlsClientOptions,
)
from worklist.atna.trail import MESSAGES_DROPPED, AuditTrail

__all__ = [
    "MESSAGES_DROPPED",
    "AuditFile",
    "AuditMessage",
    "AuditTrail",
    "AuditTransportError",
    "DicomPeer",
    "NodeIdentity",
    "Spool",
    "StudyObjects",
    "SyslogTlsTransport",
    "SyslogUdpTransport",
    "TlsClientOptions",
    "install",
    "installed",
    "record",
]

_trail: AuditTrail | None = None
_pid = 0


def install(trail: AuditTrail | None) -> AuditTrail | None:
    """Make ``trail`` this process's audit trail (``None``: none); returns the one it replaces."""
    global _trail, _pid
    previous = installed()
    _trail, _pid = trail, os.getpid()
    return previous


def installed() -> AuditTrail | None:
    """This process's audit trail, if the application installed one (a forked child has none
    until it installs its own: the sender thread stays in the parent)."""
    return _trail if _pid == os.getpid() else None


def record(builder: Callable[..., AuditMessage], /, **facts: Any) -> None:
    """Record ``builder(node, **facts)`` (a function of :mod:`worklist.atna.events`) in this
    process's audit trail; nothing without one. Never raises."""
    trail = installed()
    if trail is not None:
        trail.event(builder, **facts)
