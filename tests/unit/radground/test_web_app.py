"""The web process's start-up pieces: its URL, its port claim, its access log without PHI."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from dicom_node.uids import short_uid
from radground.cli import cli
from radground.settings import SettingsError, WebSettings
from radground.web_app import (
    RedactedAccessLog,
    WebPortInUseError,
    check_tls_files,
    claim_web_port,
    console_url,
    redact_path,
)


def test_console_url_names_scheme_host_port_and_base_path(tmp_path: Path):
    plain = WebSettings()
    assert console_url(plain, ("127.0.0.1", 8080)) == "http://127.0.0.1:8080/"
    assert console_url(plain, ("0.0.0.0", 8443)) == "http://127.0.0.1:8443/"
    assert console_url(plain, ("::", 80)) == "http://[::1]:80/"
    tls = WebSettings(tls_certificate=tmp_path / "c.pem", tls_key=tmp_path / "k.pem",
                      base_path="/radground/")
    assert console_url(tls, ("10.1.2.3", 443)) == "https://10.1.2.3:443/radground/"


def test_access_log_paths_carry_no_uids_and_no_query_strings():
    study = "1.2.826.0.1.3680043.8.498.1"
    assert redact_path(f"/api/v1/studies/{study}/revisions?patient=DOE") == (
        f"/api/v1/studies/{short_uid(study)}/revisions"
    )
    assert redact_path("/api/v1/jobs/17") == "/api/v1/jobs/17"
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("10.0.0.1:5000", "POST", f"/dicomweb/studies/{study}?a=b", "1.1",
                                200), None)
    assert RedactedAccessLog().filter(record)
    assert study not in record.getMessage() and "?a=b" not in record.getMessage()
    assert short_uid(study) in record.getMessage()


def test_a_taken_web_port_names_the_setting_and_the_holder():
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        with pytest.raises(WebPortInUseError) as raised:
            claim_web_port(WebSettings(port=port))
    message = str(raised.value)
    assert f"port {port} on 127.0.0.1 is already in use by pid" in message
    assert "web.port" in message
    claimed = claim_web_port(WebSettings(port=port))  # free again
    claimed.close()


def test_unreadable_tls_files_are_refused_before_start(tmp_path: Path):
    bad = tmp_path / "cert.pem"
    bad.write_text("not a certificate")
    bad.chmod(0o600)
    with pytest.raises(SettingsError, match="web.tls_certificate"):
        check_tls_files(WebSettings(tls_certificate=bad, tls_key=bad))
    with pytest.raises(SettingsError, match="No such file"):
        check_tls_files(WebSettings(tls_certificate=tmp_path / "x", tls_key=tmp_path / "y"))


def test_web_refuses_to_start_without_a_destinations_secret(tmp_path: Path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("RADGROUND_") or key == "RG_TEST_EHR_TOKEN":
            monkeypatch.delenv(key)
    config = tmp_path / "c.toml"
    config.write_text(
        f"[web]\nport = 0\n[database]\nurl = 'sqlite:///{tmp_path / 'db.sqlite'}'\n"
        "[destinations.EHR]\ntype = 'fhir'\nurl = 'https://ehr.invalid/fhir'\nauth = "
        "'bearer'\ntoken_env = 'RG_TEST_EHR_TOKEN'\n"
    )
    result = CliRunner().invoke(cli, ["--config", str(config), "web"])
    assert result.exit_code == 1
    assert "RG_TEST_EHR_TOKEN" in result.output and "empty or unset" in result.output
    assert "console:" not in result.output
