"""Credentials and TLS settings shared by the network destinations.

:class:`HttpAuth` is the ``Authorization`` header of an HTTP destination
(DICOMweb): a bearer token (RFC 6750) or HTTP Basic (RFC 7617), validated when
built, never shown by ``repr``. :class:`TlsOptions` describes how a client
checks the peer and presents itself (CA bundle, client certificate for mutual
TLS, verification switch) and builds the :class:`ssl.SSLContext` that both the
HTTP client (httpx ``verify=``) and the MLLP socket use.

Explicit arguments only: the caller (radground's settings layer) reads secrets
from the environment and passes them in.
"""

from __future__ import annotations

import base64
import logging
import ssl
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from worklist.errors import WorklistError

__all__ = [
    "AuthKind",
    "HttpAuth",
    "PlainTextCredentialError",
    "TlsOptions",
    "check_credential_transport",
    "warn_insecure_use",
]

logger = logging.getLogger(__name__)


class AuthKind(StrEnum):
    """How an HTTP client authenticates."""

    NONE = "none"
    #: ``Authorization: Bearer <token>`` (RFC 6750).
    BEARER = "bearer"
    #: ``Authorization: Basic base64(user:password)`` in UTF-8 (RFC 7617).
    BASIC = "basic"


def check_header_safe(name: str, value: object) -> None:
    """Raise ValueError unless ``value`` is a non-empty string without control characters."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{name} must not contain control characters")


@dataclass(frozen=True, repr=False)
class HttpAuth:
    """Credentials for an HTTP destination; build with :meth:`none`, :meth:`bearer`
    or :meth:`basic`. The secrets never appear in ``repr``/``str``."""

    kind: AuthKind = AuthKind.NONE
    token: str | None = None
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        kind = AuthKind(self.kind)  # raises ValueError on an unknown kind
        object.__setattr__(self, "kind", kind)
        if kind is AuthKind.NONE:
            if self.token is not None or self.username is not None or self.password is not None:
                raise ValueError("HttpAuth kind 'none' takes no token, username or password")
        elif kind is AuthKind.BEARER:
            if self.username is not None or self.password is not None:
                raise ValueError("HttpAuth kind 'bearer' takes a token only")
            check_header_safe("token", self.token)
            assert self.token is not None
            if any(c.isspace() for c in self.token):
                raise ValueError("token must not contain whitespace (RFC 6750 b64token)")
        else:
            if self.token is not None:
                raise ValueError("HttpAuth kind 'basic' takes a username and password, not a token")
            check_header_safe("username", self.username)
            assert self.username is not None
            if ":" in self.username:
                raise ValueError("username must not contain ':' (RFC 7617 user-id)")
            if not isinstance(self.password, str):
                raise ValueError("password must be a string")
            if self.password:
                check_header_safe("password", self.password)

    @classmethod
    def none(cls) -> HttpAuth:
        """No authentication (a trusted network, or mutual TLS through :class:`TlsOptions`)."""
        return cls(AuthKind.NONE)

    @classmethod
    def bearer(cls, token: str) -> HttpAuth:
        """A bearer token (RFC 6750), e.g. an OAuth 2 access token of a cloud DICOM store."""
        return cls(AuthKind.BEARER, token=token)

    @classmethod
    def basic(cls, username: str, password: str) -> HttpAuth:
        """HTTP Basic authentication (RFC 7617, UTF-8)."""
        return cls(AuthKind.BASIC, username=username, password=password)

    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header for this credential (empty for ``none``)."""
        if self.kind is AuthKind.BEARER:
            return {"Authorization": f"Bearer {self.token}"}
        if self.kind is AuthKind.BASIC:
            raw = f"{self.username}:{self.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
        return {}

    def __repr__(self) -> str:
        if self.kind is AuthKind.BEARER:
            return "HttpAuth(kind='bearer', token=***)"
        if self.kind is AuthKind.BASIC:
            return f"HttpAuth(kind='basic', username={self.username!r}, password=***)"
        return "HttpAuth(kind='none')"

    __str__ = __repr__


@dataclass(frozen=True)
class TlsOptions:
    """How a client speaks TLS to a destination.

    Attributes
    ----------
    verify
        Check the peer's certificate chain and host name (default). ``False``
        turns both checks off and is what a destination's ``insecure = true``
        means (:func:`warn_insecure_use` logs it): only for a test peer with a
        self-signed certificate; never for a hospital network.
    ca_bundle
        PEM file of the CAs to trust instead of the system's (a hospital's
        private CA). None: the system's default trust store.
    client_cert, client_key
        PEM certificate (chain) and private key presented for mutual TLS; the
        key may sit in ``client_cert``. ``client_key`` needs ``client_cert``.
    """

    verify: bool = True
    ca_bundle: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.verify, bool):
            raise TypeError(f"verify must be a bool, got {type(self.verify).__name__}")
        for name in ("ca_bundle", "client_cert", "client_key"):
            value = getattr(self, name)
            if value is None:
                continue
            path = Path(value)
            if not path.is_file():
                raise ValueError(f"{name} {str(path)!r} is not a readable file")
            object.__setattr__(self, name, path)
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key needs client_cert")
        if self.ca_bundle is not None and not self.verify:
            raise ValueError("ca_bundle is pointless with verify=False; drop one of them")

    def ssl_context(self) -> ssl.SSLContext:
        """A client-side :class:`ssl.SSLContext` (TLS 1.2 or later) for these options.

        Raises
        ------
        ssl.SSLError
            A CA bundle or client certificate/key that OpenSSL cannot load.
        """
        context = ssl.create_default_context(
            cafile=str(self.ca_bundle) if self.ca_bundle is not None else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert is not None:
            context.load_cert_chain(
                str(self.client_cert),
                str(self.client_key) if self.client_key is not None else None,
            )
        return context


class PlainTextCredentialError(WorklistError, ValueError):
    """A credential would be sent over plain ``http://`` to a destination not marked insecure."""


def check_credential_transport(
    url: str, auth: HttpAuth, tls: TlsOptions | None, *, name: str
) -> None:
    """Refuse to send ``auth`` in clear: a credential goes to an ``http://`` URL only when the
    destination is explicitly insecure (``tls`` with ``verify=False``).

    Raises
    ------
    PlainTextCredentialError
        Naming the destination and what to write instead.
    """
    if auth.kind is AuthKind.NONE or urlsplit(url).scheme != "http":
        return
    if tls is not None and not tls.verify:
        return
    raise PlainTextCredentialError(
        f"destination {name or url!r} would send its {auth.kind.value} credential in clear to "
        f"{urlsplit(url).scheme}://{urlsplit(url).netloc}: use an https:// URL, or set "
        "insecure = true on the destination to accept that (a test peer only)"
    )


_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_insecure_use(name: str, peer: str) -> None:
    """Log a WARNING the first time this process delivers to an insecure destination (its
    certificate not checked, a credential allowed over plain HTTP); later calls log nothing.

    Parameters
    ----------
    name
        The destination's name (``[destinations.NAME]``).
    peer
        Where it delivers (a URL without credentials, or ``host:port``).
    """
    with _warned_lock:
        if name in _warned:
            return
        _warned.add(name)
    logger.warning(
        "Delivering to destination %s (%s) with insecure = true: its TLS certificate is not "
        "checked and a credential may travel unencrypted",
        name,
        peer,
    )
