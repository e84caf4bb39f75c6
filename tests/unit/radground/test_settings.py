import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from radground.settings import Settings, SettingsError, load_settings

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("RADGROUND_"):
            monkeypatch.delenv(key)


def test_documented_config_file_equals_the_defaults():
    documented = load_settings(REPO / "config" / "radground.toml")
    assert documented.model_dump() == Settings().model_dump()


def test_documented_config_file_mentions_every_setting():
    from radground.settings import (
        DicomDestination,
        DicomWebDestination,
        FhirEndpointSettings,
        Hl7Destination,
        ModelSettings,
        RouteSettings,
    )

    text = (REPO / "config" / "radground.toml").read_text()
    data = tomllib.loads(text)
    for section in ("node", "storage", "database", "completion", "workers", "delivery", "logging",
                    "audit"):
        assert set(data[section]) == set(Settings.model_fields[section].annotation.model_fields), (
            section
        )
    assert set(data["models"]["default"]) == set(ModelSettings.model_fields)
    assert set(data["routes"][0]) == set(RouteSettings.model_fields)
    # the commented examples name every field of the sections that are empty by default
    for model in (DicomDestination, DicomWebDestination, FhirEndpointSettings, Hl7Destination):
        for field in model.model_fields:
            assert f"# {field} =" in text, field


def test_a_routes_review_policy_is_one_of_three_and_an_error_names_the_route(tmp_path):
    from radground.runtime import to_route
    from worklist.routing import ReviewPolicy

    config = tmp_path / "c.toml"
    config.write_text('[[routes]]\nname = "cxr"\nreview = "before_ehr"\n')
    assert to_route(load_settings(config).routes[0]).review is ReviewPolicy.BEFORE_EHR
    config.write_text('[[routes]]\nname = "cxr"\n')
    assert to_route(load_settings(config).routes[0]).review is ReviewPolicy.NONE
    config.write_text('[[routes]]\nname = "cxr"\nreview = "before_pacs"\n')
    with pytest.raises(SettingsError, match=(
        "route 'cxr': review must be one of 'none', 'before_ehr', 'before_all', got 'before_pacs'"
    )):
        load_settings(config)


