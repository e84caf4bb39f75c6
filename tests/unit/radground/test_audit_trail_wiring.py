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
