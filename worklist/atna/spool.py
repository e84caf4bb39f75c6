"""The on-disk buffer of audit messages the audit repository has not taken yet.

One file per message (``<time ns>-<pid>-<n>.msg``, ``0600`` in a ``0700`` folder), written
under a temporary name and renamed, so a crash leaves whole messages only. Oldest first. The
node's processes share one spool: a process claims a message by renaming it to
``*.msg.<pid>`` before sending it, so each is sent once; claims of a process that is gone are
taken back when the spool is opened.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Spool"]

_SUFFIX = ".msg"


class Spool:
    """Messages waiting in ``directory``, at most ``max_messages`` (the oldest make way)."""

    def __init__(self, directory: Path, *, max_messages: int = 100_000) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        self.directory = Path(directory)
        self.max_messages = max_messages
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._counter = itertools.count()
        self._reclaim_orphans()

    def _reclaim_orphans(self) -> None:
        for path in self.directory.glob(f"*{_SUFFIX}.*"):
            pid = path.suffix[1:]
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(""))

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob(f"*{_SUFFIX}"))

    def add(self, message: bytes) -> int:
        """Keep ``message``; returns how many older messages were dropped to make room.

        Raises ``OSError`` when it cannot be written (the caller counts it as dropped).
        """
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._counter):09d}{_SUFFIX}"
        temporary = self.directory / f".{name}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, message)
        finally:
            os.close(fd)
        temporary.rename(self.directory / name)
        dropped = 0
        excess = len(self) - self.max_messages
        if excess > 0:
            for path in self._oldest()[:excess]:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    dropped += 1
        return dropped

    def _oldest(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{_SUFFIX}"))

    def claimed(self) -> Iterator[tuple[Path, bytes]]:
        """The waiting messages, oldest first, each claimed by this process; the caller
        :meth:`done`\\ s or :meth:`release`\\ s each one it was given."""
        for path in self._oldest():
            claim = path.with_name(f"{path.name}.{os.getpid()}")
            try:
                path.rename(claim)
            except FileNotFoundError:  # another process claimed it
                continue
            yield claim, claim.read_bytes()

    @staticmethod
    def done(claim: Path) -> None:
        """A claimed message was sent."""
        with contextlib.suppress(FileNotFoundError):
            claim.unlink()

    @staticmethod
    def release(claim: Path) -> None:
        """A claimed message could not be sent: it waits again, in its place."""
        with contextlib.suppress(FileNotFoundError):
            claim.rename(claim.with_suffix(""))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
