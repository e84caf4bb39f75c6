"""``[node.tls]`` settings: what they refuse, and what the node and the web process make of them."""

from __future__ import annotations

import socket

import pytest
from pydantic import ValidationError

from radground.node import tls_server_options
from radground.settings import NodeSettings, NodeTlsSettings, SettingsError
from radground.web_app import probe_node


def _tls(**values) -> NodeTlsSettings:
    base = dict(enabled=True, certificate="node.crt", key="node.key", ca_bundle="ca.pem")
    base.update(values)
    return NodeTlsSettings(**base)


@pytest.mark.parametrize(("values", "message"), [
    ({"required": True, "enabled": False}, "required = true needs enabled = true"),
    ({"key": ""}, "needs certificate and key"),
    ({"ca_bundle": ""}, "verify_client = true needs ca_bundle"),
    ({"ca_bundle": "", "verify_client": False, "allowed_subjects": {"ct-1": ["CT1"]}},
     "allowed_subjects needs ca_bundle"),
    ({"allowed_subjects": {"ct-1": ["A_TITLE_LONGER_THAN_16"]}}, "allowed_subjects"),
])
def test_incomplete_tls_settings_are_refused_naming_the_setting(values, message):
    with pytest.raises(ValidationError, match=message):
        _tls(**values)


def test_the_tls_port_must_differ_from_the_plain_port():
    with pytest.raises(ValidationError, match="its own port"):
        NodeSettings(port=11112, tls=_tls(port=11112))
    NodeSettings(port=11112, tls=_tls(port=11112, required=True))  # the plain port is off


def test_off_by_default_and_nothing_built():
    assert NodeSettings().tls.enabled is False
    assert tls_server_options(NodeSettings().tls) is None


def test_a_missing_certificate_is_a_settings_error(tmp_path):
    key = tmp_path / "node.key"
    key.write_text("x")
    key.chmod(0o600)
    with pytest.raises(SettingsError, match="node.tls: certificate"):
        tls_server_options(_tls(key=str(key), certificate=str(tmp_path / "missing.crt"),
                                verify_client=False, ca_bundle=""))


def test_the_console_probes_the_tls_port_when_tls_is_required():
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        node = NodeSettings(port=1, tls=_tls(port=port, required=True))
        [listener] = probe_node(node).listeners
        assert listener.alive and listener.port == port
