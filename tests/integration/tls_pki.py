"""A small test PKI made with the ``openssl`` command: a CA and certificates it issues.

:func:`certificate_authority` makes a self-signed CA; :func:`issue` a leaf
certificate signed by it for a common name, with ``subjectAltName`` IP
127.0.0.1 and DNS localhost (usable by a server and a client alike). Keys are
RSA 2048 (what dcmtk and Orthanc load everywhere), written mode ``0600``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Credential", "NoOpenSSL", "certificate_authority", "issue"]


class NoOpenSSL(RuntimeError):
    """No ``openssl`` command to make certificates with."""


@dataclass(frozen=True)
class Credential:
    """A PEM certificate and its private key."""

    certificate: Path
    key: Path


def _openssl(*arguments: str) -> None:
    if shutil.which("openssl") is None:
        raise NoOpenSSL("no openssl command to make test certificates")
    subprocess.run(["openssl", *arguments], check=True, capture_output=True)


def certificate_authority(folder: Path, name: str = "RadGround Test CA") -> Credential:
    """A self-signed CA certificate (one day) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    slug = name.replace(" ", "-").lower()
    credential = Credential(folder / f"{slug}.pem", folder / f"{slug}.key")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", f"/O=RadGround tests/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", str(credential.key), "-out", str(credential.certificate))
    os.chmod(credential.key, 0o600)
    return credential


def issue(authority: Credential, folder: Path, common_name: str) -> Credential:
    """A certificate for ``common_name`` (subject ``O=RadGround tests, CN=common_name``) signed
    by ``authority``, for server and client use on loopback."""
    folder.mkdir(parents=True, exist_ok=True)
    credential = Credential(folder / f"{common_name}.pem", folder / f"{common_name}.key")
    request = folder / f"{common_name}.csr"
    extensions = folder / f"{common_name}.ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes",
             "-subj", f"/O=RadGround tests/CN={common_name}",
             "-keyout", str(credential.key), "-out", str(request))
    os.chmod(credential.key, 0o600)
    _openssl("x509", "-req", "-in", str(request), "-CA", str(authority.certificate),
             "-CAkey", str(authority.key), "-CAcreateserial", "-days", "1",
             "-extfile", str(extensions), "-out", str(credential.certificate))
    return credential
