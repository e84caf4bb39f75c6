"""DICOM UID validation and the privacy-preserving UID token used in every message and log line.

One rule each, shared by ``engine`` and ``exporters``. ``dicom_node`` may import
nothing of ours, so :mod:`dicom_node.uids` holds a twin of these two functions;
``tests/unit/test_uid_rules.py`` keeps the two identical.
"""

from __future__ import annotations

import hashlib

from pydicom.uid import RE_VALID_UID

__all__ = ["is_valid_uid", "short_uid"]


def is_valid_uid(value: object) -> bool:
    """Whether ``value`` is a valid DICOM UID (PS3.5 §9.1).

    pydicom's rule (``pydicom.uid.UID.is_valid``: its pattern, at most 64
    characters), made stricter where RadGround relies on it: the whole string
    must match (pydicom's ``re.match`` lets a trailing newline through), it
    must be a non-empty ``str``, and no pydicom warning is raised for a bad
    value. Only such values are ever used to build a path, so ``../../x``,
    ``"1.2\\n"`` or a 65-character value can never touch the file system.
    """
    return (
        isinstance(value, str)
        and 0 < len(value) <= 64
        and RE_VALID_UID.fullmatch(value) is not None
    )


def short_uid(uid: object) -> str:
    """A short, stable, non-reversible token for a UID, for log lines and messages.

    UIDs of a study can identify a patient's examination, so logs and error
    messages carry this 8-hex-digit hash (BLAKE2b, 4 bytes) instead of any part
    of the UID itself. ``None`` and ``""`` give ``"-"``; other values are hashed
    as their ``str()``.
    """
    if uid is None or uid == "":
        return "-"
    return hashlib.blake2b(str(uid).encode("utf-8", "replace"), digest_size=4).hexdigest()
