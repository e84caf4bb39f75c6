"""A private certificate authority for TLS tests (the ``openssl`` command).

:func:`make_ca` makes a CA; :func:`issue` a certificate it signs, for a server
(subjectAltName IP 127.0.0.1) or a client (mutual TLS). Keys are written 0600,
as RadGround requires of a key file.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["Authority", "Issued", "issue", "make_ca"]


@dataclass(frozen=True)
class Issued:
    """A PEM certificate and its PEM private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority(Issued):
    """A CA: its certificate is the ``ca_bundle`` a client trusts."""


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed (apt-get install openssl)")
    subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str = "test-ca") -> Authority:
    """A self-signed CA valid one day, in ``folder/NAME.pem`` and ``folder/NAME.key``."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", str(key), "-out", str(cert))
    key.chmod(0o600)
    return Authority(cert, key)


def issue(ca: Authority, folder: Path, name: str, *, client: bool = False) -> Issued:
    """A certificate signed by ``ca``: a server's for 127.0.0.1, or a client's (CN ``name``)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key, request = folder / f"{name}.pem", folder / f"{name}.key", folder / f"{name}.csr"
    usage = "clientAuth" if client else "serverAuth"
    extensions = folder / f"{name}.ext"
    extensions.write_text(
        f"extendedKeyUsage={usage}\n" + ("" if client else "subjectAltName=IP:127.0.0.1\n")
    )
    subj = f"/CN={name}" if client else "/CN=127.0.0.1"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subj,
             "-keyout", str(key), "-out", str(request))
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey", str(ca.key),
             "-CAcreateserial", "-days", "1", "-extfile", str(extensions), "-out", str(cert))
    key.chmod(0o600)
    return Issued(cert, key)
