"""One STOW-RS part spooled to disk: its File Meta Information read, its data set in a file.

A part is a DICOM Part 10 file (PS3.18 §10.5.1.1). :class:`SpooledPart` takes
its bytes as they arrive, keeps only the head in memory until the File Meta
Information is read (:func:`dicom_node.part10.split_file_meta`), and writes the
data set after it to an anonymous temporary file (``O_TMPFILE`` where the
system has it: nothing is left behind by a crash). :meth:`SpooledPart.data_set`
then maps that file into memory for :class:`dicom_node.ingest.InstanceIngest`,
which reads it in place.
"""

from __future__ import annotations

import contextlib
import mmap
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from dicom_node.errors import DataSetStructureError
from dicom_node.part10 import FileMeta, split_file_meta

__all__ = ["SpooledPart"]

#: The most bytes of a part kept in memory while its File Meta Information is read.
MAX_HEAD_BYTES = 64 * 1024


class SpooledPart:
    """A part's data set on disk, and what its File Meta Information says.

    Parameters
    ----------
    directory
        Where the temporary file is made (on the storage volume, not a RAM disk).
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._head: bytearray | None = bytearray()
        self._file: IO[bytes] | None = None
        #: The part's File Meta Information, once read.
        self.meta: FileMeta | None = None
        #: Why the part is not a Part 10 file the node can read (then the rest is dropped).
        self.error: str | None = None
        #: Bytes of the data set spooled.
        self.size = 0

    def write(self, data: bytes | bytearray) -> None:
        """The part's next bytes."""
        if self.error is not None:
            return
        if self._head is None:
            assert self._file is not None
            self._file.write(data)
            self.size += len(data)
            return
        self._head += data
        self._split(complete=False)

    def finish(self) -> None:
        """The part is complete."""
        if self.error is None and self._head is not None:
            self._split(complete=True)
        if self._file is not None:
            self._file.flush()

    @contextlib.contextmanager
    def data_set(self) -> Iterator[bytes | mmap.mmap]:
        """The spooled data set, memory-mapped (read only) while the block runs."""
        if self._file is None or self.size == 0:
            yield b""
            return
        with mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            yield mapped

    def close(self) -> None:
        """Remove the temporary file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._head = None

    def _split(self, *, complete: bool) -> None:
        assert self._head is not None
        try:
            found = split_file_meta(self._head, complete=complete)
        except DataSetStructureError as exc:
            self._fail(str(exc))
            return
        if found is None:
            if len(self._head) > MAX_HEAD_BYTES:
                self._fail(f"File Meta Information longer than {MAX_HEAD_BYTES} bytes")
            return
        self.meta, offset = found
        head, self._head = self._head, None
        # closed by close(), after the ingest has read the data set
        self._file = tempfile.TemporaryFile(dir=self._directory, prefix=".stow-")  # noqa: SIM115
        with memoryview(head) as view:
            self._file.write(view[offset:])
        self.size = len(head) - offset

    def _fail(self, reason: str) -> None:
        self.error = reason
        self._head = None
