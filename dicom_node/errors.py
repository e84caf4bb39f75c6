"""Errors of the DICOM node, each mapped to one DICOM status by the SCP."""

__all__ = [
    "DataSetStructureError",
    "DicomNodeError",
    "DuplicateInstanceError",
    "InstanceConflictError",
    "InsufficientStorageError",
    "InvalidInstanceError",
    "PixelDataLengthError",
    "PortInUseError",
    "StorageError",
    "StoreRefusedError",
    "TlsHandshakeError",
]


class DicomNodeError(Exception):
    """Base class of the node's errors."""


class InvalidInstanceError(DicomNodeError):
    """A received data set lacks, or has an invalid, identifying attribute (UIDs)."""


class StorageError(DicomNodeError):
    """A received instance could not be written to the storage root."""


class InsufficientStorageError(StorageError):
    """Free disk space would fall below the configured reserve."""


class DuplicateInstanceError(StorageError):
    """The SOP Instance UID is already stored and the policy is to reject it."""


class StoreRefusedError(DicomNodeError):
    """The "instance stored" hook refused the instance (e.g. its index is down).

    Raised by the hook given to the SCP; ``transient`` says whether the sender
    should retry later (Out of Resources) or not (Processing Failure).
    """

    def __init__(self, reason: str, *, transient: bool = True) -> None:
        super().__init__(reason)
        self.transient = transient


class PortInUseError(DicomNodeError, OSError):
    """The node's address and port are held by another process; the node does not share them.

    ``owner`` describes the other process ("pid 123: storescp -aet X 11112")
    where it can be found, else ``None``.
    """

    def __init__(self, host: str, port: int, owner: str | None) -> None:
        held_by = f"by {owner}" if owner else "by another process (not visible to this user)"
        super().__init__(
            98, f"port {port} on {host or '*'} is already in use {held_by}; "
            "stop it or choose another node.port / --port"
        )
        self.host, self.port, self.owner = host, port, owner

    def __str__(self) -> str:
        return str(self.strerror)


class DataSetStructureError(DicomNodeError):
    """A received data set cannot be parsed into elements (PS3.5 §7): a length
    runs past its end, a delimiter is missing. ``offset`` is where, in bytes
    from the start of the data set."""

    def __init__(self, reason: str, *, offset: int) -> None:
        super().__init__(reason)
        self.offset = offset


class PixelDataLengthError(DicomNodeError):
    """A received data set's Pixel Data does not hold the image its Image Pixel
    attributes describe (PS3.5 §8.2). ``offset`` is the Pixel Data element's."""

    def __init__(self, reason: str, *, offset: int) -> None:
        super().__init__(reason)
        self.offset = offset


class InstanceConflictError(StoreRefusedError):
    """The SOP Instance UID is already stored in another study or series: the
    same identity for a different object (PS3.4 B.4.1), never a duplicate."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, transient=False)


class TlsHandshakeError(DicomNodeError):
    """A connection to the node's TLS port did not complete a TLS handshake (refused before
    any DICOM was read); the message says why, in OpenSSL's words where it has them."""
