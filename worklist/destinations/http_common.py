"""What the HTTP destinations (FHIR, DICOMweb) check and read the same way.

The base URL a destination is configured with, and the ``Retry-After`` header
a busy server answers with.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from worklist.errors import WorklistError

__all__ = ["check_base_url", "parse_retry_after"]


def check_base_url(base_url: str, *, error: type[WorklistError], reference: str) -> str:
    """``base_url`` without its trailing slash, once it is an absolute http(s) URL.

    Parameters
    ----------
    base_url
        The service root, e.g. ``https://pacs.example.org/dicom-web``.
    error
        The destination's own request error, raised with what is wrong.
    reference
        The standard's section for the service root, quoted when a query or
        fragment is refused (e.g. ``"PS3.18 §8.2 Base URI"``).
    """
    if not isinstance(base_url, str):
        raise TypeError(f"base_url must be a string, got {type(base_url).__name__}")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise error(f"base_url must be an absolute http(s) URL, got {base_url!r}")
    if parts.username is not None or parts.password is not None:
        raise error("base_url must not carry credentials; pass them as auth")
    if parts.query or parts.fragment:
        raise error(f"base_url must not have a query or fragment ({reference})")
    return base_url.rstrip("/")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110 10.2.3).

    delay-seconds, or an HTTP-date (seconds from ``now``, at least 0); None when
    the header is absent or unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())
