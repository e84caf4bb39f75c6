"""A node owns its port: a second RadGround or a dcmtk ``storescp`` on it stops ``radground serve``
with a message naming the port and the process that holds it (the node's own listener processes
share it; nobody else does)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.dcmtk import echoscu
from tests.integration.radground_processes import clean_env, free_port, wait_until

pytestmark = pytest.mark.skipif(shutil.which("storescp") is None, reason="dcmtk not installed")


def _config(workdir: Path, port: int) -> Path:
    """A node of its own (storage, index, broker) in ``workdir``, as a second install would have."""
    workdir.mkdir(parents=True)
    config = workdir / "radground.toml"
    config.write_text(
        f'[node]\nport = {port}\nlistener_processes = 2\n'
        f'[storage]\nroot = "{workdir / "instances"}"\nreserve_mb = 0\nfsync = "never"\n'
        f'[database]\nurl = "sqlite:///{workdir / "radground.db"}"\n'
        f'[workers]\nbroker_url = "sqla+sqlite:///{workdir / "broker.sqlite"}"\n'
        f'outputs_root = "{workdir / "outputs"}"\n'
    )
    return config


def _radground(config: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "radground", "--config", str(config), *args],
                            cwd=config.parent, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _serve_must_refuse(config: Path) -> str:
    """Run ``radground serve``; it must exit non-zero by itself. Returns its stderr."""
    serve = _radground(config, "serve")
    try:
        _, stderr = serve.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        serve.terminate()
        serve.communicate(timeout=30)
        pytest.fail("radground serve started on a port another process listens on")
    assert serve.returncode != 0
    return stderr


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def test_a_second_radground_on_the_port_stops_with_a_message_naming_the_first(tmp_path):
    port = free_port()
    first = _radground(_config(tmp_path / "first", port), "node")
    try:
        wait_until(lambda: echoscu(port, called="RADGROUND").returncode == 0, 60,
                   what="the first node answers C-ECHO")
        stderr = _serve_must_refuse(_config(tmp_path / "second", port))
        assert f"port {port} on 127.0.0.1 is already in use by pid {first.pid}: " in stderr
        assert "radground" in stderr.split(f"pid {first.pid}: ", 1)[1]
        # and the first node still has its port to itself
        assert echoscu(port, called="RADGROUND").returncode == 0
    finally:
        _stop(first)


def test_storescp_on_the_port_stops_radground_serve_with_a_message_naming_it(tmp_path):
    port = free_port()
    storescp = subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(tmp_path), str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: echoscu(port, called="STORESCP").returncode == 0, 30,
                   what="storescp answers C-ECHO")
        stderr = _serve_must_refuse(_config(tmp_path / "node", port))
        assert f"port {port} on 127.0.0.1 is already in use by pid {storescp.pid}: storescp -aet STORESCP" in stderr
        # the start-up banner says where results will be written, as an absolute path
        assert f"results: {tmp_path / 'node' / 'outputs'}/<Study Instance UID>/r<revision>/" in stderr
    finally:
        _stop(storescp)
