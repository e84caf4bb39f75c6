"""Settings of outbound trust: a destination's insecure switch, credentials over plain HTTP,
the broker's TLS options and Celery's remote control, the database URL's sslmode."""

from __future__ import annotations

import logging
import ssl

import pytest
from click.testing import CliRunner
from sqlalchemy.exc import OperationalError

from radground.cli import cli
from radground.runtime import broker_tls_options, build_destination, configure_celery
from radground.settings import Settings, SettingsError, WorkerSettings, load_settings
from worklist.destinations import DicomWebTarget, Hl7Target


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("RADGROUND_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("RG_TEST_VNA_PASSWORD", "pw-51")


def _load(tmp_path, text: str) -> Settings:
    config = tmp_path / "radground.toml"
    config.write_text(text)
    return load_settings(config)


_VNA = '[destinations.VNA]\ntype = "dicomweb"\nurl = "{url}"\n'
_BASIC = 'auth = "basic"\nusername = "rg"\npassword_env = "RG_TEST_VNA_PASSWORD"\n'


@pytest.mark.parametrize("kind", ["fhir", "dicomweb"])
def test_a_credential_for_an_http_url_is_refused_naming_the_destination(tmp_path, kind):
    with pytest.raises(SettingsError) as refused:
        _load(tmp_path, f'[destinations.X]\ntype = "{kind}"\nurl = "http://peer/base"\n' + _BASIC)
    message = str(refused.value)
    assert "destinations.X" in message and "in clear to http://peer/base" in message
    assert "https:// URL" in message and "insecure = true" in message


def test_insecure_allows_plain_credentials_and_is_logged_at_start(tmp_path, caplog):
    settings = _load(tmp_path, _VNA.format(url="http://vna/dw") + _BASIC + "insecure = true\n")
    caplog.set_level(logging.WARNING)
    target = build_destination("VNA", settings.destinations["VNA"], calling_ae_title="RG")
    assert isinstance(target, DicomWebTarget) and target.insecure
    assert target.tls is not None and not target.tls.verify
    assert "destinations.VNA: insecure = true" in caplog.text and "pw-51" not in caplog.text


def test_https_destinations_check_certificates_unless_insecure(tmp_path):
    secure = _load(tmp_path, _VNA.format(url="https://vna/dw") + _BASIC)
    target = build_destination("VNA", secure.destinations["VNA"], calling_ae_title="RG")
    assert isinstance(target, DicomWebTarget) and not target.insecure
    assert target.tls is None or target.tls.verify  # None: the system's CAs, checked


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("tls_verify = false\n", "write insecure = true"),
        ("tls_verify = true\n", "tls_verify is no longer read"),
        ('insecure = true\nca_bundle = "/etc/ssl/certs/ca-certificates.crt"\n', "pointless"),
    ],
)
def test_tls_options_that_would_mislead_are_refused(tmp_path, body, named):
    with pytest.raises(SettingsError, match=named):
        _load(tmp_path, _VNA.format(url="https://vna/dw") + body)


def test_hl7_tls_options_need_tls(tmp_path):
    hl7 = '[destinations.RIS]\ntype = "hl7"\nhost = "ris"\nport = 2575\ninsecure = true\n'
    with pytest.raises(SettingsError, match="insecure take effect with tls = true"):
        _load(tmp_path, hl7)
    target = build_destination(
        "RIS", _load(tmp_path, hl7 + "tls = true\n").destinations["RIS"], calling_ae_title="RG"
    )
    assert isinstance(target, Hl7Target) and target.tls is not None and not target.tls.verify


def test_routes_test_marks_an_insecure_destination(tmp_path):
    from pydicom.uid import generate_uid

    from tests.factories import make_ct, write_dataset

    config = tmp_path / "radground.toml"
    config.write_text(
        "[[routes]]\nname = 'ct'\nmodalities = ['CT']\ndestinations = ['VNA', 'EHR']\n"
        + _VNA.format(url="https://vna/dw") + "insecure = true\n"
        + '[destinations.EHR]\ntype = "fhir"\nurl = "https://ehr/fhir"\n'
    )
    write_dataset(make_ct(study_instance_uid=generate_uid(),
                          series_instance_uid=generate_uid()), tmp_path / "ct" / "1.dcm")
    result = CliRunner().invoke(cli, ["--config", str(config), "routes", "test",
                                      str(tmp_path / "ct")])
    assert result.exit_code == 0, result.output
    assert "sent to VNA (insecure = true: certificate not checked), EHR)" in result.output


