"""The application's audit trail from ``[audit]``: `radground users` records account changes in
the local audit file; the trail is rebuilt when the settings change and absent when disabled."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from click.testing import CliRunner

from radground.audit import start_audit_trail, stop_audit_trail
from radground.cli import cli
from radground.settings import AuditSettings, Settings
from tests.atna_checks import event_id, parse_syslog, participant_object_ids, schema_errors
from worklist import atna


def test_users_add_records_a_security_alert_in_the_audit_file(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("RADGROUND_"):
            monkeypatch.delenv(key)
    audit_file = tmp_path / "audit" / "audit.log"
    config = tmp_path / "radground.toml"
    config.write_text(
        f"[database]\nurl = 'sqlite:///{tmp_path / 'index.db'}'\n"
        f"[audit]\nfile = '{audit_file}'\nspool_dir = '{tmp_path / 'spool'}'\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        cli, ["--config", str(config), "users", "add", "ann", "--role", "admin",
              "--password-stdin"], input="correct horse battery\ncorrect horse battery\n",
    )
    assert result.exit_code == 0, result.output
    assert atna.installed() is None  # the command stopped its trail
    (line,) = audit_file.read_bytes().splitlines()
    message = parse_syslog(line)
    assert schema_errors(message.xml) == []
    assert event_id(message.root) == "110113"
    assert participant_object_ids(message.root, "11") == ["ann"]
    assert stat.S_IMODE(audit_file.stat().st_mode) == 0o600


def test_the_trail_follows_the_settings(tmp_path: Path):
    first = Settings(audit=AuditSettings(file=tmp_path / "a.log", spool_dir=tmp_path / "s"))
    second = Settings(audit=AuditSettings(file=tmp_path / "b.log", spool_dir=tmp_path / "s"))
    try:
        trail = start_audit_trail(first)
        assert trail is not None and start_audit_trail(first) is trail
        other = start_audit_trail(second)
        assert other is not trail and atna.installed() is other
        assert start_audit_trail(Settings(audit=AuditSettings(enabled=False))) is None
        assert atna.installed() is None
    finally:
        stop_audit_trail()


def test_a_client_key_others_may_read_refuses_to_start(tmp_path: Path):
    import pytest

    from radground.settings import SettingsError
    from tests.integration.tls import self_signed_certificate

    cert, key = self_signed_certificate(tmp_path / "client")
    key.chmod(0o644)
    settings = Settings(audit=AuditSettings(
        transport="tls", host="127.0.0.1", ca_file=str(cert), client_cert_file=str(cert),
        client_key_file=str(key), spool_dir=tmp_path / "s",
    ))
    with pytest.raises(SettingsError, match=r"audit\.client_key_file.*chmod 600"):
        start_audit_trail(settings)
    assert atna.installed() is None
    key.chmod(0o600)
    try:
        assert start_audit_trail(settings) is not None
    finally:
        stop_audit_trail()
