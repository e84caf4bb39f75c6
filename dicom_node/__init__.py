"""dicom_node: the Storage SCP and SCU, file storage of received instances, conformance data.

Its exceptions derive from :class:`DicomNodeError` (:mod:`dicom_node.errors`).
"""

from dicom_node.errors import (
    DicomNodeError,
    DuplicateInstanceError,
    InsufficientStorageError,
    InvalidInstanceError,
    StorageError,
    StoreRefusedError,
)

__all__ = [
    "DicomNodeError",
    "DuplicateInstanceError",
    "InsufficientStorageError",
    "InvalidInstanceError",
    "StorageError",
    "StoreRefusedError",
]
