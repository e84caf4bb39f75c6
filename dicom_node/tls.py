"""DICOM TLS: the Basic TLS Secure Transport Connection Profile with the BCP 195 TLS Profile.

PS3.15 Annex B.1 and B.9 (BCP 195, RFC 9325): TLS 1.2 or later; for TLS 1.2
only ECDHE key exchange with AEAD ciphers (AES-GCM, ChaCha20-Poly1305), no
RSA key exchange, no CBC, no compression, no renegotiation; TLS 1.3 suites are
all AEAD. :func:`restrict_to_bcp195` applies that to any
:class:`ssl.SSLContext` (the SCP's and the SCU's).

:class:`TlsServerOptions` is the node's TLS listener: certificate and key,
optional client certificate verification against a CA bundle, an optional
mapping from certificate subject to the calling AE titles that peer may use
(:meth:`TlsServerOptions.allows`), and the deadline of a handshake.

Explicit arguments only: the caller (radground's settings layer) checks the
key file's permissions and passes the paths in.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from dicom_node.errors import TlsHandshakeError

__all__ = [
    "BCP195_TLS12_CIPHERS",
    "TlsRefused",
    "TlsServerOptions",
    "accept_tls",
    "certificate_subject",
    "restrict_to_bcp195",
]

_TLS_HANDSHAKE_RECORD = 0x16  # TLS record content type "handshake" (RFC 8446 §5.1)
_A_ASSOCIATE_RQ = 0x01

#: TLS 1.2 cipher suites of the BCP 195 TLS Profile (RFC 9325 §4.2: ECDHE with AES-GCM; and
#: ChaCha20-Poly1305, RFC 7905), in OpenSSL's names, preferred first.
BCP195_TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)

# OpenSSL's short names of the subject attributes an RFC 4514 string uses.
_SHORT_NAMES = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


def restrict_to_bcp195(context: ssl.SSLContext) -> ssl.SSLContext:
    """Limit ``context`` to the BCP 195 TLS Profile (TLS 1.2+, ECDHE + AEAD, no compression, no
    renegotiation); returns it."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


def certificate_subject(peer_certificate: Mapping[str, Any]) -> tuple[str, str]:
    """(common name, RFC 4514 subject string) of a certificate as
    :meth:`ssl.SSLSocket.getpeercert` gives it; empty strings when it has none.

    The RFC 4514 string lists the relative distinguished names last first
    (``CN=ct-1,O=Hospital,C=DE``), with OpenSSL's short attribute names.
    """
    names: list[tuple[str, str]] = [
        (kind, value)
        for relative_name in peer_certificate.get("subject", ())
        for kind, value in relative_name
    ]
    common_name = next((value for kind, value in names if kind == "commonName"), "")
    rfc4514 = ",".join(
        f"{_SHORT_NAMES.get(kind, kind)}={_escape(value)}" for kind, value in reversed(names)
    )
    return common_name, rfc4514


def _escape(value: str) -> str:
    """RFC 4514 §2.4 escaping of an attribute value."""
    escaped = "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and not escaped.endswith("\\ "):
        escaped = escaped[:-1] + "\\ "
    return escaped