def test_route_references_are_checked(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[[routes]]\nname = "r"\ndestinations = ["NOWHERE"]\n')
    with pytest.raises(SettingsError, match="NOWHERE"):
        load_settings(config)
    config.write_text(
        '[destinations.EHR]\ntype = "fhir"\nurl = "https://x/fhir"\nauth = "bearer"\n'
    )
    with pytest.raises(SettingsError, match="token_env"):
        load_settings(config)


def test_environment_overrides_file(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text("[node]\nport = 4000\nae_title = 'FROMFILE'\n")
    monkeypatch.setenv("RADGROUND_NODE__PORT", "4001")
    settings = load_settings(config)
    assert (settings.node.port, settings.node.ae_title) == (4001, "FROMFILE")


@pytest.mark.parametrize(
    "toml, named",
    [
        ("[node]\nport = 70000\n", "node.port"),
        ("[node]\nae_title = 'THIS-AE-TITLE-IS-TOO-LONG'\n", "node.ae_title"),
        ("[node]\nprot = 1\n", "node.prot"),
        ("[storage]\nfsync = 'sometimes'\n", "storage.fsync"),
        ("[node]\nmax_connections_per_peer = 0\n", "node.max_connections_per_peer"),
        ("[node]\npynetdicom_patches = ['bulk-reads']\n", "node.pynetdicom_patches"),
        ("[node]\npynetdicom_patches = ['quick-ack']\n", "node.pynetdicom_patches"),
        ("[completion]\nidle_seconds = 60\nforce_after_seconds = 10\n", "completion"),
        ("[database]\nurl = 'mysql://x'\n", "database.url"),
        ("[workers]\nlease_seconds = 1\n", "workers.lease_seconds"),
        ("[destinations.PACS]\nae_title = 'P'\nhost = 'h'\n", "destinations.PACS.port"),
    ],
)
def test_bad_settings_fail_naming_the_setting(tmp_path, toml, named):
    config = tmp_path / "c.toml"
    config.write_text(toml)
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    assert named in str(caught.value) and str(config) in str(caught.value)


_PACS = "[destinations.PACS]\nae_title = 'P'\nhost = 'h'\nport = 104\n"


@pytest.mark.parametrize(
    "outputs, message",
    [
        (
            '["sr", "dicomseg"]',
            "unknown output kind 'dicomseg'; a DICOM destination takes 'sr', 'gsps', 'sc', 'kos'",
        ),
        ('["sr", "fhir"]', "output kind 'fhir' is not DICOM"),
        ('["csps"]', "output kind 'csps' comes with 'gsps'"),
        ('"sr"', "must be a list of output kinds"),
    ],
)
def test_a_destinations_unknown_output_kind_fails_naming_it(tmp_path, outputs, message):
    config = tmp_path / "c.toml"
    config.write_text(f"{_PACS}outputs = {outputs}\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    assert "destinations.PACS.outputs" in str(caught.value)
    assert message in str(caught.value)


def test_destination_outputs_are_output_kinds_and_kos_is_sent_by_default(tmp_path):
    from exporters.protocol import OutputKind

    config = tmp_path / "c.toml"
    config.write_text(_PACS)
    assert load_settings(config).destinations["PACS"].outputs == (
        OutputKind.SR,
        OutputKind.GSPS,
        OutputKind.KOS,
    )
    config.write_text(f"{_PACS}outputs = ['SC', 'sr', 'sc']\n")
    assert load_settings(config).destinations["PACS"].outputs == (OutputKind.SC, OutputKind.SR)


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_settings_are_immutable():
    settings = Settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.node.port = 1  # type: ignore[misc]


def test_bad_environment_value_names_the_variable_not_the_file(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text("[node]\nae_title = 'NODE'\n")
    monkeypatch.setenv("RADGROUND_NODE__PORT", "99999")
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert "node.port (from environment variable RADGROUND_NODE__PORT)" in message
    assert str(config) not in message


def test_bad_file_value_names_the_file_even_with_other_variables_set(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text("[node]\nport = 99999\n")
    monkeypatch.setenv("RADGROUND_NODE__AE_TITLE", "NODE")
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    assert f"node.port (from {config})" in str(caught.value)
    assert "RADGROUND_NODE__AE_TITLE" not in str(caught.value)


def test_unparsable_environment_section_names_the_variable(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text("")
    monkeypatch.setenv("RADGROUND_NODE", "{not json")
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    assert "RADGROUND_NODE" in str(caught.value) and str(config) not in str(caught.value)


# -- destinations ----------------------------------------------------------------------


def test_each_destination_type_has_its_section(tmp_path):
    from radground.settings import (
        DicomDestination,
        DicomWebDestination,
        FhirEndpointSettings,
        Hl7Destination,
    )

    config = tmp_path / "c.toml"
    config.write_text(
        '[destinations.PACS]\nae_title = "PACS"\nhost = "pacs"\nport = 104\n'  # no type: "dicom"
        '[destinations.VNA]\ntype = "dicomweb"\nurl = '
        '"https://vna/dicom-web/"\noutputs = ["sr", "kos"]\n'
        "retry_for_hours = 2\n"
        '[destinations.EHR]\ntype = "fhir"\nurl = "https://ehr/fhir"\n'
        '[destinations.RIS]\ntype = "hl7"\nhost = "ris"\nport = '
        '2575\nreceiving_application = "RIS"\n'
        '[[routes]]\nname = "r"\ndestinations = ["PACS", "VNA", "EHR", "RIS"]\n'
    )
    settings = load_settings(config)
    kinds = {name: type(d) for name, d in settings.destinations.items()}
    assert kinds == {
        "PACS": DicomDestination,
        "VNA": DicomWebDestination,
        "EHR": FhirEndpointSettings,
        "RIS": Hl7Destination,
    }
    assert settings.destinations["VNA"].url == "https://vna/dicom-web"
    assert (
        settings.destinations["VNA"].retry_for_hours == 2
        and settings.destinations["PACS"].retry_for_hours is None
    )
    assert settings.destinations["RIS"].outputs == ("hl7",)
    assert settings.delivery.retry_for_hours == 8.0


def test_an_unknown_destination_type_is_named(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[destinations.MAIL]\ntype = "smtp"\nhost = "x"\n')
    with pytest.raises(
        SettingsError, match=r"destinations\.MAIL.*'smtp'.*'dicom', 'dicomweb', 'fhir', 'hl7'"
    ):
        load_settings(config)


def test_old_fhir_endpoints_section_says_what_to_change(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[fhir_endpoints.EHR]\nurl = "https://x/fhir"\n')
    with pytest.raises(SettingsError) as info:
        load_settings(config)
    assert "[fhir_endpoints.EHR] to [destinations.EHR]" in str(info.value)
    assert 'type = "fhir"' in str(info.value)


def test_max_attempts_is_replaced_by_a_retry_period(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        '[destinations.PACS]\nae_title = "P"\nhost = "h"\nport = 104\nmax_attempts = 10\n'
    )
    with pytest.raises(SettingsError, match="destinations.PACS.*retry_for_hours"):
        load_settings(config)


@pytest.mark.parametrize(("body", "needs"), [
    ('type = "dicomweb"\nurl = "https://v/dw"\nauth = "bearer"\n', "token_env"),
    ('type = "dicomweb"\nurl = "https://v/dw"\nauth = "basic"\nusername = "u"\n', "password_env"),
    ('type = "dicomweb"\nurl = "ftp://v/dw"\n', "http"),
    ('type = "hl7"\nhost = "h"\nport = 0\n', "port"),
])
def test_incomplete_destination_sections_are_refused(tmp_path, body, needs):
    config = tmp_path / "c.toml"
    config.write_text("[destinations.X]\n" + body)
    with pytest.raises(SettingsError, match=needs):
        load_settings(config)


def test_delivery_backoff_base_must_not_exceed_its_cap(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[delivery]\nbackoff_base_seconds = 60\nbackoff_cap_seconds = 30\n")
    with pytest.raises(SettingsError, match="backoff_base_seconds"):
        load_settings(config)


@pytest.mark.parametrize(("body", "needs"), [
    ('transport = "tls"\nca_file = "/etc/ca.pem"\n', "needs host and port"),
    ('transport = "tls"\nhost = "arr.example"\n', "needs ca_file"),
    ('transport = "udp"\n', "needs host and port"),
    ('client_cert_file = "/etc/c.pem"\n', "client_key_file"),
    ('transport = "tcp"\n', "transport"),
])
def test_incomplete_audit_sections_are_refused(tmp_path, body, needs):
    config = tmp_path / "c.toml"
    config.write_text("[audit]\n" + body)
    with pytest.raises(SettingsError, match=needs):
        load_settings(config)


def test_an_audit_repository_over_tls_is_read_from_the_file_and_environment(tmp_path,
                                                                            monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text('[audit]\ntransport = "tls"\nhost = "arr.example"\nca_file = "/etc/ca.pem"\n')
    monkeypatch.setenv("RADGROUND_AUDIT__PORT", "16514")
    audit = load_settings(config).audit
    assert (audit.transport, audit.host, audit.port, audit.ca_file) == (
        "tls", "arr.example", 16514, "/etc/ca.pem"
    )
