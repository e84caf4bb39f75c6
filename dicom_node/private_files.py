"""Files and folders only the node's own user can open.

Received instances, outputs (an SR or a FHIR Bundle names the patient) and the
SQLite databases (names, IDs, birth dates) are created ``0600`` in ``0700``
folders, whatever the umask of the process: every level of a folder path made
here gets ``0700`` (``mkdir -p`` would give the parents the umask's mode), and
a file is opened with ``0600``. The application's entry points also set the
process umask to :data:`PRIVATE_UMASK`, for what third-party code creates
(SQLite's ``-wal``/``-shm`` files, Celery's, the TensorRT cache).

Existing files and folders are left as they are: an operator who made a folder
group-readable on purpose (a shared volume) keeps it so.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "PRIVATE_DIRECTORY_MODE",
    "PRIVATE_FILE_MODE",
    "PRIVATE_UMASK",
    "create_private_file",
    "make_private_directories",
]

#: The process umask of every RadGround entry point: nothing for group or other.
PRIVATE_UMASK = 0o077
#: Files holding patient data: read and write for the owner only.
PRIVATE_FILE_MODE = 0o600
#: Folders holding such files: the owner only.
PRIVATE_DIRECTORY_MODE = 0o700


def make_private_directories(directory: str | os.PathLike[str]) -> list[Path]:
    """Create ``directory`` and its missing parents, each ``0700``; return those created,
    outermost first (a caller that syncs directory entries syncs each one's parent).

    Safe against another process creating the same folders at the same time.
    """
    path = Path(directory)
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    created = []
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIRECTORY_MODE)
        except FileExistsError:
            continue  # another process (listener, worker) made it first
        os.chmod(folder, PRIVATE_DIRECTORY_MODE)  # the mode, whatever the umask took away
        created.append(folder)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a folder")
    return created


def create_private_file(path: str | os.PathLike[str]) -> None:
    """Create ``path`` empty with mode ``0600`` (and its folders ``0700``) if it does not
    exist, before a library opens it (SQLite gives its ``-wal``, ``-shm`` and ``-journal``
    files the database file's mode). An existing file is left untouched."""
    make_private_directories(Path(path).parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
