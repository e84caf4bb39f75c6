"""The node's listening socket: nobody else may share its port, and the one who holds it is named."""

import os
import socket
import subprocess
import sys

import pytest

from dicom_node.errors import PortInUseError
from dicom_node.listening import bind_listening_socket, describe_port_owner


def _reuse_port_listener() -> socket.socket:
    """A listener as another process with SO_REUSEPORT would hold it (what let a second node share)."""
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", 0))
    other.listen()
    return other


def test_a_port_held_even_with_so_reuseport_is_refused_naming_the_holder():
    with _reuse_port_listener() as other:
        port = other.getsockname()[1]
        with pytest.raises(PortInUseError) as refused:
            bind_listening_socket("127.0.0.1", port)
    message = str(refused.value)
    assert f"port {port} on 127.0.0.1 is already in use by pid {os.getpid()}: " in message
    assert "pytest" in message or "python" in message  # the holder's command line
    assert refused.value.port == port and refused.value.errno == 98


def test_the_holder_of_a_port_in_another_process_is_found():
    script = ("import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
              "print(s.getsockname()[1], flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        port = int(holder.stdout.readline())
        assert describe_port_owner(port) == f"pid {holder.pid}: {sys.executable} -c {script}"[:200 + 11 + len(
            str(holder.pid))]
    finally:
        holder.kill()
        holder.wait()


def test_a_free_port_is_bound_and_listening_once():
    listening = bind_listening_socket("127.0.0.1", 0)
    with listening:
        port = listening.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            pass
        assert describe_port_owner(port) is not None
        with pytest.raises(PortInUseError):
            bind_listening_socket("127.0.0.1", port)  # not even the node itself binds it twice
