"""DICOM UID validation and privacy-preserving UID display."""

from __future__ import annotations

import hashlib
import re

__all__ = ["is_valid_uid", "short_uid"]

_UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def is_valid_uid(value: object) -> bool:
    """Whether ``value`` is a valid DICOM UID (PS3.5 §9.1).

    Digits and dots only, no empty component, no leading zero in a component,
    at most 64 characters. Only such values are ever used to build a path, so
    ``../../x`` or a 65-character value can never touch the file system.
    """
    return isinstance(value, str) and 0 < len(value) <= 64 and _UID_PATTERN.match(value) is not None


def short_uid(uid: str | None) -> str:
    """A short, stable, non-reversible token for a UID, for log lines.

    UIDs of a study can identify a patient's examination, so logs carry this
    8-hex-digit hash instead of the UID itself.
    """
    if not uid:
        return "-"
    return hashlib.blake2b(uid.encode("ascii", "replace"), digest_size=4).hexdigest()
