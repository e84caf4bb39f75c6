"""RadGround's patches of pynetdicom internals fail loudly when pynetdicom changes under them.

``test_the_installed_pynetdicom_has_what_every_patch_relies_on`` is the test
named in docs/third-party-patches.md: it fails, naming the missing internal,
after an upgrade past the pinned versions removes or changes one.
"""

import pytest
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import AssociationSocket

from dicom_node.patches import (
    PYNETDICOM_PATCHES,
    PynetdicomInternalsChanged,
    check_pynetdicom_internals,
)
from dicom_node.scp import StorageSCP
from dicom_node.scu import Destination, StorageSCU
from dicom_node.storage import InstanceStore


@pytest.mark.parametrize("patch", PYNETDICOM_PATCHES)
def test_the_installed_pynetdicom_has_what_every_patch_relies_on(patch):
    check_pynetdicom_internals([patch])


@pytest.mark.parametrize(("owner", "name", "patch", "named"), [
    (DULServiceProvider, "_read_pdu_data", "pdu-limits", "DULServiceProvider._read_pdu_data is missing"),
    (AssociationSocket, "recv", "quick-ack", "AssociationSocket.recv is missing"),
    (DULServiceProvider, "run_reactor", "event-reactors", "DULServiceProvider.run_reactor is missing"),
    (DIMSEServiceProvider, "send_msg", "store-fast-path", "DIMSEServiceProvider.send_msg is missing"),
    (DIMSEServiceProvider, "get_msg", "scu-response-order", "DIMSEServiceProvider.get_msg is missing"),
])
def test_a_missing_internal_stops_the_node_and_the_scu_naming_it(monkeypatch, tmp_path, owner, name, patch, named):
    monkeypatch.delattr(owner, name)
    with pytest.raises(PynetdicomInternalsChanged, match=f"{patch}: .*{named}.*node.pynetdicom_patches"):
        check_pynetdicom_internals([patch])
    with pytest.raises(PynetdicomInternalsChanged):
        StorageSCP(InstanceStore(tmp_path / "store"), ae_title="RADGROUND", pynetdicom_patches=[patch])
    with pytest.raises(PynetdicomInternalsChanged):
        StorageSCU("SENDER", pynetdicom_patches=[patch])


def test_a_changed_signature_is_named(monkeypatch):
    monkeypatch.setattr(DIMSEServiceProvider, "get_msg", lambda self, block, timeout: (None, None))
    with pytest.raises(PynetdicomInternalsChanged, match=r"get_msg takes \('self', 'block', 'timeout'\)"):
        check_pynetdicom_internals(["scu-response-order"])


def test_the_stock_path_serves_without_any_patch(tmp_path):
    node = StorageSCP(InstanceStore(tmp_path / "store"), ae_title="RADGROUND", pynetdicom_patches=[])
    host, port = node.start("127.0.0.1", 0)
    try:
        assert StorageSCU("SENDER", pynetdicom_patches=[]).echo(Destination("RADGROUND", host, port)).ok
    finally:
        node.stop()


def test_an_unknown_patch_name_is_refused():
    with pytest.raises(ValueError, match="unknown pynetdicom patch 'bulk-reads'"):
        check_pynetdicom_internals(["bulk-reads"])


def test_no_message_contents_are_logged_even_at_debug(tmp_path, caplog, monkeypatch):
    """pynetdicom's documented switch (LOG_HANDLER_LEVEL "none") replaces unbinding its handlers:
    its standard handlers would log every command set (SOP Instance UIDs) at DEBUG."""
    import logging

    from pynetdicom import _config

    from dicom_node.scp import AllowedPeer
    from tests.factories import write_series

    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "standard")
    caplog.set_level(logging.DEBUG)
    node = StorageSCP(InstanceStore(tmp_path / "store"), ae_title="RADGROUND", on_stored=lambda _: None,
                      allowed_peers=[AllowedPeer("SENDER")])
    host, port = node.start("127.0.0.1", 0)
    try:
        (sent,) = write_series(tmp_path / "s", 1)
        (result,) = StorageSCU("SENDER").send([sent], Destination("RADGROUND", host, port))
        assert result.status == 0
    finally:
        node.stop()
    assert result.sop_instance_uid not in caplog.text
