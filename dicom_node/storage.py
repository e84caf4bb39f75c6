"""Durable file storage of received instances, as received (no re-encoding).

Layout under the storage root::

    <StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm

Every path component is a validated DICOM UID (:func:`dicom_node.uids.is_valid_uid`):
digits and dots only, so no value a sender controls can escape the root.

A file is first written to a temporary name in the staging directory
``<root>/.incoming`` and (by policy) fsynced there, which starts before the
receiver knows the file's final place (it reads the data set's header
meanwhile); then it is atomically renamed into place and the new directory
entry is fsynced: after a crash a file is either complete or absent. Staged
files a crash left behind are removed at the next start.

Files are created ``0600`` and folders ``0700`` (:mod:`dicom_node.private_files`):
a received instance is patient data.
"""

from __future__ import annotations

import enum
import errno
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from dicom_node.errors import (
    DuplicateInstanceError,
    InsufficientStorageError,
    InvalidInstanceError,
    StorageError,
)
from dicom_node.private_files import (
    PRIVATE_FILE_MODE,
    make_private_directories,
)
from dicom_node.uids import is_valid_uid

__all__ = [
    "DuplicatePolicy",
    "FsyncPolicy",
    "InstanceStore",
    "PendingWrite",
    "StagedWrite",
    "StoreOutcome",
    "WriteResult",
]

Buffer = bytes | bytearray | memoryview

#: Staged files older than this (seconds) were left by a crashed process: an
#: instance stays staged only while its header is read.
STALE_STAGED_SECONDS = 600

#: How long :meth:`InstanceStore.stage` waits for a flusher thread to begin the
#: fsync (longer only when every flusher is busy with other associations' files).
FSYNC_START_WAIT_SECONDS = 0.002


class FsyncPolicy(enum.StrEnum):
    """When written files reach stable storage before the sender is told "Success"."""

    #: fsync each file and its directory entry before answering (default).
    ALWAYS = "always"
    #: Leave flushing to the operating system (faster; a power loss may lose
    #: instances that were acknowledged).
    NEVER = "never"


class DuplicatePolicy(enum.StrEnum):
    """What to do when a SOP Instance UID that is already stored arrives again in
    the same study and series (at the same path).

    The same SOP Instance UID in another study or series is not a duplicate but
    a conflict; the study index refuses it under every policy
    (:class:`~dicom_node.errors.InstanceConflictError`, answered 0xA900).
    """

    #: Keep the stored file when the new one is byte-identical, else replace it.
    IGNORE_IF_IDENTICAL = "ignore-if-identical"
    #: Always replace the stored file.
    REPLACE = "replace"
    #: Refuse the new instance with a failure status.
    REJECT = "reject"


class StoreOutcome(enum.StrEnum):
    """What happened to a received instance."""

    STORED = "stored"
    REPLACED = "replaced"
    IDENTICAL_DUPLICATE = "identical-duplicate"
    #: Policy "reject": a byte-identical file is already in place. A duplicate if
    #: the index knows it; if not (a crash came between the file's rename and its
    #: index commit, so the sender never heard Success), this re-send indexes it.
    ALREADY_STORED = "already-stored"


class PendingWrite:
    """A write whose place and outcome are decided (see :meth:`StagedWrite.place`);
    :meth:`wait` moves it there and makes it durable."""

    def __init__(self, result: WriteResult, staged: StagedWrite | None = None) -> None:
        #: Where the instance lands and what happened (known before it is there).
        self.result = result
        self._staged = staged
        self._lock = threading.Lock()
        self._finished = staged is None
        self._error: StorageError | None = None

    def wait(self) -> WriteResult:
        """Block until the file is durable under its final name (the first call
        moves it there: the staged file's fsync, the rename, the directory's fsync).

        Raises :class:`~dicom_node.errors.StorageError` (or
        :class:`~dicom_node.errors.InsufficientStorageError`) if it could not
        be; the staged file is gone then, and the final name is unchanged
        unless only the directory's fsync failed (the file is there, not known
        durable; the caller answers a failure and the sender sends it again).
        """
        with self._lock:
            if not self._finished:
                self._finished = True
                assert self._staged is not None
                try:
                    self._staged.move_into_place(self.result.relative_path)
                except StorageError as exc:
                    self._error = exc
            if self._error is not None:
                raise self._error
        return self.result

    def abandon(self) -> None:
        """Give up a write the caller will not acknowledge: a file not yet moved is
        dropped; a new file already in place is removed (a replaced one stays)."""
        with self._lock:
            if not self._finished:
                self._finished = True
                self._error = StorageError("write abandoned")
                assert self._staged is not None
                self._staged.discard()
                return
        if (
            self._error is None
            and self.result.outcome is StoreOutcome.STORED
            and self._staged is not None
        ):
            self._staged.remove_placed(self.result.relative_path)


