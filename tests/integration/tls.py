"""TLS for tests: a self-signed loopback certificate and a TLS-terminating TCP proxy.

:func:`self_signed_certificate` makes a certificate for ``127.0.0.1`` with the
``openssl`` command. :func:`tls_proxy` accepts TLS on a free loopback port and
pipes the plain bytes to a local server (as nginx in front of a PACS does), so
a client's TLS options can be tested against a real server that speaks only
plain HTTP.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["NoOpenSSL", "self_signed_certificate", "server_context", "tls_proxy"]


class NoOpenSSL(RuntimeError):
    """No ``openssl`` command to make a certificate with."""


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for CN and subjectAltName IP 127.0.0.1, valid one day."""
    if shutil.which("openssl") is None:
        raise NoOpenSSL("no openssl command to make a test certificate")
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A server-side TLS context presenting ``certificate``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certificate[0]), str(certificate[1]))
    return context


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@contextmanager
def tls_proxy(certificate: tuple[Path, Path], target_port: int) -> Iterator[int]:
    """Accept TLS on a free loopback port (yielded) and forward to ``127.0.0.1:target_port``."""
    context = server_context(certificate)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                client.settimeout(10)
                secure = context.wrap_socket(client, server_side=True)
                secure.settimeout(None)
                upstream = socket.create_connection(("127.0.0.1", target_port))
            except OSError:  # a client that refused our certificate, or the target is down
                client.close()
                continue
            threading.Thread(target=_pump, args=(secure, upstream), daemon=True).start()
            threading.Thread(target=_pump, args=(upstream, secure), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()
