"""Secrets (tokens, passwords, TLS private keys) come from files only the node user may open:
a file its group or others can read is refused naming the file and the chmod to run, and no
secret value is ever part of a message, a log line or a repr."""

from __future__ import annotations

import logging
import os
import re

import pytest

from radground.runtime import build_destination
from radground.secret_files import check_private_file, read_secret_file
from radground.settings import (
    DicomWebDestination,
    FhirEndpointSettings,
    Hl7Destination,
    SettingsError,
)
from tests.integration.tls import self_signed_certificate

TOKEN = "tok-7c1d0b5e-secret"
PASSWORD = "pw-5f3a-secret"


def _file(path, text: str, mode: int):
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("mode", "who"),
    [(0o644, "its group and others"), (0o640, "its group"), (0o604, "others"),
     (0o620, "its group"), (0o660, "its group")],
)
def test_a_token_file_open_to_group_or_others_is_refused_naming_file_and_chmod(
    tmp_path, mode, who
):
    token = _file(tmp_path / "ehr-token", TOKEN + "\n", mode)
    section = FhirEndpointSettings(url="https://ehr/fhir", auth="bearer", token_file=str(token))
    with pytest.raises(SettingsError) as refused:
        build_destination("EHR", section, calling_ae_title="RG")
    message = str(refused.value)
    assert message.startswith("destinations.EHR: the bearer token file ")
    assert f"open to {who} (mode {mode:04o})" in message
    assert f"run `chmod 600 {token}`" in message
    assert TOKEN not in message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_token_file_of_the_owner_alone_is_read(tmp_path, mode):
    token = _file(tmp_path / "ehr-token", TOKEN + "\n", mode)
    section = FhirEndpointSettings(url="https://ehr/fhir", auth="bearer", token_file=str(token))
    target = build_destination("EHR", section, calling_ae_title="RG")
    assert target.auth.headers() == {"Authorization": f"Bearer {TOKEN}"}
    assert TOKEN not in repr(target) and TOKEN not in str(target.auth)


def test_a_link_is_judged_by_the_file_it_points_to(tmp_path):
    """Kubernetes and systemd credentials are links into a folder of their own."""
    (tmp_path / "credentials").mkdir()
    real = _file(tmp_path / "credentials" / "token", TOKEN, 0o600)
    link = tmp_path / "token"
    link.symlink_to(real)
    assert read_secret_file(link, setting="destinations.EHR", what="the bearer token") == TOKEN
    real.chmod(0o644)
    with pytest.raises(SettingsError, match=re.escape(f"chmod 600 {link}")):
        read_secret_file(link, setting="destinations.EHR", what="the bearer token")


def test_a_password_file_open_to_others_is_refused(tmp_path):
    password = _file(tmp_path / "vna-password", PASSWORD, 0o644)
    section = DicomWebDestination(
        url="https://vna/dw", auth="basic", username="rg", password_file=str(password)
    )
    with pytest.raises(SettingsError, match=r"destinations\.VNA: the password file .*chmod 600"):
        build_destination("VNA", section, calling_ae_title="RG")
    password.chmod(0o600)
    target = build_destination("VNA", section, calling_ae_title="RG")
    assert target.auth.password == PASSWORD and PASSWORD not in repr(target)


def test_an_empty_or_missing_secret_file_is_named_without_a_value(tmp_path):
    empty = _file(tmp_path / "empty", "\n", 0o600)
    with pytest.raises(SettingsError, match=rf"the bearer token file {re.escape(str(empty))} is "
                                            "empty"):
        read_secret_file(empty, setting="destinations.EHR", what="the bearer token")
    with pytest.raises(SettingsError, match="No such file"):
        read_secret_file(tmp_path / "nowhere", setting="destinations.EHR", what="the token")
    with pytest.raises(SettingsError, match="not a regular file"):
        check_private_file(tmp_path, setting="web", what="the TLS key")


def test_a_tls_client_key_open_to_its_group_is_refused(tmp_path):
    cert, key = self_signed_certificate(tmp_path / "client")
    key.chmod(0o640)
    section = Hl7Destination(host="ris", port=2575, tls=True, ca_bundle=str(cert),
                             client_cert=str(cert), client_key=str(key))
    with pytest.raises(SettingsError) as refused:
        build_destination("RIS", section, calling_ae_title="RG")
    assert str(refused.value) == (
        f"destinations.RIS: the TLS client key file {key} is open to its group (mode 0640); it "
        f"must be the node user's alone: run `chmod 600 {key}`"
    )
    key.chmod(0o600)
    assert build_destination("RIS", section, calling_ae_title="RG").tls.client_key == key


def test_a_key_inside_the_client_certificate_file_is_checked_too(tmp_path):
    cert, key = self_signed_certificate(tmp_path / "client")
    both = _file(tmp_path / "client.pem", cert.read_text() + key.read_text(), 0o644)
    section = FhirEndpointSettings(url="https://ehr/fhir", client_cert=str(both))
    with pytest.raises(SettingsError, match=r"the TLS client certificate and key file .*chmod 600"):
        build_destination("EHR", section, calling_ae_title="RG")
    # a certificate without a key is public
    section = FhirEndpointSettings(url="https://ehr/fhir", ca_bundle=str(cert))
    cert.chmod(0o644)
    assert build_destination("EHR", section, calling_ae_title="RG").tls is not None


def test_the_web_tls_key_open_to_others_is_refused_before_start(tmp_path):
    from radground.settings import WebSettings
    from radground.web_app import check_tls_files

    cert, key = self_signed_certificate(tmp_path / "web")
    key.chmod(0o644)
    web = WebSettings(tls_certificate=cert, tls_key=key)
    refused = rf"^web\.tls_key: the TLS key file {re.escape(str(key))} is open to its group and"
    with pytest.raises(SettingsError, match=refused + r" others \(mode 0644\)"):
        check_tls_files(web)
    key.chmod(0o600)
    check_tls_files(web)


def test_secrets_from_the_environment_are_not_logged(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RG_TEST_EHR_TOKEN", TOKEN)
    section = FhirEndpointSettings(url="https://ehr/fhir", auth="bearer",
                                   token_env="RG_TEST_EHR_TOKEN")
    with caplog.at_level(logging.DEBUG):
        target = build_destination("EHR", section, calling_ae_title="RG")
        logging.getLogger("test").debug("built %r", target)
    assert target.auth.headers()["Authorization"].endswith(TOKEN)
    assert TOKEN not in caplog.text


def test_the_owner_check_does_not_depend_on_the_umask(tmp_path):
    """A file created by the caller's permissive umask is judged by its mode, not the umask."""
    previous = os.umask(0o002)
    try:
        token = tmp_path / "token"
        token.write_text(TOKEN)
    finally:
        os.umask(previous)
    assert token.stat().st_mode & 0o077
    with pytest.raises(SettingsError, match="open to its group and others"):
        read_secret_file(token, setting="destinations.EHR", what="the bearer token")