class StagedWrite:
    """An instance in the staging area, its flush under way (see :meth:`InstanceStore.stage`)."""

    def __init__(
        self,
        store: InstanceStore,
        path: Path,
        sop_instance_uid: str,
        size: int,
        syncing: Future[None] | None,
    ) -> None:
        self._store = store
        self._path = path
        self._sop_instance_uid = sop_instance_uid
        self._syncing = syncing
        #: Bytes written.
        self.size = size

    def place(self, *, study_instance_uid: str, series_instance_uid: str) -> PendingWrite:
        """Decide the file's final name and outcome by the store's duplicate policy.

        Nothing moves yet: the returned write's :meth:`PendingWrite.wait` moves
        it once its fsync is done, so the caller can prepare its index entry
        meanwhile. Raises :class:`InvalidInstanceError` or
        :class:`DuplicateInstanceError`; the staged file is gone then.
        """
        store = self._store
        try:
            relative = store.relative_path(
                study_instance_uid=study_instance_uid,
                series_instance_uid=series_instance_uid,
                sop_instance_uid=self._sop_instance_uid,
            )
            target = store.root / relative
            outcome = StoreOutcome.STORED
            if target.exists():
                if store.duplicates is DuplicatePolicy.REJECT:
                    if not _same_content(target, self._path):
                        raise DuplicateInstanceError(
                            "SOP Instance UID already stored (policy: reject)"
                        )
                    self.discard()  # the index decides: a duplicate, or a file it never recorded
                    return PendingWrite(
                        WriteResult(relative, self.size, StoreOutcome.ALREADY_STORED)
                    )
                if store.duplicates is DuplicatePolicy.IGNORE_IF_IDENTICAL and _same_content(
                    target, self._path
                ):
                    self.discard()
                    return PendingWrite(
                        WriteResult(relative, self.size, StoreOutcome.IDENTICAL_DUPLICATE)
                    )
                outcome = StoreOutcome.REPLACED
        except BaseException:
            self.discard()
            raise
        return PendingWrite(WriteResult(relative, self.size, outcome), self)

    def move_into_place(self, relative_path: str) -> None:
        """Wait for the fsync, rename to ``relative_path``, fsync its directory (by policy).

        Raises :class:`StorageError`; the staged file is gone then.
        """
        store = self._store
        target = store.root / relative_path
        try:
            store._ensure_dir(target.parent)
            if self._syncing is not None:
                self._syncing.result()
            os.replace(self._path, target)
            if self._syncing is not None:
                _fsync_dir(target.parent)
        except OSError as exc:
            self.discard()
            raise _storage_error(exc) from exc

    def discard(self) -> None:
        """Drop the staged file (nothing at any final name changes)."""
        self._path.unlink(missing_ok=True)

    def remove_placed(self, relative_path: str) -> None:
        """Remove the file this write placed at ``relative_path``."""
        (self._store.root / relative_path).unlink(missing_ok=True)


@dataclass(frozen=True)
class WriteResult:
    """Where an instance landed and what happened.

    ``relative_path`` is relative to the storage root.
    """

    relative_path: str
    size: int
    outcome: StoreOutcome


