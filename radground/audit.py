"""The process's IHE ATNA audit trail, built from ``[audit]``
(:mod:`worklist.atna`: messages, syslog transports, spool)."""

from __future__ import annotations

import getpass
from pathlib import Path

from radground.secret_files import check_private_file
from radground.settings import AuditSettings, Settings
from worklist import atna
from worklist.atna import events
from worklist.atna.syslog import AuditTransport

__all__ = ["application_started", "application_stopping", "start_audit_trail", "stop_audit_trail"]


#: The settings the installed trail was built from.
_installed_for: tuple[AuditSettings, str] | None = None


def _transport(audit: AuditSettings) -> AuditTransport:
    if audit.transport == "tls":
        if audit.client_key_file:  # refused when its group or others may read it
            check_private_file(audit.client_key_file, setting="audit.client_key_file",
                               what="the audit repository client key")
        return atna.SyslogTlsTransport(audit.host, audit.port, atna.TlsClientOptions(
            ca_file=Path(audit.ca_file),
            client_cert_file=Path(audit.client_cert_file) if audit.client_cert_file else None,
            client_key_file=Path(audit.client_key_file) if audit.client_key_file else None,
            server_name=audit.server_name,
        ))
    if audit.transport == "udp":
        return atna.SyslogUdpTransport(audit.host, audit.port)
    return atna.AuditFile(
        audit.file, max_bytes=audit.file_max_mb * 1024 * 1024, backups=audit.file_backups
    )


def start_audit_trail(settings: Settings) -> atna.AuditTrail | None:
    """This process's audit trail (installed for :func:`worklist.atna.record`): the one already
    installed when it was built from the same settings, else a new one replacing it; ``None``
    when ``[audit] enabled`` is false.

    Raises :class:`~radground.settings.SettingsError` for a client key its group or others may
    read, ``OSError`` / ``ssl.SSLError`` for an unreadable CA bundle or client certificate
    (start-up fails, naming it); never for an unreachable repository.
    """
    global _installed_for
    audit = settings.audit
    wanted = (audit, settings.node.ae_title)
    current = atna.installed()
    if current is not None and _installed_for == wanted:
        return current
    if current is not None:  # built from other settings (tests run several nodes in turn)
        stop_audit_trail()
    if not audit.enabled:
        return None
    trail = atna.AuditTrail(
        _transport(audit),
        node=events.NodeIdentity.here(
            settings.node.ae_title, audit_source_id=audit.audit_source_id,
            enterprise_site_id=audit.enterprise_site_id,
        ),
        spool=atna.Spool(audit.spool_dir, max_messages=audit.spool_max_messages),
        retry_seconds=audit.retry_seconds,
    )
    atna.install(trail)
    _installed_for = wanted
    return trail


def stop_audit_trail(timeout: float = 5.0) -> None:
    """Send what can be sent within ``timeout`` and stop this process's audit trail."""
    trail = atna.install(None)
    if trail is not None:
        trail.close(timeout)


def _launcher() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (containers)
        return ""


def application_started() -> None:
    """Application Activity: Application Start (PS3.15 A.5.3.1)."""
    atna.record(events.application_activity, started=True, launcher=_launcher())


def application_stopping() -> None:
    """Application Activity: Application Stop."""
    atna.record(events.application_activity, started=False, launcher=_launcher())
