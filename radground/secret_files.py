"""Reading secrets from files: bearer tokens, passwords, TLS private keys.

A secret file must be the node user's alone. One that its group or others may
read or change (any of the mode bits ``0o077``) is refused at start-up with a
message naming the file and the ``chmod`` that fixes it, as OpenSSH refuses a
private key "with too open permissions". systemd's ``LoadCredential=`` files
(``$CREDENTIALS_DIRECTORY``, mode ``0400``) and Docker/Kubernetes secrets mounted
with mode ``0400``/``0600`` pass.

Secret values are never part of a message, a log line or a ``repr``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from radground.settings import SettingsError

__all__ = ["LOOSE_PERMISSIONS", "check_private_file", "read_secret_file"]

#: Mode bits a secret file must not have: anything for its group or others.
LOOSE_PERMISSIONS = 0o077


def check_private_file(path: str | os.PathLike[str], *, setting: str, what: str) -> None:
    """Refuse ``path`` unless it is a file only its owner may read or write.

    Parameters
    ----------
    path
        The secret file (a symbolic link is judged by the file it points to).
    setting
        Where it is configured, for the message (``destinations.EHR``, ``web``).
    what
        What it holds, for the message (``the bearer token``, ``the TLS key``).

    Raises
    ------
    SettingsError
        The file is missing, not a regular file, or its group or others have access; the
        message names the file and the command to run.
    """
    try:
        status = os.stat(path)
    except OSError as exc:
        raise SettingsError(f"{setting}: {what} is read from {path}: {exc.strerror}") from None
    if not stat.S_ISREG(status.st_mode):
        raise SettingsError(f"{setting}: {what} file {path} is not a regular file")
    loose = stat.S_IMODE(status.st_mode) & LOOSE_PERMISSIONS
    if loose:
        who = " and ".join(
            name for name, bits in (("its group", 0o070), ("others", 0o007)) if loose & bits
        )
        raise SettingsError(
            f"{setting}: {what} file {path} is open to {who} "
            f"(mode {stat.S_IMODE(status.st_mode):04o}); it must be the node user's alone: "
            f"run `chmod 600 {path}`"
        )


def read_secret_file(path: str | os.PathLike[str], *, setting: str, what: str) -> str:
    """The secret in ``path`` (surrounding whitespace stripped), after
    :func:`check_private_file`.

    Raises
    ------
    SettingsError
        Loose permissions, an unreadable file, or an empty one.
    """
    check_private_file(path, setting=setting, what=what)
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsError(f"{setting}: {what} is read from {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{setting}: {what} file {path} is not UTF-8 text") from None
    if not value:
        raise SettingsError(f"{setting}: {what} file {path} is empty")
    return value
