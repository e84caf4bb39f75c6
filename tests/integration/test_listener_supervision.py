"""The node's listener processes run under the one supervisor: a killed listener is
started again (it then shares the port again) and the node's stop ends them all."""

from __future__ import annotations

import os
import signal

from radground.node import Node
from radground.settings import DatabaseSettings, NodeSettings, Settings, StorageSettings
from tests.integration.dcmtk import echoscu
from tests.integration.radground_processes import free_port, wait_until


def test_a_killed_listener_process_is_started_again(tmp_path, caplog):
    port = free_port()
    node = Node(Settings(
        node=NodeSettings(port=port, listener_processes=2),
        storage=StorageSettings(root=tmp_path / "instances", reserve_mb=0),
        database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'radground.db'}"),
    ))
    node.start()
    try:
        listeners = node._listeners
        assert listeners is not None
        wait_until(lambda: echoscu(port).returncode == 0, 60, what="the node answering C-ECHO")
        first, second = listeners.pids()
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: len(pids := listeners.pids()) == 2 and first not in pids, 60,
                   what="a new listener process")
        assert second in listeners.pids()
        assert listeners.restarts == 1
        for _ in range(4):  # whichever process the kernel picks, it answers
            assert echoscu(port).returncode == 0
    finally:
        node.stop()
    assert listeners.pids() == []
    assert any("Listener 1" in r.getMessage() or "Listener 2" in r.getMessage() for r in caplog.records
               if "exited with code" in r.getMessage())