@dataclass(frozen=True)
class TlsServerOptions:
    """The node's TLS listener (PS3.15 B.1, B.9).

    Attributes
    ----------
    certificate, key
        PEM certificate (chain) and private key the node presents.
    ca_bundle
        PEM file of the CAs whose client certificates are trusted; None: no
        client certificate is asked for.
    verify_client
        Require a client certificate that ``ca_bundle`` verifies (mutual TLS,
        IHE ATNA node authentication); the handshake fails without one. False
        with a ``ca_bundle``: a certificate is asked for, checked when given.
    allowed_subjects
        Certificate subject (its common name, or its whole subject as an
        RFC 4514 string: ``CN=ct-1,O=Hospital``) → the calling AE titles that
        peer may use. Empty: any verified peer may use any AE title. Not empty:
        an association over TLS whose certificate's entry lacks the calling AE
        title (or that has no certificate) is rejected.
    handshake_timeout
        Seconds a TLS handshake may take in all.
    """

    certificate: Path
    key: Path
    ca_bundle: Path | None = None
    verify_client: bool = False
    allowed_subjects: Mapping[str, frozenset[str]] = field(default_factory=dict)
    handshake_timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("certificate", "key", "ca_bundle"):
            value = getattr(self, name)
            if value is None:
                continue
            path = Path(value)
            if not path.is_file():
                raise ValueError(f"{name} {str(path)!r} is not a readable file")
            object.__setattr__(self, name, path)
        if self.verify_client and self.ca_bundle is None:
            raise ValueError("verify_client needs a ca_bundle to verify client certificates with")
        if self.allowed_subjects and self.ca_bundle is None:
            raise ValueError(
                "allowed_subjects needs a ca_bundle: a subject is only known from a verified "
                "certificate"
            )
        if not self.handshake_timeout > 0:
            raise ValueError(f"handshake_timeout must be > 0, got {self.handshake_timeout}")
        subjects = {
            str(subject).strip(): frozenset(title.strip() for title in titles)
            for subject, titles in dict(self.allowed_subjects).items()
        }
        if any(not subject for subject in subjects):
            raise ValueError("allowed_subjects: a certificate subject must not be empty")
        object.__setattr__(self, "allowed_subjects", subjects)

    def server_context(self) -> ssl.SSLContext:
        """A server-side :class:`ssl.SSLContext` for these options (BCP 195 profile).

        Raises
        ------
        ssl.SSLError
            OpenSSL cannot load the certificate, key or CA bundle (or they do
            not match).
        """
        context = restrict_to_bcp195(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        context.load_cert_chain(str(self.certificate), str(self.key))
        if self.ca_bundle is not None:
            context.load_verify_locations(cafile=str(self.ca_bundle))
            context.verify_mode = ssl.CERT_REQUIRED if self.verify_client else ssl.CERT_OPTIONAL
        return context

    def allows(self, peer_certificate: Mapping[str, Any] | None, calling_ae_title: str) -> bool:
        """Whether the peer with ``peer_certificate`` (verified, as
        :meth:`ssl.SSLSocket.getpeercert` gives it; None or empty: none) may
        use ``calling_ae_title``."""
        if not self.allowed_subjects:
            return True
        if not peer_certificate:
            return False
        common_name, subject = certificate_subject(peer_certificate)
        titles = self.allowed_subjects.get(subject) or self.allowed_subjects.get(common_name)
        return titles is not None and calling_ae_title.strip() in titles


@dataclass(frozen=True)
class TlsRefused:
    """A connection to the TLS port refused because its handshake failed (no DICOM was read, so
    no AE title is known); ``reason`` is OpenSSL's or ours, without patient data."""

    peer_host: str
    reason: str
    at: datetime


def accept_tls(
    connection: socket.socket, context: ssl.SSLContext, *, timeout: float
) -> ssl.SSLSocket | None:
    """The server side of a TLS handshake on an accepted ``connection``, finished within
    ``timeout`` seconds in all.

    Returns
    -------
    ssl.SSLSocket or None
        The secured connection; None when the peer closed it without sending
        anything (a port probe), which is no handshake failure.

    Raises
    ------
    TlsHandshakeError
        The handshake failed or ran out of time; ``connection`` is closed.
    """
    deadline = time.monotonic() + timeout
    try:
        connection.settimeout(timeout)
        first = connection.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        connection.close()
        raise TlsHandshakeError(f"no TLS ClientHello within {timeout:g} s") from None
    except OSError:
        connection.close()
        return None
    if not first:
        connection.close()
        return None
    if first[0] != _TLS_HANDSHAKE_RECORD:
        connection.close()
        what = "an A-ASSOCIATE-RQ: a peer without TLS" if first[0] == _A_ASSOCIATE_RQ else "not TLS"
        raise TlsHandshakeError(f"the first byte is 0x{first[0]:02X} ({what})")
    secure = context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
    try:
        secure.settimeout(max(deadline - time.monotonic(), 0.001))
        secure.do_handshake()
    except ssl.SSLError as exc:
        secure.close()
        raise TlsHandshakeError(exc.reason or type(exc).__name__) from None
    except TimeoutError:
        secure.close()
        raise TlsHandshakeError(f"handshake not finished within {timeout:g} s") from None
    except OSError as exc:
        secure.close()
        raise TlsHandshakeError(exc.strerror or type(exc).__name__) from None
    return secure
