"""Requests the destination clients refuse before sending anything.

Delivery failures are not exceptions here: the clients return results that
classify them (retryable or final). These errors mean the caller asked for
something that cannot be sent at all; they derive from
:class:`worklist.errors.WorklistError` and from ``ValueError``.
"""

from __future__ import annotations

from worklist.errors import WorklistError

__all__ = ["InvalidMllpRequestError", "InvalidStowRequestError"]


class InvalidStowRequestError(WorklistError, ValueError):
    """A STOW-RS request cannot be sent as asked: a bad base URL, timeout or request id,
    no instances, a file that is not PS3.10 with valid UIDs, a repeated SOP Instance UID."""


class InvalidMllpRequestError(WorklistError, ValueError):
    """An HL7 v2 message cannot be sent as asked: no MSH or MSH-10, framing bytes inside,
    not encodable, a bad host, port or timeout."""