# -- the broker ------------------------------------------------------------------------


def test_tls_options_in_the_broker_url_are_refused(tmp_path):
    with pytest.raises(SettingsError, match=r"ssl_cert_reqs.*broker_ca_bundle"):
        _load(tmp_path, '[workers]\nbroker_url = "rediss://r:6380/0?ssl_cert_reqs=none"\n')
    with pytest.raises(SettingsError, match="need a TLS broker URL"):
        _load(tmp_path, f'[workers]\nbroker_url = "redis://r/0"\nbroker_ca_bundle = "{tmp_path}"\n')


def test_a_tls_broker_always_checks_the_certificate(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    redis = broker_tls_options(WorkerSettings(broker_url="rediss://r:6380/0",
                                              broker_ca_bundle=str(ca)))
    assert redis is not None and redis["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert redis["ssl_ca_certs"] == str(ca) and redis["ssl_check_hostname"] is True
    system = broker_tls_options(WorkerSettings(broker_url="rediss://r:6380/0"))
    assert system is not None and system["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    rabbit = broker_tls_options(WorkerSettings(broker_url="amqps://u@rabbit.example:5671//"))
    assert rabbit is not None and rabbit["cert_reqs"] == ssl.CERT_REQUIRED
    assert rabbit["server_hostname"] == "rabbit.example"
    assert broker_tls_options(WorkerSettings(broker_url="redis://r/0")) is None
    key = tmp_path / "client.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    key.chmod(0o644)
    with pytest.raises(SettingsError, match="broker_client_key"):
        broker_tls_options(WorkerSettings(broker_url="rediss://r/0", broker_client_cert=str(ca),
                                          broker_client_key=str(key)))


def test_celery_takes_the_broker_tls_options_and_no_remote_control(tmp_path):
    settings = Settings(workers=WorkerSettings(broker_url="rediss://127.0.0.1:1/0"))
    app = configure_celery(settings)
    assert app.conf.worker_enable_remote_control is False
    assert app.conf.broker_use_ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    with app.connection_for_write() as connection:  # what kombu is handed
        assert connection.ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED


# -- the database ----------------------------------------------------------------------


def test_the_database_urls_sslmode_reaches_libpq(tmp_path, postgres_server_url):
    """``sslmode=verify-full`` and ``sslrootcert`` in [database] url are libpq's own: a CA
    file that does not exist stops the connection before anything is sent (whether or not
    the server speaks TLS), ``sslmode=disable`` connects."""
    from radground.database import database_engine

    missing = tmp_path / "no-such-root.crt"
    base = postgres_server_url.replace("postgresql+psycopg://", "postgresql://")
    verify = f"{base}?sslmode=verify-full&sslrootcert={missing}"
    engine = database_engine(Settings(database={"url": verify}))
    with pytest.raises(OperationalError) as refused, engine.connect():
        pass
    text = str(refused.value)
    assert "SSL" in text or str(missing) in text or "root certificate" in text
    engine.dispose()
    plain = database_engine(Settings(database={"url": f"{base}?sslmode=disable"}))
    with plain.connect():
        pass
    plain.dispose()


def test_compose_redis_wants_the_password_the_broker_url_carries():
    """docker-compose.yml: Redis requires a password, and the RadGround services' broker URL
    carries the same variable (never a value written in the file)."""
    from pathlib import Path

    import yaml

    compose_file = Path(__file__).resolve().parents[3] / "docker-compose.yml"
    compose = yaml.safe_load(compose_file.read_text())
    variable = "${RADGROUND_REDIS_PASSWORD:-radground}"
    redis = compose["services"]["redis"]
    assert redis["command"][redis["command"].index("--requirepass") + 1] == variable
    assert variable in redis["healthcheck"]["test"]
    broker_url = compose["x-radground-environment"]["RADGROUND_WORKERS__BROKER_URL"]
    assert broker_url == f"redis://:{variable}@redis:6379/0"
    for name in ("node", "worker-gpu", "worker-io", "migrate"):
        environment = compose["services"][name]["environment"]
        assert environment["RADGROUND_WORKERS__BROKER_URL"] == broker_url
