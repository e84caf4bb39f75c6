"""HTTP deliveries trust only what they are told to, and never send a credential in clear.

Real servers on loopback ports (:class:`FhirTestServer`, plain and with TLS, with and without
mutual TLS), destinations built from configuration files the way every RadGround process
builds them (:func:`radground.settings.load_settings`, :func:`radground.runtime.build_destination`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from radground.runtime import build_destination
from radground.settings import SettingsError, load_settings
from tests.integration.fhir_server import FhirTestServer
from tests.integration.pki import issue, make_ca
from worklist.destinations import (
    ArtifactFile,
    DeliveryStatus,
    FhirTarget,
    FhirTransactionDestination,
    HttpAuth,
    PlainTextCredentialError,
    make_client,
)

TOKEN = "tok-5ecret-7a1"
TOKEN_ENV = "RG_TEST_TRUST_TOKEN"
#: A transaction Bundle with one conditional create (test data, no patient).
BUNDLE = {
    "resourceType": "Bundle",
    "type": "transaction",
    "entry": [
        {
            "fullUrl": "urn:uuid:6a0e5b57-0d1b-4c8e-9e57-1f2a9d3c4b5e",
            "resource": {
                "resourceType": "Device",
                "identifier": [{"system": "urn:oid:2.25.1", "value": "trust-test"}],
            },
            "request": {
                "method": "POST",
                "url": "Device",
                "ifNoneExist": "identifier=urn:oid:2.25.1|trust-test",
            },
        }
    ],
}


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


def _ehr(tmp_path: Path, url: str, extra: str = "", *, auth: bool = True) -> FhirTarget:
    """The EHR destination a configuration file with ``extra`` lines builds."""
    config = tmp_path / "radground.toml"
    credential = f'auth = "bearer"\ntoken_env = "{TOKEN_ENV}"\n' if auth else ""
    config.write_text(f'[destinations.EHR]\ntype = "fhir"\nurl = "{url}"\n{credential}{extra}')
    settings = load_settings(config)
    target = build_destination("EHR", settings.destinations["EHR"], calling_ae_title="RADGROUND")
    assert isinstance(target, FhirTarget)
    return target


def _deliver(tmp_path: Path, target: FhirTarget):
    bundle = tmp_path / "fhir-EHR.json"
    bundle.write_text(json.dumps(BUNDLE))
    artifact = ArtifactFile(kind="fhir", language="en", object_uid="b1", path=bundle)
    return FhirTransactionDestination().deliver([artifact], target)


def test_a_credential_for_an_http_ehr_is_refused_at_load_and_never_reaches_it(tmp_path, caplog):
    with FhirTestServer() as ehr:
        with pytest.raises(SettingsError) as refused:
            _ehr(tmp_path, ehr.base_url)
        message = str(refused.value)
        assert "destinations.EHR" in message and "insecure = true" in message
        assert "https://" in message and TOKEN not in message
        with pytest.raises(PlainTextCredentialError, match="'EHR'.*insecure = true"):
            FhirTarget(url=ehr.base_url, auth=HttpAuth.bearer(TOKEN), name="EHR")

        # the same EHR without a credential: delivered, and no Authorization header arrives
        assert _deliver(tmp_path, _ehr(tmp_path, ehr.base_url, auth=False)).status is (
            DeliveryStatus.DELIVERED
        )
        assert ehr.received and all("authorization" not in r.headers for r in ehr.received)

        # explicitly insecure: the header is sent (the server does capture it), with warnings
        caplog.set_level(logging.WARNING)
        insecure = _ehr(tmp_path, ehr.base_url, "insecure = true\n")
        assert "destinations.EHR: insecure = true" in caplog.text
        caplog.clear()
        for _ in range(2):
            assert _deliver(tmp_path, insecure).status is DeliveryStatus.DELIVERED
        assert ehr.received[-1].headers["authorization"] == f"Bearer {TOKEN}"
        first_use = [r for r in caplog.records if "with insecure = true" in r.getMessage()]
        assert len(first_use) == 1 and first_use[0].levelno == logging.WARNING
        assert TOKEN not in caplog.text


def test_https_ehr_certificates_are_checked_against_the_ca_bundle(tmp_path, caplog):
    with FhirTestServer(tls=True) as ehr:
        # the system's trust store does not know the EHR's private certificate: refused, nothing
        # sent, never retried into success by turning the check off
        refused = _deliver(tmp_path, _ehr(tmp_path, ehr.base_url))
        assert refused.status is DeliveryStatus.FINAL
        assert "certificate" in refused.answer and not ehr.received

        trusted = _ehr(tmp_path, ehr.base_url, f'ca_bundle = "{ehr.ca_file}"\n')
        assert _deliver(tmp_path, trusted).status is DeliveryStatus.DELIVERED
        assert ehr.received[-1].headers["authorization"] == f"Bearer {TOKEN}"

        caplog.set_level(logging.WARNING)
        assert _deliver(tmp_path, _ehr(tmp_path, ehr.base_url, "insecure = true\n")).status is (
            DeliveryStatus.DELIVERED
        )
        assert "insecure = true" in caplog.text


def test_a_dicomweb_client_checks_the_certificate_by_default(tmp_path):
    with (
        FhirTestServer(tls=True) as server,
        make_client() as client,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.get(server.base_url + "/metadata")


def test_mutual_tls_presents_the_client_certificate(tmp_path):
    clients = make_ca(tmp_path / "pki", "hospital-clients")
    radground = issue(clients, tmp_path / "pki", "radground", client=True)
    stranger = issue(make_ca(tmp_path / "other", "other-ca"), tmp_path / "other", "x", client=True)
    with FhirTestServer(tls=True) as ehr:
        ehr.require_client_certificate(clients.cert)
        trust = f'ca_bundle = "{ehr.ca_file}"\n'

        without = _deliver(tmp_path, _ehr(tmp_path, ehr.base_url, trust))
        assert without.status is not DeliveryStatus.DELIVERED and not ehr.received
        unknown = _ehr(tmp_path, ehr.base_url,
                       trust + f'client_cert = "{stranger.cert}"\nclient_key = "{stranger.key}"\n')
        assert _deliver(tmp_path, unknown).status is not DeliveryStatus.DELIVERED
        assert not ehr.received

        known = _ehr(tmp_path, ehr.base_url,
                     trust + f'client_cert = "{radground.cert}"\nclient_key = "{radground.key}"\n')
        assert _deliver(tmp_path, known).status is DeliveryStatus.DELIVERED
        assert len(ehr.received) == 1