class InstanceStore:
    """Writes received instances durably under ``root``.

    Parameters
    ----------
    root
        Storage root directory (created if missing).
    fsync
        When files reach stable storage (see :class:`FsyncPolicy`).
    duplicates
        Policy for an already stored SOP Instance UID.
    reserve_bytes
        Free space that must remain on the root's file system after a write;
        a write that would go below it is refused (Out of Resources).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = FsyncPolicy.ALWAYS,
        duplicates: DuplicatePolicy = DuplicatePolicy.IGNORE_IF_IDENTICAL,
        reserve_bytes: int = 0,
    ) -> None:
        if reserve_bytes < 0:
            raise ValueError(f"reserve_bytes must be >= 0, got {reserve_bytes}")
        self.root = Path(root).resolve()
        make_private_directories(self.root)
        self.fsync = FsyncPolicy(fsync)
        self.duplicates = DuplicatePolicy(duplicates)
        self.reserve_bytes = reserve_bytes
        self._staging = self.root / ".incoming"
        self._remove_stale_staged_files()
        self._known_dirs: set[Path] = set()
        self._dir_lock = threading.Lock()
        # fsync releases the GIL: a few threads flush while associations go on.
        self._flusher = ThreadPoolExecutor(max_workers=4, thread_name_prefix="InstanceStore-fsync")

    def relative_path(
        self, *, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> str:
        """The path of an instance relative to the root, from validated UIDs only."""
        for name, uid in (
            ("StudyInstanceUID", study_instance_uid),
            ("SeriesInstanceUID", series_instance_uid),
            ("SOPInstanceUID", sop_instance_uid),
        ):
            if not is_valid_uid(uid):
                raise InvalidInstanceError(f"{name} is not a valid DICOM UID")
        return f"{study_instance_uid}/{series_instance_uid}/{sop_instance_uid}.dcm"

    def free_bytes(self) -> int:
        """Free bytes available to this process on the root's file system."""
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def write(
        self,
        data: Buffer | Sequence[Buffer],
        *,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
    ) -> WriteResult:
        """Store ``data`` (a complete DICOM file, or its pieces in order) for the
        given UIDs; returns once the file is durable under its final name.

        Raises
        ------
        InvalidInstanceError
            A UID is not a valid DICOM UID (nothing is written).
        InsufficientStorageError
            The write would leave less than ``reserve_bytes`` free.
        DuplicateInstanceError
            The instance exists and the policy is :attr:`DuplicatePolicy.REJECT`.
        StorageError
            The file system refused the write.
        """
        self.relative_path(  # every UID checked before anything is written
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
            sop_instance_uid=sop_instance_uid,
        )
        staged = self.stage(data, sop_instance_uid=sop_instance_uid)
        return staged.place(
            study_instance_uid=study_instance_uid, series_instance_uid=series_instance_uid
        ).wait()

    def stage(self, data: Buffer | Sequence[Buffer], *, sop_instance_uid: str) -> StagedWrite:
        """Write ``data`` to the staging area and start its flush to stable storage.

        The receiving side does not know where an instance belongs before it has
        read the data set's header; staging first lets the file's fsync run while
        it does. :meth:`StagedWrite.place` then moves the file to its final name,
        or :meth:`StagedWrite.discard` drops it. ``data`` may be reused once this
        returns.

        Raises :class:`InvalidInstanceError` (nothing written),
        :class:`InsufficientStorageError` or :class:`StorageError`.
        """
        if not is_valid_uid(sop_instance_uid):
            raise InvalidInstanceError("SOPInstanceUID is not a valid DICOM UID")
        parts = (
            [memoryview(data)] if isinstance(data, Buffer) else [memoryview(part) for part in data]
        )
        size = sum(part.nbytes for part in parts)
        if self.reserve_bytes and self.free_bytes() - size < self.reserve_bytes:
            raise InsufficientStorageError(
                f"free disk space would fall below the reserve of {self.reserve_bytes} bytes"
            )
        self._ensure_dir(self._staging)
        staged = self._staging / f".{sop_instance_uid}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        except OSError as exc:
            raise _storage_error(exc) from exc
        try:
            _write_all(fd, parts)
        except OSError as exc:
            os.close(fd)
            staged.unlink(missing_ok=True)
            raise _storage_error(exc) from exc
        if self.fsync is FsyncPolicy.NEVER:
            os.close(fd)
            return StagedWrite(self, staged, sop_instance_uid, size, None)
        started = threading.Event()
        syncing = self._flusher.submit(_sync_and_close, fd, started)
        # Let the flusher thread take the GIL and enter fsync now. A thread that
        # runs Python (the header read, the index statements) keeps the GIL for
        # up to the switch interval (5 ms): without this the fsync would start
        # only when the caller next blocks, and overlap nothing.
        started.wait(FSYNC_START_WAIT_SECONDS)
        return StagedWrite(self, staged, sop_instance_uid, size, syncing)

    def _remove_stale_staged_files(self) -> None:
        """Remove what a crashed process left in the staging area (never acknowledged)."""
        cutoff = time.time() - STALE_STAGED_SECONDS
        for path in self._staging.glob(".*.tmp"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                pass  # gone already, or another process's to remove

    def _ensure_dir(self, directory: Path) -> None:
        if directory in self._known_dirs:
            return
        with self._dir_lock:
            created = make_private_directories(directory)
            if self.fsync is FsyncPolicy.ALWAYS:
                for path in created:
                    _fsync_dir(path.parent)
            self._known_dirs.add(directory)
            if len(self._known_dirs) > 10_000:
                self._known_dirs.clear()

    def open(self, relative_path: str) -> Path:
        """The absolute path of a stored instance (the relative path must stay under root)."""
        path = (self.root / relative_path).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidInstanceError("path escapes the storage root")
        return path


def _sync_and_close(fd: int, started: threading.Event) -> None:
    """fsync and close ``fd``; ``started`` is set just before fsync releases the GIL."""
    started.set()
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _storage_error(exc: OSError) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorageError(f"disk full: {exc.strerror}")
    return StorageError(f"could not write instance: {exc.strerror}")


def _write_all(fd: int, parts: list[memoryview]) -> None:
    """``writev`` until every byte of ``parts`` is written."""
    pending = [part.cast("B") for part in parts if part.nbytes]
    while pending:
        written = os.writev(fd, pending)
        while pending and written >= pending[0].nbytes:
            written -= pending[0].nbytes
            pending.pop(0)
        if pending and written:
            pending[0] = pending[0][written:]


def _same_content(path: Path, other: Path) -> bool:
    try:
        if path.stat().st_size != other.stat().st_size:
            return False
        return path.read_bytes() == other.read_bytes()
    except OSError:
        return False


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
